"""BN-neck statistics recomputed for one subnet of a supernet.

A task's BN neck keeps running statistics that the sandwich rule averaged over every subnet it
trained (largest, smallest, random ones), so they fit none of them: a subnet evaluated with
them is normalised by another network's mean and variance, and its retrieval feature (the BN
output) is skewed by however far its features sit from that average. OFA and BigNAS therefore
recompute BN statistics before evaluating a child network. A ViT has BN only in the neck, so
this costs one forward pass over a fixed sample of the task's training images.
"""
from contextlib import contextmanager

import numpy as np
import paddle

from ..data.loader import build_task_train_set, eval_transforms
from ..utils.errors import ConfigError


def task_images(config, task, num_images, seed=0):
    """[n, C, H, W] float32: ``num_images`` training images of ``task`` (all of them where it has
    fewer) drawn without replacement with ``seed``, in file order, through the eval transforms: what
    the exported model is fed. The same arguments give the same images (BN-neck and int8 calibration)."""
    ds = build_task_train_set(config, task, eval_transforms(config))
    n = min(int(num_images), len(ds))
    idx = np.sort(np.random.RandomState(seed).choice(len(ds), n, replace=False))
    return np.stack([ds.load(int(i)) for i in idx]).astype(np.float32)


class NeckCalibration:
    """``calibration(model)`` sets ``task``'s BN-neck statistics to the exact mean and
    (biased, as BatchNorm's) variance of the neck's input over ``num_images`` training images of
    the task, drawn once with ``seed``, for the subnet the model currently runs.

    The images are decoded once and kept (num_images x C x H x W float32: 25 MB at 512 x 64^2,
    0.9 GB at 512 x 384^2)."""

    def __init__(self, config, task, num_images=512, seed=0, where="BN-neck calibration"):
        if int(num_images) < 2:
            raise ConfigError(f"{where}: {num_images} images; expected at least 2 (or 0 to keep the "
                              f"supernet's statistics, where that is allowed)")
        self.images = task_images(config, task, num_images, seed)
        self.task, self.num_images, self.seed = task, len(self.images), int(seed)
        self.batch_size = int(config["DataLoader"]["Eval"]["batch_size"])

    @property
    def context(self):
        return {"task": self.task, "images": self.num_images, "seed": self.seed}

    @paddle.no_grad()
    def neck_inputs(self, model):
        """[num_images, dim] float64: what the task's BatchNorm normalises, in eval mode."""
        task = self.task
        neck = model.heads[task].neck
        if bn_neck(model, task) is None:
            raise ConfigError(f"Tasks.{task}.neck: {type(neck).__name__} has no BatchNorm to recalibrate")
        was = model.training
        model.eval()
        try:
            out = []
            for i in range(0, len(self.images), self.batch_size):
                x = paddle.to_tensor(self.images[i:i + self.batch_size])
                feat, = model.backbone_features(x, [(task, x.shape[0])])
                with paddle.amp.auto_cast(enable=False):  # the neck runs in fp32 under AMP too
                    out.append(neck.project(feat.astype("float32")).numpy())
        finally:
            model.train(was)
        return np.concatenate(out).astype(np.float64)

    def __call__(self, model):
        z = self.neck_inputs(model)
        mean, var = z.mean(0), z.var(0)
        model.heads[self.task].neck.bn.set_statistics(mean, var)
        return mean, var


def bn_neck(model, task):
    """``task``'s neck BatchNorm if its statistics can be recalibrated (a BNNeck), else None."""
    neck = model.heads[task].neck
    bn = getattr(neck, "bn", None)
    return bn if hasattr(neck, "project") and hasattr(bn, "set_statistics") else None


@contextmanager
def recalibrated(config, model, tasks, num_images, where="calibration_images"):
    """Within the block, the BN necks of ``tasks`` (those that have one) carry statistics
    recomputed for the subnet ``model`` currently runs; the running statistics are put back
    after. One task's images are read at a time and dropped (0.9 GB at 512 x 384^2)."""
    bns = {t: bn for t in tasks if num_images and (bn := bn_neck(model, t)) is not None}
    running = {t: bn.statistics() for t, bn in bns.items()}
    try:
        for t in bns:
            NeckCalibration(config, t, num_images, where=where)(model)
        yield sorted(bns)
    finally:
        for t, stats in running.items():
            bns[t].set_statistics(*stats)


def neck_calibration(config, task, num_images, seed=0, where="calibration_images"):
    """A NeckCalibration of ``task``, or None when ``num_images`` is 0 (keep the running statistics)."""
    return NeckCalibration(config, task, num_images, seed, where) if num_images else None


def calibrate(model, subnet, calibrations):
    """Put each calibrated task of a supernet on ``subnet`` and recompute its BN-neck statistics."""
    model.set_subnets({c.task: subnet for c in calibrations})
    for c in calibrations:
        c(model)
