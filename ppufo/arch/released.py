"""The released UFO All-in-One checkpoint (allinone_vitlarge.pdmodel) in ppufo's key names.

The reference saved ``state_dict()`` of its MultiTaskBatchFuse: the ViT under ``backbone.``,
whose names and layouts are ppufo's own, and per reference head ``heads.task<N>.bottleneck.0.*``:
a BatchNorm (eps 1e-5) on the final-LN class token, i.e. ppufo's BN neck without projection. It
holds no classifiers. Each ppufo task takes the neck of the head Global.released_heads names.
"""
import math
import re

from ..utils.checkpoint import format_problems, state_problems
from ..utils.config import RELEASED_HEADS
from ..utils.errors import ConfigError

REF_HEAD = re.compile(r"heads\.([^.]+)\.bottleneck\.")
EXPECTED = ("a ppufo checkpoint (backbone.*, heads.<task>.neck/classifier.*) or the released UFO "
            "checkpoint (backbone.*, heads.task1..task4.bottleneck.0.*)")
_CONFIG_KEYS = {"depth": "Arch.Backbone.depth", "width": "Arch.Backbone.embed_dim",
                "patch": "Arch.Backbone.patch_size", "positions": "Global.image_shape"}


def is_reference(state):
    """Whether ``state`` is in the reference's format (it has heads.<h>.bottleneck.* keys)."""
    return any(REF_HEAD.match(k) for k in state)


def reference_heads(state):
    return sorted({m.group(1) for m in map(REF_HEAD.match, state) if m})


def geometry(state, prefix="backbone."):
    """{depth, width, patch, positions} of the ViT stored under ``prefix`` (None: not found)."""
    blocks = {m.group(1) for m in (re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k) for k in state) if m}

    def dim(key, axis):
        return int(state[prefix + key].shape[axis]) if prefix + key in state else None
    return {"depth": len(blocks), "width": dim("cls_token", -1),
            "patch": dim("patch_embed.proj.weight", -1), "positions": dim("pos_embed", 1)}


def geometry_text(g):
    text = f"depth {g['depth']}, width {g['width']}, patch {g['patch']}, {g['positions']} positions"
    side = math.isqrt(g["positions"] - 1) if g["positions"] else 0
    if g["patch"] and side and side * side == g["positions"] - 1:
        text += f" ({side * g['patch']}x{side * g['patch']} images)"
    return text


def describe(state):
    """What a weights file holds, in words, for error messages."""
    if is_reference(state):
        return (f"a UFO reference checkpoint (backbone.*, heads {', '.join(reference_heads(state))}; "
                f"no classifiers) of {geometry_text(geometry(state))}")
    if any(k.startswith(("backbone.", "heads.")) for k in state):
        tasks = sorted({k.split(".")[1] for k in state if k.startswith("heads.")})
        clf = [t for t in tasks if f"heads.{t}.classifier.weight" in state]
        return f"a ppufo checkpoint (tasks {tasks}, classifiers for {clf}) of {geometry_text(geometry(state))}"
    if "patch_embed.proj.weight" in state:
        head = f", head.weight {list(state['head.weight'].shape)}" if "head.weight" in state else ""
        return (f"a PaddleClas ImageNet ViT state dict (keys like patch_embed.proj.weight{head}; no "
                f"backbone./heads. prefix) of {geometry_text(geometry(state, ''))}")
    return f"a state dict of {len(state)} entries in no known layout (first keys {sorted(state)[:3]})"


def check_format(state, source):
    """Refuse a file that is neither a ppufo nor a reference checkpoint, saying what it is."""
    if not is_reference(state) and not any(k.startswith(("backbone.", "heads.")) for k in state):
        hint = (f". A plain ViT initialises the backbone alone: Arch.Backbone.pretrained={source}"
                if "patch_embed.proj.weight" in state else "")
        raise ConfigError(f"is {describe(state)}; expected {EXPECTED}{hint}")


def head_mapping(given, tasks, file_heads):
    """{task: reference head} from Global.released_heads (``given``) over the defaults, checked
    against the file's heads."""
    unknown = sorted(set(given) - set(tasks) - set(RELEASED_HEADS))
    if unknown:
        raise ConfigError(f"Global.released_heads: {unknown} are not tasks of this config {tasks}")
    mapping = {**RELEASED_HEADS, **given}
    for t in tasks:
        if mapping.get(t) not in file_heads:
            raise ConfigError(f"Global.released_heads.{t}: {mapping.get(t)!r} is not a head of the released "
                              f"checkpoint; its heads: {file_heads} (e.g. -o Global.released_heads.{t}=task3)")
    return {t: mapping[t] for t in tasks}


def to_ppufo(state, model):
    """(``state`` renamed to ``model``'s keys, {task: reference head}): backbone.* as it is, each
    task's neck from the reference head its Global.released_heads (``model.released_heads``)
    names. One ConfigError lists every missing, unexpected or mis-shaped key; the classifiers,
    which the file never holds, may be missing. Pure: reads only shapes of ``model``."""
    mapping = head_mapping(model.released_heads, model.task_names, reference_heads(state))
    out, origin = rename(state, mapping)
    own = model.state_dict()
    problems = state_problems(out, own, optional=[k for k in own if ".classifier." in k])
    if any(problems):
        raise _misfit(state, out, own, problems, origin)
    return out, mapping


def rename(state, mapping):
    """(``state`` with each task's neck from the reference head ``mapping`` names, {new key: the
    file's key}); backbone.* as it is. Unchecked: to_ppufo checks an All-in-One model's keys, a
    supernet takes the backbone through its own filter (supernet.py)."""
    out = {k: v for k, v in state.items() if not k.startswith("heads.")}
    origin = {}
    for task, head in mapping.items():
        src = f"heads.{head}.bottleneck.0."
        for k, v in state.items():
            if k.startswith(src):
                out[f"heads.{task}.neck.bn.{k[len(src):]}"] = v
                origin[f"heads.{task}.neck.bn.{k[len(src):]}"] = k
            elif k.startswith(f"heads.{head}."):
                out[k] = v  # e.g. a projection layer: no ppufo equivalent, reported as unexpected
    return out, origin


def _misfit(state, converted, own, problems, origin):
    file_g, model_g = geometry(state), geometry(own)
    lines = [f"does not fit the config's model. The file is {describe(state)}; the "
             f"config's model has {geometry_text(model_g)}"]
    diffs = [(f"{file_g[k]} positions but the config has {model_g[k]}" if k == "positions" else
              f"{k} {file_g[k]} but the config has {k} {model_g[k]}") + f" ({_CONFIG_KEYS[k]})"
             for k in file_g if file_g[k] != model_g[k]]
    if diffs:
        lines.append("a reference checkpoint of " + ", ".join(diffs))
    lines.append(format_problems(converted, own, *problems, origin=origin))
    if any(k.endswith(".neck.fc.weight") for k in problems[0]):
        lines.append("the reference necks have no projection: leave Tasks.<task>.neck.feature_dim unset "
                     "(or equal to the backbone width)")
    return ConfigError("\n  ".join(lines))


def group_counts(keys):
    """'backbone 28, heads.face.neck 4, ...': tensors per model part."""
    counts = {}
    for k in keys:
        parts = k.split(".")
        group = ".".join(parts[:3]) if parts[0] == "heads" else parts[0]
        counts[group] = counts.get(group, 0) + 1
    return ", ".join(f"{g} {n}" for g, n in counts.items())
