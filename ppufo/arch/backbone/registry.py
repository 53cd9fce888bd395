"""The BACKBONES registry (apart from the package __init__, so backbones can import it without a cycle)."""
import inspect

import yaml

from ...io.weights import load_weights
from ...utils.errors import ConfigError
from ...utils.logger import get_logger
from ...utils.registry import Registry

BACKBONES = Registry("backbone")
BUILDER_KEYS = ["pretrained"]  # taken here, for every backbone: the weights to start from


def build_backbone(cfg, **injected):
    """The backbone of an Arch.Backbone section; its ``pretrained`` weights (a local file) are
    loaded through the backbone's checkpoint_filter (the model classes themselves read no file)."""
    pretrained = None
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        pretrained = cfg.pop("pretrained", None)
        if cfg.get("name") in BACKBONES:
            params = inspect.signature(BACKBONES.get(cfg["name"])).parameters
            if not any(p.kind == p.VAR_KEYWORD for p in params.values()):  # else the backbone checks itself
                refuse_unknown_keys(cfg, named_parameters(BACKBONES.get(cfg["name"])) + BUILDER_KEYS)
    backbone = BACKBONES.build(cfg, where="Arch.Backbone", **injected)
    if pretrained:
        what = "Arch.Backbone.pretrained"
        loaded = load_weights(backbone, pretrained, what=what)
        get_logger().info(f"{what}: loaded {len(loaded.state)} backbone tensors from {loaded.path}; "
                          f"the heads start fresh")
    return backbone


def named_parameters(fn):
    """The names ``fn`` (or a class's __init__) takes as keywords, in order (no *args/**kwargs)."""
    return [n for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def refuse_unknown_keys(cfg, accepted, what=None, note=""):
    """ConfigError if the Arch.Backbone section ``cfg`` holds keys outside ``accepted``. Switching
    backbones with ``-o Arch.Backbone.name=X`` keeps the old backbone's keys in the section (an override
    sets one key): when the unknown keys belong to another registered backbone, say how to
    replace the whole section instead."""
    name = cfg["name"]
    unknown = sorted(set(cfg) - {"name"} - set(accepted))
    if not unknown:
        return
    msg = f"Arch.Backbone ({what or name}): unknown key(s) {unknown}; accepted: {list(accepted)}"
    if note:
        msg += f" ({note})"
    owners = [b for b in BACKBONES.names() if b != name and set(unknown) & set(named_parameters(BACKBONES.get(b)))]
    if owners:
        kept = {"name": name, **{k: v for k, v in cfg.items() if k in accepted}}
        flow = yaml.safe_dump(kept, default_flow_style=True, sort_keys=False, width=10 ** 6).strip()
        foreign = [k for k in unknown if any(k in named_parameters(BACKBONES.get(b)) for b in owners)]
        msg += (f". {', '.join(foreign)}: key(s) of another backbone ({', '.join(owners[:3])}"
                f"{', ...' if len(owners) > 3 else ''}) left in the section; '-o Arch.Backbone.name=...' "
                f"replaces only the name: replace the whole section instead, e.g. -o \"Arch.Backbone={flow}\"")
    raise ConfigError(msg)
