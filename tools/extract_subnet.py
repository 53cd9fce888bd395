"""Cut a task subnet out of a trained supernet into a standalone plain-ViT model.

python tools/extract_subnet.py -c configs/supernet_quickstart.yaml \
    -o Global.pretrained_model=output/supernet_quickstart/latest \
    -o Extract.task=person Extract.subnet=configs/subnets/person_demo.json \
    -o Extract.save_dir=output/supernet_quickstart/person_subnet [--eval]

Writes <save_dir>/model.pdparams, config.yaml (a normal ppufo config: train, eval, export work on
it) and subnet.json; checks that the extracted features equal the supernet path's. The BN necks
get statistics recomputed for the subnet on Extract.calibration_images training images (as the
search measured it; 0 keeps the supernet's running statistics). --eval
evaluates the full supernet path and the subnet on the kept tasks' test sets, side by side.
"""
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppufo.utils.config import cli_config  # noqa: E402
from ppufo.utils.errors import ConfigError, DataError  # noqa: E402

TOLERANCE = 1e-4


def count(params):
    return sum(int(p.size) for p in params)


def side_by_side(config, supernet, model, tasks, rows, calibrations):
    """Evaluate the full supernet path and the extracted model; one table row per test set. Both
    carry BN-neck statistics recomputed for their own path (Extract.calibration_images)."""
    from ppufo.engine.evaluator import Evaluator
    from ppufo.nas.calibrate import calibrate
    full = supernet.space.resolve(config["Supernet"]["eval_subnet"], "Supernet.eval_subnet")
    supernet.set_subnets({t: full for t in tasks})
    calibrate(supernet, full, calibrations)
    a = Evaluator(config, supernet, only=tasks).evaluate(tag="supernet_full_path")
    b = Evaluator(config, model, only=tasks).evaluate(tag="extracted_subnet")
    lines = [f"{'test set':14s} {'supernet (' + rows[0] + ')':>30s} {'extracted (' + rows[1] + ')':>30s}"]
    for x, y in zip(a["sets"], b["sets"]):
        lines.append(f"{x['set']:14s} {x['headline']:>30s} {y['headline']:>30s}")
    return "\n".join(lines)


def main():
    args, config = cli_config("ppufo subnet extraction", extra=lambda p: p.add_argument(
        "--eval", action="store_true", help="evaluate the supernet path and the subnet side by side"))
    from ppufo.arch.multitask import load_trained_model
    from ppufo.nas.calibrate import neck_calibration
    from ppufo.nas.extract import check_tasks, extract, max_feature_diff
    from ppufo.utils.checkpoint import save_checkpoint
    from ppufo.utils.config import dump_config
    from ppufo.utils.device import setup_device
    from ppufo.utils.logger import init_logger
    try:
        if config["Arch"].get("name") != "SupernetMultiTaskModel":
            raise ConfigError(f"{args.config}: Arch.name is {config['Arch'].get('name')}; extraction needs "
                              f"a supernet config (Arch.name: SupernetMultiTaskModel)")
        ex = config["Extract"]
        tasks = [t.strip() for t in ex["task"].split(",") if t.strip()]
        log = init_logger(os.path.join(ex["save_dir"], "extract.log"))
        setup_device(config)
        supernet = load_trained_model(config)
        subnet = supernet.space.resolve(ex["subnet"], "Extract.subnet")
        check_tasks(supernet, tasks, subnet)  # before the calibration images are read
        calibrations = [c for c in (neck_calibration(config, t, ex["calibration_images"], where="Extract.calibration_images")
                                    for t in tasks) if c is not None]
        cfg, model = extract(config, supernet, tasks, subnet, calibrations)
        diff = max_feature_diff(supernet, model, tasks, subnet, config["Global"]["image_shape"])
        if diff > TOLERANCE:
            raise RuntimeError(f"extracted features differ from the supernet path by {diff:.3g} (> {TOLERANCE})")
        prefix = os.path.join(ex["save_dir"], "model")
        cfg["Global"].update(pretrained_model=prefix, checkpoints=None, output_dir=ex["save_dir"],
                             generate_demo_data=False)
        save_checkpoint(prefix, model, states={"iteration": 0, "extracted_from": config["Global"]["pretrained_model"],
                                               "tasks": tasks, "subnet": subnet.to_dict(),
                                               "neck_calibration_images": ex["calibration_images"]})
        dump_config(cfg, os.path.join(ex["save_dir"], "config.yaml"))
        with open(os.path.join(ex["save_dir"], "subnet.json"), "w") as f:
            json.dump({"tasks": tasks, "subnet": subnet.to_dict()}, f, indent=1)
        space = supernet.space
        full = space.resolve(config["Supernet"]["eval_subnet"], "Supernet.eval_subnet")
        single = space.uniform(space.depths[-1], space.heads[-1], "task", space.ratios[-1])
        n_sub, n_full, n_single = space.params(subnet), space.params(full), space.params(single)
        assert n_sub == count(model.backbone.parameters())
        log.info(f"extracted {tasks} subnet (depth {subnet.depth}, heads {list(subnet.heads)}, paths "
                 f"{list(subnet.paths)}, ratios {list(subnet.ratios)}) -> {ex['save_dir']}; max |feature diff| "
                 f"vs the supernet path {diff:.2e}")
        log.info(f"backbone parameters: subnet {n_sub / 1e6:.3f}M; full supernet path ({config['Supernet']['eval_subnet']}) "
                 f"{n_full / 1e6:.3f}M ({1 - n_sub / n_full:.0%} fewer); full single-FFN ViT "
                 f"{n_single / 1e6:.3f}M ({1 - n_sub / n_single:.0%} fewer); FLOPs {space.flops(subnet) / 1e6:.1f}M vs "
                 f"{space.flops(full) / 1e6:.1f}M")
        if args.eval:
            table = side_by_side(config, supernet, model, tasks,
                                 [f"{n_full / 1e6:.2f}M", f"{n_sub / 1e6:.2f}M, -{1 - n_sub / n_full:.0%}"],
                                 calibrations)
            log.info("supernet path vs extracted subnet:\n" + table)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
