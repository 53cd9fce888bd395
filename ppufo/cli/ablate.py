"""Test a claim of the UFO article with seeds and intervals: train every arm of an experiment file
for every seed, score each run once at its final iteration, and report per compared test set and
metric each arm's mean with a 95% t-interval and the paired per-seed differences with theirs.

python tools/ablate.py -c configs/ablations/example_tiny.yaml              # train, score, report (or ppufo-ablate)
python tools/ablate.py configs/ablations/example_tiny.yaml --parallel 2    # two runs at a time
python tools/ablate.py configs/ablations/example_tiny.yaml --report-only   # table from finished runs
python tools/ablate.py configs/ablations/example_tiny.yaml --dry-run       # list the runs only
python tools/ablate.py configs/ablations/example_tiny.yaml --seeds 0       # one seed of the file's, e.g. to time it

The experiment file's schema is in ppufo/ablation/experiment.py. Everything goes to
output/ablations/<experiment name>/ (--out): runs/<arm>/seed_<s>/ (one folder per run, with its
train.log, worker.log and result.json), table.md, table.json, plot.png, ablate.log. Rerunning the
same command resumes: finished runs are kept, interrupted ones are run again from scratch. The
table goes to stdout, progress to stderr. A failed run stops the study with its exit code.
"""
import argparse
import os
import sys

from ..utils.config import arg_range
from ..utils.errors import ConfigError, DataError


def build_parser():
    p = argparse.ArgumentParser(
        prog="ppufo-ablate",
        description="Run an ablation study (configs/ablations/<name>.yaml): every arm x seed trained in "
                    "its own process and scored once at its final iteration; per compared set and "
                    "metric, each arm's mean with a 95% t-interval and each pair's per-seed "
                    "differences a - b with theirs and a verdict on the claimed direction.",
        epilog="Resumable: rerun the same command after an interruption; runs with a result.json are "
               "kept, interrupted ones restart from scratch. The markdown table is printed to stdout.")
    p.add_argument("experiment", nargs="?", help="experiment file, e.g. configs/ablations/example_tiny.yaml "
                                                 "(its base: path is relative to the file's folder)")
    p.add_argument("-c", "--config", dest="config", metavar="EXPERIMENT",
                   help="the experiment file, as -c in the other ppufo tools (same as the positional one)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="study folder (default: output/ablations/<experiment file name>)")
    p.add_argument("--parallel", type=arg_range(int, min=1), default=None, metavar="N",
                   help="runs at a time, each with Global.cpu_threads = max(1, cores // N) "
                        "(default: the file's parallel, else 1)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild table.md / table.json / plot.png from the finished runs; train nothing")
    p.add_argument("--dry-run", action="store_true", help="list the planned runs and their overrides; run nothing")
    p.add_argument("--seeds", type=seed_list, default=None, metavar="S,S",
                   help="run and report only these of the file's seeds (e.g. 0 to time one seed); the "
                        "runs are the full study's, so a later run of every seed keeps them")
    p.add_argument("-o", "--override", action="append", nargs="+", default=[],
                   help="Section.key=value for every run, after the file's overrides and before the "
                        "arms' (repeatable), e.g. -o Global.max_iters=2")
    return p


def seed_list(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, e.g. 0,1; got {text!r}")
    return seeds


def describe_runs(runs, exp, study_dir, common):
    """The planned runs: the overrides every run shares once, then each run's own (and the
    compared sets it scores, where its config holds only some of them)."""
    lines = [f"{len(runs)} runs in {study_dir}", f"base: {exp.base}",
             f"every trained run: {' '.join(common) or '(no overrides)'}"]
    for r in runs:
        if r.precise_bn is not None:
            what = f"from {r.source.rel_dir}, precise BN on {r.precise_bn['num_batches']} batches"
        elif r.search is not None:
            what = f"from {r.source.rel_dir}, search {r.search}, extracted into {r.rel_dir}/subnet"
        else:
            what = (f"base {r.base}: " if r.base != exp.base else "") + " ".join(r.overrides[len(common):])
            s = r.sources or {}
            if "shape_from" in s:
                what += f"; at start: Arch of {s['shape_from'].rel_dir}/subnet"
            if "compute_of" in s:
                what += (f"; at start: Global.max_iters for the training FLOPs of "
                         f"{' + '.join(x.rel_dir for x in s['compute_of'])}")
        if r.sets != exp.sets:
            what += f" [scores {', '.join(r.sets)} only]"
        lines.append(f"  [{r.index}] {r.kind:10s} arm={r.arm} seed={r.seed} -> {r.rel_dir}: {what}")
    return "\n".join(lines)


def main(argv=None, worker_cmd=None):
    """``worker_cmd(spec_path) -> argv`` replaces the worker process (tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.experiment) == bool(args.config):
        parser.error("give the experiment file once: ppufo-ablate -c configs/ablations/<name>.yaml")
    args.experiment = args.experiment or args.config
    overrides = [o for group in args.override for o in group]
    from ..ablation.experiment import load_experiment, plan_runs
    from ..ablation.report import write_report
    from ..ablation.runner import Interrupted, RunFailed, Study
    try:
        exp = load_experiment(args.experiment)
        if args.seeds is not None:
            other = [s for s in args.seeds if s not in exp.seeds]
            if other:
                raise ConfigError(f"--seeds {other}: not seeds of {args.experiment} ({exp.seeds})")
            exp.seeds = [s for s in exp.seeds if s in args.seeds]
        study_dir = os.path.abspath(args.out or os.path.join("output", "ablations", exp.name))
        runs = plan_runs(exp, study_dir, overrides)
        if args.dry_run:
            print(describe_runs(runs, exp, study_dir, exp.overrides + overrides))
            return
        if not args.report_only:
            parallel = args.parallel if args.parallel is not None else exp.parallel
            Study(exp, runs, study_dir, parallel, worker_cmd=worker_cmd).execute()
        md = write_report(exp, runs, study_dir)
        print(md, end="", flush=True)
        print(f"report: {study_dir}/table.md, table.json, plot.png", file=sys.stderr)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except Interrupted as e:
        sys.exit(e.code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
