"""PaddleClas backbones through our registry (lazy import: paddleclas loads faiss and logs)."""
import ast
import inspect
import textwrap

import paddle
import paddle.nn as nn

from ...io.weights import backbone_part
from ...utils.errors import ConfigError
from .registry import BACKBONES, named_parameters, refuse_unknown_keys


class PaddleClasFeatures(nn.Layer):
    """A PaddleClas classifier with its classifier (the layers named in ``dropped``) removed:
    image -> pooled feature [B, C]."""

    def __init__(self, net, out_dim, dropped=()):
        super().__init__()
        self.net = net
        self.out_dim = out_dim
        self.dropped = tuple(dropped)

    def forward(self, x):
        return self.net(x).flatten(1)

    def checkpoint_filter(self, state, source):
        """A PaddleClas .pdparams of the model (its removed classifier's keys dropped), or the
        backbone.* part of a ppufo checkpoint of this backbone."""
        if any(k.startswith("backbone.") for k in state):
            return backbone_part(state)
        return {"net." + k: v for k, v in state.items() if k.split(".")[0] not in self.dropped}


def model_keys(factory, _self_cls=None, _depth=0):
    """(keys, complete): the keyword arguments a PaddleClas factory (or class) really uses.

    PaddleClas factories and classes take ``**kwargs`` and drop what they do not know, so a key
    left over from another backbone would be ignored without a word. The keys are the named
    parameters; where ``**kwargs`` is forwarded (``ResNet18(...) -> ResNet(config=..., **kwargs)``,
    ``super().__init__(**kwargs)``, ``self.init_net(**kwargs)``), the callee's keys not passed
    explicitly, followed through the source; where it is read as a dict, the constant keys read
    (``kwargs.get("use_fused_attn")``). ``complete`` is False when ``**kwargs`` is used in a way
    this cannot follow: then only the keys found are allowed."""
    if inspect.isclass(factory):
        _self_cls = _self_cls or factory
        owner = next((c for c in factory.__mro__ if "__init__" in vars(c)), object)
        if owner is object:
            return set(), True
        fn, parents = vars(owner)["__init__"], factory.__mro__[factory.__mro__.index(owner) + 1:]
    else:
        fn, parents = factory, ()
    try:
        params = inspect.signature(factory).parameters
        keys = set(named_parameters(factory))
    except (TypeError, ValueError):
        return set(), False
    var_kw = next((n for n, p in params.items() if p.kind == p.VAR_KEYWORD), None)
    if var_kw is None:
        return keys, True
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return keys, False
    if _depth >= 4:
        return keys, False
    understood, complete = set(), True
    for node in ast.walk(tree):
        read = _dict_read(node, var_kw)
        if read is not None:  # kwargs.get("k") / kwargs["k"] / "k" in kwargs
            keys.add(read[0])
            understood.add(id(read[1]))
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg is None and isinstance(kw.value, ast.Name) and kw.value.id == var_kw:
                understood.add(id(kw.value))
                callee = _resolve(node.func, fn.__globals__, parents, _self_cls)
                if not (inspect.isclass(callee) or inspect.isfunction(callee)):
                    complete = False
                    continue
                sub, sub_complete = model_keys(callee, _self_cls, _depth + 1)
                names = named_parameters(callee)
                bound = isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id == "self" and inspect.isfunction(callee)  # 1: skip `self`
                positional = [] if any(isinstance(a, ast.Starred) for a in node.args) \
                    else names[bound:bound + len(node.args)]  # *args: unknown count; a clash still fails loudly
                keys |= sub - {k.arg for k in node.keywords if k.arg} - set(positional) - set(names[:bound])
                complete &= sub_complete
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == var_kw]
    return keys, complete and all(id(n) in understood for n in uses)


def _dict_read(node, var_kw):
    """(key, the kwargs Name node) if ``node`` reads a constant key of ``var_kw``, else None."""
    def is_kw(n):
        return isinstance(n, ast.Name) and n.id == var_kw

    def const(n):
        return n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
            and is_kw(node.func.value) and node.args and const(node.args[0]):
        return const(node.args[0]), node.func.value
    if isinstance(node, ast.Subscript) and is_kw(node.value) and const(node.slice):
        return const(node.slice), node.value
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)) \
            and is_kw(node.comparators[0]) and const(node.left):
        return const(node.left), node.comparators[0]
    return None


def _resolve(func, namespace, parents, self_cls):
    """The object a call's ``func`` names: ``super().__init__`` (the next __init__ in ``parents``,
    the MRO after the class being read), ``self.method`` (looked up on the class being built) or a
    (dotted) global; None if it is anything else."""
    if isinstance(func, ast.Attribute) and func.attr == "__init__" and isinstance(func.value, ast.Call) \
            and isinstance(func.value.func, ast.Name) and func.value.func.id == "super":
        return next((c for c in parents if "__init__" in vars(c)), None)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
        return getattr(self_cls, func.attr, None) if self_cls is not None else None
    parts = []
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in namespace:
        return None
    obj = namespace[func.id]
    for p in parts:
        obj = getattr(obj, p, None)
    return obj


@BACKBONES.register
def PaddleClasBackbone(model="ResNet50", img_size=None, **model_kwargs):
    """model_kwargs: keyword arguments of the PaddleClas model (model_keys); any other key is
    refused. Arch.Backbone.pretrained, a local .pdparams (never downloaded), is loaded by
    build_backbone."""
    from paddleclas.ppcls.arch import backbone as pc
    if not hasattr(pc, model):
        names = sorted(n for n in dir(pc) if n[:1].isupper())
        raise ConfigError(f"Arch.Backbone.model={model!r}: not a PaddleClas backbone; e.g. {names[:8]}")
    factory = getattr(pc, model)
    keys, complete = model_keys(factory)
    keys.discard("pretrained")  # ours is a local file, loaded by build_backbone; PaddleClas's would download
    note = "" if complete else (f"ppufo cannot tell from the source of PaddleClas's {model} where its **kwargs "
                                f"go, so only the parameters it could find are accepted")
    given = {"name": "PaddleClasBackbone", "model": model}
    refuse_unknown_keys({**given, **model_kwargs}, ["model", "pretrained", "img_size"] + sorted(keys),
                        what=f"PaddleClasBackbone {model}", note=note)
    net = factory(pretrained=False, **model_kwargs)
    dropped = [head for head in ("fc", "head", "out") if isinstance(getattr(net, head, None), nn.Linear)]
    for head in dropped:  # drop the classifier: features, not logits
        setattr(net, head, nn.Identity())
    with paddle.no_grad():
        net.eval()
        size = img_size or [64, 64]
        out_dim = int(net(paddle.zeros([1, 3] + list(size))).flatten(1).shape[1])
        net.train()
    return PaddleClasFeatures(net, out_dim, dropped)


@BACKBONES.register
def ResNet50(img_size=None):
    """PaddleClas ResNet50 (BatchNorm), for the heterogeneous-vs-homogeneous batch ablation."""
    return PaddleClasBackbone("ResNet50", img_size=img_size)
