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
