"""Evaluate on the configured test sets, each with its own protocol.

python tools/eval.py -c configs/ufo_vitl.yaml -o Global.pretrained_model=output/ufo_vitl/best_model [--sets lfw,Market1501]
python -m paddle.distributed.launch --gpus 0,1,2,3 tools/eval.py -c ...   # images sharded over the GPUs
"""
import os
import sys

import paddle.distributed as dist

from ..arch.trained import load_trained_model
from ..engine.eval_report import report_results
from ..engine.evaluator import Evaluator
from ..utils.config import load_config, parse_args
from ..utils.device import setup_device
from ..utils.errors import ConfigError, DataError
from ..utils.fs import check_writable_dir
from ..utils.logger import init_logger


def main():
    args = parse_args("ppufo evaluation", extra=lambda p: p.add_argument(
        "--sets", default="", help="comma-separated test-set labels or task names (default: all)"))
    try:
        config = load_config(args.config, args.override)
        g = config["Global"]
        check_writable_dir(g["output_dir"], "Global.output_dir")  # eval.log, eval_<tag>.json
        init_logger(os.path.join(g["output_dir"], "eval.log"))
        setup_device(config)
        if dist.get_world_size() > 1:
            dist.init_parallel_env()  # the Evaluator shards the images over the ranks
        model = load_trained_model(config)
        only = [s for s in args.sets.split(",") if s]
        report_results(Evaluator(config, model, only=only).evaluate(tag="eval"), g["output_dir"])
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
