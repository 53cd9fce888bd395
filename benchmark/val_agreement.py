"""How large a person validation set must be for the search to rank subnets by it: two independent
validation sets of n identities each, the same subnets, Kendall tau between their mAP rankings.

python benchmark/val_agreement.py [--checkpoint <supernet>/latest] [--subnets 30 --sizes 64,128,256,512,1024]

Without --checkpoint it first trains the demo chain (benchmark/gpnas_quality.py's: the quickstart
All-in-One, then configs/supernet_quickstart.yaml from it). Two DukeMTMC-layout sets of the largest
size are written with two seeds (identities the supernet never trains on); a set of n identities is
the first n of them in a fixed shuffled order, with its share of gallery-only identities, so the
sets of one seed are nested and the two seeds' sets independent. Each subnet's BN neck is
recalibrated as the search does, both sets embedded once, and mAP computed for every n from those
features (the ReID rule of ppufo.metric.reid.evaluate_reid), two ways: one gallery of n identities,
and the mean over the disjoint galleries of n identities that the largest set splits into
(ReIDMetric split_ids, ppufo/metric/reid_splits.py). The agreement of two independent
sets is the ceiling of any accuracy predictor scored on one of them (benchmark/gpnas_quality.py,
"other val sets"). The interval is a bootstrap over the subnets. Last line: the best tau and how
it was scored, against --target, beside one gallery of the largest and smallest sizes.
"""
import argparse
import json
import os

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", default=os.path.join(ROOT, "configs", "supernet_quickstart.yaml"))
    p.add_argument("--checkpoint", default=None, help="trained supernet prefix (default: train the demo chain)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data", "demo"))
    p.add_argument("--work", default=os.path.join(ROOT, "output", "val_agreement"))
    p.add_argument("--subnets", type=int, default=30, help="random subnets (largest and smallest first)")
    p.add_argument("--sizes", default="64,128,256,512,1024", help="identities per validation set")
    p.add_argument("--imgs_per_id", type=int, default=6, help="images per identity: 2 queries, the rest gallery")
    p.add_argument("--calibration_images", type=int, default=512, help="BN neck recalibrated per subnet (as the search)")
    p.add_argument("--target", type=float, default=0.85)
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--seed", type=int, default=123)
    return p.parse_args()


def write_sets(args, largest):
    """Two independent DukeMTMC-layout sets of ``largest`` identities: {seed: folder name}."""
    from ppufo.demo import write_dukemtmc
    out = {}
    for seed in (1001, 1002):
        name = f"person_val_curve_{largest}x{args.imgs_per_id}_s{seed}"
        if not os.path.isdir(os.path.join(args.data_root, name, "query")):
            write_dukemtmc(os.path.join(args.data_root, name), num_train_ids=0, num_test_ids=largest,
                           imgs_per_id=args.imgs_per_id, seed=seed, num_gallery_only_ids=largest // 12)
        out[seed] = name
    return out


def nested_masks(q_pids, g_pids, sizes, seed):
    """{n: (query mask, gallery mask)}: the first n queried identities of a shuffled order, and
    the same share of the gallery-only ones (junk and distractor ids stay in every gallery)."""
    queried = np.unique(q_pids)
    only = np.setdiff1d(np.unique(g_pids[g_pids > 0]), queried)
    rng = np.random.RandomState(seed)
    queried, only = rng.permutation(queried), rng.permutation(only)
    out = {}
    for n in sizes:
        keep_q = queried[:n]
        keep_g = np.r_[keep_q, only[:int(round(len(only) * n / len(queried)))]]
        out[n] = np.isin(q_pids, keep_q), np.isin(g_pids, keep_g) | (g_pids <= 0)
    return out


def kendall(a, b):
    from scipy.stats import kendalltau
    return float(kendalltau(a, b)[0])


def main():
    args = parse()
    import warnings
    warnings.simplefilter("ignore")
    import runpy  # the sibling script, without editing the import path (tests/unit/test_layers.py)
    here = os.path.dirname(os.path.abspath(__file__))
    train_chain = runpy.run_path(os.path.join(here, "gpnas_quality.py"))["train_chain"]
    from ppufo.arch.trained import load_trained_model
    from ppufo.engine.calibrate import neck_calibration
    from ppufo.engine.evaluator import Evaluator
    from ppufo.metric.reid import evaluate_reid
    from ppufo.metric.reid_splits import evaluate_reid_splits
    from ppufo.nas.cache import subnet_key
    from ppufo.nas.search import sample_subnets
    from ppufo.utils.config import load_config
    from ppufo.utils.logger import init_logger
    init_logger()
    sizes = sorted(int(v) for v in args.sizes.split(","))
    ckpt = args.checkpoint or train_chain(args)
    folders = write_sets(args, sizes[-1])
    val = [{"name": "DukeMTMC", "root": f, "alias": f"val_s{s}"} for s, f in folders.items()]
    cfg = load_config(args.config, [f"Global.pretrained_model={ckpt}", f"Global.data_root={args.data_root}",
                                    f"Global.output_dir={args.work}", f"Tasks.person.test_sets={json.dumps(val)}"])
    net = load_trained_model(cfg)
    subnets = sample_subnets(net.space, args.subnets, np.random.RandomState(args.seed))
    calibration = neck_calibration(cfg, "person", args.calibration_images, where="--calibration_images")
    ev = Evaluator(cfg, net, only=["person"], progress=False)
    os.makedirs(args.work, exist_ok=True)
    cache_path = os.path.join(args.work, f"mAP_{sizes[-1]}x{args.imgs_per_id}_cal{args.calibration_images}.json")
    cache = json.load(open(cache_path)) if os.path.isfile(cache_path) else {}
    context = {"checkpoint": os.path.abspath(ckpt), "sizes": sizes, "sets": list(folders.values()),
               "scores": "one gallery + split mean"}
    if cache.get("context") != context:
        cache = {"context": context, "mAP": {}}
    masks = None
    for i, s in enumerate(subnets):
        key = subnet_key(net.space, s)
        if key in cache["mAP"]:
            continue
        net.set_subnets({"person": s})
        if calibration is not None:
            calibration(net)
        net.eval()
        row = {}
        for ts in ev.sets:
            src = ts.source
            (qf, q), (gf, g) = (ev.embed(ts)[k] for k in ("query", "gallery"))
            q_pids, g_pids = np.asarray(q.labels), np.asarray(g.labels)
            masks = nested_masks(q_pids, g_pids, sizes, args.seed)
            row[ts.label] = {}
            for n, (mq, mg) in masks.items():
                r = evaluate_reid(qf[mq], gf[mg], q_pids[mq], g_pids[mg], np.asarray(q.cameras)[mq],
                                  np.asarray(g.cameras)[mg], junk_pid=src.junk_pid, distractor_pid=src.distractor_pid)
                row[ts.label][str(n)] = r["mAP"]
                row[ts.label][f"split{n}"] = evaluate_reid_splits(
                    qf, gf, q_pids, g_pids, q.cameras, g.cameras, n, args.seed, src.junk_pid, src.distractor_pid)["mAP"]
        cache["mAP"][key] = row
        with open(cache_path, "w") as f:
            json.dump(cache, f)
        print(f"subnet {i + 1}/{len(subnets)}: " + ", ".join(
            f"{lab} {row[lab][str(sizes[-1])]:.4f}" for lab in row), flush=True)
    labels = [ts.label for ts in ev.sets]
    keys = [subnet_key(net.space, s) for s in subnets]
    rng = np.random.RandomState(args.seed + 7)
    print(f"\n{len(subnets)} subnets; two independent DukeMTMC-layout validation sets per size "
          f"({args.imgs_per_id} images per identity, 2 of them queries); Kendall tau of their mAP rankings, "
          f"95% bootstrap interval over the subnets")
    print(f"{'ids':>6s} {'gallery':>8s} {'tau':>6s} {'interval':>16s} {'Pearson r':>10s} {'mAP range':>14s}")
    taus = {}
    for n in sizes:
        for kind, col in (("one", str(n)), (f"{sizes[-1] // n} x", f"split{n}")):
            a, b = (np.array([cache["mAP"][k][lab][col] for k in keys]) for lab in labels)
            boot = [kendall(a[j], b[j]) for j in (rng.randint(0, len(a), len(a)) for _ in range(args.bootstrap))]
            taus[col] = kendall(a, b)
            lo, hi = np.nanpercentile(boot, [2.5, 97.5])
            print(f"{n:6d} {kind:>8s} {taus[col]:6.3f}   [{lo:.3f}, {hi:.3f}] {np.corrcoef(a, b)[0, 1]:10.3f} "
                  f"{min(a.min(), b.min()):.3f}..{max(a.max(), b.max()):.3f}")
    best = max(taus, key=taus.get)
    how = (f"one gallery of {best} ids" if not best.startswith("split")
           else f"{sizes[-1]} ids as galleries of {best[5:]}")
    verdict = "reaches" if taus[best] >= args.target else "misses"
    print(f"tau {taus[best]:.2f} {verdict} {args.target:g} with {how} between two independent validation sets "
          f"(one gallery of {sizes[-1]} ids: {taus[str(sizes[-1])]:.2f}, of {sizes[0]}: {taus[str(sizes[0])]:.2f})")


if __name__ == "__main__":
    main()
