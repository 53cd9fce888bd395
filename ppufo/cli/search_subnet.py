"""GP-NAS search: the most accurate subnet of a trained supernet per task under a chip's budget.

python tools/search_subnet.py -c configs/supernet_quickstart.yaml \
    -o Global.pretrained_model=output/supernet_quickstart/latest \
    -o Search.chip=cpu_x86 Search.budget_type=latency_ms Search.budget=5 [Search.task=person]

Measures Search.num_samples subnets (accuracy on the validation sets through the supernet with
BN-neck statistics recomputed per subnet on Search.calibration_images training images, latency
with the chip's runtime or table; cached in Search.cache_dir, so a rerun resumes), fits
GP-NAS, verifies the best predicted candidates under the budget and writes, per task,
<save_dir>/<task>_<chip>.json ({"task", "chip", "runtime", "subnet", "predicted", "measured", ...}: feed it to
tools/extract_subnet.py -o Extract.subnet=...) and <task>_<chip>_pareto.png. "runtime" names the
chip (deploy config) to serve it with; Search.chip=cpu_x86_any picks it per subnet, the faster of
Paddle Inference (cpu_x86) and ONNX Runtime (cpu_x86_ort). Search.int8_candidates=true also
searches quantised subnets on the chip's int8 sibling (docs/chip_search.md#quantised-candidates).
"""
import os
import sys

from ..utils.config import cli_config
from ..utils.errors import ConfigError, DataError
from ..utils.fs import check_writable_dir


def main():
    args, config = cli_config("ppufo GP-NAS subnet search")
    from ..arch import is_supernet
    from ..arch.trained import load_trained_model
    from ..nas.budget import budget_type, reduction_text
    from ..nas.configured import run_search, write_result
    from ..utils.device import setup_device
    from ..utils.logger import init_logger
    try:
        s = config["Search"]
        if not is_supernet(config):
            raise ConfigError(f"{args.config}: Arch.name is {config['Arch'].get('name')}; the search needs a "
                              f"supernet config (Arch.name: SupernetMultiTaskModel)")
        kind = budget_type(s)  # a missing or malformed budget fails before the supernet loads
        tasks = [t.strip() for t in s["task"].split(",") if t.strip()] or list(config["Tasks"])
        unknown = [t for t in tasks if t not in config["Tasks"]]
        if unknown:
            raise ConfigError(f"Search.task: unknown task(s) {unknown}; tasks: {list(config['Tasks'])}")
        check_writable_dir(s["save_dir"], "Search.save_dir")
        check_writable_dir(s["cache_dir"], "Search.cache_dir")
        log = init_logger(os.path.join(s["save_dir"], "search.log"))
        setup_device(config)
        supernet = load_trained_model(config)
        log.info(f"search space: {supernet.space.describe()}; tasks {tasks}; chip {s['chip']}, {kind} budget")
        results = run_search(config, supernet, tasks, log)
        for task, res in results.items():
            path = write_result(config, supernet.space, res, s["save_dir"])
            p, m = res["predicted"], res["measured"]
            log.info(f"[{task}] chosen subnet {res['subnet'].to_json()} under {res['budget'].text()}: measured "
                     f"{s['metric']} {m['accuracy']:.4f}, {kind} {m[kind]:.4g} (predicted {p['accuracy']:.4f}, "
                     f"{p[kind]:.4g}) -> {path}")
            log.info(f"[{task}] backbone {reduction_text(supernet.space, res['subnet'])}")
            if "runtime" in res:  # a runtime choice: the subnet is served by the faster runtime
                r = res["runtime"]
                each = ", ".join(f"{c} {ms:.4g} ms" for c, ms in r["latency_ms"].items())
                log.info(f"[{task}] runtime: {r['chip']} ({r['backend']}; {each}): serve it with "
                         f"deploy/configs/{r['chip']}.yaml")
            for p, r in res.get("by_precision", {}).items():
                got = (f"{s['metric']} {r['measured']['accuracy']:.4f} at {r['measured'][kind]:.4g}" if r["subnet"]
                       else f"none within budget (cheapest {r['cheapest']:.4g})")
                log.info(f"[{task}] {p} candidates on {r['chip']}: {got}")
            log.info(f"[{task}] next: python tools/extract_subnet.py -c {args.config} -o Global.pretrained_model="
                     f"{config['Global']['pretrained_model']} -o Extract.task={task} Extract.subnet={path}")
            if res["precision"] == "int8":  # the accuracy was simulated: ppufo-quantize writes and measures the int8 model
                log.info(f"[{task}] then: python tools/quantize.py -c <Extract.save_dir>/config.yaml -o "
                         f"Global.pretrained_model=<Extract.save_dir>/model -o Export.task={task}, and serve it "
                         f"with deploy/configs/{res['chip']}.yaml")
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
