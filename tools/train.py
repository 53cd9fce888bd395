"""Train a ppufo model: python tools/train.py -c configs/quickstart.yaml [-o Section.key=value ...]"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppufo.engine.trainer import build_trainer  # noqa: E402
from ppufo.utils.config import load_config, parse_args  # noqa: E402
from ppufo.utils.errors import ConfigError, DataError  # noqa: E402


def main():
    args = parse_args("ppufo training")
    try:
        config = load_config(args.config, args.override)
        trainer = build_trainer(config)
        last = trainer.train()
        trainer.evaluate(last)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
