"""Experiment files (configs/ablations/<name>.yaml) and their expansion into runs.

Schema (every key is checked; errors name the file and the key)::

    description: one line shown above the table            # optional
    base: ../quickstart.yaml        # training config; a relative path is relative to THIS file's
                                    # folder (as _BASE_ in configs), an absolute one is used as is
    overrides:                      # optional: for every arm, as `-o` on the command line
      - Global.max_iters=400
    seeds: [0, 1, 2, 3, 4]          # one run per arm and seed; distinct ints in [0, 2^32-1]
    parallel: 1                     # optional: runs at a time (--parallel wins); cores are shared
    arms:                           # name -> arm; names are folder names ([A-Za-z0-9_.-])
      hetero: {overrides: []}
      homo: {overrides: [DataLoader.Train.batch_sampler.name=HomogeneousBatchSampler]}
      homo_pbn:                     # derived: no training; the same seed's final checkpoint of
        from: homo                  # a trained arm, backbone BN statistics recomputed on
        precise_bn: {num_batches: 20}   # heterogeneous batches, then scored
    compare:
      sets: [Market1501, SOP]       # test-set labels as the evaluator names them (alias, set_name,
                                    # <name>-<test_size> or the dataset name). An arm may hold only
                                    # some of them (a single-task arm: -o Tasks.face=null ...): each
                                    # run scores the compared sets its config holds, and the report
                                    # shows "—" for the others. Every arm must hold at least one,
                                    # every set be held by at least one arm (a typo is held by none)
      metrics: [rank1, mAP, recall@1]   # keys of a set's result (rank1, rank5, mAP, mINP,
                                    # accuracy_mean, recall@1, ..., score = the set's headline
                                    # number); a list applies to every set that has the key, a
                                    # mapping {set: [keys]} names them per set
      pairs:                        # optional; a - b per seed, and the claimed direction, on the
                                    # compared sets both arms hold (they must share at least one)
        - {arms: [hetero, homo], claim: greater, note: "UFO: mixed batches beat one-task batches"}

A run of a trained arm is ``base`` + ``overrides`` + the command line's ``-o`` + the arm's
overrides + what the study sets itself (see ``Run``). Runs are ordered seed by seed, trained arms
before derived ones, so the first seed's runs finish a first complete comparison. A derived arm
holds the compared sets of its source. The compared sets every arm holds are checked when the
runs are planned, before anything trains.
"""
import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field

import yaml

from ..utils.config import SEED_MAX, load_config
from ..utils.errors import ConfigError
from .stats import DIRECTIONS

TOP_KEYS = ("description", "base", "overrides", "seeds", "parallel", "arms", "compare")
COMPARE_KEYS = ("sets", "metrics", "pairs")
PAIR_KEYS = ("arms", "claim", "note")
TRAINED_ARM_KEYS = ("overrides",)
DERIVED_ARM_KEYS = ("from", "precise_bn")
PRECISE_BN_KEYS = ("num_batches",)
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TRAIN, PRECISE_BN = "train", "precise_bn"
# run keys the study sets itself: an arm or the common overrides must not set them
STUDY_KEYS = ("Global.seed", "Global.output_dir", "Global.eval_interval", "Global.use_visualdl",
              "Global.checkpoints", "Global.cpu_threads")


@dataclass
class Arm:
    name: str
    overrides: list = field(default_factory=list)
    source: str = None          # derived arms: the trained arm whose checkpoints they start from
    precise_bn: dict = None     # derived arms: {"num_batches": N}

    @property
    def derived(self):
        return self.source is not None


@dataclass
class Pair:
    a: str
    b: str
    claim: str
    note: str = ""

    @property
    def label(self):
        return f"{self.a} - {self.b}"


@dataclass
class Experiment:
    path: str
    name: str
    base: str
    overrides: list
    seeds: list
    parallel: int
    arms: dict
    sets: list
    metrics: object             # list of keys, or {set: [keys]}
    pairs: list
    description: str = ""


@dataclass(eq=False)  # hashable by identity: runs key the scheduler's dicts
class Run:
    """One (arm, seed). A trained run is ``python -m ppufo.ablation.worker`` training the merged
    config ``overrides`` on ``base``; a derived run scores ``source``'s final checkpoint after its
    post-step. ``identity`` fingerprints what decides its result (the merged config, without
    output_dir and cpu_threads): a finished run of another identity is never mixed into a table.
    ``sets``: the compared sets it scores, those its config holds, in compare.sets order (they
    follow from the config, so the identity covers them)."""
    index: int
    arm: str
    seed: int
    kind: str
    run_dir: str
    base: str
    overrides: list
    identity: str
    source: "Run" = None
    precise_bn: dict = None
    sets: list = None

    @property
    def name(self):
        return f"arm={self.arm} seed={self.seed}"

    @property
    def rel_dir(self):
        return os.path.join("runs", self.arm, f"seed_{self.seed}")


def _fail(path, where, msg):
    raise ConfigError(f"{path}: {where}: {msg}")


def _keys(path, where, node, allowed, required=()):
    if not isinstance(node, dict):
        _fail(path, where, f"expected a mapping, got {type(node).__name__} {node!r}")
    unknown = [k for k in node if k not in allowed]
    if unknown:
        _fail(path, where, f"unknown key(s) {unknown}; allowed: {list(allowed)}")
    for k in required:
        if k not in node:
            _fail(path, f"{where}.{k}" if where != "top level" else k, "required key is missing")


def _overrides(path, where, value):
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(path, where, f"expected a list of 'Section.key=value' strings, got {value!r}")
    for v in value:
        key = v.split("=", 1)[0].strip()
        if "=" not in v or not key:
            _fail(path, where, f"{v!r} is not 'Section.key=value'")
        if key in STUDY_KEYS:
            _fail(path, where, f"{v!r}: {key} is set by the study for every run "
                               f"({', '.join(STUDY_KEYS)}); leave it out")
    return list(value)


def _str_list(path, where, value, nonempty=True):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) \
            or (nonempty and not value):
        _fail(path, where, f"expected a {'non-empty ' if nonempty else ''}list of names, got {value!r}")
    if len(set(value)) != len(value):
        _fail(path, where, f"{value!r} names an entry twice")
    return list(value)


def _int(path, where, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        _fail(path, where, f"expected {rng}, got {value!r}")
    return value


def parse_experiment(raw, path="<experiment>"):
    """An Experiment from the mapping ``raw`` read from ``path`` (validated; paths resolved)."""
    _keys(path, "top level", raw, TOP_KEYS, required=("base", "seeds", "arms", "compare"))
    desc = raw.get("description") or ""
    if not isinstance(desc, str):
        _fail(path, "description", f"expected a string, got {desc!r}")
    base = raw["base"]
    if not isinstance(base, str) or not base:
        _fail(path, "base", f"expected the path of a training config, got {base!r}")
    base = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), base))
    if not os.path.isfile(base):
        _fail(path, "base", f"config file not found: {base} (a relative base is relative to the "
                            f"experiment file's folder)")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds:
        _fail(path, "seeds", f"expected a non-empty list of integers, got {seeds!r}")
    for i, s in enumerate(seeds):
        _int(path, f"seeds.{i}", s, 0, SEED_MAX)
    if len(set(seeds)) != len(seeds):
        _fail(path, "seeds", f"{seeds!r} repeats a seed")
    parallel = _int(path, "parallel", raw.get("parallel", 1), 1)

    arms_raw = raw["arms"]
    if not isinstance(arms_raw, dict) or not arms_raw:
        _fail(path, "arms", f"expected a non-empty mapping of arm name -> arm, got {arms_raw!r}")
    arms = {}
    for name, spec in arms_raw.items():
        where = f"arms.{name}"
        if not isinstance(name, str) or not ARM_NAME.fullmatch(name):
            _fail(path, where, "arm names are folder names: letters, digits, '_', '.', '-'")
        spec = {} if spec is None else spec
        _keys(path, where, spec, TRAINED_ARM_KEYS + DERIVED_ARM_KEYS)
        if "from" in spec or "precise_bn" in spec:
            if "overrides" in spec:
                _fail(path, where, "a derived arm (from + precise_bn) trains nothing, so it takes "
                                   "no overrides")
            for k in DERIVED_ARM_KEYS:
                if k not in spec:
                    _fail(path, f"{where}.{k}", "required key is missing (a derived arm needs "
                                                "both from: <trained arm> and precise_bn: {num_batches: N})")
            pbn = spec["precise_bn"]
            _keys(path, f"{where}.precise_bn", pbn, PRECISE_BN_KEYS, required=PRECISE_BN_KEYS)
            _int(path, f"{where}.precise_bn.num_batches", pbn["num_batches"], 1)
            arms[name] = Arm(name, source=spec["from"], precise_bn=dict(pbn))
        else:
            arms[name] = Arm(name, overrides=_overrides(path, f"{where}.overrides", spec.get("overrides")))
    for arm in arms.values():
        if arm.derived:
            src = arms.get(arm.source)
            if src is None:
                _fail(path, f"arms.{arm.name}.from", f"unknown arm {arm.source!r}; arms: {list(arms)}")
            if src.derived:
                _fail(path, f"arms.{arm.name}.from", f"{arm.source!r} is itself derived; a derived "
                                                     f"arm starts from a trained arm's checkpoint")

    cmp = raw["compare"]
    _keys(path, "compare", cmp, COMPARE_KEYS, required=("sets", "metrics"))
    sets = _str_list(path, "compare.sets", cmp["sets"])
    metrics = cmp["metrics"]
    if isinstance(metrics, dict):
        extra = [s for s in metrics if s not in sets]
        if extra or set(metrics) != set(sets):
            _fail(path, "compare.metrics", f"a mapping must name exactly the sets of compare.sets "
                                           f"{sets}; got {list(metrics)}")
        metrics = {s: _str_list(path, f"compare.metrics.{s}", metrics[s]) for s in sets}
    else:
        metrics = _str_list(path, "compare.metrics", metrics)
    pairs = []
    for i, p in enumerate(cmp.get("pairs") or []):
        where = f"compare.pairs.{i}"
        _keys(path, where, p, PAIR_KEYS, required=("arms", "claim"))
        ab = p["arms"]
        if not isinstance(ab, list) or len(ab) != 2 or not all(isinstance(x, str) for x in ab):
            _fail(path, f"{where}.arms", f"expected [a, b] (two arm names; the difference is a - b), got {ab!r}")
        for x in ab:
            if x not in arms:
                _fail(path, f"{where}.arms", f"unknown arm {x!r}; arms: {list(arms)}")
        if ab[0] == ab[1]:
            _fail(path, f"{where}.arms", f"{ab!r}: an arm differenced with itself")
        if p["claim"] not in DIRECTIONS:
            _fail(path, f"{where}.claim", f"{p['claim']!r}; expected one of {list(DIRECTIONS)} "
                                          f"(the claimed sign of a - b)")
        note = p.get("note") or ""
        if not isinstance(note, str):
            _fail(path, f"{where}.note", f"expected a string, got {note!r}")
        pairs.append(Pair(ab[0], ab[1], p["claim"], note))
    name = os.path.splitext(os.path.basename(path))[0]
    return Experiment(path=path, name=name, base=base, overrides=_overrides(path, "overrides", raw.get("overrides")),
                      seeds=list(seeds), parallel=parallel, arms=arms, sets=sets, metrics=metrics,
                      pairs=pairs, description=desc)


def load_experiment(path):
    if not os.path.isfile(path):
        raise ConfigError(f"experiment file not found: {path}")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    return parse_experiment(raw if raw is not None else {}, path)


def arm_order(exp):
    """Trained arms in file order, then derived ones (each after its source)."""
    arms = list(exp.arms.values())
    return [a for a in arms if not a.derived] + [a for a in arms if a.derived]


def identity_of(config, study_dir):
    """sha256 of the merged config without what does not decide the result (output_dir,
    cpu_threads); a data_root inside the study is taken relative to it, so a moved study
    still matches."""
    cfg = copy.deepcopy(config)
    g = cfg["Global"]
    for k in ("output_dir", "cpu_threads"):
        g.pop(k, None)
    root = os.path.abspath(g["data_root"])
    study = os.path.abspath(study_dir)
    if os.path.commonpath([root, study]) == study:
        g["data_root"] = "<study>/" + os.path.relpath(root, study)
    text = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_labels(config):
    """The labels of the config's test sets, in config order."""
    from ..engine.evaluator import configured_labels  # imports Paddle: only when planning runs
    return list(configured_labels(config))


def _check_sets(exp, labels):
    """``labels``: {trained arm: its config's test-set labels}. Every compared set must be held by
    an arm (a typo is held by none), every arm hold one, every pair share one."""
    of = {a: labels[arm.source or a] for a, arm in exp.arms.items()}  # derived: their source's
    held = {a: [s for s in exp.sets if s in of[a]] for a in exp.arms}
    orphans = [s for s in exp.sets if not any(s in h for h in held.values())]
    if orphans:
        raise ConfigError(f"{exp.path}: compare.sets: {orphans} {'is' if len(orphans) == 1 else 'are'} "
                          f"a test set of no arm's config; the arms' test sets: "
                          + "; ".join(f"{a}: {t}" for a, t in labels.items()))
    for a, h in held.items():
        if not h:
            src = exp.arms[a].source
            raise ConfigError(f"{exp.path}: compare.sets: arm {a}{f' (derived from {src})' if src else ''} "
                              f"holds none of {exp.sets}; its test sets: {of[a]}")
    for i, p in enumerate(exp.pairs):
        if not set(held[p.a]) & set(held[p.b]):
            raise ConfigError(f"{exp.path}: compare.pairs.{i}: arms {p.a} and {p.b} share no compared "
                              f"set ({p.a} holds {held[p.a]}, {p.b} holds {held[p.b]} of compare.sets "
                              f"{exp.sets}); test sets: {p.a}: {of[p.a]}; {p.b}: {of[p.b]}")
    return held


def plan_runs(exp, study_dir, extra_overrides=()):
    """[Run] of ``exp`` in the order they start. Every trained run's config is loaded (and so
    validated) here, and the compared sets each arm holds checked, before anything trains;
    ``extra_overrides`` (the command line's -o) go after the file's common overrides and before
    the arm's."""
    study_dir = os.path.abspath(study_dir)
    common = list(exp.overrides) + list(extra_overrides)
    for o in extra_overrides:
        key = o.split("=", 1)[0].strip()
        if key in STUDY_KEYS:
            raise ConfigError(f"-o {o}: {key} is set by the study for every run ({', '.join(STUDY_KEYS)})")
    runs, trained, labels = [], {}, {}
    for seed in exp.seeds:
        for arm in arm_order(exp):
            run_dir = os.path.join(study_dir, "runs", arm.name, f"seed_{seed}")
            if arm.derived:
                src = trained[(arm.source, seed)]
                ident = hashlib.sha256(json.dumps({"from": src.identity, "precise_bn": arm.precise_bn},
                                                  sort_keys=True).encode()).hexdigest()[:16]
                runs.append(Run(len(runs) + 1, arm.name, seed, PRECISE_BN, run_dir, src.base, [],
                                ident, source=src, precise_bn=dict(arm.precise_bn), sets=src.sets))
                continue
            where = f"{exp.path}: arms.{arm.name} (seed {seed})"
            arm_ovr = common + arm.overrides
            try:
                merged = load_config(exp.base, arm_ovr + [f"Global.seed={seed}"])
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            run_ovr = arm_ovr + [f"Global.seed={seed}", f"Global.output_dir={run_dir}",
                                 "Global.eval_interval=0", "Global.use_visualdl=false",
                                 "Global.checkpoints=null"]
            if merged["Global"]["generate_demo_data"]:  # each seed draws its own demo data
                run_ovr.append(f"Global.data_root={os.path.join(study_dir, 'data', f'seed_{seed}')}")
            config = load_config(exp.base, run_ovr)
            own = labels.setdefault(arm.name, config_labels(config))
            run = Run(len(runs) + 1, arm.name, seed, TRAIN, run_dir, exp.base, run_ovr,
                      identity_of(config, study_dir), sets=[s for s in exp.sets if s in own])
            trained[(arm.name, seed)] = run
            runs.append(run)
        if seed == exp.seeds[0]:  # every arm's test sets are known: check before the other seeds
            _check_sets(exp, labels)
    return runs


def run_spec(run, sets, cpu_threads):
    """What the worker reads (``<run_dir>/spec.json``); ``sets``: the sets it scores, ``run.sets``
    (the compared sets its config holds)."""
    spec = {"arm": run.arm, "seed": run.seed, "kind": run.kind, "run_dir": run.run_dir,
            "base": run.base, "overrides": list(run.overrides) + [f"Global.cpu_threads={cpu_threads}"],
            "sets": list(sets), "identity": run.identity, "cpu_threads": cpu_threads}
    if run.kind == PRECISE_BN:
        spec.update(source_dir=run.source.run_dir, precise_bn=dict(run.precise_bn))
    return spec
