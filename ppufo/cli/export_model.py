"""Export Paddle Inference models (one per task) from a trained or extracted checkpoint.

python tools/export_model.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/latest \
    -o Export.save_dir=inference/quickstart [Export.task=person] [Export.chip=cpu_x86]
"""
import sys

from ..utils.config import cli_config
from ..utils.errors import ConfigError
from ..utils.fs import check_writable_dir


def main():
    args, config = cli_config("ppufo export")
    from ..arch import is_supernet
    from ..arch.trained import load_trained_model
    from ..engine.exporter import export_model
    from ..utils.device import setup_device
    from ..utils.logger import get_logger
    try:
        if is_supernet(config):
            raise ConfigError(f"{args.config}: a supernet is not exported whole; extract a subnet first "
                              f"(tools/extract_subnet.py) and export its config.yaml")
        check_writable_dir(config["Export"]["save_dir"], "Export.save_dir")
        setup_device(config, device="cpu")  # export is device independent
        written = export_model(load_trained_model(config), config)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    for task, (d, files) in written.items():
        get_logger().info(f"exported {task} -> {d}: {', '.join(files)}")


if __name__ == "__main__":
    main()
