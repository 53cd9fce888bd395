"""GP-NAS prediction quality on the demo supernet: fit on measured subnets, predict others.

python benchmark/gpnas_quality.py [--checkpoint output/supernet_quickstart/latest] [--fit 30 --test 30]

Without --checkpoint it first trains the demo chain: the quickstart All-in-One (~2 min), then
configs/supernet_quickstart.yaml from it (~4 min on 2 free cores). It measures fit + test distinct random subnets (largest and
smallest among the fitted ones): accuracy = person mAP through the supernet (BN neck recalibrated
per subnet, as the search does), averaged over --val_sets held-out validation sets, latency = Paddle Inference on this CPU (oneDNN, 1 thread, batch 1; --timer thread_cpu
by default, see ppufo/nas/latency.py). Measurements are cached in --work, so a rerun only refits.
GP-NAS (ppufo/nas/predictor.py) is compared with PaddleSlim's GPNAS used raw and two baselines
fitted on the same subnets: parameter count (a linear map of it, for RMSE) and a least-squares
linear fit on the 7 summary features (the 43 of --features both would be underdetermined).

Latency is timed as the search times it: all subnets exported and loaded together, their runs
spread over --passes interleaved passes (ppufo/nas/latency.py, time_interleaved), the
--quantile of its runs per subnet (the 10th percentile, as the demo search); twice, and the target
is the mean of the two. Side by side, the --rounds sequential
timings (each subnet alone, one after the other) show why: on a shared machine the core's speed
drifts, so two sequential timings of the same subnets rank them differently; the "one ... vs
another" rows give how well two timings agree, the ceiling for any predictor scored on them
(accuracy is deterministic, but --val_sets other validation sets of the same size, other
identities, rank the test subnets differently: the "other val sets" row).
Every score is averaged over --splits fit/test splits of the measured subnets (a Kendall tau on
30 subnets alone varies by about +-0.08 from split to split). Last line: mean Kendall tau of
GP-NAS for accuracy beside its ceiling (another validation set's tau) / latency, then the
parameter-count baseline's.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

import numpy as np


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", default=os.path.join(ROOT, "configs", "supernet_quickstart.yaml"))
    p.add_argument("--checkpoint", default=None, help="trained supernet prefix (default: train one)")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data", "demo"))
    p.add_argument("--work", default=os.path.join(ROOT, "output", "gpnas_quality"))
    p.add_argument("--fit", type=int, default=30, help="subnets the predictors are fitted on (20-40)")
    p.add_argument("--test", type=int, default=30, help="other subnets they are scored on")
    p.add_argument("--val_ids", type=int, default=None,
                   help="identities of each held-out person validation set (default: the search's person_val size)")
    p.add_argument("--val_sets", type=int, default=1,
                   help="validation sets (other identities each) whose mean mAP is the accuracy target")
    p.add_argument("--calibration_images", type=int, default=512,
                   help="BN-neck statistics recomputed per subnet on this many training images, as the "
                        "search does (0: the supernet's running statistics)")
    p.add_argument("--timer", default="thread_cpu", choices=("wall", "thread_cpu"))
    p.add_argument("--repeats", type=int, default=300, help="timed runs per subnet (a run is ~2-5 ms)")
    p.add_argument("--quantile", type=float, default=0.1, help="latency = this quantile of the timed runs")
    p.add_argument("--passes", type=int, default=60, help="interleaved passes the timed runs are spread over")
    p.add_argument("--rounds", type=int, default=2, help="sequential timings of every subnet, for comparison")
    p.add_argument("--splits", type=int, default=20,
                   help="fit/test splits of the measured subnets the scores are averaged over (a 30-subnet "
                        "Kendall tau alone varies by about +-0.08 from split to split)")
    p.add_argument("--features", default="both", choices=("summary", "encoding", "both"),
                   help="GP-NAS inputs for accuracy (Search.features)")
    p.add_argument("--fit_curve", default="20,30,40,50",
                   help="fitted-subnet counts the accuracy tau is also reported for (the rest scored)")
    p.add_argument("--seed", type=int, default=123)
    return p.parse_args()


def train_chain(args):
    """The demo chain into --work: the quickstart All-in-One, then --config's supernet started from
    it (as the article trains its supernet). Returns the supernet's checkpoint prefix."""
    from ppufo.utils.checkpoint import has_checkpoint
    allinone, supernet = os.path.join(args.work, "allinone"), os.path.join(args.work, "supernet")
    common = [f"Global.data_root={args.data_root}", "Global.generate_demo_data=true", "Global.use_visualdl=false"]
    for config, out, extra in ((os.path.join(ROOT, "configs", "quickstart.yaml"), allinone, []),
                               (args.config, supernet, [f"Global.pretrained_model={allinone}/latest"])):
        if not has_checkpoint(os.path.join(out, "latest")):
            print(f"training {os.path.relpath(config, ROOT)} into {out} (pass --checkpoint to skip) ...", flush=True)
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", config, "-o",
                            f"Global.output_dir={out}", *common, *extra], check=True)
    return os.path.join(supernet, "latest")


def validation_sets(args, seeds, metric=None):
    """Person validation sets of --val_ids identities the supernet never trains on (the search's
    person_val set, ppufo.demo.write_person_val, with other seeds): independent sets of one size. How
    well two of them rank the same subnets alike bounds any accuracy predictor scored on one
    (benchmark/val_agreement.py measures it against the size)."""
    from ppufo.demo.reid import write_person_val
    out = []
    for seed in seeds:
        name = f"person_val_{args.val_ids}_s{seed}"
        if not os.path.isdir(os.path.join(args.data_root, name, "query")):
            write_person_val(os.path.join(args.data_root, name), num_test_ids=args.val_ids,
                             num_gallery_only_ids=args.val_ids // 12, seed=seed)
        out.append({"name": "DukeMTMC", "root": name, **({"metric": metric} if metric else {})})
    return out


def linear(Xtr, ytr, Xte):
    A = np.c_[Xtr, np.ones(len(Xtr))]
    w = np.linalg.lstsq(A, ytr, rcond=None)[0]
    return np.c_[Xte, np.ones(len(Xte))] @ w


def raw_gpnas(Xtr, ytr, Xte):
    """PaddleSlim's GPNAS as its demo uses it, without ppufo's normalisation."""
    from paddleslim.nas import GPNAS
    gp = GPNAS(2, 2)
    gp.get_initial_mean(Xtr[0::2], ytr[0::2])
    gp.get_initial_cov(Xtr)
    gp.get_posterior_mean(Xtr[1::2], ytr[1::2])
    return np.asarray(gp.get_predict_jiont(Xte, Xtr, ytr)).ravel()


def main():
    args = parse()
    import warnings
    warnings.simplefilter("ignore")
    from ppufo.arch.trained import load_trained_model
    from ppufo.nas.accuracy import SubnetAccuracy
    from ppufo.nas.cache import MeasureCache, measure
    from ppufo.engine.calibrate import neck_calibration
    from ppufo.nas.latency import MeasuredLatency, TableLatency
    from ppufo.nas.predictor import GPNASPredictor, quality, subnet_features
    from ppufo.nas.search import LATENCY_FEATURES, sample_subnets
    from ppufo.utils.config import load_config
    from ppufo.utils.errors import ConfigError
    from ppufo.utils.logger import init_logger
    init_logger()
    ckpt = args.checkpoint or train_chain(args)
    if args.val_ids is None:
        from ppufo.demo import size_keywords
        args.val_ids = size_keywords("person_val")["num_test_ids"]
    k = args.val_sets
    cfg = load_config(args.config, [f"Global.pretrained_model={ckpt}", f"Global.data_root={args.data_root}",
                                    f"Global.output_dir={args.work}"])
    metric = ((cfg["Search"]["val_sets"] or {}).get("person") or [{}])[0].get("metric")  # scored as the search
    val, other_val = (validation_sets(args, range(1, k + 1), metric),
                      validation_sets(args, range(k + 1, 2 * k + 1), metric))
    net = load_trained_model(cfg)
    sp = net.space
    subnets = sample_subnets(sp, args.fit + args.test, np.random.RandomState(args.seed))

    calibration = neck_calibration(cfg, "person", args.calibration_images, where="--calibration_images")

    def accuracy(name, subnets, val):
        fn = SubnetAccuracy(cfg, net, "person", "mAP", val, calibration=calibration)
        name += f"_{args.val_ids}x{k}_cal{args.calibration_images}" + (f"_split{metric['split_ids']}"
                                                                        if (metric or {}).get("split_ids") else "")
        return measure(sp, subnets, fn, MeasureCache(os.path.join(args.work, f"{name}.jsonl"), fn.context), name)

    acc = accuracy("accuracy_person_mAP", subnets, val)
    acc2 = accuracy("accuracy_person_mAP_other_val", subnets, other_val)

    def tag(kw):  # one cache file per timing setting
        return f"{args.timer}_n{args.repeats}_q{kw['quantile']:g}" + (f"_p{kw['rounds']}" if "rounds" in kw else "")

    def timings(name, n, **kw):
        lat = MeasuredLatency(cfg, net, "person", "cpu_x86", 1, 10, args.repeats, 1, args.timer, **kw)
        return np.array([measure(sp, subnets, lat, MeasureCache(os.path.join(args.work, f"latency_{name}_{tag(kw)}_{r}.jsonl"),
                                                                lat.context), f"cpu_x86 latency, {name} {r + 1}")
                         for r in range(n)])

    interleaved = timings("interleaved", 2, rounds=args.passes, group=len(subnets), quantile=args.quantile)
    sequential = timings("sequential", args.rounds, quantile=args.quantile)
    lat = interleaved.mean(axis=0)
    P = np.array([sp.params(s) for s in subnets], np.float64)[:, None]
    S = subnet_features(sp, subnets, "summary")  # 7 columns: least squares is determined by 30 fits
    methods = {  # (features, targets, fit indices, test indices) -> predictions
        "GP-NAS": lambda X, y, f, t: GPNASPredictor().fit(X[f], y[f]).predict(X[t]),
        "GP-NAS, no relevance weights": lambda X, y, f, t: GPNASPredictor(weighting="none").fit(X[f], y[f]).predict(X[t]),
        "GP-NAS (PaddleSlim raw)": lambda X, y, f, t: raw_gpnas(X[f], y[f], X[t]),
        "parameter count": lambda X, y, f, t: linear(P[f], y[f], P[t]),
        "linear fit (summary)": lambda X, y, f, t: linear(S[f], y[f], S[t]),
    }
    targets = {"accuracy": (acc, subnet_features(sp, subnets, args.features)),
               "latency": (lat, subnet_features(sp, subnets, LATENCY_FEATURES))}
    # how well a second measurement agrees with the first: the ceiling of any predictor scored on one
    agreement = {"accuracy": {"other val sets (same size)": (acc2, acc)},
                 "latency": {"interleaved: one vs another": (interleaved[1], interleaved[0])}}
    if args.rounds > 1:
        agreement["latency"]["sequential: one vs another"] = (sequential[1], sequential[0])
    try:  # the shipped per-layer table, composed, against the same measurements
        table = TableLatency("cpu_x86", sp, cfg["Global"]["image_shape"], 1)
        agreement["latency"]["cpu_x86 table (no fit)"] = (np.array([table(s) for s in subnets]), lat)
    except ConfigError as e:
        print(f"(no composed-table row: {e})")
    scores = {name: {} for name in targets}
    for f, t in splits(len(subnets), args):
        for name, (y, X) in targets.items():
            for m, fn in methods.items():
                scores[name].setdefault(m, []).append(quality(fn(X, y, f, t), y[t]))
            for m, (a, b) in agreement[name].items():
                scores[name].setdefault(m, []).append(quality(a[t], b[t]))
    print(f"\nperson mAP, mean of {k} sets of {args.val_ids} unseen ids (BN neck calibrated on "
          f"{args.calibration_images} images): {acc.min():.4f}..{acc.max():.4f} "
          f"(std {acc.std():.4f}); cpu_x86 latency ({args.timer}, q{args.quantile:g}, batch 1): {lat.min():.2f}..{lat.max():.2f} ms")
    print(f"fit on {args.fit} subnets, scored on the {args.test} others; {args.splits} splits of the "
          f"{len(subnets)} (the sampled order, then random; largest and smallest always fitted)\n")
    print(f"{'target':9s} {'predictor':29s} {'Kendall tau':>16s} {'RMSE':>8s} {'1st split':>9s}")
    mean = {}
    for name, rows in scores.items():
        for m, qs in rows.items():
            tau = np.array([q["tau"] for q in qs])
            mean[name, m] = tau.mean()
            print(f"{name:9s} {m:29s} {tau.mean():9.3f} ± {tau.std():.3f} {np.mean([q['rmse'] for q in qs]):8.4f} "
                  f"{tau[0]:9.3f}")
    accuracy_structure(args, acc, acc2, S, targets["accuracy"][1], methods, mean)
    print(f"tau {mean['accuracy', 'GP-NAS']:.2f} accuracy (ceiling {mean['accuracy', 'other val sets (same size)']:.2f}: "
          f"another val set of {args.val_ids} ids) / {mean['latency', 'GP-NAS']:.2f} latency "
          f"(baseline {mean['accuracy', 'parameter count']:.2f} / {mean['latency', 'parameter count']:.2f})")


def accuracy_structure(args, acc, acc2, S, X, methods, mean):
    """What bounds an accuracy predictor here: the share of the target a linear fit on the
    summary explains, whether what it leaves is noise (residuals of two independent targets
    uncorrelated) or the subnets' own (correlated), and tau against the fitted count."""
    from ppufo.nas.predictor import quality
    res = [y - linear(S, y, S) for y in (acc, acc2)]
    r = np.corrcoef(acc, acc2)[0, 1]
    # Gaussian: corr(truth, one target) = sqrt(r), and Kendall tau = 2/pi arcsin(Pearson r)
    print(f"\naccuracy structure over all {len(acc)} subnets: the linear fit on the summary explains "
          f"R2 {1 - res[0].var() / acc.var():.2f}; the two independent targets correlate at r {r:.3f}, "
          f"their residuals at r {np.corrcoef(*res)[0, 1]:.2f}; a perfect predictor of the expected "
          f"accuracy would reach tau ~{2 / np.pi * np.arcsin(np.sqrt(max(r, 0))):.2f} (Gaussian approximation)")
    sizes = [int(v) for v in args.fit_curve.split(",") if v.strip()]
    for fit in sizes:
        if not 4 <= fit <= len(acc) - 5:
            continue
        a = argparse.Namespace(**{**vars(args), "fit": fit})
        row = {m: mean["accuracy", m] if fit == args.fit else  # the table's own row
               np.mean([quality(methods[m](X, acc, f, t), acc[t])["tau"] for f, t in splits(len(acc), a)])
               for m in ("GP-NAS", "linear fit (summary)")}
        print(f"  fitted on {fit:2d}, scored on {len(acc) - fit:2d}: " + ", ".join(f"{m} {v:.3f}" for m, v in row.items()))


def splits(n, args):
    """(fit, test) index arrays: the sampled order first (fit = the first --fit), then --splits - 1
    random splits; subnets 0 and 1 (the largest and the smallest) are always fitted."""
    yield np.arange(args.fit), np.arange(args.fit, n)
    rng = np.random.RandomState(args.seed + 1)
    for _ in range(args.splits - 1):
        rest = 2 + rng.permutation(n - 2)
        yield np.r_[0, 1, rest[:args.fit - 2]], rest[args.fit - 2:]


if __name__ == "__main__":
    main()
