"""A stand-in for `python -m ppufo.ablation.worker` in the study tests: no Paddle, fixed scores.

Scores, of the spec's sets only (those the run's config holds): set Market1501 rank1 = BASE[arm] +
SLOPE[arm] * seed (mAP = rank1 / 2), SOP recall@1 = SOP_BASE[arm] + SOP_SLOPE[arm] * seed (0.3 +
0.01 * seed unless listed); a trained run's train_flops = 1e9 * (1 + seed), a search run's subnet a
fixed record. It exits 4 when a run it starts from has no result. Environment knobs: FAKE_COUNTER (file: one line "start|end arm seed time
omp_threads" per event), FAKE_SLEEP (seconds before the result: "0.5", or per arm "a=1.5,b=0.2"), FAKE_FAIL ("arm:seed" exits 3).
"""
import json
import os
import sys
import time

from ppufo.ablation.worker import RESULT, hold_running_lock, read_result, write_json_atomic

BASE = {"a": 0.5, "b": 0.4, "c": 0.45, "d": 0.5, "p": 0.42, "pd": 0.42, "sub": 0.5}
SLOPE = {"a": 0.1, "b": 0.05, "c": 0.0, "d": 0.1, "p": 0.07, "pd": 0.07, "sub": 0.1}  # sub scores as a
# a search run's "subnet": 2.2M params, 20% under the All-in-One's 2.75M, 50% under the largest path's 4.4M
SUBNET = {"task": "person", "subnet": {"depth": 5, "heads": [3, 3, 3, 2, 2], "paths": ["mix", "task", "task", "shared", "shared"],
                                       "ratios": [0.75, 0.5, 0.5, 0.5, 0.5]},
          "params": 2.2e6, "flops": 7.5e7, "metric": "mAP", "measured": {"accuracy": 0.31, "params": 2.2e6},
          "reduction": {"params": {"subnet": 2.2e6, "allinone": 2.75e6, "largest": 4.4e6, "vs_allinone": -0.2, "vs_largest": -0.5},
                        "flops": {"subnet": 7.5e7, "allinone": 1e8, "largest": 1.5e8, "vs_allinone": -0.25, "vs_largest": -0.5}}}
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
    needed = [spec["source_dir"]] if "source_dir" in spec else []
    for v in spec.get("sources", {}).values():
        needed += list(v.values()) if isinstance(v, dict) else [v]
    if any(read_result(d) is None for d in needed):
        print("source run not finished", flush=True)
        sys.exit(4)
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
        "seconds": {"train": 1.0 + spec["seed"], "eval": 0.5, "total": 2.0}, "commit": "fake",
        **({"train_flops": 1e9 * (1 + seed)} if spec["kind"] == "train" else {}),
        **({"subnet": SUBNET} if spec["kind"] == "search" else {})})
    note("end", spec)
    lock.close()


if __name__ == "__main__":
    main(sys.argv[1])
