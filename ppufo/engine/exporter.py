"""Export per-task feature extractors as Paddle Inference models (+ a small deploy config)."""
import contextlib
import os

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import yaml
from PIL import Image

from ..data.loader import eval_transforms
from ..utils.errors import ConfigError
from ..utils.paddle_flags import paddle_flags


class FeatureModel(nn.Layer):
    """image batch [N, 3, H, W] -> L2-normalised retrieval feature of one task."""

    def __init__(self, model, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x):
        return F.normalize(self.model.embed(x, self.task, normalize=False), axis=1)


LEGACY_LINEAR = "FLAGS_use_legacy_linear"


@contextlib.contextmanager
def legacy_linear():
    """FLAGS_use_legacy_linear on within the block, its old value put back after (errors too).

    With CUDA compiled in, Paddle 3.3.1's F.linear traced in PIR mode emits ``pd_op.linear_v2``
    unless this flag is set (paddle/nn/functional/common.py; the CPU wheel always emits matmul +
    add). paddle2onnx 2.1.0 has no mapper for linear_v2 and Paddle's TensorRT converters have
    none, so an export from a GPU build would not convert. docs/deploy.md#export."""
    with paddle_flags({LEGACY_LINEAR: True}):
        yield


# chips whose Paddle Inference runs the packed attention layout faster (Export.packed_attention: null)
PACKED_ATTENTION_CHIPS = ("cpu_x86",)


@contextlib.contextmanager
def packed_attention(layer, on=True):
    """Every ViT Attention under ``layer`` traces the packed layout (vit.packed_attention, which
    Paddle Inference fuses into one CPU kernel per block) within the block; put back after."""
    from ..arch.backbone.vit import Attention
    layers = [m for m in layer.sublayers(include_self=True) if isinstance(m, Attention)] if on else []
    old = [m.packed for m in layers]
    for m in layers:
        m.packed = True
    try:
        yield bool(layers)
    finally:
        for m, v in zip(layers, old):
            m.packed = v


def attention_layout(config):
    """'packed' or 'sdpa': Export.packed_attention, or when null, whether Export.chip is one of
    PACKED_ATTENTION_CHIPS."""
    export = config["Export"]
    on = export.get("packed_attention")
    return "packed" if (export["chip"] in PACKED_ATTENTION_CHIPS if on is None else on) else "sdpa"


def save_inference(layer, input_shape, prefix):
    """Trace ``layer`` (input ``x`` of [None, *input_shape] float32) and jit-save it at ``prefix``
    with matmul + add for every linear layer (legacy_linear): the program traced and saved inside."""
    with legacy_linear():
        static = paddle.jit.to_static(layer, input_spec=[paddle.static.InputSpec([None, *input_shape], "float32", "x")],
                                      full_graph=True)
        paddle.jit.save(static, prefix)


def export_transforms(config):
    """The preprocessing an export records: the pipeline evaluation builds (eval_transforms),
    written by itself, so serving rebuilds the same ops. ConfigError for a pipeline that cannot be
    written down or does not give the model's input shape."""
    where = "DataLoader.Eval.transforms"
    pipeline = eval_transforms(config)
    items = pipeline.to_config(where)
    # an odd, non-square probe: a pipeline that does not resize shows it in the output shape
    try:
        shape = list(pipeline(Image.new("RGB", (37, 23))).shape)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: fails on an RGB image: {e}") from None
    if shape != list(config["Global"]["image_shape"]):
        raise ConfigError(f"{where}: gives a {shape} array for a 37x23 image; the exported model takes "
                          f"Global.image_shape {list(config['Global']['image_shape'])}: resize to it")
    return items


def export_task(model, task, config, save_dir):
    """jit-save ``task``'s feature model into ``save_dir``; returns the files written."""
    transforms = export_transforms(config)  # first: a bad pipeline fails before anything is written
    c, h, w = config["Global"]["image_shape"]
    feature = FeatureModel(model, task)
    feature.eval()
    os.makedirs(save_dir, exist_ok=True)
    with packed_attention(feature, attention_layout(config) == "packed") as packed:
        save_inference(feature, [c, h, w], os.path.join(save_dir, "inference"))
    emb_dim = model.heads[task].neck.out_dim
    info = {
        "task": task, "chip": config["Export"]["chip"], "image_shape": [c, h, w],
        "feature_dim": int(emb_dim), "input_name": "x",
        # packed: the ViT attention in the layout Paddle Inference fuses on CPU (predictor.py)
        "attention": "packed" if packed else "sdpa",
        "transforms": transforms,
    }
    with open(os.path.join(save_dir, "inference.yml"), "w") as f:
        yaml.safe_dump(info, f, sort_keys=False)
    return sorted(os.listdir(save_dir))


def export_dirs(model, config):
    """{task: folder} of the tasks Export.task names: one sub-folder of Export.save_dir per task of a
    multi-task model, Export.save_dir itself for a single-task one."""
    tasks = model.task_names if config["Export"]["task"] == "all" else [config["Export"]["task"]]
    for t in tasks:
        if t not in model.task_names:
            raise ConfigError(f"Export.task={t}: not a task of this model; tasks: {model.task_names} or 'all'")
    save_dir = config["Export"]["save_dir"]
    return {t: os.path.join(save_dir, t) if len(model.task_names) > 1 else save_dir for t in tasks}


def export_model(model, config):
    return {t: (d, export_task(model, t, config, d)) for t, d in export_dirs(model, config).items()}
