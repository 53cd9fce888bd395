"""Optimizers from the ``Optimizer`` config section.

    Optimizer:
      name: SGD            # SGD | Momentum (same thing: paddle Momentum, or paddle SGD with momentum 0) | AdamW
      momentum: 0.9
      nesterov: false
      weight_decay: 1.0e-4 # coupled L2 for SGD/Momentum, decoupled for AdamW
      no_weight_decay: []  # substrings of parameter names exempt from decay
      clip_grad: {name: per_tensor, max_norm: 5.0}   # or global, or null
      lr: {name: WarmupCosine, learning_rate: 0.2, warmup_ratio: 0.1, eta_min: 0.004}

Per-group LR multipliers use Paddle parameter groups: a group's ``learning_rate`` is a
multiplier of the scheduler's LR (``Optimizer._create_param_lr``). Paddle overwrites each
parameter's ParamAttr ``learning_rate`` with its group's value, so the multiplier given here
is ``lr_mult * ParamAttr learning_rate`` (remembered from the first build).
Paddle clips each parameter group on its own; global-norm clipping over all groups is
therefore done here, in ``step()``, before the update, on the device (no host sync).
"""
import paddle

from ..utils.config import Field, check_args
from ..utils.errors import ConfigError
from ..utils.registry import Registry
from .lr import NONNEG, build_lr

OPTIMIZERS = Registry("optimizer")

COMMON_KEYS = ["name", "lr", "weight_decay", "no_weight_decay", "clip_grad"]
INJECTED = ("learning_rate", "parameters", "weight_decay", "grad_clip")
CLIP_KINDS = ("per_tensor", "global")
FRACTION = Field(float, min=0, max=1)


@paddle.no_grad()
def clip_grad_global_norm_(params, max_norm):
    """Scale all gradients in place so that their joint L2 norm is at most ``max_norm``
    (same rule as paddle.nn.ClipGradByGlobalNorm: g * max_norm / max(norm, max_norm)).
    Returns the norm before clipping, as a tensor: reading it would wait for the device."""
    grads = [p.grad for p in params
             if not p.stop_gradient and p.grad is not None and getattr(p, "need_clip", True)]
    if not grads:
        return None
    norm = paddle.sqrt(paddle.add_n([paddle.sum(paddle.square(g.astype("float32"))) for g in grads]))
    factor = max_norm / paddle.clip(norm, min=max_norm)
    for g in grads:
        g.multiply_(factor.astype(g.dtype))
    return norm


class GlobalClipMixin:
    """Adds global-norm clipping across all parameter groups to a paddle optimizer (which keeps
    its groups private: the parameters are remembered here)."""
    global_clip_norm = None
    last_grad_norm = None

    def __init__(self, *args, parameters, **kwargs):
        self.clip_params = [p for g in parameters for p in (g["params"] if isinstance(g, dict) else [g])]
        super().__init__(*args, parameters=parameters, **kwargs)

    def step(self):
        if self.global_clip_norm is not None:
            self.last_grad_norm = clip_grad_global_norm_(self.clip_params, self.global_clip_norm)
        super().step()


class MomentumOptimizer(GlobalClipMixin, paddle.optimizer.Momentum):
    pass


class SGDOptimizer(GlobalClipMixin, paddle.optimizer.SGD):
    pass


class AdamWOptimizer(GlobalClipMixin, paddle.optimizer.AdamW):
    pass


@OPTIMIZERS.register
@check_args(momentum=FRACTION, nesterov=Field(bool))
def SGD(learning_rate, parameters, weight_decay, grad_clip, momentum=0.9, nesterov=False):
    """SGD with (optionally Nesterov) momentum and coupled L2 decay: v = mu*v + g + wd*p;
    p -= lr * v. The UFO reference uses momentum 0: then plain paddle SGD, p -= lr * (g + wd*p),
    without a velocity buffer per parameter (Nesterov changes nothing at momentum 0)."""
    if momentum == 0:
        return SGDOptimizer(learning_rate=learning_rate, parameters=parameters,
                            weight_decay=weight_decay, grad_clip=grad_clip)
    return MomentumOptimizer(learning_rate=learning_rate, momentum=momentum, parameters=parameters,
                             use_nesterov=nesterov, weight_decay=weight_decay, grad_clip=grad_clip)


OPTIMIZERS.register(SGD, name="Momentum")


@OPTIMIZERS.register
@check_args(beta1=FRACTION, beta2=FRACTION, epsilon=NONNEG)
def AdamW(learning_rate, parameters, weight_decay, grad_clip, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """AdamW with decoupled decay (p -= lr * wd * p)."""
    return AdamWOptimizer(learning_rate=learning_rate, parameters=parameters,
                          beta1=beta1, beta2=beta2, epsilon=epsilon, weight_decay=weight_decay,
                          grad_clip=grad_clip)


def _accepted(fn):
    import inspect
    extra = [n for n in inspect.signature(fn).parameters if n not in INJECTED]
    return COMMON_KEYS + extra


def build_clip(cfg, where="Optimizer.clip_grad"):
    """``null`` | ``{name: per_tensor|global, max_norm}`` -> (paddle per-tensor clip or None,
    global max norm or None)."""
    if cfg is None:
        return None, None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected null or {{name: per_tensor|global, max_norm: 5.0}}, got {cfg!r}")
    unknown = sorted(set(cfg) - {"name", "max_norm"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; accepted: ['name', 'max_norm']")
    kind = cfg.get("name", "per_tensor")
    if kind not in CLIP_KINDS:
        raise ConfigError(f"{where}.name: expected one of {list(CLIP_KINDS)}, got {kind!r}")
    max_norm = Field(float, above=0).check(cfg.get("max_norm", 5.0), f"{where}.max_norm")
    if kind == "per_tensor":
        return paddle.nn.ClipGradByNorm(max_norm), None
    return None, max_norm


def make_param_groups(param_groups, weight_decay, no_weight_decay=(), model=None):
    """Regroup ``[{"params": [...], "lr_mult": m}]`` into Paddle groups keyed by (effective LR
    multiplier, decayed or not). ``params`` items are parameters or ``(name, parameter)``;
    names for ``no_weight_decay`` come from there, from ``model.named_parameters()`` or
    else the parameter's own ``.name``."""
    if isinstance(param_groups, (list, tuple)) and param_groups and not isinstance(param_groups[0], dict):
        param_groups = [{"params": list(param_groups)}]
    if not isinstance(param_groups, (list, tuple)) or not param_groups:
        raise ValueError("build_optimizer: param_groups must be a non-empty list of {'params': [...], 'lr_mult': m}")
    names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
    merged, seen = {}, {}
    for i, group in enumerate(param_groups):
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"param_groups[{i}]: expected {{'params': [...], 'lr_mult': m}}, got {type(group).__name__}")
        extra = sorted(set(group) - {"params", "lr_mult"})
        if extra:
            raise ValueError(f"param_groups[{i}]: unknown key(s) {extra}; accepted: ['params', 'lr_mult']")
        mult = NONNEG.check(group.get("lr_mult", 1.0), f"param_groups[{i}].lr_mult")
        for item in group["params"]:
            name, p = item if isinstance(item, tuple) else (names.get(id(item)), item)
            label = name or p.name
            if id(p) in seen:
                raise ValueError(f"parameter {label} is in param_groups[{seen[id(p)]}] and param_groups[{i}]")
            seen[id(p)] = i
            attr_lr = getattr(p, "_ppufo_attr_lr", None)
            if attr_lr is None:  # the ParamAttr multiplier, before any optimizer overwrote it
                attr_lr = float(p.optimize_attr.get("learning_rate", 1.0))
                p._ppufo_attr_lr = attr_lr
            decay = not any(s in label or s in p.name for s in no_weight_decay)
            merged.setdefault((mult * attr_lr, decay), []).append(p)
    if not merged:
        raise ValueError("build_optimizer: no parameters to optimise")
    return [{"params": ps, "learning_rate": m, "weight_decay": weight_decay if decay else 0.0}
            for (m, decay), ps in merged.items()]


def build_optimizer(cfg, param_groups, max_iters, model=None, where="Optimizer"):
    """Optimizer section + ``[{"params": [...], "lr_mult": m}]`` -> (optimizer, lr_scheduler).
    The scheduler is stepped once per iteration by the caller."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a mapping with name, lr, ..., got {cfg!r}")
    cfg = dict(cfg)
    name = cfg.pop("name", "SGD")
    if name not in OPTIMIZERS:
        raise ConfigError(f"{where}.name: unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS.names())}")
    factory = OPTIMIZERS.get(name)
    accepted = _accepted(factory)
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {name}; accepted: {accepted}")
    if cfg.get("lr") is None:
        raise ConfigError(f"{where}.lr: missing; e.g. {{name: WarmupCosine, learning_rate: 0.2, warmup_ratio: 0.1}}")
    scheduler = build_lr(cfg.pop("lr"), max_iters, where=f"{where}.lr")
    weight_decay = NONNEG.check(cfg.pop("weight_decay", 1e-4), f"{where}.weight_decay")
    no_wd = cfg.pop("no_weight_decay", None) or []
    if isinstance(no_wd, str):
        no_wd = no_wd.split()  # PaddleClas style: whitespace-separated
    if not isinstance(no_wd, (list, tuple)) or not all(isinstance(s, str) and s for s in no_wd):
        raise ConfigError(f"{where}.no_weight_decay: expected a list of parameter-name substrings, got {no_wd!r}")
    per_tensor, global_norm = build_clip(cfg.pop("clip_grad", None), f"{where}.clip_grad")
    groups = make_param_groups(param_groups, weight_decay, no_wd, model)
    try:
        opt = factory(learning_rate=scheduler, parameters=groups, weight_decay=weight_decay,
                      grad_clip=per_tensor, **cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}.{e}") from None
    opt.global_clip_norm = global_norm
    return opt, scheduler
