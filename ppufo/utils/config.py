"""YAML config: load, ``-o Section.key=value`` overrides, schema validation.

Sections with a fixed shape (Global, Tasks.<task>, DataLoader, Loss, ...) are checked here
against SCHEMA. Sections that name a registered class (Arch, Optimizer, ...) are checked by
the registry that builds them, against the class signature and the Fields it declares with
``check_args`` (types and ranges, e.g. a probability in [0, 1]).

A file may inherit with ``_BASE_: other.yaml`` (or a list of files), relative to the file that
names it: the bases are read recursively and merged in order, then the file's own keys are
deep-merged on top (mappings merge key by key; lists and scalars replace). Overrides apply to
the merged result, which is then validated. docs/config.md is generated from SCHEMA
(``python -m ppufo.utils.config_doc > docs/config.md``).
"""
import argparse
import copy
import functools
import inspect
import io
import math
import numbers
import os

import yaml

from ..chips import CHIP_NAMES, SEARCH_CHIPS
from .errors import ConfigError
from .textfile import read_text

REQUIRED = object()


class Field:
    """A config key (or a keyword argument, see check_args): its type(s), default (REQUIRED: none),
    allowed choices, and for numbers a range: ``min``/``max`` inclusive, ``above``/``below``
    exclusive (None: unbounded). Floats must be finite; numpy numbers count as int/float. A list
    value with ``items`` (a Field) must be non-empty and every element must pass ``items``."""

    def __init__(self, types, default=REQUIRED, choices=None, doc="", min=None, max=None,
                 above=None, below=None, items=None):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.choices = choices
        self.doc = doc
        self.min, self.max = min, max
        self.above, self.below, self.items = above, below, items

    def range_text(self):
        """'>= 1', '< 5', '[0, 4294967295]', '[0, 1.5)', '> 0' or '' (no range)."""
        low = ("[", self.min) if self.min is not None else ("(", self.above) if self.above is not None else None
        high = (self.max, "]") if self.max is not None else (self.below, ")") if self.below is not None else None
        if low and high:
            return f"{low[0]}{low[1]}, {high[0]}{high[1]}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
        if high:
            return f"{'<=' if high[1] == ']' else '<'} {high[0]}"
        return ""

    def _out_of_range(self, value):
        return ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                or (self.above is not None and value <= self.above)
                or (self.below is not None and value >= self.below))

    def check(self, value, path):
        if value is None and type(None) in self.types:
            return value
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int in self.types:
            value = int(value)  # numpy integers too
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, int)) and float in self.types:
            value = float(value)
        if float in self.types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: {value!r} is not a finite number")
        ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool))
                 for t in self.types)
        if not ok:
            names = "/".join("null" if t is type(None) else t.__name__ for t in self.types)
            raise ConfigError(f"{path}: expected {names}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{path}: {value!r} is not one of {list(self.choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self._out_of_range(value):
            raise ConfigError(f"{path}: {value!r} is out of range; allowed: {self.range_text()}")
        if self.items is not None and isinstance(value, (list, tuple)):
            if not value:
                raise ConfigError(f"{path}: expected at least one item, got {value!r}")
            value = [self.items.check(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value


def check_args(**fields):
    """Decorator of a class or function: the named keyword arguments are checked against their
    Fields (and converted, e.g. int -> float) before the body runs. A direct call's error names
    ``Class.arg`` (a function's: ``arg``; its caller adds the config path); the registries check
    the same Fields first, naming the config key (``arg_fields``, see registry.check_kwargs)."""
    def wrap(obj):
        fn = obj.__init__ if isinstance(obj, type) else obj
        sig = inspect.signature(fn)
        unknown = sorted(set(fields) - set(sig.parameters))
        if unknown:
            raise TypeError(f"check_args: {obj.__qualname__} has no argument(s) {unknown}")

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            where = f"{type(args[0]).__name__}." if isinstance(obj, type) else ""
            for name, field in fields.items():
                bound.arguments[name] = field.check(bound.arguments[name], f"{where}{name}")
            return fn(*bound.args, **bound.kwargs)

        if not isinstance(obj, type):
            checked.arg_fields = fields
            return checked
        obj.__init__, obj.arg_fields = checked, fields
        return obj
    return wrap


class MapOf:
    """A mapping from user-chosen names (e.g. task names) to entries of one schema; an entry set to
    null (`-o Tasks.face=null`) is dropped, so one task of a config can be trained alone."""

    def __init__(self, schema):
        self.schema = schema


OPT_STR = (str, type(None))
SEED_MAX = 2 ** 32 - 1  # numpy and Paddle seeds are unsigned 32-bit
# the heads the reference evaluation script uses per task (task2 is never evaluated)
RELEASED_HEADS = {"face": "task1", "person": "task3", "vehicle": "task3", "product": "task4"}

GLOBAL = {
    "device": Field(str, "cpu", doc="cpu | gpu | gpu:N | xpu | npu"),
    "cpu_threads": Field(int, 0, min=0, doc="threads of Paddle's CPU ops; 0 = every core this process may "
                                     "use, shared among the processes a launch starts on the machine"),
    "seed": Field(int, 42, min=0, max=SEED_MAX),
    "data_root": Field(str, "./data", doc="dataset roots in Tasks are relative to this"),
    "output_dir": Field(str, "./output"),
    "max_iters": Field(int, 1000, min=1),
    "log_interval": Field(int, 10, min=1),
    "eval_interval": Field(int, 0, min=0, doc="0 = no eval during training"),
    "save_interval": Field(int, 1000, min=0, doc="iterations between iter_<n> checkpoints (the end saves one "
                           "too; latest points to the newest); 0 = only at the end"),
    "keep_checkpoints": Field(int, 3, min=0, doc="newest iter_<n> checkpoints kept, older ones deleted after "
                              "each save (never the ones latest and best_model point to); 0 = keep all"),
    "pretrained_model": Field(OPT_STR, None, doc="training: the weights to start from (a checkpoint prefix or "
                              "the released allinone_vitlarge.pdmodel; a supernet takes an All-in-One one whole, "
                              "each MLP into every FFN path); eval, export, extraction, search: the model's weights"),
    "allow_partial_load": Field(bool, False, doc="train although Global.pretrained_model leaves tensors other "
                                "than classifiers at their initial values or holds backbone tensors the model "
                                "has no place for (e.g. a deeper ViT's blocks); both are warned. Off: an error "
                                "listing them"),
    "checkpoints": Field(OPT_STR, None, doc="checkpoint prefix to resume from (<output_dir>/latest or an "
                         "iter_<n>); every rank reads it"),
    "overwrite_output_dir": Field(bool, False, doc="train into an output_dir that already holds another run's "
                                  "checkpoints (refused otherwise; resume with Global.checkpoints instead). "
                                  "best_model is still replaced only by a better score than the one on disk"),
    "released_heads": Field(dict, RELEASED_HEADS, doc="when Global.pretrained_model is the released UFO "
                            "checkpoint (allinone_vitlarge.pdmodel): task -> the reference head "
                            "(task1..task4) whose BN neck the task loads; a task left out keeps its default"),
    "image_shape": Field(list, [3, 224, 224], doc="[C, H, W] of every training image"),
    "use_visualdl": Field(bool, True),
    "amp": {  # `amp: true/false` (the old form) means {enable: true/false} with these defaults
        "enable": Field(bool, False, doc="automatic mixed precision (GPU only: ignored with a warning elsewhere); "
                                         "`Global.amp: true` is short for this"),
        "dtype": Field(str, "bfloat16", choices=("bfloat16", "float16"),
                       doc="bfloat16 needs no loss scaling; float16 scales the loss (GradScaler, checkpointed)"),
        "level": Field(str, "O1", choices=("O1", "O2"),
                       doc="O1: autocast ops; O2: low-precision weights with fp32 master weights in the "
                           "optimizer. BN necks, classifiers and losses stay fp32 at both levels"),
        "eval_fp32": Field(bool, False, doc="evaluation, BN-neck calibration and precise BN in fp32 instead of "
                           "under the training autocast (backbone only; necks and metrics are fp32 either way). "
                           "O1 only: O2's weights are low precision"),
    },
    "generate_demo_data": Field(bool, False, doc="create missing demo data with tools/make_demo_data"),
    "demo_sets": Field(list, [], doc="extra demo sets generate_demo_data writes besides the default ones, "
                       "e.g. [custom_example] (configs/custom_example.yaml); checked, sized and listed in the "
                       "manifest like the others"),
    "demo_sizes": Field(dict, {}, doc="sizes of the demo sets, {set: {writer keyword: value}}, e.g. "
                        "{market1501: {num_test_ids: 100}}; others keep their defaults. Checked against the "
                        "demo root's manifest: a root written with other sizes is refused (docs/datasets.md)"),
}

TASK = {
    "datasets": Field(list, doc="training datasets: [{name, root, ...}], merged with disjoint labels"),
    "batch_size": Field(int, min=1, doc="images of this task in every global batch"),
    "sampler": Field(dict, {"name": "PKSampler", "num_instances": 4}),
    "neck": Field(dict, {"name": "BNNeck"}),
    "head": Field(dict),
    "loss": Field(list, doc="[{LossName: {weight: w, ...}}]"),
    "lr_mult": Field(float, 1.0, min=0, doc="LR multiplier for this task's own parameters"),
    "test_sets": Field(list, [], doc="evaluation sets: [{name, root, ...}]"),
}

SCHEMA = {
    "Global": GLOBAL,
    "Arch": dict,
    "Tasks": MapOf(TASK),
    "Loss": {"task_weights": Field(dict, {}, doc="task -> weight in the total loss (default 1)")},
    "Optimizer": dict,
    "DataLoader": {
        "Train": {
            "batch_sampler": Field(dict, {"name": "HeterogeneousBatchSampler"}),
            "num_workers": Field(int, 2, min=0),
            "transforms": Field(list, []),
        },
        "Eval": {
            "batch_size": Field(int, 64, min=1),
            "num_workers": Field(int, 2, min=0),
            "transforms": Field(list, []),
        },
    },
    "Metric": {
        "chunk_size": Field(int, 256, min=1, doc="queries per block when ranking"),
        "use_faiss": Field(bool, False, doc="exact faiss inner-product search"),
        "ufo_compat": Field(bool, False, doc="reproduce the UFO reference's eval choices"),
    },
    "Supernet": {
        "sandwich": Field(list, ["largest", "random", "smallest"],
                          doc="subnets trained each step, in order: largest | smallest | random "
                              "([random]: the reference's one random subnet per step)"),
        "combine": Field(str, "mean", choices=("mean", "sum"),
                         doc="how the passes' losses (so gradients) make the step: mean = a sandwich of "
                             "identical subnets steps as one pass; sum = the size grows with the passes "
                             "(before 2026-12). Gradient clipping sees the combined gradient"),
        "shared_lr_mult": Field(float, 1.0, min=0,
                                doc="LR multiplier of the shared FFN path (1 = the article; 0 freezes it, "
                                    "as the reference). Tasks.<t>.lr_mult covers t's head, FFN path and mix logits"),
        "distill_weight": Field(float, 0.0, min=0, doc="in-place distillation from the largest subnet (0 = off)"),
        "eval_subnet": Field(str, "largest", doc="largest | smallest | a Subnet JSON file"),
        "calibration_images": Field(int, 512, min=0, doc="training images per task the eval subnet's BN-neck statistics "
                                                  "are recomputed on before each evaluation (0 = the running ones)"),
    },
    "Extract": {
        "task": Field(str, "", doc="task(s) to keep, comma-separated"),
        "subnet": Field(str, "largest", doc="largest | smallest | a Subnet JSON file (e.g. from search)"),
        "save_dir": Field(str, "./output/extracted"),
        "calibration_images": Field(int, 512, min=0, doc="training images of each kept task the BN-neck statistics "
                                                  "are recomputed on for the subnet (0 = keep the supernet's)"),
    },
    "Search": {
        "task": Field(str, "", doc="task(s) to search a subnet for, comma-separated ('' = every task)"),
        "chip": Field(str, "cpu_x86", choices=SEARCH_CHIPS,
                      doc="deploy target the budget applies to; cpu_x86_any: per subnet the faster of cpu_x86 "
                          "(Paddle Inference) and cpu_x86_ort (ONNX Runtime), the runtime chosen with the subnet"),
        "budget_type": Field(str, "latency_ms", choices=("latency_ms", "params", "flops"),
                             doc="unit of an absolute Search.budget (a relative budget names its own)"),
        "budget": Field((float, dict, type(None)), None, min=0,
                        doc="required to search: ms per batch, backbone parameters, or FLOPs per image; or "
                            "relative to the All-in-One ViT of the supernet's full shape, {params|flops|latency_ms: "
                            "fraction in (0, 1]}, e.g. {params: 0.75} (see docs/chip_search.md)"),
        "int8_candidates": Field(bool, False, doc="also search quantised subnets on the chip's int8 sibling (cpu_x86 -> "
                                                   "cpu_x86_int8, gpu_trt_fp16 -> gpu_trt_int8): accuracy simulated in int8 "
                                                   "(the Quant section's calibration), latency from both chips' tables; "
                                                   "the choice is the more accurate within budget"),
        "latency": Field(str, "auto", choices=("auto", "measure", "table"),
                         doc="measure with the chip's runtime, compose the chip's latency table, or "
                             "auto: measure if the chip is present (an int8 chip: its table)"),
        "latency_table": Field(OPT_STR, None, doc="table file (\"{chip}\" in it stands for the chip's name); null = "
                                                  "the one shipped in ppufo/chips/tables/<chip>.json"),
        "batch_size": Field(int, 1, min=1, doc="batch size latency is measured/tabled at"),
        "warmup": Field(int, 10, min=0, doc="untimed runs before timing"),
        "repeats": Field(int, 30, min=1, doc="timed runs; latency is their Search.quantile"),
        "rounds": Field(int, 10, min=1, doc="passes the timed runs are spread over, interleaving the subnets "
                                     "of a group (steadier ranking on a shared machine)"),
        "quantile": Field(float, 0.1, min=0, max=1, doc="latency = this quantile of the timed runs (0.5: the median; a low "
                                          "quantile ranks steadier on shared cores, see docs/chip_search.md)"),
        "interleave": Field(int, 8, min=1, doc="subnets exported and timed together, interleaved (each "
                                              "predictor holds its model in memory)"),
        "cpu_threads": Field(int, 1, min=1, doc="CPU threads of the predictor (either runtime) when measuring"),
        "timer": Field(str, "wall", choices=("wall", "thread_cpu"),
                       doc="wall clock, or the CPU time of the 1-thread predictor (steadier on a shared machine)"),
        "metric": Field(str, "score", doc="validation result key (mAP, rank1, accuracy_mean, recall@1) "
                                          "or score (the headline number)"),
        "val_sets": Field((dict, type(None)), None, doc="{task: [test_sets entries]} to validate on; "
                                                        "null (or a task left out) = the task's test_sets"),
        "calibration_images": Field(int, 512, min=0, doc="training images of the task the BN-neck statistics are "
                                                  "recomputed on for each subnet before measuring its accuracy "
                                                  "(0 = the supernet's running statistics; see ppufo/engine/calibrate.py)"),
        "features": Field(str, "both", choices=("summary", "encoding", "both"),
                          doc="GP-NAS inputs of the accuracy predictors (latency always uses summary; "
                              "see ppufo/nas/predictor.py)"),
        "num_samples": Field(int, 40, min=1, doc="subnets measured to fit the predictors"),
        "num_candidates": Field(int, 5000, min=1, doc="random subnets ranked by the predictors"),
        "num_verify": Field(int, 5, min=1, doc="top predicted candidates measured before choosing"),
        "verify_rounds": Field(int, 3, min=1, doc="rounds of verification: while a round finds no candidate within budget "
                                           "that beats every subnet measured before, both predictors are refitted "
                                           "on all measured subnets and the next best are verified"),
        "seed": Field(int, 0, min=0, max=SEED_MAX),
        "cache_dir": Field(str, "./output/search/cache", doc="measurements (JSON lines) for resuming"),
        "save_dir": Field(str, "./output/search", doc="<task>_<chip>.json + Pareto PNG"),
    },
    "Export": {
        "save_dir": Field(str, "./inference", doc="one sub-folder per task when exporting several"),
        "task": Field(str, "all", doc="a task name, or 'all'"),
        "chip": Field(str, "cpu_x86", choices=CHIP_NAMES, doc="deploy target recorded in inference.yml"),
        "packed_attention": Field((bool, type(None)), None,
                                  doc="ViT attention in the layout Paddle Inference fuses on x86 CPUs "
                                      "(null: on for chip cpu_x86)"),
    },
    "Quant": {
        "num_images": Field(int, 256, min=1, doc="training images of the task (eval transforms) int8 scales are "
                                                 "calibrated on, drawn with seed"),
        "seed": Field(int, 0, min=0, doc="draws the calibration images: same images, same scales"),
        "algo": Field(str, "hist", choices=("abs_max", "avg", "mse", "hist", "KL"),
                      doc="how an activation's int8 range is chosen from the calibration images "
                          "(PostTrainingQuantization; all within noise on the quickstart, docs/notes/quantization.md)"),
        "batch_size": Field(int, 16, min=1, doc="calibration batch"),
        "int8_ops": Field(list, ["fc"], doc="op types Paddle Inference runs on oneDNN int8 kernels ([] = every "
                                            "op with scales, the attention matmuls too); written to inference.yml"),
        "evaluate": Field(bool, True, doc="report the task's test-set metrics float vs int8 and the feature "
                                          "cosine on their images (off: the cosine on the calibration images)"),
    },
}


def check_schema(node, schema, path):
    if schema is dict:
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: expected a mapping, got {node!r}")
        return node
    if isinstance(schema, Field):
        return schema.check(node, path)
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(node).__name__} {node!r}")
    if isinstance(schema, MapOf):
        node = {k: v for k, v in node.items() if v is not None}  # `-o Tasks.face=null` drops a task
        if not node:
            raise ConfigError(f"{path}: needs at least one entry")
        return {k: check_schema(v, schema.schema, f"{path}.{k}") for k, v in node.items()}
    unknown = sorted(set(node) - set(schema))
    if unknown:
        raise ConfigError(f"{path or 'top level'}: unknown key(s) {unknown}; allowed: {sorted(schema)}")
    out = {}
    for key, sub in schema.items():
        sub_path = f"{path}.{key}" if path else key
        if key in node:
            out[key] = check_schema(node[key], sub, sub_path)
        elif isinstance(sub, Field):
            if sub.default is REQUIRED:
                raise ConfigError(f"{sub_path}: required key is missing ({sub.doc or sub.types[0].__name__})")
            out[key] = check_schema(copy.deepcopy(sub.default), sub, sub_path)
        elif isinstance(sub, dict) and sub is not dict:
            out[key] = check_schema({}, sub, sub_path)
    return out


def upgrade(cfg):
    """``cfg`` with old spellings in today's form (a shallow copy where changed): ``Global.amp: bool``
    is ``Global.amp.enable``."""
    g = cfg.get("Global")
    if isinstance(g, dict) and isinstance(g.get("amp"), bool):
        cfg = dict(cfg, Global=dict(g, amp={"enable": g["amp"]}))
    return cfg


REQUIRED_SECTIONS = ("Arch", "Tasks")  # no model, no data without them


def check_finite(node, path=""):
    """Refuse NaN and infinite numbers anywhere in ``node`` (the registry-built sections too,
    e.g. Optimizer.lr.learning_rate=.nan, which would otherwise start training)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{path or 'value'}: {node!r} is not a finite number")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        check_finite(value, f"{path}.{key}" if path else str(key))


def validate(cfg):
    """Fill defaults and check every fixed-shape section; returns a new dict."""
    check_finite(cfg)
    missing = [s for s in REQUIRED_SECTIONS if s not in cfg]
    if missing:
        raise ConfigError(f"required section(s) {missing} missing; a training config has "
                          f"{', '.join(SCHEMA)} (see configs/quickstart.yaml)")
    out = check_schema(upgrade(cfg), SCHEMA, "")
    weights = out["Loss"]["task_weights"]
    bad = sorted(set(weights) - set(out.get("Tasks", {})))
    if bad:
        raise ConfigError(f"Loss.task_weights: unknown task(s) {bad}; tasks: {sorted(out.get('Tasks', {}))}")
    return out


def parse_value(text):
    """Type an override value: YAML scalars and lists (ints, floats, bools, null, [..])."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except ValueError:
            return value
    return value


def apply_override(cfg, item):
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected Section.key=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i + 1])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ConfigError(f"override '{key}': {where} is not an index of a list of {len(node)}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"override '{key}': {'.'.join(parts[:i])} is not a mapping or list")
        if last:
            node[part] = parse_value(text)
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}  # validation rejects it if the schema has no such key
            node = node[part]
    return cfg


BASE_KEY = "_BASE_"


def _read_yaml(path):
    stream = io.StringIO(read_text(path, ConfigError))
    stream.name = path  # YAML's error marks name the file
    try:
        cfg = yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if cfg is None:
        raise ConfigError(f"{path}: the file is empty (or only comments); a config is a mapping of "
                          f"sections, e.g. Global:, Arch:, Tasks: as in configs/quickstart.yaml")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(cfg).__name__} {cfg!r:.80}")
    return cfg


def merge(base, child):
    """``child`` deep-merged onto a copy of ``base``: mappings merge key by key, anything else
    (lists included) replaces."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _base_paths(cfg, path):
    """Pop ``_BASE_`` from ``cfg``; the base files it names, relative to ``path``'s folder."""
    bases = cfg.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file path or a list of file paths, got {bases!r}")
    return [os.path.normpath(os.path.join(os.path.dirname(path), b)) for b in bases]


def read_config(path, _chain=()):
    """(raw dict of ``path`` with its ``_BASE_`` files merged underneath, files merged in order);
    not validated."""
    chain = _chain + (path,)
    if os.path.realpath(path) in {os.path.realpath(p) for p in _chain}:
        raise ConfigError(f"{BASE_KEY} cycle: {' -> '.join(chain)}")
    cfg = _read_yaml(path)
    merged, files = {}, []
    for base in _base_paths(cfg, path):
        if not os.path.isfile(base):
            raise ConfigError(f"{path}: {BASE_KEY} file not found: {base}")
        base_cfg, base_files = read_config(base, chain)
        merged = merge(merged, base_cfg)
        files += base_files
    return merge(merged, cfg), files + [path]


def load_config(path, overrides=(), validator=None):
    """Read ``path`` (merged with its ``_BASE_`` files), apply overrides, validate; errors name
    the file. ``validator`` defaults to the training schema (deploy YAMLs pass their own)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    cfg, files = read_config(path)
    cfg = upgrade(cfg)  # so that -o Global.amp.dtype=... also works on a file with `amp: false`
    for item in overrides:
        apply_override(cfg, item)
    try:
        check_finite(cfg)  # for every validator
        return (validator or validate)(cfg)
    except ConfigError as e:
        bases = f" (with {BASE_KEY} {', '.join(dict.fromkeys(files[:-1]))})" if len(files) > 1 else ""
        raise ConfigError(f"{path}{bases}: {e}") from None


def dump_config(cfg, path):
    """Write the merged config: self-contained, so no ``_BASE_`` (it would resolve elsewhere)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump({k: v for k, v in cfg.items() if k != BASE_KEY}, f, sort_keys=False)


def arg_range(kind=int, min=None, max=None, above=None):
    """An argparse ``type``: a ``kind`` (int or float) number in [min, max] (either may be None:
    unbounded), and greater than ``above`` when given; floats must be finite. A value outside
    is a usage error naming the argument and the range (exit status 2)."""
    limits = ([f">= {min}"] if min is not None else []) + ([f"> {above}"] if above is not None else []) \
        + ([f"<= {max}"] if max is not None else [])
    want = f"{'an integer' if kind is int else 'a number'}{' ' + ' and '.join(limits) if limits else ''}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or (min is not None and value < min) \
                or (max is not None and value > max) or (above is not None and value <= above):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value
    return parse


def parse_args(description="ppufo", extra=None):
    p = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(p)
    p.add_argument("-c", "--config", required=True, help="YAML config file")
    p.add_argument("-o", "--override", action="append", nargs="+", default=[],
                   help="Section.key=value (repeatable)")
    args = p.parse_args()
    args.override = [o for group in args.override for o in group]
    return args


def cli_config(description, extra=None):
    """(args, config) for a tool's main(); a config error exits with its message (status 1)."""
    import sys
    args = parse_args(description, extra)
    try:
        return args, load_config(args.config, args.override)
    except ConfigError as e:
        sys.exit(f"error: {e}")
