"""A stand-in for `python -m ppufo.ablation.worker` in the study tests: no Paddle, fixed scores.

Scores, of the spec's sets only (those the run's config holds): set Market1501 rank1 = BASE[arm] +
SLOPE[arm] * seed (mAP = rank1 / 2), SOP recall@1 = SOP_BASE[arm] + SOP_SLOPE[arm] * seed (0.3 +
0.01 * seed unless listed). Environment knobs: FAKE_COUNTER (file: one line "start|end arm seed time
omp_threads" per event), FAKE_SLEEP (seconds before the result: "0.5", or per arm "a=1.5,b=0.2"), FAKE_FAIL ("arm:seed" exits 3).
"""
import json
import os
import sys
import time

from ppufo.ablation.worker import RESULT, hold_running_lock, read_result, write_json_atomic

BASE = {"a": 0.5, "b": 0.4, "c": 0.45, "d": 0.5, "p": 0.42, "pd": 0.42}
SLOPE = {"a": 0.1, "b": 0.05, "c": 0.0, "d": 0.1, "p": 0.07, "pd": 0.07}
SOP_BASE, SOP_SLOPE = {"s": 0.27}, {"s": 0.02}  # SOP recall@1 of the arms not listed: 0.3 + 0.01 * seed


def note(event, spec):
    path = os.environ.get("FAKE_COUNTER")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {spec['arm']} {spec['seed']} {time.time():.3f} "
                    f"{os.environ.get('OMP_NUM_THREADS', '-')}\n")


def sleep_of(arm):
    """FAKE_SLEEP: seconds for every arm ("0.5"), or per arm ("a=1.5,b=0.2"; others 0)."""
    text = os.environ.get("FAKE_SLEEP", "0")
    if "=" not in text:
        return float(text)
    return float(dict(kv.split("=") for kv in text.split(",")).get(arm, 0))


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    lock = hold_running_lock(spec["run_dir"])
    note("start", spec)
    print(f"fake worker {spec['arm']} seed {spec['seed']}", flush=True)
    if spec["kind"] == "precise_bn" and read_result(spec["source_dir"]) is None:
        sys.exit("source run not finished")
    time.sleep(sleep_of(spec["arm"]))
    if os.environ.get("FAKE_FAIL") == f"{spec['arm']}:{spec['seed']}":
        print("boom: the fake worker failed on purpose", flush=True)
        sys.exit(3)
    arm, seed = spec["arm"], spec["seed"]
    r1 = BASE.get(arm, 0.0) + SLOPE.get(arm, 0.0) * seed
    r_sop = SOP_BASE.get(arm, 0.3) + SOP_SLOPE.get(arm, 0.01) * seed
    scores = {"Market1501": {"rank1": r1, "mAP": r1 / 2, "score": r1},
              "SOP": {"recall@1": r_sop, "score": r_sop}}
    scores = {s: v for s, v in scores.items() if s in spec["sets"]}
    write_json_atomic(os.path.join(spec["run_dir"], RESULT), {
        "arm": spec["arm"], "seed": spec["seed"], "kind": spec["kind"], "identity": spec["identity"],
        "iteration": 4, "steps": 4, "images_per_task": {"face": 32, "person": 16}, "scores": scores,
        "seconds": {"train": 1.0 + spec["seed"], "eval": 0.5, "total": 2.0}, "commit": "fake"})
    note("end", spec)
    lock.close()


if __name__ == "__main__":
    main(sys.argv[1])
