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
      supernet:                     # a trained arm may also name (sources.py):
        base: ../supernet_quickstart.yaml   # its own training config (relative as base:)
        init_from: hetero           # start from that arm's final checkpoint (Global.pretrained_model)
      person_subnet:                # derived: a GP-NAS search on the supernet's final checkpoint
        from: supernet              # (a supernet arm), the chosen subnet extracted into
        search: {task: person, budget: {params: 0.8}, num_samples: 30}  # <run>/subnet/ and scored;
                                    # keys of the config's Search section (search_arm.py)
      person_scratch:
        shape_from: person_subnet   # a plain ViT of that search's subnet shape, from scratch
        compute_of: [hetero, supernet]  # max_iters: the training FLOPs of those arms together
        overrides: [Tasks.face=null, Tasks.vehicle=null, Tasks.product=null]
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
        - {arms: [person_subnet, hetero], claim: no_worse, margin: 0.01}   # a - b > -0.01

A run of a trained arm is its base (the arm's, else ``base``) + ``overrides`` + the command
line's ``-o`` + the arm's overrides + what the study sets itself (see ``Run``). Runs are ordered
seed by seed, each arm after the arms it starts from, else trained arms before derived ones, so
the first seed's runs finish a first complete comparison. A precise_bn arm holds the compared
sets of its source, a search arm those of its searched task. The compared sets every arm holds
are checked when the runs are planned, before anything trains.
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
from . import sources
from .search_arm import check_search, search_overrides
from .stats import DIRECTIONS

TOP_KEYS = ("description", "base", "overrides", "seeds", "parallel", "arms", "compare")
COMPARE_KEYS = ("sets", "metrics", "pairs")
PAIR_KEYS = ("arms", "claim", "note", "margin")
TRAINED_ARM_KEYS = ("overrides", "base", "init_from", "shape_from", "compute_of")
DERIVED_ARM_KEYS = ("from", "precise_bn", "search")
PRECISE_BN_KEYS = ("num_batches",)
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TRAIN, PRECISE_BN, SEARCH = "train", "precise_bn", "search"
# what a source key sets: an arm's own overrides must not set it too
SOURCE_SETS = {"init_from": "Global.pretrained_model", "compute_of": "Global.max_iters", "shape_from": "Arch"}
# run keys the study sets itself: an arm or the common overrides must not set them
STUDY_KEYS = ("Global.seed", "Global.output_dir", "Global.eval_interval", "Global.use_visualdl",
              "Global.checkpoints", "Global.cpu_threads")


@dataclass
class Arm:
    name: str
    overrides: list = field(default_factory=list)
    base: str = None            # trained arms: their own training config (else the experiment's)
    source: str = None          # derived arms: the trained arm whose checkpoints they start from
    precise_bn: dict = None     # derived arms: {"num_batches": N}
    search: dict = None         # derived arms: Search keys (search_arm.py)
    init_from: str = None       # trained arms: sources.py
    shape_from: str = None
    compute_of: list = None

    @property
    def derived(self):
        return self.source is not None

    @property
    def kind(self):
        return PRECISE_BN if self.precise_bn else SEARCH if self.search is not None else TRAIN


@dataclass
class Pair:
    a: str
    b: str
    claim: str
    note: str = ""
    margin: float = 0.0         # no_worse: a - b must stay above -margin

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
    post-step (precise_bn) or searches it (search). ``identity`` fingerprints what decides its
    result (the merged config, without output_dir and cpu_threads, and the identities of the runs
    it starts from): a finished run of another identity is never mixed into a table. ``sets``: the
    compared sets it scores, those its config holds, in compare.sets order (they follow from the
    config, so the identity covers them). ``sources``: {key: Run} of the runs it needs (sources.py)."""
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
    search: dict = None
    sources: dict = None

    @property
    def needs(self):
        return sources.needs(self)

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


def _config_path(path, where, value):
    """A training config named in the experiment file: relative to its folder, and existing."""
    if not isinstance(value, str) or not value:
        _fail(path, where, f"expected the path of a training config, got {value!r}")
    out = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), value))
    if not os.path.isfile(out):
        _fail(path, where, f"config file not found: {out} (a relative path is relative to the "
                           f"experiment file's folder)")
    return out


def _derived_arm(path, name, spec):
    where = f"arms.{name}"
    if "overrides" in spec:
        _fail(path, where, "a derived arm (from + precise_bn or search) trains nothing, so it takes no overrides")
    trained = [k for k in TRAINED_ARM_KEYS if k in spec]
    if trained:
        _fail(path, where, f"{trained} are keys of a trained arm; a derived arm (from: <arm>) trains nothing")
    if "from" not in spec:
        _fail(path, f"{where}.from", "required key is missing (a derived arm starts from a trained arm)")
    if not isinstance(spec["from"], str):
        _fail(path, f"{where}.from", f"expected an arm name, got {spec['from']!r}")
    if ("precise_bn" in spec) == ("search" in spec):
        _fail(path, where, "a derived arm needs one of precise_bn: {num_batches: N} or search: {Search keys}")
    if "search" in spec:
        return Arm(name, source=spec["from"], search=check_search(path, f"{where}.search", spec["search"]))
    pbn = spec["precise_bn"]
    _keys(path, f"{where}.precise_bn", pbn, PRECISE_BN_KEYS, required=PRECISE_BN_KEYS)
    _int(path, f"{where}.precise_bn.num_batches", pbn["num_batches"], 1)
    return Arm(name, source=spec["from"], precise_bn=dict(pbn))


def _arm(path, name, spec):
    where = f"arms.{name}"
    if not isinstance(name, str) or not ARM_NAME.fullmatch(name):
        _fail(path, where, "arm names are folder names: letters, digits, '_', '.', '-'")
    spec = {} if spec is None else spec
    _keys(path, where, spec, TRAINED_ARM_KEYS + DERIVED_ARM_KEYS)
    if any(k in spec for k in DERIVED_ARM_KEYS):
        return _derived_arm(path, name, spec)
    arm = Arm(name, overrides=_overrides(path, f"{where}.overrides", spec.get("overrides")))
    if "base" in spec:
        arm.base = _config_path(path, f"{where}.base", spec["base"])
    for k in ("init_from", "shape_from"):
        if k in spec:
            if not isinstance(spec[k], str) or not spec[k]:
                _fail(path, f"{where}.{k}", f"expected an arm name, got {spec[k]!r}")
            setattr(arm, k, spec[k])
    if "compute_of" in spec:
        arm.compute_of = _str_list(path, f"{where}.compute_of", spec["compute_of"])
    if arm.init_from and arm.shape_from:
        _fail(path, where, "init_from and shape_from together: a shape_from run trains from scratch")
    for key, target in SOURCE_SETS.items():
        for o in arm.overrides if getattr(arm, key) else ():
            k = o.split("=", 1)[0].strip()
            if k == target or k.startswith(target + "."):
                _fail(path, f"{where}.overrides", f"{o!r}: {target} is set by {key}; leave it out")
    return arm


def parse_experiment(raw, path="<experiment>"):
    """An Experiment from the mapping ``raw`` read from ``path`` (validated; paths resolved)."""
    _keys(path, "top level", raw, TOP_KEYS, required=("base", "seeds", "arms", "compare"))
    desc = raw.get("description") or ""
    if not isinstance(desc, str):
        _fail(path, "description", f"expected a string, got {desc!r}")
    base = _config_path(path, "base", raw["base"])
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
    arms = {name: _arm(path, name, spec) for name, spec in arms_raw.items()}
    sources.check_sources(path, arms)

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
                                          f"(the claimed sign of a - b; no_worse: a - b > -margin)")
        note = p.get("note") or ""
        if not isinstance(note, str):
            _fail(path, f"{where}.note", f"expected a string, got {note!r}")
        margin = p.get("margin")
        if p["claim"] == "no_worse":
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
                _fail(path, f"{where}.margin", f"{margin!r}; a no_worse claim needs margin: a fraction in [0, 1) "
                                               f"of the metric (0.01 = 1 point), the most a - b may fall below 0")
        elif margin is not None:
            _fail(path, f"{where}.margin", f"only a no_worse claim has a margin (claim: {p['claim']})")
        pairs.append(Pair(ab[0], ab[1], p["claim"], note, float(margin or 0.0)))
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
    """The arms in the order their runs start within a seed (sources.arm_order)."""
    return sources.arm_order(exp.arms, exp.path)


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def identity_of(config, study_dir):
    """sha256 of the merged config without what does not decide the result (output_dir,
    cpu_threads); a data_root or pretrained_model inside the study is taken relative to it, so a
    moved study still matches."""
    cfg = copy.deepcopy(config)
    g = cfg["Global"]
    for k in ("output_dir", "cpu_threads"):
        g.pop(k, None)
    study = os.path.abspath(study_dir)
    for k in ("data_root", "pretrained_model"):
        if isinstance(g.get(k), str):
            path = os.path.abspath(g[k])
            if os.path.commonpath([path, study]) == study:
                g[k] = "<study>/" + os.path.relpath(path, study)
    text = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_labels(config):
    """The labels of the config's test sets, in config order."""
    from ..engine.evaluator import configured_labels  # imports Paddle: only when planning runs
    return list(configured_labels(config))


def _check_sets(exp, labels, of):
    """``labels``: {trained arm: its config's test-set labels}; ``of``: every arm's (a precise_bn
    arm's are its source's, a search arm's its task's). Every compared set must be held by an arm
    (a typo is held by none), every arm hold one, every pair share one."""
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


def _search_labels(exp, arm, src, seed, run_dir):
    """The test-set labels of a search arm (its task's, in the source's config), after checking
    that its Search keys load over the source's config and that the source trains a supernet."""
    from ..arch import is_supernet
    where = f"{exp.path}: arms.{arm.name}.search (seed {seed})"
    try:
        config = load_config(src.base, src.overrides + search_overrides(arm.search, seed, run_dir))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if not is_supernet(config):
        raise ConfigError(f"{exp.path}: arms.{arm.name}.from: {arm.source} trains Arch.name "
                          f"{config['Arch'].get('name')}; a search arm needs a supernet arm")
    task = arm.search["task"]
    if task not in config["Tasks"]:
        raise ConfigError(f"{where}: task {task!r} is not a task of {arm.source}: {list(config['Tasks'])}")
    return config_labels({"Tasks": {task: config["Tasks"][task]}})


def _derived_run(exp, arm, src, seed, run_dir, index, of):
    """The run of derived ``arm`` from ``src``; records the arm's test-set labels in ``of``."""
    if arm.kind == PRECISE_BN:
        ident = _digest({"from": src.identity, "precise_bn": arm.precise_bn})
        of.setdefault(arm.name, of[arm.source])
        return Run(index, arm.name, seed, PRECISE_BN, run_dir, src.base, [], ident, source=src,
                   precise_bn=dict(arm.precise_bn), sets=src.sets)
    own = _search_labels(exp, arm, src, seed, run_dir)
    of.setdefault(arm.name, own)
    ident = _digest({"from": src.identity, "search": arm.search})
    return Run(index, arm.name, seed, SEARCH, run_dir, src.base, [], ident, source=src, search=dict(arm.search),
               sets=[s for s in exp.sets if s in own])


def plan_runs(exp, study_dir, extra_overrides=()):
    """[Run] of ``exp`` in the order they start. Every run's config is loaded (and so validated)
    here, and the compared sets each arm holds checked, before anything trains;
    ``extra_overrides`` (the command line's -o) go after the file's common overrides and before
    the arm's."""
    study_dir = os.path.abspath(study_dir)
    common = list(exp.overrides) + list(extra_overrides)
    for o in extra_overrides:
        key = o.split("=", 1)[0].strip()
        if key in STUDY_KEYS:
            raise ConfigError(f"-o {o}: {key} is set by the study for every run ({', '.join(STUDY_KEYS)})")
    runs, planned, labels, of = [], {}, {}, {}
    order = arm_order(exp)
    for seed in exp.seeds:
        for arm in order:
            run_dir = os.path.join(study_dir, "runs", arm.name, f"seed_{seed}")
            srcs = sources.run_sources(arm, seed, planned)
            if arm.derived:
                run = _derived_run(exp, arm, srcs["from"], seed, run_dir, len(runs) + 1, of)
            else:
                run, config = _trained_run(exp, arm, seed, run_dir, len(runs) + 1, common, srcs, study_dir)
                of.setdefault(arm.name, labels.setdefault(arm.name, config_labels(config)))
                run.sets = [s for s in exp.sets if s in of[arm.name]]
            run.sources = srcs
            planned[(arm.name, seed)] = run
            runs.append(run)
        if seed == exp.seeds[0]:  # every arm's test sets are known: check before the other seeds
            _check_sets(exp, labels, of)
    return runs


def _trained_run(exp, arm, seed, run_dir, index, common, srcs, study_dir):
    """(Run, its merged config) of trained ``arm``; ``srcs``: its sources' runs."""
    where = f"{exp.path}: arms.{arm.name} (seed {seed})"
    base = arm.base or exp.base
    arm_ovr = common + arm.overrides
    try:
        merged = load_config(base, arm_ovr + [f"Global.seed={seed}"])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    run_ovr = arm_ovr + [f"Global.seed={seed}", f"Global.output_dir={run_dir}",
                         "Global.eval_interval=0", "Global.use_visualdl=false",
                         "Global.checkpoints=null"]
    if merged["Global"]["generate_demo_data"]:  # each seed draws its own demo data
        run_ovr.append(f"Global.data_root={os.path.join(study_dir, 'data', f'seed_{seed}')}")
    if "init_from" in srcs:
        run_ovr.append(f"Global.pretrained_model={sources.checkpoint_of(srcs['init_from'])}")
    config = load_config(base, run_ovr)
    ident = identity_of(config, study_dir)
    if srcs:  # what it takes from other runs decides its result too
        ident = _digest({"config": ident, **{k: [r.identity for r in v] if isinstance(v, list) else v.identity
                                             for k, v in srcs.items()}})
    return Run(index, arm.name, seed, TRAIN, run_dir, base, run_ovr, ident), config


def run_spec(run, sets, cpu_threads):
    """What the worker reads (``<run_dir>/spec.json``); ``sets``: the sets it scores, ``run.sets``
    (the compared sets its config holds)."""
    spec = {"arm": run.arm, "seed": run.seed, "kind": run.kind, "run_dir": run.run_dir,
            "base": run.base, "overrides": list(run.overrides) + [f"Global.cpu_threads={cpu_threads}"],
            "sets": list(sets), "identity": run.identity, "cpu_threads": cpu_threads}
    if run.kind == PRECISE_BN:
        spec.update(source_dir=run.source.run_dir, precise_bn=dict(run.precise_bn))
    elif run.kind == SEARCH:
        spec.update(source_dir=run.source.run_dir, search=dict(run.search))
    elif sources.spec_sources(run):
        spec["sources"] = sources.spec_sources(run)
    return spec
