"""Deploy YAML (deploy/configs/<chip>.yaml): load, ``-o Global.key=value`` overrides, validation.

PaddleClas layout (``Global``, ``PreProcess``, ``IndexProcess``) with ppufo's key names. The
``Global`` keys map onto FeaturePredictor / OnnxPredictor arguments (``predictor_kwargs``).
"""
import os

from ..chips import DEVICES
from ..utils.config import OPT_STR, REQUIRED, Field, MapOf, apply_override, check_schema, load_config
from ..utils.errors import ConfigError
from .search_index import DEFAULTS as INDEX, INDEX_TYPES
from .served_task import check_task_name

INDEX_OPERATIONS = ("new", "append", "remove")

PRECISIONS = ("fp32", "fp16", "int8")

SCHEMA = {
    "Global": {
        "model_dir": Field(OPT_STR, None, doc="exported model folder (tools/export_model.py)"),
        # ppufo-serve only; each task's predictor is built from the rest of the config
        "tasks": MapOf({"model_dir": Field(str, REQUIRED, doc="the task's exported model folder"),
                        "index_dir": Field(OPT_STR, None, doc="its gallery (null: none)")}),
        "infer_imgs": Field(OPT_STR, None, doc="an image or a folder of images"),
        "save_features": Field(OPT_STR, None, doc=".npz file for the features and image paths"),
        "batch_size": Field(int, 8, min=1),
        "device": Field(str, "cpu", choices=DEVICES),
        "device_id": Field(int, 0, min=0),
        "enable_mkldnn": Field(bool, True, doc="oneDNN (x86 CPU only; ignored on other devices)"),
        "mkldnn_cache_capacity": Field(int, 10, min=0, doc="input shapes cached by oneDNN (0 = unbounded)"),
        "cpu_num_threads": Field(int, 2, min=1),
        "ir_optim": Field(bool, True),
        "gc_mb": Field((int, type(None)), 64, min=-1,
                       doc="CPU: dead tensors of a run freed in batches of this many MB; 0 = each at once on "
                           "Paddle's GC thread (its default), -1 = never: reused by the next run (fastest, "
                           "holds every activation); null = Paddle's flag as set"),
        "small_model_mb": Field(int, 64, min=0,
                                doc="CPU: a model with weights under this many MB runs with oneDNN off and gc_mb -1 "
                                    "(faster for small models, measured); 0 = never"),
        "fuse_attention": Field(bool, True, doc="one fused kernel per ViT block on AVX-512 CPUs, for models "
                                                "exported with packed attention (inference.yml)"),
        "memory_optim": Field(bool, False, doc="breaks PIR models on CPU in Paddle 3.3.1; skipped there"),
        "gpu_mem": Field(int, 500, min=1, doc="initial GPU memory pool, MB"),
        "use_tensorrt": Field(bool, False, doc="refused, never skipped, where TensorRT cannot run"),
        "precision": Field(str, "fp32", choices=PRECISIONS,
                           doc="TensorRT's precision: fp16/int8 need TensorRT, int8 a quantised model; on cpu, "
                               "int8 refuses a float model (an int8 model from ppufo-quantize runs int8 on CPU "
                               "whatever this says)"),
        "min_subgraph_size": Field(int, 3, min=1, doc="smallest op group handed to TensorRT"),
        "trt_opt_batch_size": Field((int, type(None)), None, min=1,
                                    doc="batch TensorRT tunes for (null = batch_size); it runs 1..batch_size"),
        "trt_cache_dir": Field(OPT_STR, None,
                               doc="TensorRT engines, reused across runs (null = <model_dir>/_trt_cache)"),
        "use_onnx": Field((bool, str), "auto",
                          doc="backend: true = ONNX Runtime on <model_dir>/inference.onnx (converted on first use), "
                              "false = Paddle Inference, auto = ONNX Runtime for a model under small_model_mb on "
                              "cpu (faster there, docs/deploy.md), else Paddle Inference"),
    },
    "PreProcess": {
        "transform_ops": Field((list, type(None)), None,
                               doc="null = the eval transforms recorded in the model's inference.yml"),
    },
    "IndexProcess": {
        "index_dir": Field(OPT_STR, None, doc="gallery index folder (gallery.json + the features file it names)"),
        "data_file": Field(OPT_STR, None, doc="index_operation new / append: the images, a <label>/<image> "
                                              "folder or a 'path label' list"),
        "index_operation": Field(str, "new", choices=INDEX_OPERATIONS,
                                 doc="new: build index_dir from data_file; append: add data_file's images to it; "
                                     "remove: drop remove_ids / remove_labels from it"),
        "remove_ids": Field((list, type(None)), None, items=Field(int, min=0), doc="index_operation remove: ids"),
        "remove_labels": Field((list, type(None)), None, items=Field(str),
                               doc="index_operation remove: every item with these labels"),
        "return_k": Field(int, 5, min=1),
        "index_type": Field(str, INDEX["index_type"], choices=INDEX_TYPES,
                            doc="faiss index built on load: flat (exact), ivf, hnsw, or auto: flat under "
                                "auto_flat_below items, else ivf (docs/deploy.md, Index types)"),
        "auto_flat_below": Field(int, INDEX["auto_flat_below"], min=1, doc="index_type auto: items from which "
                                                                           "an approximate index is used"),
        "nlist": Field((int, type(None)), INDEX["nlist"], min=1,
                       doc="ivf: lists (k-means clusters); null = 4 sqrt(items), at least 39 items per list"),
        "nprobe": Field(int, INDEX["nprobe"], min=1, doc="ivf: lists searched per query (more: slower, exacter)"),
        "hnsw_m": Field(int, INDEX["hnsw_m"], min=2, max=256, doc="hnsw: neighbours per node (more: memory, recall)"),
        "ef_search": Field(int, INDEX["ef_search"], min=1, doc="hnsw: candidates kept per query (more: slower, "
                                                               "exacter; at least the k asked for)"),
    },
}

# PaddleClas spellings that mean something else here: say what to write instead.
RENAMED = {
    "use_gpu": "device: gpu | cpu", "use_fp16": "precision: fp16", "use_int8": "precision: int8",
    "rec_inference_model_dir": "model_dir", "inference_model_dir": "model_dir",
}


def _check(cfg):
    renamed = sorted(set(cfg.get("Global") or {}) & set(RENAMED))
    if renamed:
        k = renamed[0]
        raise ConfigError(f"Global.{k}: PaddleClas key not used by ppufo; write Global.{RENAMED[k]}")
    if isinstance(cfg.get("Global"), dict) and cfg["Global"].get("tasks", 0) is None:  # null: no tasks
        cfg = dict(cfg, Global={k: v for k, v in cfg["Global"].items() if k != "tasks"})
    out = check_schema(cfg, SCHEMA, "")
    g = out["Global"]
    if "tasks" in g:
        _check_tasks(g["tasks"], g, out["IndexProcess"])
    if g["use_tensorrt"] and g["device"] != "gpu":
        raise ConfigError(f"Global.use_tensorrt: TensorRT runs on device gpu, not {g['device']}")
    opt = g["trt_opt_batch_size"]
    if opt is not None and opt > g["batch_size"]:
        raise ConfigError(f"Global.trt_opt_batch_size: expected 1..batch_size ({g['batch_size']}), got {opt}")
    cpu_int8 = g["precision"] == "int8" and g["device"] == "cpu"  # cpu_x86_int8.yaml: a ppufo-quantize model
    if cpu_int8 and not (g["enable_mkldnn"] and g["ir_optim"]):  # the IR passes place the int8 kernels
        raise ConfigError("Global.precision: int8 on cpu runs oneDNN's int8 kernels: it needs Global.enable_mkldnn: "
                          "true and Global.ir_optim: true")
    if cpu_int8 and g["use_onnx"] is True:
        raise ConfigError("Global.precision: int8 on cpu is Paddle Inference's oneDNN int8; ONNX Runtime does not run "
                          "ppufo's int8 models (Global.use_onnx: false)")
    if g["precision"] != "fp32" and not g["use_tensorrt"] and not cpu_int8:
        raise ConfigError(f"Global.precision: {g['precision']} needs Global.use_tensorrt: true "
                          f"(plain GPU/XPU/NPU inference here is fp32; int8 on cpu needs an int8 model written by "
                          f"ppufo-quantize, which runs int8 whatever this key says: its inference.yml decides)")
    if isinstance(g["use_onnx"], str) and g["use_onnx"] != "auto":
        raise ConfigError(f"Global.use_onnx: expected true, false or auto, got {g['use_onnx']!r}")
    if g["use_onnx"] is True:
        if g["use_tensorrt"]:
            raise ConfigError("Global.use_onnx: ONNX Runtime and Paddle-TensorRT exclude each other")
        if g["device"] not in ("cpu", "gpu"):
            raise ConfigError(f"Global.use_onnx: ONNX Runtime runs on cpu or gpu, not {g['device']}")
    _check_index(out["IndexProcess"])
    ops = out["PreProcess"]["transform_ops"]
    if ops is not None:
        from ..data.transforms import build_transforms
        build_transforms(ops, where="PreProcess.transform_ops")
    return out


def _check_tasks(tasks, g, idx):
    for name, task in tasks.items():
        try:
            check_task_name(name, "task name")
        except ValueError as e:
            raise ConfigError(f"Global.tasks.{name}: {e}") from None
        if not task["model_dir"]:
            raise ConfigError(f"Global.tasks.{name}.model_dir: expected the task's exported model folder, got ''")
    if g["model_dir"]:
        raise ConfigError("Global.tasks: names each task's model_dir; leave Global.model_dir null (it is the one "
                          "model of a config without tasks)")
    if idx["index_dir"]:
        raise ConfigError("IndexProcess.index_dir: with Global.tasks each task names its own index_dir under "
                          "Global.tasks.<name>; leave this one null")
    if idx["index_operation"] != "new" or idx["data_file"]:
        raise ConfigError("Global.tasks: ppufo-serve serves the galleries as they are; IndexProcess.data_file and "
                          "index_operation are ppufo-predict's, for one model")


def _check_index(idx):
    op = idx["index_operation"]
    if idx["nlist"] is not None and idx["nprobe"] > idx["nlist"]:
        raise ConfigError(f"IndexProcess.nprobe: expected at most nlist ({idx['nlist']}), got {idx['nprobe']}")
    if op == "append" and not idx["data_file"]:
        raise ConfigError("IndexProcess.index_operation: append needs IndexProcess.data_file (the images to add)")
    if op == "remove":
        if not (idx["remove_ids"] or idx["remove_labels"]):
            raise ConfigError("IndexProcess.index_operation: remove needs IndexProcess.remove_ids and/or remove_labels")
        if idx["data_file"]:
            raise ConfigError("IndexProcess.data_file: not read by index_operation remove (it removes "
                              "remove_ids / remove_labels); leave it null")
    for key in ("remove_ids", "remove_labels"):
        if idx[key] and op != "remove":
            raise ConfigError(f"IndexProcess.{key}: only read with index_operation: remove, not {op}")


def validate_deploy(cfg):
    """Fill defaults and check a deploy config dict; ConfigError names the key."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"top level must be a mapping of sections, got {cfg!r}")
    return _check(cfg)


def load_deploy_config(path=None, overrides=()):
    """The deploy config at ``path`` (None: all defaults) with overrides; errors name the file."""
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"deploy config not found: {path}")
        return load_config(path, overrides, validator=validate_deploy)
    cfg = {}
    try:
        for item in overrides:
            apply_override(cfg, item)
        return validate_deploy(cfg)
    except ConfigError as e:
        raise ConfigError(f"deploy config: {e}") from None


def predictor_kwargs(cfg):
    """Global section -> keyword arguments of FeaturePredictor / OnnxPredictor (batch size and the
    backend, backends.config_backend, are Recognizer's own arguments). Under use_onnx auto they are
    Paddle Inference's, used if it is the one picked."""
    g = cfg["Global"]
    if g["use_onnx"] is True:
        return {"device": g["device"], "cpu_threads": g["cpu_num_threads"], "device_id": g["device_id"]}
    return {
        "device": g["device"], "device_id": g["device_id"], "enable_mkldnn": g["enable_mkldnn"],
        "mkldnn_cache_capacity": g["mkldnn_cache_capacity"], "cpu_threads": g["cpu_num_threads"],
        "ir_optim": g["ir_optim"], "memory_optim": g["memory_optim"], "gpu_mem_mb": g["gpu_mem"],
        "gc_mb": g["gc_mb"], "fuse_attention": g["fuse_attention"], "small_model_mb": g["small_model_mb"],
        "use_tensorrt": g["use_tensorrt"], "precision": g["precision"],
        "min_subgraph_size": g["min_subgraph_size"], "opt_batch_size": g["trt_opt_batch_size"],
        "trt_cache_dir": g["trt_cache_dir"],
    }
