"""Export per-task feature extractors as Paddle Inference models (+ a small deploy config)."""
import os

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import yaml
from PIL import Image

from ..data.loader import eval_transforms
from ..utils.errors import ConfigError


class FeatureModel(nn.Layer):
    """image batch [N, 3, H, W] -> L2-normalised retrieval feature of one task."""

    def __init__(self, model, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x):
        return F.normalize(self.model.embed(x, self.task, normalize=False), axis=1)


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
    static = paddle.jit.to_static(feature, input_spec=[paddle.static.InputSpec([None, c, h, w], "float32", "x")],
                                  full_graph=True)
    os.makedirs(save_dir, exist_ok=True)
    prefix = os.path.join(save_dir, "inference")
    paddle.jit.save(static, prefix)
    emb_dim = model.heads[task].neck.out_dim
    info = {
        "task": task, "chip": config["Export"]["chip"], "image_shape": [c, h, w],
        "feature_dim": int(emb_dim), "input_name": "x",
        "transforms": transforms,
    }
    with open(os.path.join(save_dir, "inference.yml"), "w") as f:
        yaml.safe_dump(info, f, sort_keys=False)
    return sorted(os.listdir(save_dir))


def export_model(model, config):
    tasks = model.task_names if config["Export"]["task"] == "all" else [config["Export"]["task"]]
    for t in tasks:
        if t not in model.task_names:
            raise ConfigError(f"Export.task={t}: not a task of this model; tasks: {model.task_names} or 'all'")
    out = {}
    for t in tasks:
        d = os.path.join(config["Export"]["save_dir"], t) if len(model.task_names) > 1 else config["Export"]["save_dir"]
        out[t] = (d, export_task(model, t, config, d))
    return out
