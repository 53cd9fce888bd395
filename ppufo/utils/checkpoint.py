"""Checkpoints as PaddleClas writes them: <prefix>.pdparams / .pdopt / .pdstates, saved and
loaded as one unit.

A save writes every file under a temporary name, hashing the bytes as they go out (nothing is
read back), and fsyncs it; .pdstates (JSON: iteration, best metric, ...) comes last and records
the size and sha256 of the files it belongs with (``files``). The files are then renamed into
place, .pdstates last. A kill mid-save leaves either the previous checkpoint or files that
disagree with .pdstates, which loading refuses (naming the newest complete iter_* checkpoint)
rather than resume from a mix of two saves. The .pdopt also holds the LR schedule and, under
float16 AMP, the GradScaler's state.

Training writes iter_<n> checkpoints; ``latest`` and ``best_model`` are pointer files naming one
(utils/pointer.py). Every prefix a user gives goes through resolve_prefix: a pointer resolves to
the checkpoint it names, anything else (iter_<n>, the full latest.* / best_model.* sets of
earlier versions, an extracted model) is its own prefix. Where a pointer and a full set of one
name both exist, the pointer wins: writing a pointer deletes the set after it, and a full save of
the name deletes the pointer after it, so both exist only if a kill falls between the two (then
the pointer, the older of them when a full best_model was being saved, names a complete save).
"""
import hashlib
import io
import json
import os
import re
import shutil
import warnings

import numpy as np
import paddle

from .errors import ConfigError
from .logger import get_logger
from .pointer import POINTERS, TEMP as POINTER_TEMP, fsync_dir, pointed_at, read_pointer, write_pointer
from .safe_load import ChecksumError, load_state

PARTS = (".pdparams", ".pdopt")
_TEMP = re.compile(r".+\.(pdparams|pdopt|pdstates)\.tmp(\d+)")


def _rename_opt_state(state, mapping):
    """Optimizer state keys start with Paddle's generated parameter names (e.g.
    linear_3.w_0_velocity_0), which differ between model instances; swap in stable names.
    The fp32 master weights of AMP O2 are a dict keyed by parameter name."""
    out = {}
    names = sorted(mapping, key=len, reverse=True)
    for key, value in state.items():
        if key == "master_weights" and isinstance(value, dict):
            value = _rename_opt_state(value, mapping)
        for n in names:
            if key.startswith(n + "_") or key == n:
                key = mapping[n] + key[len(n):]
                break
        out[key] = value
    return out


_VELOCITY = re.compile(r".+_velocity_\d+")


def _fit_opt_state(state, optimizer, prefix):
    """Drop momentum buffers an optimizer without momentum would keep forever (Paddle holds
    state it does not use and saves it again). They come from checkpoints written with
    Momentum(momentum=0), where the buffer only held the last gradient: nothing is lost."""
    if isinstance(optimizer, paddle.optimizer.Momentum):
        return state
    dropped = [k for k in state if _VELOCITY.fullmatch(k)]
    if dropped:
        get_logger().info(f"{prefix}.pdopt: {len(dropped)} momentum buffers dropped ({type(optimizer).__name__} "
                          f"keeps none; saved with momentum 0, they held only the last gradient)")
    return {k: v for k, v in state.items() if not _VELOCITY.fullmatch(k)}


def scaler_state(scaler):
    """A GradScaler's state as plain numbers ({} for none or a disabled one)."""
    if scaler is None or not scaler.is_enable():
        return {}
    state = scaler.state_dict()
    return dict(state, scale=float(state["scale"][0]))


def set_scaler_state(scaler, state):
    scaler.load_state_dict(dict(state, scale=np.array([state["scale"]], np.float32)))


def _param_names(model):
    return {p.name: "@" + k for k, p in model.named_parameters()}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class _HashingWriter(io.BytesIO):
    """paddle.save writes to a path or a BytesIO (it checks isinstance; paddle/framework/io.py);
    this one keeps nothing: every write goes on to the open file ``f`` and into a sha256, so a
    save's hash costs no read-back of what it wrote."""

    def __init__(self, f):
        super().__init__()
        self.f, self.h, self.size = f, hashlib.sha256(), 0

    def write(self, data):
        self.h.update(data)
        self.size += memoryview(data).nbytes
        return self.f.write(data)

    def writelines(self, lines):  # BytesIO's own would bypass write()
        for line in lines:
            self.write(line)


def _write_part(obj, path):
    """paddle.save ``obj`` to ``path``, fsynced; returns its {"size", "sha256"}, hashed as written."""
    with open(path, "wb") as f:
        out = _HashingWriter(f)
        paddle.save(obj, out)
        if out.getbuffer().nbytes or f.tell() != out.size:  # a Paddle that wrote past write()
            raise RuntimeError(f"{path}: paddle.save wrote {f.tell()} bytes through write(), "
                               f"{out.getbuffer().nbytes} around it: the sha256 would not cover the file")
        f.flush()
        os.fsync(f.fileno())
    return {"size": out.size, "sha256": out.h.hexdigest()}


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return pid > 0


def remove_stale_temporaries(folder):
    """Delete checkpoint temporaries (<prefix>.<ext>.tmp<pid>) of processes that no longer exist
    or older than the newest finished save (a .pdstates is renamed last, so its mtime marks one)."""
    names = os.listdir(folder)
    done = max((os.path.getmtime(os.path.join(folder, n)) for n in names if n.endswith(".pdstates")),
               default=float("-inf"))
    for n in names:
        m = _TEMP.fullmatch(n) or POINTER_TEMP.fullmatch(n)
        path = os.path.join(folder, n)
        try:
            if m and (not _pid_alive(int(m.group(m.lastindex))) or os.path.getmtime(path) < done):
                os.remove(path)
                get_logger().info(f"removed {path}, left by an interrupted checkpoint save")
        except FileNotFoundError:
            pass


def save_checkpoint(prefix, model, optimizer=None, lr=None, states=None, scaler=None):
    """Write <prefix>.pdparams (+ .pdopt with an optimizer, and the state of an enabled
    GradScaler ``scaler``) and .pdstates as one unit, each byte once (hashed as written).
    ``model``: a Layer, or (weights only) the state dict to write. A pointer file of the same
    name (latest, best_model) is deleted once the set is complete: the set replaces it."""
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    parts = {".pdparams": model if isinstance(model, dict) else model.state_dict()}
    if optimizer is not None:
        parts[".pdopt"] = {"optimizer": _rename_opt_state(optimizer.state_dict(), _param_names(model)),
                           "lr": lr.state_dict() if lr is not None else {}}
        scaling = scaler_state(scaler)
        if scaling:
            parts[".pdopt"]["scaler"] = scaling
    temps, files = {}, {}
    try:
        for ext, obj in parts.items():
            temps[ext] = f"{prefix}{ext}.tmp{os.getpid()}"
            files[ext] = _write_part(obj, temps[ext])
        _install(prefix, temps, dict(states or {}, files=files))
    finally:
        for tmp in temps.values():  # the save failed: nothing of it stays behind
            if os.path.exists(tmp):
                os.remove(tmp)


def _install(prefix, temps, states):
    """Rename the fsynced data temporaries ``temps`` ({ext: path}; each renamed is dropped from it)
    to ``prefix``, then write and rename .pdstates (``states``) last. A .pdopt of an earlier save
    that is not part of this one goes; so does a pointer of the same name: the set replaces it."""
    folder = os.path.dirname(os.path.abspath(prefix))
    temps[".pdstates"] = f"{prefix}.pdstates.tmp{os.getpid()}"
    with open(temps[".pdstates"], "w") as f:
        json.dump(states, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for ext in PARTS:
        if ext in temps:
            os.replace(temps.pop(ext), prefix + ext)
        elif ext == ".pdopt" and os.path.exists(prefix + ext):
            os.remove(prefix + ext)
    fsync_dir(folder)  # the data renames are durable before .pdstates names them
    os.replace(temps.pop(".pdstates"), prefix + ".pdstates")
    fsync_dir(folder)
    if os.path.basename(prefix) in POINTERS and os.path.isfile(prefix):
        os.remove(prefix)


def detach(folder, name):
    """Make pointer ``folder``/``name`` a full set of its own, a copy of the checkpoint it names
    (with the pointer's ``best``), before that checkpoint is written again (a run resumed from an
    earlier one, or another run in the folder, reaching the same iteration). The copy reads and
    writes the checkpoint once more: only then. Returns the checkpoint copied, or None."""
    prefix, rec = resolve_prefix(os.path.join(folder, name), name)
    if rec is None:
        return None
    states = _parse_states(prefix, name)
    temps = {}
    try:
        for ext in states.get("files") or PARTS:
            if os.path.isfile(prefix + ext):
                temps[ext] = os.path.join(folder, f"{name}{ext}.tmp{os.getpid()}")
                shutil.copyfile(prefix + ext, temps[ext])
                with open(temps[ext], "rb+") as f:
                    os.fsync(f.fileno())
        _install(os.path.join(folder, name), temps, dict(states, **({"best": rec["best"]} if "best" in rec else {})))
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
    return prefix


def remove_set(prefix):
    """Delete the files of checkpoint ``prefix``, .pdstates first (a deletion cut short leaves
    files that read as incomplete)."""
    for ext in (".pdstates",) + PARTS:
        try:
            os.remove(prefix + ext)
        except FileNotFoundError:
            pass


def point(folder, name, iteration, **extra):
    """Point ``folder``/``name`` (latest, best_model) at the complete iter_<iteration> there, then
    delete a full ``name`` set an earlier version or save wrote: the pointer replaces it.
    ``extra``: more of the record (best_model's ``best``)."""
    target = f"iter_{iteration}"
    if not os.path.isfile(os.path.join(folder, target + ".pdstates")):  # its .pdstates is renamed last
        raise RuntimeError(f"{name}: {folder}/{target} is not a complete checkpoint to point at")
    write_pointer(folder, name, target, iteration, **extra)
    remove_set(os.path.join(folder, name))


def strip_prefix(path):
    for ext in (".pdparams", ".pdopt", ".pdstates"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def _parse_states(prefix, what):
    path = prefix + ".pdstates"
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: {path} not found (expected a checkpoint prefix "
                          f"such as output/latest, written by training)")
    try:
        with open(path, "rb") as f:
            states = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what}: {path}: not a readable checkpoint states file "
                          f"({os.path.getsize(path)} bytes; {e})") from None
    files = states.get("files") if isinstance(states, dict) else None
    ok = (isinstance(states, dict) and type(states.get("iteration")) is int
          and (files is None or isinstance(files, dict) and files and all(
              ext in PARTS and isinstance(r, dict) and type(r.get("size")) is int
              and isinstance(r.get("sha256"), str) for ext, r in files.items())))
    if not ok:
        raise ConfigError(f"{what}: {path}: expected a JSON object with an integer 'iteration' and "
                          f"'files' {{'.pdparams': {{'size', 'sha256'}}, ...}}")
    return states


def _problems(prefix, files, hashes):
    """What differs between the files on disk and the ``files`` record of their .pdstates."""
    out = []
    for ext, rec in files.items():
        path = prefix + ext
        if not os.path.isfile(path):
            out.append(f"{path} is missing")
        elif os.path.getsize(path) != rec["size"]:
            out.append(f"{path} has {os.path.getsize(path)} bytes, {rec['size']} recorded")
        elif hashes and _sha256(path) != rec["sha256"]:
            out.append(f"{path} has a different sha256 than recorded")
    return out


def newest_complete(folder, exclude=None):
    """(prefix, iteration) of the highest iter_N in ``folder`` whose files match its .pdstates."""
    found = []
    for n in os.listdir(folder):
        m = re.fullmatch(r"iter_(\d+)\.pdstates", n)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, n[: -len(".pdstates")])))
    for _, prefix in sorted(found, reverse=True):
        if exclude and os.path.abspath(prefix) == os.path.abspath(exclude):
            continue
        try:
            states = _parse_states(prefix, "")
        except ConfigError:
            continue
        if states.get("files") and not _problems(prefix, states["files"], hashes=True):
            return prefix, states["iteration"]
    return None


def saved_checkpoints(folder):
    """Names of the checkpoints (<name>.pdstates) and pointers (latest, best_model) in ``folder``,
    sorted; [] when it does not exist."""
    if not os.path.isdir(folder):
        return []
    names = {n[: -len(".pdstates")] for n in os.listdir(folder) if n.endswith(".pdstates")}
    return sorted(names | set(pointed_at(folder)))


def check_output_dir(folder, overwrite):
    """Refuse to train a new run into a folder that holds another run's checkpoints: its latest
    and best_model would be replaced by this run's (Global.overwrite_output_dir lets it go on)."""
    found = saved_checkpoints(folder)
    if not found or overwrite:
        return
    latest = ""
    if "latest" in found:
        try:
            latest = f", latest at iteration {read_states(os.path.join(folder, 'latest'), '')['iteration']}"
        except ConfigError:
            pass
    raise ConfigError(
        f"Global.output_dir={folder} already holds the checkpoints of another run ({', '.join(found)}{latest}); "
        f"a new run would replace them. Resume that run with -o Global.checkpoints={os.path.join(folder, 'latest')}, "
        f"train into another folder with -o Global.output_dir=..., or pass -o Global.overwrite_output_dir=true "
        f"to train here anyway (best_model is then replaced only by a better score than its own)")


def saved_best(folder):
    """{"score", "iteration"} recorded with ``folder``/best_model, or None (none, or unreadable)."""
    try:
        best = read_states(os.path.join(folder, "best_model"), "best_model").get("best")
    except ConfigError:
        return None
    return best if isinstance(best, dict) and isinstance(best.get("score"), (int, float)) else None


def _incomplete(prefix, states, what):
    problems = _problems(prefix, states["files"], hashes=True) or ["a file changed while loading"]
    folder = os.path.dirname(os.path.abspath(prefix))
    good = newest_complete(folder, exclude=prefix)
    hint = (f"the newest complete checkpoint there is {good[0]} (iteration {good[1]}): resume with "
            f"Global.checkpoints={good[0]}" if good else f"{folder} holds no complete iter_* checkpoint")
    return ConfigError(f"{what}: {prefix} is not one complete checkpoint: {'; '.join(problems)} "
                       f"(against {prefix}.pdstates, iteration {states['iteration']}). A save was "
                       f"interrupted or files of different saves were mixed; not loading it. "
                       f"{hint[0].upper()}{hint[1:]}")


def resolve_prefix(prefix, what="Global.checkpoints"):
    """(checkpoint prefix, pointer record or None) that ``prefix`` names. A pointer file (latest,
    best_model) resolves to the checkpoint it names in its own folder, whose files must be there
    with their recorded sizes; any other prefix is its own. A .pdparams/.pdopt/.pdstates ending is
    dropped first, so <dir>/latest.pdparams still means <dir>/latest."""
    prefix = strip_prefix(os.fspath(prefix))
    rec = read_pointer(prefix, what)
    if rec is None:
        return prefix, None
    target = os.path.join(os.path.dirname(prefix), rec["checkpoint"])
    if not os.path.isfile(target + ".pdstates"):
        good = newest_complete(os.path.dirname(os.path.abspath(prefix)))
        raise ConfigError(f"{what}: {prefix} points to {target} (iteration {rec['iteration']}), but "
                          f"{target}.pdstates is not there: deleted, or the pointer was copied without "
                          f"the files it names. " + (f"The newest complete checkpoint there is {good[0]} "
                                                     f"(iteration {good[1]})" if good else
                                                     "Its folder holds no complete iter_* checkpoint"))
    states = _parse_states(target, what)
    if states["iteration"] != rec["iteration"]:
        raise ConfigError(f"{what}: {prefix} points to {target} at iteration {rec['iteration']}, but "
                          f"{target}.pdstates is of iteration {states['iteration']}")
    if states.get("files") and _problems(target, states["files"], hashes=False):
        raise _incomplete(target, states, what)
    return target, rec


def has_checkpoint(prefix):
    """Whether ``prefix`` (e.g. <run>/latest) names a checkpoint that is there."""
    try:
        return os.path.isfile(resolve_prefix(prefix, "checkpoint")[0] + ".pdstates")
    except ConfigError:
        return False


def read_states(prefix, what="Global.checkpoints"):
    """The .pdstates of the checkpoint ``prefix`` names (resolve_prefix), after checking its files
    are there with the recorded sizes (their hashes are checked as they load). Through
    best_model's pointer, ``best`` is the pointer's: the score that made that checkpoint best."""
    prefix, pointer = resolve_prefix(prefix, what)
    states = _parse_states(prefix, what)
    if "files" not in states:
        get_logger().warning(f"{prefix}.pdstates has no checksums (written by an older ppufo): "
                             f"cannot verify that {prefix}.pdparams/.pdopt belong to the same save")
    elif _problems(prefix, states["files"], hashes=False):
        raise _incomplete(prefix, states, what)
    if pointer is not None and "best" in pointer:
        states["best"] = pointer["best"]
    return states


def _load_part(prefix, ext, states, what):
    files = states.get("files")
    if files is not None and ext not in files:
        raise ConfigError(f"{what}: {prefix}.pdstates lists no {ext} (a weights-only checkpoint, "
                          f"e.g. an extracted subnet): cannot resume from it; use "
                          f"Global.pretrained_model to start from its weights")
    if not os.path.isfile(prefix + ext):
        raise ConfigError(f"{what}: {prefix}{ext} not found" + ("; cannot resume the optimizer"
                                                                if ext == ".pdopt" else ""))
    try:
        return load_state(prefix + ext, what, sha256=files[ext]["sha256"] if files else None)
    except ChecksumError:
        raise _incomplete(prefix, states, what) from None


def load_checkpoint(prefix, model, optimizer=None, lr=None, what="Global.checkpoints", states=None,
                    scaler=None):
    """Resume: model, optimizer and LR state must all be present and of one save; returns the
    states dict (``states``: what read_states already returned, so it is not read twice).
    An enabled GradScaler ``scaler`` gets its saved state (a save without one leaves it at its
    initial state, with a warning). Nothing is applied unless every file verifies. ``prefix``
    may be a pointer (latest): the checkpoint it names is loaded."""
    prefix = resolve_prefix(prefix, what)[0]
    states = states if states is not None else read_states(prefix, what)
    weights = _load_part(prefix, ".pdparams", states, what)
    opt = _load_part(prefix, ".pdopt", states, what) if optimizer is not None else None
    if opt is not None and not isinstance(opt.get("optimizer"), dict):
        raise ConfigError(f"{what}: {prefix}.pdopt: expected a dict with 'optimizer' and 'lr' states")
    apply_state(model, weights, prefix + ".pdparams", strict=True)
    if opt is not None:
        back = {v: k for k, v in _param_names(model).items()}
        optimizer.set_state_dict(_fit_opt_state(_rename_opt_state(opt["optimizer"], back), optimizer, prefix))
        if lr is not None and opt.get("lr"):
            lr.set_state_dict(opt["lr"])
        if scaler is not None and scaler.is_enable():
            if opt.get("scaler"):
                set_scaler_state(scaler, opt["scaler"])
            else:
                get_logger().warning(f"{prefix}.pdopt holds no loss-scaler state (saved without float16 "
                                     f"AMP): the GradScaler starts at its initial scale")
    return states


def prune_checkpoints(folder, keep):
    """Delete all but the newest ``keep`` iter_<n> checkpoints in ``folder``, each with all its
    files (remove_set), except those latest and best_model point to; a full latest or best_model
    set and other files stay. Returns the deleted prefixes."""
    found = {}
    for n in os.listdir(folder):
        m = re.fullmatch(r"iter_(\d+)\.(pdparams|pdopt|pdstates)", n)
        if m:
            found.setdefault(int(m.group(1)), []).append(n)
    kept = set(pointed_at(folder).values())
    removed = []
    for it in sorted(found, reverse=True)[keep:]:
        if f"iter_{it}" not in kept:
            remove_set(os.path.join(folder, f"iter_{it}"))
            removed.append(os.path.join(folder, f"iter_{it}"))
    return removed


def state_problems(state, own, optional=()):
    """(missing, unexpected, mis-shaped) keys of ``state`` against a model's state dict ``own``;
    keys in ``optional`` may be missing. Only shapes are read."""
    missing = sorted(set(own) - set(state) - set(optional))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in own if k in state and list(state[k].shape) != list(own[k].shape))
    return missing, unexpected, bad


def format_problems(state, own, missing, unexpected, bad, limit=8, origin=None):
    """One line per kind of problem, each key with its shape(s); at most ``limit`` keys a line.
    ``origin``: {key: the file's name for it} where keys were renamed."""
    origin = origin or {}

    def listing(keys, text):
        more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(k + (f" ({origin[k]})" if k in origin else "") + " " + text(k)
                         for k in keys[:limit]) + more
    lines = []
    if missing:
        lines.append(f"missing {len(missing)}: " + listing(missing, lambda k: f"{list(own[k].shape)}"))
    if unexpected:
        lines.append(f"unexpected {len(unexpected)}: " + listing(unexpected, lambda k: f"{list(state[k].shape)}"))
    if bad:
        lines.append(f"mis-shaped {len(bad)}: " + listing(
            bad, lambda k: f"file {list(state[k].shape)}, model {list(own[k].shape)}"))
    return "\n  ".join(lines)


def apply_state(model, state, path, strict=False, report=True):
    """Set ``state`` (loaded from ``path``) into ``model``. Shape mismatches always fail;
    missing/unexpected keys fail when strict, else are logged once here (``report=False``: by the
    caller; Paddle's own warning per missing key is silenced). The check under every weights
    load: a resume's (load_checkpoint) and io.weights.load_weights's, after the model's filter."""
    own = model.state_dict()
    missing, unexpected, bad = state_problems(state, own)
    if bad or (strict and (missing or unexpected)):
        raise ConfigError(f"{path}: does not fit the model:\n  "
                          + format_problems(state, own, missing if strict else [],
                                            unexpected if strict else [], bad))
    if report and (missing or unexpected):
        get_logger().warning(f"{path}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                             f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skip loading for ", category=UserWarning)
        model.set_state_dict({k: v for k, v in state.items() if k in own})
    return missing, unexpected
