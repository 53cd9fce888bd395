"""Export Paddle Inference models (one per task) from a trained or extracted checkpoint.

python tools/export_model.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/latest \
    -o Export.save_dir=inference/quickstart [Export.task=person] [Export.chip=cpu_x86]
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppufo.utils.config import load_config, parse_args  # noqa: E402  (imports no paddle)
from ppufo.utils.errors import ConfigError  # noqa: E402


def load_trained(config):
    import paddle

    from ppufo.arch.multitask import build_model, num_classes_from_state
    from ppufo.utils.checkpoint import load_weights, strip_prefix

    """Model of ``config`` with the weights of Global.pretrained_model."""
    g = config["Global"]
    if not g["pretrained_model"]:
        raise ConfigError("Global.pretrained_model: required (a checkpoint prefix, e.g. output/quickstart/latest)")
    path = strip_prefix(g["pretrained_model"]) + ".pdparams"
    if not os.path.isfile(path):
        raise ConfigError(f"Global.pretrained_model: {path} not found")
    model = build_model(config, num_classes_from_state(paddle.load(path), list(config["Tasks"])))
    load_weights(model, path, strict=True)
    model.eval()
    return model


def main():
    args = parse_args("ppufo export")
    try:
        config = load_config(args.config, args.override)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    import paddle

    from ppufo.engine.exporter import export_model
    from ppufo.utils.logger import get_logger
    try:
        paddle.set_device("cpu")  # export is device independent
        written = export_model(load_trained(config), config)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    for task, (d, files) in written.items():
        get_logger().info(f"exported {task} -> {d}: {', '.join(files)}")


if __name__ == "__main__":
    main()
