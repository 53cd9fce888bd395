"""The derived ``search`` arm: a GP-NAS subnet search on the same seed's final supernet of its
source arm, with ppufo.nas's search and extraction (as tools/search_subnet.py and
tools/extract_subnet.py); it trains nothing.

    person_subnet:
      from: supernet                # a trained arm whose config is a supernet
      search: {task: person, budget: {params: 0.8}, num_samples: 30,
               val_sets: {person: [{name: DukeMTMC, root: person_val}]}}

``search`` holds keys of the config's Search section (docs/config.md), applied over the source's
config; ``task`` (one task) and ``budget`` are required. The study sets Search.seed (the run's
seed), save_dir and cache_dir (<run>/search), and extracts the chosen subnet with Extract's
settings into <run>/subnet/ (model.pdparams, config.yaml, subnet.json). The extracted model is
scored on the compared sets of the searched task. result.json's "subnet" holds the subnet, the
extracted Arch, its backbone params and FLOPs, the budget, the search's measured validation
accuracy, and the reductions against the All-in-One ViT and the supernet's largest path.
"""
import json
import os
import time

from ..utils.errors import ConfigError

STUDY_SEARCH_KEYS = ("seed", "save_dir", "cache_dir")


def check_search(path, where, search):
    """``search`` validated as far as it can be without the source's config (plan_runs loads
    that with search_overrides and checks the values)."""
    from ..utils.config import SCHEMA
    if not isinstance(search, dict):
        raise ConfigError(f"{path}: {where}: expected a mapping of Search keys, got {search!r}")
    allowed = [k for k in SCHEMA["Search"] if k not in STUDY_SEARCH_KEYS]
    for k in search:
        if k in STUDY_SEARCH_KEYS:
            raise ConfigError(f"{path}: {where}.{k}: set by the study (Search.seed = the run's seed, "
                              f"save_dir and cache_dir in the run folder); leave it out")
        if k not in allowed:
            raise ConfigError(f"{path}: {where}: unknown key {k!r}; allowed (the Search section): {allowed}")
    for k in ("task", "budget"):
        if search.get(k) in (None, ""):
            raise ConfigError(f"{path}: {where}.{k}: required key is missing")
    task = search["task"]
    if not isinstance(task, str) or "," in task:
        raise ConfigError(f"{path}: {where}.task: {task!r}; expected one task name (a search arm "
                          f"extracts one subnet)")
    return dict(search)


def search_overrides(search, seed, run_dir):
    """Overrides of the source's config that make it this arm's search and extraction."""
    out = [f"Search.{k}={json.dumps(v)}" for k, v in search.items()]
    return out + [f"Search.seed={seed}", f"Search.save_dir={os.path.join(run_dir, 'search')}",
                  f"Search.cache_dir={os.path.join(run_dir, 'search', 'cache')}",
                  f"Extract.task={search['task']}", f"Extract.save_dir={os.path.join(run_dir, 'subnet')}"]


def search_run(spec):
    """The worker's ``search`` kind: search, extract, score; returns the result's fields."""
    from ..arch.trained import load_trained_model
    from ..engine.eval_report import report_results
    from ..engine.evaluator import Evaluator
    from ..nas.budget import reductions
    from ..nas.configured import extract_to_dir, run_search, write_result
    from ..utils.config import load_config
    from .results import numbers_of, open_derived_run

    src_dir, run_dir = spec["source_dir"], spec["run_dir"]
    source, config, log = open_derived_run(spec, "search.log", search_overrides(spec["search"], spec["seed"], run_dir))
    task = config["Search"]["task"]
    t = time.time()
    supernet = load_trained_model(config)
    log.info(f"search space: {supernet.space.describe()}; task {task}")
    res = run_search(config, supernet, [task], log)[task]
    config["Extract"]["subnet"] = write_result(config, supernet.space, res, config["Search"]["save_dir"])
    subnet, model, _, diff = extract_to_dir(config, supernet, [task])
    log.info(f"extracted {subnet.to_json()} into {config['Extract']['save_dir']} (max |feature diff| vs the "
             f"supernet path {diff:.2e})")
    t_search = time.time() - t
    t = time.time()
    plain = load_config(os.path.join(config["Extract"]["save_dir"], "config.yaml"))
    summary = Evaluator(plain, model, only=spec["sets"]).evaluate(tag="subnet")
    eval_json = report_results(summary, run_dir, log)
    t_eval = time.time() - t
    red = reductions(supernet.space, subnet)
    return {"iteration": source["iteration"], "steps": source["steps"],
            "images_per_task": source["images_per_task"], "scores": numbers_of(summary, spec["sets"]),
            "seconds": {"demo_data": 0.0, "train": 0.0, "post_step": t_search, "eval": t_eval},
            "config": os.path.join(run_dir, "config.yaml"), "eval_json": eval_json, "source": src_dir,
            "subnet": {"task": task, "subnet": subnet.to_dict(), "Arch": plain["Arch"],
                       "params": red["params"]["subnet"], "flops": red["flops"]["subnet"], "reduction": red,
                       "budget": res["budget"].to_dict(), "measured": res["measured"],
                       "metric": config["Search"]["metric"], "folder": config["Extract"]["save_dir"]}}
