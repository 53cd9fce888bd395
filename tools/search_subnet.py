"""GP-NAS search: the most accurate subnet of a trained supernet per task under a chip's budget.

python tools/search_subnet.py -c configs/supernet_quickstart.yaml \
    -o Global.pretrained_model=output/supernet_quickstart/latest \
    -o Search.chip=cpu_x86 Search.budget_type=latency_ms Search.budget=5 [Search.task=person]

Measures Search.num_samples subnets (accuracy on the validation sets through the supernet with
BN-neck statistics recomputed per subnet on Search.calibration_images training images, latency
with Paddle Inference or the chip's table; cached in Search.cache_dir, so a rerun resumes), fits
GP-NAS, verifies the best predicted candidates under the budget and writes, per task,
<save_dir>/<task>_<chip>.json ({"task", "chip", "subnet", "predicted", "measured", ...}: feed it to
tools/extract_subnet.py -o Extract.subnet=...) and <task>_<chip>_pareto.png.
"""
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppufo.utils.config import cli_config  # noqa: E402
from ppufo.utils.errors import ConfigError, DataError  # noqa: E402


def build_search(config, supernet, tasks, log):
    """The BudgetedSearch of config["Search"], its measurements cached under Search.cache_dir."""
    from ppufo.nas.accuracy import SubnetAccuracy
    from ppufo.nas.cache import MeasureCache
    from ppufo.nas.calibrate import neck_calibration
    from ppufo.nas.latency import TableLatency, build_latency
    from ppufo.nas.search import BudgetedSearch, Measure
    s, space = config["Search"], supernet.space
    cache = s["cache_dir"]
    accuracy = {}
    for t in tasks:
        val = (s["val_sets"] or {}).get(t)
        cal = neck_calibration(config, t, s["calibration_images"], s["seed"], "Search.calibration_images")
        fn = SubnetAccuracy(config, supernet, t, s["metric"], val, output_dir=cache, calibration=cal)
        accuracy[t] = Measure(fn, MeasureCache(os.path.join(cache, f"accuracy_{t}_{s['metric']}.jsonl"), fn.context),
                              f"{t} {s['metric']} on {','.join(fn.sets)}")
    latency, exact = None, False
    if s["budget_type"] == "latency_ms":
        src = build_latency(s, config, supernet, tasks[0])
        log.info(f"latency of {s['chip']}: {src.source}")
        if not src.measured:
            log.warning(f"the {s['chip']} latency table is a PLACEHOLDER estimate, not a measurement: "
                        f"treat the chosen subnet as a sketch until the table is measured on the device")
        if isinstance(src, TableLatency):
            latency, exact = src, True
        else:
            latency = Measure(src, MeasureCache(os.path.join(cache, f"latency_{s['chip']}_b{s['batch_size']}.jsonl"),
                                                src.context),
                              f"{s['chip']} latency")
    return BudgetedSearch(space, accuracy, s["budget_type"], s["budget"], latency, exact, s["num_samples"],
                          s["num_candidates"], s["num_verify"], s["seed"], s["features"], log=log.info,
                          verify_rounds=s["verify_rounds"])


def write_result(config, space, res, save_dir):
    """<task>_<chip>.json and its Pareto PNG; returns the JSON path."""
    from ppufo.nas.pareto import plot_pareto
    s, task = config["Search"], res["task"]
    out = {"task": task, "chip": s["chip"], "subnet": res["subnet"].to_dict(),
           "budget": {"type": s["budget_type"], "value": s["budget"]}, "metric": s["metric"],
           "predicted": res["predicted"], "measured": res["measured"],
           "params": space.params(res["subnet"]), "flops": space.flops(res["subnet"]),
           "checkpoint": config["Global"]["pretrained_model"], "verified": res["verified"],
           "verify_quality": res["verify_quality"], "verify_levels": res["verify_levels"]}
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, f"{task}_{s['chip']}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    plot_pareto(os.path.join(save_dir, f"{task}_{s['chip']}_pareto.png"), res, s["budget_type"], s["budget"],
                s["metric"], f"{task} on {s['chip']}: {s['budget_type']} <= {s['budget']:g}")
    return path


def main():
    args, config = cli_config("ppufo GP-NAS subnet search")
    from ppufo.arch.multitask import load_trained_model
    from ppufo.utils.device import setup_device
    from ppufo.utils.logger import init_logger
    try:
        s = config["Search"]
        if config["Arch"].get("name") != "SupernetMultiTaskModel":
            raise ConfigError(f"{args.config}: Arch.name is {config['Arch'].get('name')}; the search needs a "
                              f"supernet config (Arch.name: SupernetMultiTaskModel)")
        if s["budget"] is None:
            raise ConfigError(f"Search.budget: required (with Search.budget_type={s['budget_type']}), "
                              f"e.g. -o Search.budget=5")
        tasks = [t.strip() for t in s["task"].split(",") if t.strip()] or list(config["Tasks"])
        unknown = [t for t in tasks if t not in config["Tasks"]]
        if unknown:
            raise ConfigError(f"Search.task: unknown task(s) {unknown}; tasks: {list(config['Tasks'])}")
        log = init_logger(os.path.join(s["save_dir"], "search.log"))
        setup_device(config)
        supernet = load_trained_model(config)
        log.info(f"search space: {supernet.space.describe()}; tasks {tasks}; chip {s['chip']}, "
                 f"{s['budget_type']} <= {s['budget']:g}")
        results = build_search(config, supernet, tasks, log).run()
        for task, res in results.items():
            path = write_result(config, supernet.space, res, s["save_dir"])
            p, m = res["predicted"], res["measured"]
            log.info(f"[{task}] chosen subnet {res['subnet'].to_json()}: measured {s['metric']} {m['accuracy']:.4f}, "
                     f"{s['budget_type']} {m[s['budget_type']]:.4g} (predicted {p['accuracy']:.4f}, "
                     f"{p[s['budget_type']]:.4g}) -> {path}")
            log.info(f"[{task}] next: python tools/extract_subnet.py -c {args.config} -o Global.pretrained_model="
                     f"{config['Global']['pretrained_model']} -o Extract.task={task} Extract.subnet={path}")
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
