"""Weights into a model, through one entry: ``load_weights``.

A weights option names a file (read with the restricted unpickler of utils/safe_load, never
plain pickle) or a state dict is given. The model's ``checkpoint_filter(state, source)``, a pure
function in the style of timm's ``checkpoint_filter_fn``, maps what the file holds to the
model's own keys (a plain ViT's position grid resized, a plain ViT split into the supernet's
paths, the released UFO checkpoint renamed, a PaddleClas classifier dropped); weights a training
run starts from go through its ``pretrained_filter`` where it has one (a supernet takes an
All-in-One checkpoint there, not as its own). Then every key is checked against the model and
set. Errors name the option, the file and the keys.
"""
import os
from collections import namedtuple

from ..utils.checkpoint import apply_state, resolve_prefix, strip_prefix
from ..utils.errors import ConfigError
from ..utils.pointer import read_pointer
from ..utils.safe_load import load_state

Loaded = namedtuple("Loaded", "path raw state missing unexpected")
Loaded.__doc__ = """What load_weights did: the file read (or "the state dict"), the state as read
(``raw``) and as set after the model's filter (``state``), keys the model kept (``missing``)
and keys of the state it had no place for (``unexpected``)."""


def weights_file(path, what="weights"):
    """The file a weights option names: a checkpoint prefix (or one of its files) means
    <prefix>.pdparams, a pointer (<run>/latest, best_model) the .pdparams of the checkpoint it
    names (utils/checkpoint.resolve_prefix); a .pdmodel or any other existing file (e.g. the
    released UFO checkpoint allinone_vitlarge.pdmodel, a pickled state dict) is read as it is."""
    path = os.fspath(path)
    if path.endswith(".pdmodel") or (strip_prefix(path) == path and os.path.isfile(path)
                                     and read_pointer(path, what) is None):
        return path
    return resolve_prefix(path, what)[0] + ".pdparams"


def read_weights(source, what):
    """(state dict, file read) of a weights option such as Global.pretrained_model; a state
    dict given as ``source`` is returned as it is, as "the state dict"."""
    if isinstance(source, dict):
        return source, "the state dict"
    path = weights_file(source, what)
    return load_state(path, what), path


def backbone_part(state):
    """The backbone's weights in a state dict: its backbone.* part (a ppufo or released UFO
    checkpoint), else the whole dict (a plain ImageNet ViT) without its classifier (head.*)."""
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def filter_state(model, state, path, what, pretrained=False):
    """``state`` (read from ``path``) in ``model``'s keys, through its ``checkpoint_filter(state,
    path)`` (``pretrained``: its ``pretrained_filter`` if it has one; neither: as it is). A
    filter's refusal is prefixed with the option and the file."""
    name = "pretrained_filter" if pretrained and hasattr(model, "pretrained_filter") else "checkpoint_filter"
    if not hasattr(model, name):
        return state
    try:
        return getattr(model, name)(state, path)
    except ConfigError as e:
        raise ConfigError(f"{what}: {path}: {e}") from None


def load_weights(model, source, *, strict=True, what="weights", pretrained=False, report=True):
    """Read ``source`` (a weights option: checkpoint prefix, .pdparams, the released .pdmodel; or a
    state dict), map it through the model's filter (``pretrained``: the weights training starts
    from) and set it into ``model``. Shape mismatches always fail; missing/unexpected keys fail
    when ``strict``, else are logged (``report=False``: the caller reports them). Returns Loaded."""
    return _apply(model, *read_weights(source, what), strict, what, pretrained, report)


def load_model(build, source, *, what):
    """The model ``build(state)`` returns for the weights of ``source`` (e.g. with the class counts
    the state holds), with those weights loaded strictly."""
    raw, path = read_weights(source, what)
    model = build(raw)
    _apply(model, raw, path, True, what)
    return model


def _apply(model, raw, path, strict, what, pretrained=False, report=True):
    state = filter_state(model, raw, path, what, pretrained)
    missing, unexpected = apply_state(model, state, f"{what}: {path}", strict, report)
    return Loaded(path, raw, state, missing, unexpected)
