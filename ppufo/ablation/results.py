"""A run's result file (<run_dir>/result.json, the worker's last write) and the scores in it."""
import json
import os

RESULT = "result.json"


def write_json_atomic(path, data, sort_keys=False):
    """``data`` as JSON into ``path`` through a temporary file in the same folder, fsynced and
    renamed into place: a reader sees the old file or the complete new one, never a part."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=sort_keys, default=float)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_result(run_dir):
    """The run's result dict, or None when it has not finished."""
    path = os.path.join(run_dir, RESULT)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def numbers_of(summary, sets):
    """{set: {key: number}} of the compared sets in an Evaluator summary (counts included)."""
    out = {}
    for r in summary["sets"]:
        if r["set"] in sets:
            out[r["set"]] = {k: float(v) for k, v in r.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seconds"}
    missing = [s for s in sets if s not in out]
    if missing:
        raise RuntimeError(f"the evaluation has no result for set(s) {missing}")
    return out


def open_derived_run(spec, log_name, extra=()):
    """A derived run's start: its source's finished result, the source's config pointed at this run
    (its checkpoint as pretrained_model, no resume) plus ``extra`` overrides, written into the run's
    folder, with the run's logger and device set up. Returns (source result, config, logger)."""
    from ..utils.config import dump_config, load_config
    from ..utils.device import setup_device
    from ..utils.logger import init_logger
    src_dir, run_dir = spec["source_dir"], spec["run_dir"]
    source = read_result(src_dir)
    if source is None:
        raise RuntimeError(f"{src_dir}: the source run has not finished (no {RESULT})")
    config = load_config(os.path.join(src_dir, "config.yaml"),
                         [f"Global.output_dir={run_dir}", f"Global.pretrained_model={os.path.join(src_dir, 'latest')}",
                          "Global.checkpoints=null", f"Global.cpu_threads={spec['cpu_threads']}", *extra])
    log = init_logger(os.path.join(run_dir, log_name))
    setup_device(config)
    dump_config(config, os.path.join(run_dir, "config.yaml"))
    return source, config, log
