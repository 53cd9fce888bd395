"""Precise BN: the backbone's BatchNorm statistics re-estimated on heterogeneous batches.

UFO argues for heterogeneous batches (every batch holds all tasks) because a BatchNorm backbone
trained on homogeneous ones (one task per batch) keeps running statistics of single-task
batches, while at test time it normalises with them whatever it sees. The control arm of that
ablation re-estimates the backbone's statistics of a homogeneously trained model on mixed
batches before evaluating: if the gap closes, the statistics were the cause, not the gradients.

As fast-reid's precise BN, each running mean / variance becomes the plain average of the batch
statistics over ``num_batches`` batches: with momentum k / (k + 1) at batch k (from 0), Paddle's
``running = momentum * running + (1 - momentum) * batch`` is the cumulative mean, and the old
running value is forgotten at batch 0. Only the backbone: a task's BN neck already sees one
task at a time, in training as at test.
"""
import copy

import paddle

from ..data.loader import build_train_loader
from ..utils.config import Field
from ..utils.logger import get_logger
from ..utils.paddle_internals import batch_norm_types, bn_momentum, bn_uses_global_stats, set_bn_momentum
from ..utils.progress import Progress
from .amp import MixedPrecision


def backbone_bns(model):
    """[(name, layer)] of the BatchNorm layers of ``model.backbone`` that update running
    statistics in train mode (use_global_stats=True ones are frozen by design and left alone)."""
    return [(n, m) for n, m in model.backbone.named_sublayers()
            if isinstance(m, batch_norm_types()) and not bn_uses_global_stats(m)]


def heterogeneous_loader(config, num_batches, seed=0):
    """The training loader of ``config`` turned heterogeneous: ``num_batches`` batches, each with
    every task's own batch size of images (training transforms, drawn with ``seed``)."""
    cfg = copy.deepcopy(config)
    cfg["Global"]["max_iters"], cfg["Global"]["seed"] = int(num_batches), int(seed)
    cfg["DataLoader"]["Train"]["batch_sampler"] = {"name": "HeterogeneousBatchSampler"}
    cfg["DataLoader"]["Train"]["num_workers"] = 0  # a few batches: workers would cost more than they save
    loader, _ = build_train_loader(cfg)
    return loader


def recompute_backbone_bn(model, config, num_batches, seed=0, log=None):
    """Set every backbone BN's running mean / variance to the average of its batch statistics
    over ``num_batches`` heterogeneous training batches of ``config`` (see the module doc).

    Runs the backbone in train mode (as in training, under the config's autocast unless
    Global.amp.eval_fp32) with
    ``paddle.no_grad()``: only BN buffers change. Paddle's global RNG is seeded with ``seed`` for
    the pass (DropPath/dropout draws) and restored after, as are every layer's train/eval mode and
    every BN's momentum. ``log``: a logger (default ppufo's). Returns {"layers", "batches",
    "images"}; a backbone without BatchNorm (the ViT) gives 0 layers and reads no data."""
    log = log or get_logger()
    bns = [m for _, m in backbone_bns(model)]
    if not bns:
        log.info("precise BN: the backbone has no BatchNorm; nothing to recompute")
        return {"layers": 0, "batches": 0, "images": 0}
    num_batches = Field(int, min=1).check(num_batches, "precise BN: num_batches")
    loader = heterogeneous_loader(config, num_batches, seed)
    sampler = loader.batch_sampler
    sizes = [(t, sampler.task_counts[t]) for t in sampler.tasks]
    momenta = [bn_momentum(bn) for bn in bns]
    modes = [(m, m.training) for m in model.sublayers(include_self=True)]
    rng = paddle.get_rng_state()
    amp = MixedPrecision(config["Global"]["amp"], config["Global"]["device"])
    batches = images = 0
    try:
        model.backbone.train()
        paddle.seed(seed)
        with paddle.no_grad(), Progress(num_batches, "precise BN", log=log) as progress:
            for batch in loader:
                for bn in bns:
                    set_bn_momentum(bn, batches / (batches + 1))  # cumulative mean (module doc)
                with amp.eval_autocast():  # as evaluation: Global.amp.eval_fp32 forces fp32
                    model.backbone_features(batch[0], sizes)
                batches += 1
                images += int(batch[0].shape[0])
                progress.update()
    finally:
        for bn, m in zip(bns, momenta):
            set_bn_momentum(bn, m)
        for m, training in modes:
            m.training = training
        paddle.set_rng_state(rng)
    log.info(f"precise BN: {len(bns)} backbone BatchNorm layers re-estimated on {batches} heterogeneous "
             f"batches ({images} images, {', '.join(f'{t} {n}' for t, n in sizes)} per batch)")
    return {"layers": len(bns), "batches": batches, "images": images}


def task_statistics_shift(model, config, num_batches, seed=0):
    """How far each task's statistics at the input of each backbone BN layer sit from the mixed
    batch's: {layer: {task: shift}}, shift = mean over channels of |mean_task - mean_mixed| /
    std_mixed, with the means and variances pooled over ``num_batches`` heterogeneous batches, the
    model in eval mode (normalised by its running statistics, as at test). UFO's mechanism needs
    this to be large: with shifts near 0, per-task and mixed normalisation are the same thing."""
    bns = backbone_bns(model)
    if not bns:
        return {}
    loader = heterogeneous_loader(config, num_batches, seed)
    sampler = loader.batch_sampler
    sizes = [(t, sampler.task_counts[t]) for t in sampler.tasks]
    sums = {}  # (layer, task or None) -> [sum x, sum x^2, count] per channel

    def hook(name):
        def record(layer, inputs):
            x = inputs[0].astype("float32")
            parts = paddle.split(x, [n for _, n in sizes]) if len(sizes) > 1 else [x]
            for key, part in [(None, x)] + [(t, p) for (t, _), p in zip(sizes, parts)]:
                s = sums.setdefault((name, key), [0.0, 0.0, 0])
                s[0] = s[0] + part.sum(axis=[0, 2, 3])
                s[1] = s[1] + (part * part).sum(axis=[0, 2, 3])
                s[2] += part.shape[0] * part.shape[2] * part.shape[3]
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in bns]
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            for batch in loader:
                model.backbone(batch[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    def moments(key):
        s1, s2, n = sums[key]
        mean = s1 / n
        return mean, (s2 / n - mean * mean).clip(min=1e-12)

    out = {}
    for name, _ in bns:
        mix_mean, mix_var = moments((name, None))
        out[name] = {t: float((((moments((name, t))[0] - mix_mean).abs()) / mix_var.sqrt()).mean())
                     for t, _ in sizes}
    return out
