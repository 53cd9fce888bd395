"""How different the four tasks' statistics are at the backbone's BatchNorm layers of a trained
model: per layer and task, the channel mean of |task mean - mixed mean| / mixed std at the BN's
input, over heterogeneous batches of the model's own training data, in eval mode
(ppufo.engine.precise_bn.task_statistics_shift). UFO's heterogeneous-batch argument rests on
these being large. The noise floor of the measure: how much each shift changes when it is
measured again on other batches (seed 1 instead of 0).

python benchmark/bn_task_shift.py --run output/ablations/hetero_vs_homo/runs/rn_homo_batch/seed_0 [--batches 20]
"""
import argparse
import os

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a training run's folder (config.yaml + its latest checkpoint)")
    p.add_argument("--batches", type=int, default=20)
    a = p.parse_args()
    import ppufo  # noqa: F401  (before paddle: MKL settings)
    from ppufo.arch.trained import load_trained_model
    from ppufo.engine.precise_bn import task_statistics_shift
    from ppufo.utils.config import load_config
    from ppufo.utils.device import setup_device
    cfg = load_config(os.path.join(a.run, "config.yaml"),
                      [f"Global.pretrained_model={os.path.join(a.run, 'latest')}", "Global.checkpoints=null"])
    setup_device(cfg)
    model = load_trained_model(cfg)
    shift = task_statistics_shift(model, cfg, a.batches, seed=0)
    if not shift:
        raise SystemExit(f"{a.run}: the backbone has no BatchNorm")
    # the noise floor: the same shifts measured on other batches
    again = task_statistics_shift(model, cfg, a.batches, seed=1)
    tasks = list(next(iter(shift.values())))
    print(f"{'layer':40s} " + " ".join(f"{t:>8s}" for t in tasks))
    for layer, row in shift.items():
        print(f"{layer:40s} " + " ".join(f"{row[t]:8.3f}" for t in tasks))
    per_layer = np.array([[row[t] for t in tasks] for row in shift.values()])
    floor = np.array([[abs(row[t] - shift[layer][t]) for t in tasks] for layer, row in again.items()])
    med, worst = float(np.median(per_layer)), float(per_layer.max())
    print(f"{med / max(float(np.median(floor)), 1e-12):.1f}x the noise floor: per-task BN inputs sit a median "
          f"{med:.3f} std (max {worst:.3f}) from the mixed-batch mean ({len(shift)} BN layers, {a.batches} "
          f"batches; {a.run})")


if __name__ == "__main__":
    main()
