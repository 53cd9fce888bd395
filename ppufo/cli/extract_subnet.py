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
import os
import sys

from ..utils.config import cli_config
from ..utils.errors import ConfigError, DataError
from ..utils.fs import check_writable_dir

def main():
    args, config = cli_config("ppufo subnet extraction", extra=lambda p: p.add_argument(
        "--eval", action="store_true", help="evaluate the supernet path and the subnet side by side"))
    from ..arch import is_supernet
    from ..arch.trained import load_trained_model
    from ..arch.memory_plan import parameter_count
    from ..nas.budget import reduction_text, reductions
    from ..nas.configured import extract_to_dir, side_by_side
    from ..utils.device import setup_device
    from ..utils.logger import init_logger
    try:
        if not is_supernet(config):
            raise ConfigError(f"{args.config}: Arch.name is {config['Arch'].get('name')}; extraction needs "
                              f"a supernet config (Arch.name: SupernetMultiTaskModel)")
        ex = config["Extract"]
        tasks = [t.strip() for t in ex["task"].split(",") if t.strip()]
        check_writable_dir(ex["save_dir"], "Extract.save_dir")
        log = init_logger(os.path.join(ex["save_dir"], "extract.log"))
        setup_device(config)
        supernet = load_trained_model(config)
        subnet, model, calibrations, diff = extract_to_dir(config, supernet, tasks)
        n_sub = supernet.space.params(subnet)
        assert n_sub == parameter_count(model.backbone.parameters())
        log.info(f"extracted {tasks} subnet (depth {subnet.depth}, heads {list(subnet.heads)}, paths "
                 f"{list(subnet.paths)}, ratios {list(subnet.ratios)}) -> {ex['save_dir']}; max |feature diff| "
                 f"vs the supernet path {diff:.2e}")
        log.info(f"backbone {reduction_text(supernet.space, subnet)}")
        log.info(f"backbone {reduction_text(supernet.space, subnet, 'flops')}")
        if args.eval:
            full = supernet.space.resolve(config["Supernet"]["eval_subnet"], "Supernet.eval_subnet")
            r = reductions(supernet.space, subnet)["params"]
            table = side_by_side(config, supernet, model, tasks,
                                 [f"{supernet.space.params(full) / 1e6:.2f}M",
                                  f"{n_sub / 1e6:.2f}M, {r['vs_allinone']:+.0%} vs All-in-One, "
                                  f"{r['vs_largest']:+.0%} vs largest"], calibrations)
            log.info("supernet path vs extracted subnet:\n" + table)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
