"""Checkpoints as PaddleClas writes them: <prefix>.pdparams / .pdopt / .pdstates.

Each file is written to a temporary name and renamed, .pdstates last, so a crash mid-save
never leaves a checkpoint that looks complete. .pdstates is JSON (iteration, best metric).
"""
import json
import os

import paddle

from .errors import ConfigError
from .logger import get_logger


def _atomic(write, path):
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def _rename_opt_state(state, mapping):
    """Optimizer state keys start with Paddle's generated parameter names (e.g.
    linear_3.w_0_velocity_0), which differ between model instances; swap in stable names."""
    out = {}
    names = sorted(mapping, key=len, reverse=True)
    for key, value in state.items():
        for n in names:
            if key.startswith(n + "_") or key == n:
                key = mapping[n] + key[len(n):]
                break
        out[key] = value
    return out


def _param_names(model):
    return {p.name: "@" + k for k, p in model.named_parameters()}


def save_checkpoint(prefix, model, optimizer=None, lr=None, states=None):
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    _atomic(lambda p: paddle.save(model.state_dict(), p), prefix + ".pdparams")
    if optimizer is not None:
        opt = {"optimizer": _rename_opt_state(optimizer.state_dict(), _param_names(model)),
               "lr": lr.state_dict() if lr is not None else {}}
        _atomic(lambda p: paddle.save(opt, p), prefix + ".pdopt")
    def write_states(p):
        with open(p, "w") as f:
            json.dump(states or {}, f, indent=1)
    _atomic(write_states, prefix + ".pdstates")


def strip_prefix(path):
    for ext in (".pdparams", ".pdopt", ".pdstates"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def read_states(prefix):
    prefix = strip_prefix(prefix)
    path = prefix + ".pdstates"
    if not os.path.isfile(path):
        raise ConfigError(f"Global.checkpoints: {path} not found (expected a checkpoint prefix "
                          f"such as output/latest, written by training)")
    with open(path) as f:
        return json.load(f)


def load_checkpoint(prefix, model, optimizer=None, lr=None):
    """Resume: model, optimizer and LR state must all be present; returns the states dict."""
    prefix = strip_prefix(prefix)
    states = read_states(prefix)
    load_weights(model, prefix + ".pdparams", strict=True)
    if optimizer is not None:
        if not os.path.isfile(prefix + ".pdopt"):
            raise ConfigError(f"Global.checkpoints: {prefix}.pdopt not found; cannot resume the optimizer")
        opt = paddle.load(prefix + ".pdopt")
        back = {v: k for k, v in _param_names(model).items()}
        optimizer.set_state_dict(_rename_opt_state(opt["optimizer"], back))
        if lr is not None and opt.get("lr"):
            lr.set_state_dict(opt["lr"])
    return states


def load_weights(model, path, strict=False):
    """Load a .pdparams into ``model``. Shape mismatches always fail; missing/unexpected keys
    fail when strict, else are logged."""
    path = path if path.endswith(".pdparams") else path + ".pdparams"
    if not os.path.isfile(path):
        raise ConfigError(f"weights file not found: {path}")
    state = paddle.load(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
           for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if bad:
        raise ConfigError(f"{path}: shape mismatch for {len(bad)} tensor(s): " + "; ".join(bad[:5]))
    if strict and (missing or unexpected):
        raise ConfigError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    if missing or unexpected:
        get_logger().warning(f"{path}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                             f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    model.set_state_dict({k: v for k, v in state.items() if k in own})
    return missing, unexpected
