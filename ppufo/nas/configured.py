"""A chip search as the config describes it (Search section): the measurements it needs, cached
under Search.cache_dir, and its result files."""
import json
import os

from ..chips import INT8_OF, QUANTIZED_CHIPS, chip_backend
from ..engine.calibrate import calibrate, neck_calibration
from ..engine.eval_report import report_results
from ..engine.evaluator import Evaluator
from ..utils.checkpoint import save_checkpoint
from ..slim.fake_quant import Int8Simulation
from ..utils.config import dump_config
from ..utils.errors import ConfigError
from .extract import check_tasks, extract, max_feature_diff
from .accuracy import SubnetAccuracy
from .budget import budget_type, reductions, resolve_budget
from .cache import MeasureCache
from .latency import build_latency
from .pareto import plot_pareto
from .runtime_choice import is_choice, runtime_lookup
from .search import BudgetedSearch, Measure


def build_search(config, supernet, tasks, log, chip=None, latency=None, budget=None, required=True, tag=False):
    """The BudgetedSearch of config["Search"], its measurements cached under Search.cache_dir.
    ``chip`` / ``latency`` stand for Search.chip / Search.latency, ``budget`` (a resolved Budget) for
    Search.budget; on an int8 chip (chips.QUANTIZED_CHIPS) the candidates are scored in simulated int8.
    ``tag``: the search's log lines start with the chip's name (two searches in one log)."""
    s, space = config["Search"], supernet.space
    chip, cache = chip or s["chip"], s["cache_dir"]
    int8 = chip in QUANTIZED_CHIPS
    accuracy = {}
    for t in tasks:
        val = (s["val_sets"] or {}).get(t)
        cal = neck_calibration(config, t, s["calibration_images"], s["seed"], "Search.calibration_images")
        fn = SubnetAccuracy(config, supernet, t, s["metric"], val, calibration=cal,
                            int8=Int8Simulation(config, t) if int8 else None)
        name = f"accuracy_{t}_{s['metric']}{'_int8' if int8 else ''}.jsonl"
        accuracy[t] = Measure(fn, MeasureCache(os.path.join(cache, name), fn.context),
                              f"{t} {s['metric']}{' (int8 simulated)' if int8 else ''} on {','.join(fn.sets)}")
    source, exact, kind = None, False, budget_type(s)
    if kind == "latency_ms":
        src = build_latency(dict(s, chip=chip, latency=latency or s["latency"]), config, supernet, tasks[0])
        log.info(f"latency of {chip}: {src.source}")
        if not src.measured:
            log.warning(f"the {chip} latency table is a PLACEHOLDER estimate, not a measurement: "
                        f"treat the chosen subnet as a sketch until the table is measured on the device")
        if getattr(src, "warning", None):
            log.warning(src.warning)
        if src.exact:
            source, exact = src, True
        else:
            source = Measure(src, MeasureCache(os.path.join(cache, f"latency_{chip}_b{s['batch_size']}.jsonl"),
                                               src.context),
                             f"{chip} latency")
    budget = budget or resolve_budget(s, space, latency_of(source, exact, space))
    log.info(f"budget{' on ' + chip if tag else ''}: {budget.text()}")
    return BudgetedSearch(space, accuracy, kind, budget, source, exact, s["num_samples"],
                          s["num_candidates"], s["num_verify"], s["seed"], s["features"],
                          log=(lambda m: log.info(f"({chip}) {m}")) if tag else log.info,
                          verify_rounds=s["verify_rounds"],
                          runtime_of=runtime_lookup(source, space) if is_choice(chip) else None, required=required)


def precision_of(chip):
    return "int8" if chip in QUANTIZED_CHIPS else "float"


def run_search(config, supernet, tasks, log):
    """{task: result} of config["Search"]; each result names its "chip" and "precision". With
    Search.int8_candidates the chip and its int8 sibling (chips.INT8_OF) are searched on the same
    budget, both latencies from their tables (a live timing beside a table would compare two
    scales), and each task takes the more accurate of the two choices (the float one on a tie);
    "by_precision" keeps both searches' points and choices for the Pareto plot."""
    s = config["Search"]
    if not s["int8_candidates"]:
        return {t: dict(r, chip=s["chip"], precision=precision_of(s["chip"]))
                for t, r in build_search(config, supernet, tasks, log).run().items()}
    int8_chip = INT8_OF.get(s["chip"])
    if int8_chip is None:
        raise ConfigError(f"Search.int8_candidates: chip {s['chip']} has no int8 sibling; it applies to "
                          f"{sorted(INT8_OF)} (or search an int8 chip, {list(QUANTIZED_CHIPS)}, directly)")
    if budget_type(s) == "latency_ms" and s["latency"] == "measure":
        raise ConfigError(f"Search.int8_candidates: the int8 latency comes from the {int8_chip} table; set "
                          f"Search.latency to table or auto so that {s['chip']}'s comes from its table too")
    if s["latency_table"] and "{chip}" not in s["latency_table"]:
        raise ConfigError(f"Search.latency_table={s['latency_table']}: Search.int8_candidates reads the tables of "
                          f"{s['chip']} and {int8_chip}, one file each; write the path with {{chip}} for the "
                          f"chip's name (e.g. tables/{{chip}}.json), or null for the shipped tables")
    chips = {"float": s["chip"], "int8": int8_chip}
    first = build_search(config, supernet, tasks, log, latency="table", required=False, tag=True)
    searches = {"float": first, "int8": build_search(config, supernet, tasks, log, chip=int8_chip, latency="table",
                                                    budget=first.spec, required=False, tag=True)}
    runs = {p: search.run() for p, search in searches.items()}
    return {t: pick_precision({p: dict(r[t], chip=chips[p], precision=p) for p, r in runs.items()}) for t in tasks}


def pick_precision(results):
    """The more accurate measured choice of ``results`` ({precision: result}, "float" first), with
    "by_precision" holding every one; ConfigError if none has a subnet within budget."""
    found = [r for r in results.values() if r["subnet"] is not None]
    if not found:
        r = next(iter(results.values()))
        cheapest = ", ".join(f"{p} {x['cheapest']:.4g}" for p, x in results.items())
        raise ConfigError(f"Search.budget: no measured subnet of {r['task']} is within {r['budget'].text()} in "
                          f"float or int8 (the cheapest measured: {cheapest}); raise the budget")
    best = max(found, key=lambda r: r["measured"]["accuracy"])  # max keeps the first (float) on a tie
    return dict(best, by_precision=results)


def latency_of(latency, exact, space):
    """subnet -> latency with the search's source (None without one), for a relative budget."""
    if latency is None:
        return None
    return latency if exact else (lambda subnet: float(latency(space, [subnet])[0]))


def write_result(config, space, res, save_dir):
    """<task>_<chip>.json and its Pareto PNG; returns the JSON path. Its "runtime" names the chip
    (and deploy config) to serve the subnet with: on a runtime choice, the faster runtime; with
    int8 candidates, the int8 chip when a quantised subnet was chosen ("precision": "int8": extract it,
    then quantise it with ppufo-quantize)."""
    s, task, budget = config["Search"], res["task"], res["budget"]
    red = reductions(space, res["subnet"])
    chip = res.get("chip", s["chip"])
    # the runtime to deploy with: the chip's own, or the faster one a runtime choice found
    runtime = dict(res.get("runtime") or {"chip": chip, "backend": chip_backend(chip)})
    runtime["deploy_config"] = f"deploy/configs/{runtime['chip']}.yaml"
    out = {"task": task, "chip": s["chip"], "precision": res.get("precision", precision_of(chip)),
           "runtime": runtime, "subnet": res["subnet"].to_dict(),
           "budget": budget.to_dict(), "metric": s["metric"],
           "predicted": res["predicted"], "measured": res["measured"],
           "params": red["params"]["subnet"], "flops": red["flops"]["subnet"], "reduction": red,
           "checkpoint": config["Global"]["pretrained_model"], "verified": res["verified"],
           "verify_quality": res["verify_quality"], "verify_levels": res["verify_levels"]}
    if "by_precision" in res:  # both searches' choices (null: none within budget)
        out["by_precision"] = {p: {"chip": r["chip"], "subnet": r["subnet"] and r["subnet"].to_dict(),
                                   "measured": r.get("measured")} for p, r in res["by_precision"].items()}
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
