"""Export per-task feature extractors as Paddle Inference models (+ a small deploy config)."""
import os

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import yaml

from ..utils.errors import ConfigError


class FeatureModel(nn.Layer):
    """image batch [N, 3, H, W] -> L2-normalised retrieval feature of one task."""

    def __init__(self, model, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x):
        return F.normalize(self.model.embed(x, self.task, normalize=False), axis=1)


def export_task(model, task, config, save_dir):
    """jit-save ``task``'s feature model into ``save_dir``; returns the files written."""
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
        "transforms": config["DataLoader"]["Eval"]["transforms"] or [
            {"Resize": {"size": [h, w], "interpolation": "bicubic"}},
            {"Normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}],
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
