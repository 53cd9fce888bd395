"""A chip search as the config describes it (Search section): the measurements it needs, cached
under Search.cache_dir, and its result files."""
import json
import os

from ..chips import chip_backend
from ..engine.calibrate import calibrate, neck_calibration
from ..engine.eval_report import report_results
from ..engine.evaluator import Evaluator
from ..utils.checkpoint import save_checkpoint
from ..utils.config import dump_config
from .extract import check_tasks, extract, max_feature_diff
from .accuracy import SubnetAccuracy
from .budget import budget_type, reductions, resolve_budget
from .cache import MeasureCache
from .latency import build_latency
from .pareto import plot_pareto
from .runtime_choice import is_choice, runtime_lookup
from .search import BudgetedSearch, Measure


def build_search(config, supernet, tasks, log):
    """The BudgetedSearch of config["Search"], its measurements cached under Search.cache_dir."""
    s, space = config["Search"], supernet.space
    cache = s["cache_dir"]
    accuracy = {}
    for t in tasks:
        val = (s["val_sets"] or {}).get(t)
        cal = neck_calibration(config, t, s["calibration_images"], s["seed"], "Search.calibration_images")
        fn = SubnetAccuracy(config, supernet, t, s["metric"], val, calibration=cal)
        accuracy[t] = Measure(fn, MeasureCache(os.path.join(cache, f"accuracy_{t}_{s['metric']}.jsonl"), fn.context),
                              f"{t} {s['metric']} on {','.join(fn.sets)}")
    latency, exact, kind = None, False, budget_type(s)
    if kind == "latency_ms":
        src = build_latency(s, config, supernet, tasks[0])
        log.info(f"latency of {s['chip']}: {src.source}")
        if not src.measured:
            log.warning(f"the {s['chip']} latency table is a PLACEHOLDER estimate, not a measurement: "
                        f"treat the chosen subnet as a sketch until the table is measured on the device")
        if getattr(src, "warning", None):
            log.warning(src.warning)
        if src.exact:
            latency, exact = src, True
        else:
            latency = Measure(src, MeasureCache(os.path.join(cache, f"latency_{s['chip']}_b{s['batch_size']}.jsonl"),
                                                src.context),
                              f"{s['chip']} latency")
    budget = resolve_budget(s, space, latency_of(latency, exact, space))
    log.info(f"budget: {budget.text()}")
    return BudgetedSearch(space, accuracy, kind, budget, latency, exact, s["num_samples"],
                          s["num_candidates"], s["num_verify"], s["seed"], s["features"], log=log.info,
                          verify_rounds=s["verify_rounds"],
                          runtime_of=runtime_lookup(latency, space) if is_choice(s["chip"]) else None)


def latency_of(latency, exact, space):
    """subnet -> latency with the search's source (None without one), for a relative budget."""
    if latency is None:
        return None
    return latency if exact else (lambda subnet: float(latency(space, [subnet])[0]))


def write_result(config, space, res, save_dir):
    """<task>_<chip>.json and its Pareto PNG; returns the JSON path. Its "runtime" names the chip
    (and deploy config) to serve the subnet with: on a runtime choice, the faster runtime."""
    s, task, budget = config["Search"], res["task"], res["budget"]
    red = reductions(space, res["subnet"])
    # the runtime to deploy with: the chip's own, or the faster one a runtime choice found
    runtime = dict(res.get("runtime") or {"chip": s["chip"], "backend": chip_backend(s["chip"])})
    runtime["deploy_config"] = f"deploy/configs/{runtime['chip']}.yaml"
    out = {"task": task, "chip": s["chip"], "runtime": runtime, "subnet": res["subnet"].to_dict(),
           "budget": budget.to_dict(), "metric": s["metric"],
           "predicted": res["predicted"], "measured": res["measured"],
           "params": red["params"]["subnet"], "flops": red["flops"]["subnet"], "reduction": red,
           "checkpoint": config["Global"]["pretrained_model"], "verified": res["verified"],
           "verify_quality": res["verify_quality"], "verify_levels": res["verify_levels"]}
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, f"{task}_{s['chip']}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    plot_pareto(os.path.join(save_dir, f"{task}_{s['chip']}_pareto.png"), res, budget.type, budget.value,
                s["metric"], f"{task} on {s['chip']}: {budget.text()}")
    return path


TOLERANCE = 1e-4


def side_by_side(config, supernet, model, tasks, rows, calibrations):
    """Evaluate the full supernet path and the extracted model; one table row per test set. Both
    carry BN-neck statistics recomputed for their own path (Extract.calibration_images)."""
    full = supernet.space.resolve(config["Supernet"]["eval_subnet"], "Supernet.eval_subnet")
    supernet.set_subnets({t: full for t in tasks})
    calibrate(supernet, full, calibrations)
    a = Evaluator(config, supernet, only=tasks).evaluate(tag="supernet_full_path")
    report_results(a, config["Global"]["output_dir"])
    b = Evaluator(config, model, only=tasks).evaluate(tag="extracted_subnet")
    report_results(b, config["Global"]["output_dir"])
    lines = [f"{'test set':14s} {'supernet (' + rows[0] + ')':>30s} {'extracted (' + rows[1] + ')':>56s}"]
    for x, y in zip(a["sets"], b["sets"]):
        lines.append(f"{x['set']:14s} {x['headline']:>30s} {y['headline']:>56s}")
    return "\n".join(lines)


def extract_to_dir(config, supernet, tasks):
    """Extract config["Extract"]'s subnet for ``tasks`` from ``supernet`` into Extract.save_dir
    (model.pdparams, a self-contained config.yaml, subnet.json), its BN necks recalibrated on
    Extract.calibration_images. Returns (subnet, model, calibrations, max |feature diff|)."""
    ex = config["Extract"]
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
        json.dump({"tasks": tasks, "subnet": subnet.to_dict(), "reduction": reductions(supernet.space, subnet)},
                  f, indent=1)
    return subnet, model, calibrations, diff
