"""Post-training int8 quantisation of exported task models, with a float-vs-int8 report.

python tools/quantize.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/latest \
    -o Export.save_dir=inference/quickstart -o Export.task=person [-o Quant.num_images=256 Quant.seed=0]

For each task of Export.task: the float model exported to its folder (as tools/export_model.py
writes it), the int8 model to <folder>_int8 (docs/deploy.md#int8-on-x86-cpu), and
<folder>_int8/quant_report.json: feature cosine to the float model, the task's test-set metrics
float vs int8, latency of both at batch 1 and 8 on this machine.
"""
import json
import os
import sys

from ..utils.config import cli_config
from ..utils.errors import ConfigError, DataError
from ..utils.fs import check_writable_dir


def main():
    args, config = cli_config("ppufo int8 quantisation")
    from ..arch import is_supernet
    from ..arch.trained import load_trained_model
    from ..engine.exporter import export_dirs
    from ..slim.quantize import quantize_task
    from ..slim.report import compare, format_report, latency
    from ..utils.device import setup_device
    from ..utils.logger import get_logger
    log = get_logger()
    try:
        if is_supernet(config):
            raise ConfigError(f"{args.config}: a supernet is not quantised whole; extract a subnet first "
                              f"(tools/extract_subnet.py) and quantise its config.yaml")
        check_writable_dir(config["Export"]["save_dir"], "Export.save_dir")
        setup_device(config, device="cpu")
        model = load_trained_model(config)
        for task, float_dir in export_dirs(model, config).items():
            out, images = quantize_task(model, config, task, float_dir)
            log.info(f"quantised {task} -> {out} (calibrated on {len(images)} images, seed "
                     f"{config['Quant']['seed']}, {config['Quant']['algo']})")
            report = compare(config, task, float_dir, out, images)
            report["latency_ms"] = latency({"float": float_dir, "int8": out})
            with open(os.path.join(out, "quant_report.json"), "w") as f:
                json.dump(report, f, indent=1)
            for line in format_report(report, report["latency_ms"]):
                log.info(line)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
