"""Runs that start from other runs of their seed: which runs a run needs, in what order arms run,
and what a run takes from its sources.

An arm names its sources with::

    from: <arm>             derived arms (precise_bn, search): that arm's run folder
    init_from: <arm>        Global.pretrained_model = <that arm's run>/latest (set when planned)
    shape_from: <search arm>   Arch = the plain ViT of that run's extracted subnet (<run>/subnet/
                            config.yaml), trained from scratch (set when the run starts)
    compute_of: [<arm>, ...]   Global.max_iters = round(sum of their train_flops / this run's
                            training FLOPs per step) (set when the run starts)

always the same seed's run. The study starts a run once every run it needs has finished; a failed
run stops the study, and the runs waiting on it are named as not run (``waiting_on``).
"""
import json
import math
import os

from ..utils.errors import ConfigError

SOURCE_KEYS = ("from", "init_from", "shape_from", "compute_of")


def arm_sources(arm):
    """[(key, arm name)] of the arms ``arm`` needs, in SOURCE_KEYS order."""
    out = [("from", arm.source)] if arm.source else []
    out += [(k, getattr(arm, k)) for k in ("init_from", "shape_from") if getattr(arm, k)]
    return out + [("compute_of", a) for a in arm.compute_of or ()]


def check_sources(path, arms):
    """Every source names an arm of the right kind; no arm needs itself, directly or not."""
    for arm in arms.values():
        for key, name in arm_sources(arm):
            where = f"{path}: arms.{arm.name}.{key}"
            src = arms.get(name)
            if src is None:
                raise ConfigError(f"{where}: unknown arm {name!r}; arms: {list(arms)}")
            if name == arm.name:
                raise ConfigError(f"{where}: an arm cannot start from itself")
            if key == "shape_from" and src.kind != "search":
                raise ConfigError(f"{where}: {name!r} is not a search arm (from: <supernet arm>, search: "
                                  f"{{...}}); shape_from takes the shape of the subnet a search extracted")
            if key != "shape_from" and src.derived:
                what = {"from": "a derived arm starts from a trained arm's checkpoint",
                        "init_from": "init_from takes a trained arm's final checkpoint",
                        "compute_of": "compute_of sums the training FLOPs of trained arms"}[key]
                raise ConfigError(f"{where}: {name!r} is itself derived (it trains nothing); {what}")
    arm_order(arms, path)


def arm_order(arms, path="<experiment>"):
    """The arms in the order their runs start within a seed: each after the arms it needs;
    otherwise trained arms before derived ones, in file order. A cycle is an error naming it."""
    placed, order = set(), []
    pending = list(arms.values())
    while pending:
        ready = [a for a in pending if all(n in placed for _, n in arm_sources(a))]
        if not ready:
            a = pending[0]
            chain = [a.name]
            while True:  # follow unplaced sources until a name repeats
                a = arms[next(n for _, n in arm_sources(a) if n not in placed)]
                if a.name in chain:
                    chain = chain[chain.index(a.name):] + [a.name]
                    break
                chain.append(a.name)
            raise ConfigError(f"{path}: arms: {' -> '.join(chain)} need each other (from / init_from / "
                              f"shape_from / compute_of): no order runs them")
        arm = next((a for a in ready if not a.derived), ready[0])
        pending.remove(arm)
        placed.add(arm.name)
        order.append(arm)
    return order


def run_sources(arm, seed, planned):
    """{key: Run} (compute_of: [Run]) of ``arm`` at ``seed``; ``planned``: {(arm, seed): Run}."""
    out = {}
    for key, name in arm_sources(arm):
        run = planned[(name, seed)]
        if key == "compute_of":
            out.setdefault(key, []).append(run)
        else:
            out[key] = run
    return out


def needs(run):
    """The runs ``run`` waits for (each once)."""
    out = []
    for v in (run.sources or {}).values():
        for r in v if isinstance(v, list) else [v]:
            if r not in out:
                out.append(r)
    return out


def waiting_on(failed, runs):
    """The runs of ``runs`` that need ``failed``, directly or through others."""
    blocked, out = {failed.index}, []
    for r in runs:  # plan order: a run's sources come before it
        if any(n.index in blocked for n in needs(r)):
            blocked.add(r.index)
            out.append(r)
    return out


def checkpoint_of(run):
    return os.path.join(run.run_dir, "latest")


def spec_sources(run):
    """What the worker reads at start: {"shape_from": run folder, "compute_of": {arm: run folder}}."""
    s = run.sources or {}
    out = {}
    if "shape_from" in s:
        out["shape_from"] = s["shape_from"].run_dir
    if "compute_of" in s:
        out["compute_of"] = {r.arm: r.run_dir for r in s["compute_of"]}
    return out


def _finished(run_dir, key):
    from .results import RESULT, read_result
    result = read_result(run_dir)
    if result is None:
        raise ConfigError(f"{key}: the source run {run_dir} has not finished (no {RESULT})")
    return result


def shaped_arch(search_dir, own_arch):
    """Arch of a plain ViT with the shape (depth, widths, heads, MLP) of the subnet the search run
    ``search_dir`` extracted, keeping ``own_arch``'s NOT_SHAPE keys; no weights are taken."""
    from ..nas.extract import NOT_SHAPE  # a shape_from run keeps its own, as extraction keeps the supernet's
    from ..utils.config import load_config
    _finished(search_dir, "shape_from")
    path = os.path.join(search_dir, "subnet", "config.yaml")
    backbone = load_config(path)["Arch"]["Backbone"]
    shape = {k: v for k, v in backbone.items() if k not in NOT_SHAPE and k != "pretrained"}
    own = {k: v for k, v in own_arch["Backbone"].items() if k in NOT_SHAPE}
    return {"name": "MultiTaskModel", "Backbone": {**shape, **own}}


def compute_iters(total_flops, flops_per_step):
    """Steps whose training FLOPs come nearest ``total_flops`` (halves up; at least 1)."""
    if not flops_per_step or flops_per_step <= 0:
        raise ConfigError(f"compute_of: this run's training FLOPs per step is {flops_per_step!r}")
    return max(1, math.floor(total_flops / flops_per_step + 0.5))


def at_start(spec):
    """(overrides, record) the run of ``spec`` takes from its finished sources when it starts
    (shape_from, then compute_of on the shaped config); record says what was taken."""
    from ..engine.train_flops import planned_step_flops
    from ..utils.config import load_config
    src = spec.get("sources") or {}
    extra, record = [], {}
    if "shape_from" in src:
        arch = shaped_arch(src["shape_from"], load_config(spec["base"], spec["overrides"])["Arch"])
        extra.append("Arch=" + json.dumps(arch))
        record["shape_from"] = {"run": src["shape_from"], "Arch": arch}
    if "compute_of" in src:
        flops = {}
        for arm, run_dir in src["compute_of"].items():
            f = _finished(run_dir, f"compute_of: {arm}").get("train_flops")
            if f is None:
                raise ConfigError(f"compute_of: {arm} ({run_dir}) recorded no train_flops (a backbone "
                                  f"that does not count its FLOPs, or a run older than the count)")
            flops[arm] = float(f)
        per_step = planned_step_flops(load_config(spec["base"], spec["overrides"] + extra))
        iters = compute_iters(sum(flops.values()), per_step)
        extra.append(f"Global.max_iters={iters}")
        record["compute_of"] = {"train_flops": flops, "total": sum(flops.values()),
                                "flops_per_step": per_step, "max_iters": iters}
    return extra, record
