"""Draw rank lists of one test set: each query with its top-k gallery hits (green = same
identity, red = different), one PNG per query, under the set's evaluation protocol.

python tools/visualize_ranks.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/latest \
    --set Market1501 --num_queries 10 --topk 8 --order worst --out output/quickstart/ranks
"""
import os
import sys

from ..arch.trained import load_trained_model
from ..engine.evaluator import Evaluator, configured_labels
from ..metric.visualize import ORDERS, protocol_rank_lists, write_rank_lists
from ..utils.config import arg_range, load_config, parse_args
from ..utils.device import setup_device
from ..utils.errors import ConfigError, DataError
from ..utils.fs import check_writable_dir
from ..utils.logger import get_logger, init_logger


def add_args(p):
    p.add_argument("--set", required=True, help="test-set label, as in the eval table (e.g. Market1501)")
    p.add_argument("--num_queries", type=arg_range(int, min=1), default=10)
    p.add_argument("--topk", type=arg_range(int, min=1), default=10)
    p.add_argument("--order", choices=ORDERS, default="worst",
                   help="worst: lowest AP first (as fast-reid); best: highest AP first; first: query order")
    p.add_argument("--out", default="", help="output folder (default: <Global.output_dir>/ranks/<set>)")
    p.add_argument("--tile_height", type=arg_range(int, min=16), default=128)


def rank_lists(evaluator, ts):
    """Features of ``ts`` by the evaluator -> (RankLists, query records, gallery records). The
    protocol's first split queries its last: query -> gallery (reid), or the test split itself."""
    feats, src = evaluator.embed(ts), ts.source
    (qf, q), (gf, g) = feats[ts.protocol.splits[0]], feats[ts.protocol.splits[-1]]
    cams = (q.cameras, g.cameras) if src.has_cameras else (None, None)  # as ReIDProtocol scores
    gallery = (gf, g.labels, cams[1]) if len(feats) > 1 else None
    ranks = protocol_rank_lists(ts.protocol.name, (qf, q.labels, cams[0]), gallery,
                                seed=getattr(ts.metric, "seed", 0), junk_pid=src.junk_pid,
                                distractor_pid=src.distractor_pid)
    return ranks, q.splits[0], g.splits[0]


def main():
    args = parse_args("ppufo rank-list visualiser", extra=add_args)
    try:
        config = load_config(args.config, args.override)
        g = config["Global"]
        labels = configured_labels(config)
        if args.set not in labels:
            raise ConfigError(f"--set {args.set!r}: not a configured test set; configured: {list(labels)}")
        if labels[args.set] == "verification":
            ranked = [lb for lb, p in labels.items() if p != "verification"]
            raise ConfigError(f"--set {args.set}: protocol 'verification' (10-fold accuracy on "
                              f"image pairs) has no gallery ranking to draw; sets with one: {ranked}")
        out = args.out or os.path.join(g["output_dir"], "ranks", args.set)
        check_writable_dir(g["output_dir"], "Global.output_dir")  # visualize.log
        check_writable_dir(out, "--out" if args.out else "Global.output_dir")
        init_logger(os.path.join(g["output_dir"], "visualize.log"))
        setup_device(config)
        log = get_logger()
        evaluator = Evaluator(config, load_trained_model(config), only=[args.set])
        ts = next(s for s in evaluator.sets if s.label == args.set)
        ranks, q_rec, g_rec = rank_lists(evaluator, ts)
        queries = ranks.select(args.num_queries, args.order)
        log.info(f"{args.set}: {int(ranks.valid.sum())} of {len(ranks.valid)} queries have a valid "
                 f"match; drawing {len(queries)} ({args.order}) with top-{args.topk}")
        paths = write_rank_lists(ranks, queries, args.topk, lambda i: ts.source.read(q_rec[i]),
                                 lambda i: ts.source.read(g_rec[i]), out, args.tile_height)
        log.info(f"wrote {len(paths)} rank list(s) to {out}")
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
