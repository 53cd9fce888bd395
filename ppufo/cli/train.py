"""Train a ppufo model: python tools/train.py -c configs/quickstart.yaml [-o Section.key=value ...]"""
import sys

from ..demo import ensure_demo_data
from ..engine import build_trainer
from ..utils.config import load_config, parse_args
from ..utils.errors import ConfigError, DataError
from ..utils.fs import check_writable_dir


def main():
    args = parse_args("ppufo training")
    try:
        config = load_config(args.config, args.override)
        check_writable_dir(config["Global"]["output_dir"], "Global.output_dir")  # before demo data is written
        ensure_demo_data(config)
        trainer = build_trainer(config)
        try:
            trainer.evaluate(trainer.train())
        finally:
            trainer.close()  # flush the VisualDL records of the final evaluation
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
