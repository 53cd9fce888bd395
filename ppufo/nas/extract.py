"""Cut a subnet out of a trained supernet as a plain ViT MultiTaskModel (no retraining).

Every weight of the subnet is a leading slice of the supernet's (see vit_super.py). q, k and v
are concatenated into one qkv, as the plain ViT lays them out. The "mix" path
a * FFN_s(x) + (1 - a) * FFN_t(x) becomes ONE MLP: GELU acts elementwise, so concatenating the
two hidden layers and scaling the fc2 rows by a and 1 - a gives exactly the same output.
"""
import copy

import numpy as np
import paddle

from ..utils.errors import ConfigError


def _np(t):
    return t.numpy() if isinstance(t, paddle.Tensor) else np.asarray(t)


def _mlp_weights(ffn, task, path, hidden):
    """(fc1.w, fc1.b, fc2.w, fc2.b) of the plain MLP equal to ``path`` at ``hidden`` units."""
    def sliced(mlp, scale=1.0):
        return (_np(mlp.fc1.weight)[:, :hidden], _np(mlp.fc1.bias)[:hidden],
                scale * _np(mlp.fc2.weight)[:hidden], scale * _np(mlp.fc2.bias))
    if path == "shared":
        return sliced(ffn.shared)
    if path == "task":
        return sliced(ffn.task[task])
    a = float(_np(ffn.mix_weight(task))[0])
    s, t = sliced(ffn.shared, a), sliced(ffn.task[task], 1.0 - a)
    return (np.concatenate([s[0], t[0]], 1), np.concatenate([s[1], t[1]]),
            np.concatenate([s[2], t[2]], 0), s[3] + t[3])


def backbone_config(space, subnet):
    """Arch.Backbone of the plain ViT equal to ``subnet`` (VisionTransformer, per-block widths)."""
    widths = space.block_widths(subnet)
    return {"name": "VisionTransformer", "patch_size": space.patch_size, "in_chans": space.in_chans,
            "embed_dim": space.embed_dim, "depth": subnet.depth, "num_heads": int(subnet.heads[0]),
            "head_dim": space.head_dim, "qkv_bias": space.qkv_bias,
            "block_heads": [int(h) for h in subnet.heads], "block_mlp_hidden": [int(m) for _, m in widths]}


def backbone_state(supernet, task, subnet):
    """State dict (numpy) of the plain ViT for ``task`` on ``subnet``."""
    space = supernet.space
    out = {k: _np(getattr(supernet, k)) for k in ("pos_embed", "cls_token")}
    for k in ("patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"):
        out[k] = _np(supernet.state_dict()[k])
    for i in range(subnet.depth):
        blk, p = supernet.blocks[i], f"blocks.{i}."
        c = subnet.heads[i] * space.head_dim
        for n in ("norm1", "norm2"):
            out[p + n + ".weight"], out[p + n + ".bias"] = _np(getattr(blk, n).weight), _np(getattr(blk, n).bias)
        qkv = [blk.attn.q, blk.attn.k, blk.attn.v]
        out[p + "attn.qkv.weight"] = np.concatenate([_np(l.weight)[:, :c] for l in qkv], 1)
        out[p + "attn.qkv.bias"] = np.concatenate([_np(l.bias)[:c] for l in qkv])
        out[p + "attn.proj.weight"] = _np(blk.attn.proj.weight)[:c]
        out[p + "attn.proj.bias"] = _np(blk.attn.proj.bias)
        w1, b1, w2, b2 = _mlp_weights(blk.ffn, task, subnet.paths[i], space.hidden(subnet.ratios[i]))
        out.update({p + "mlp.fc1.weight": w1, p + "mlp.fc1.bias": b1, p + "mlp.fc2.weight": w2,
                    p + "mlp.fc2.bias": b2})
    return out


# Arch.Backbone keys that are not part of a subnet's shape: the plain config keeps the supernet's
NOT_SHAPE = ("drop_path_rate", "epsilon", "recompute", "fused_attention")


def extracted_config(config, tasks, subnet, space):
    """The supernet config turned into a plain MultiTaskModel config for ``tasks``."""
    cfg = copy.deepcopy(config)
    drop = {k: v for k, v in cfg["Arch"]["Backbone"].items() if k in NOT_SHAPE}
    cfg["Arch"] = {"name": "MultiTaskModel", "Backbone": {**backbone_config(space, subnet), **drop}}
    cfg["Tasks"] = {t: cfg["Tasks"][t] for t in tasks}
    cfg["Loss"]["task_weights"] = {t: w for t, w in cfg["Loss"]["task_weights"].items() if t in tasks}
    cfg.pop("Supernet", None)
    cfg.pop("Extract", None)
    return cfg


def check_tasks(model, tasks, subnet):
    unknown = [t for t in tasks if t not in model.task_names]
    if not tasks or unknown:
        raise ConfigError(f"Extract.task: {tasks}; expected one or more of {model.task_names}")
    if len(tasks) > 1 and any(p != "shared" for p in subnet.paths):
        raise ConfigError(f"Extract: tasks {tasks} share one backbone, so every block must use the "
                          f"'shared' FFN path; this subnet uses {sorted(set(subnet.paths) - {'shared'})}")


def extract(config, supernet_model, tasks, subnet, calibrations=()):
    """(plain config, plain MultiTaskModel with the subnet's weights) for ``tasks``. The BN necks
    of the tasks in ``calibrations`` (ppufo.engine.calibrate.NeckCalibration) are first recomputed
    for the subnet, in the supernet, so the supernet path and the extracted model stay equal."""
    from ..arch import build_model
    from ..engine.calibrate import calibrate
    subnet = supernet_model.space.validate(subnet)
    check_tasks(supernet_model, tasks, subnet)
    unknown = sorted({c.task for c in calibrations} - set(tasks))
    if unknown:
        raise ConfigError(f"extract: calibrations of {unknown}, which are not extracted ({tasks})")
    calibrate(supernet_model, subnet, calibrations)
    cfg = extracted_config(config, tasks, subnet, supernet_model.space)
    heads = {t: supernet_model.heads[t] for t in tasks}
    model = build_model(cfg, {t: h.classifier.num_classes for t, h in heads.items()})
    state = {"backbone." + k: v for k, v in backbone_state(supernet_model.backbone, tasks[0], subnet).items()}
    for t, h in heads.items():
        state.update({f"heads.{t}.{k}": _np(v) for k, v in h.state_dict().items()})
    own = model.state_dict()
    if sorted(own) != sorted(state):
        raise RuntimeError(f"extraction keys differ: missing {sorted(set(own) - set(state))[:5]}, "
                           f"extra {sorted(set(state) - set(own))[:5]}")
    model.set_state_dict({k: paddle.to_tensor(v.astype(_np(own[k]).dtype)) for k, v in state.items()})
    model.eval()
    return cfg, model


@paddle.no_grad()
def max_feature_diff(supernet_model, model, tasks, subnet, image_shape, batch=4, seed=0):
    """max |extracted - supernet path| over the L2-normalised features of random images."""
    was = supernet_model.training
    supernet_model.eval()
    supernet_model.set_subnets({t: subnet for t in tasks})
    x = paddle.to_tensor(np.random.RandomState(seed).randn(batch, *image_shape).astype("float32"))
    diff = max(float((supernet_model.embed(x, t) - model.embed(x, t)).abs().max()) for t in tasks)
    supernet_model.train(was)
    return diff
