"""Train a ppufo model: python tools/train.py -c configs/quickstart.yaml [-o Section.key=value ...]

Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves <Global.output_dir>/latest, prints the
command that resumes from it and exits with status 128 + the signal (130, 143); a second signal a
second or more later stops at once without saving.
"""
import shlex
import sys

from ..arch.trained import check_source
from ..demo import ensure_demo_data
from ..engine import build_trainer
from ..engine.interrupt import TrainingInterrupted
from ..utils.config import load_config, parse_args
from ..utils.errors import ConfigError, DataError
from ..utils.fs import check_writable_dir


def resume_command(checkpoint, argv=None):
    """This process's command line with ``-o Global.checkpoints=<checkpoint>`` appended (the last
    override wins, so a resumed run's own Global.checkpoints is replaced)."""
    argv = list(sys.argv if argv is None else argv)
    head = ["python"] if argv[0].endswith(".py") else []
    return shlex.join(head + argv + ["-o", f"Global.checkpoints={checkpoint}"])


def main():
    args = parse_args("ppufo training")
    try:
        config = load_config(args.config, args.override)
        check_writable_dir(config["Global"]["output_dir"], "Global.output_dir")  # before demo data is written
        if not config["Global"]["checkpoints"]:
            check_source(config)  # a missing Global.pretrained_model, too
        ensure_demo_data(config)
        trainer = build_trainer(config)
        try:
            trainer.evaluate(trainer.train())
        finally:
            trainer.close()  # flush the VisualDL records of the final evaluation
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    except TrainingInterrupted as e:
        if e.checkpoint:
            print(f"{e}\nresume with: {resume_command(e.checkpoint)}", file=sys.stderr, flush=True)
        sys.exit(e.code)


if __name__ == "__main__":
    main()
