"""The UFO reference's released checkpoint, written and run independently of ppufo's code:
its state_dict key names and shapes, random values where every detail shows, and a numpy forward
written from the reference's description (tests/unit/arch/test_released_weights.py,
tests/e2e/test_released_model.py)."""
import numpy as np
import paddle
from scipy.special import erf


def reference_shapes(depth, dim, positions):
    """Key -> shape of the reference's state_dict (Linear weights [in, out], MLP ratio 4)."""
    s = {"backbone.cls_token": [1, 1, dim], "backbone.pos_embed": [1, positions, dim],
         "backbone.patch_embed.proj.weight": [dim, 3, 16, 16], "backbone.patch_embed.proj.bias": [dim]}
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        for n in ("norm1", "norm2"):
            s[p + n + ".weight"] = s[p + n + ".bias"] = [dim]
        for n, (a, b) in {"attn.qkv": (dim, 3 * dim), "attn.proj": (dim, dim),
                          "mlp.fc1": (dim, 4 * dim), "mlp.fc2": (4 * dim, dim)}.items():
            s[p + n + ".weight"], s[p + n + ".bias"] = [a, b], [b]
    s["backbone.norm.weight"] = s["backbone.norm.bias"] = [dim]
    for h in range(1, 5):
        for n in ("weight", "bias", "_mean", "_variance"):
            s[f"heads.task{h}.bottleneck.0.{n}"] = [dim]
    return s


def random_reference(shapes, seed=0):
    """Random values where every detail shows: tokens of tiny variance entering the first
    LayerNorm (its eps matters) and BN variances down to 3e-6 (the BN eps matters)."""
    rng = np.random.RandomState(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("_variance"):
            v = 10 ** rng.uniform(-5.5, 0.3, shape)
        elif k.startswith(("backbone.patch_embed", "backbone.cls_token", "backbone.pos_embed")):
            v = (2e-4 if k.endswith("proj.weight") else 2e-3) * rng.randn(*shape)
        elif k.endswith("weight") and ("norm" in k or "bottleneck" in k):
            v = 1 + 0.2 * rng.randn(*shape)
        else:
            v = 0.1 * rng.randn(*shape)
        out[k] = v.astype("float32")
    return out


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def reference_forward(w, images, head, heads, ln_eps=1e-6, bn_eps=1e-5, exact_gelu=True):
    """The reference's eval feature in float64: patch conv 16/16, [cls] + patches + pos embed,
    pre-norm blocks (MHSA with qkv bias, GELU MLP), final LN, class token, head's BN (running stats)."""
    w = {k: v.astype("float64") for k, v in w.items()}
    x = images.astype("float64")
    b, c, hh, ww = x.shape
    pw = w["backbone.patch_embed.proj.weight"]
    d, p = pw.shape[0], pw.shape[-1]
    patches = x.reshape(b, c, hh // p, p, ww // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
    t = patches @ pw.reshape(d, -1).T + w["backbone.patch_embed.proj.bias"]
    t = np.concatenate([np.broadcast_to(w["backbone.cls_token"], (b, 1, d)), t], 1) + w["backbone.pos_embed"]
    n, hd = t.shape[1], d // heads
    for i in range(len({k.split(".")[2] for k in w if k.startswith("backbone.blocks.")})):
        def g(name):
            return w[f"backbone.blocks.{i}.{name}.weight"], w[f"backbone.blocks.{i}.{name}.bias"]
        (wq, bq), (wp, bp), (w1, b1), (w2, b2) = g("attn.qkv"), g("attn.proj"), g("mlp.fc1"), g("mlp.fc2")
        q, k, v = (layer_norm(t, *g("norm1"), ln_eps) @ wq + bq).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
        a = q @ k.transpose(0, 1, 3, 2) * hd ** -0.5
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        t = t + (a @ v).transpose(0, 2, 1, 3).reshape(b, n, d) @ wp + bp
        z = layer_norm(t, *g("norm2"), ln_eps) @ w1 + b1
        z = 0.5 * z * (1 + (erf(z / np.sqrt(2)) if exact_gelu else
                            np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3))))
        t = t + z @ w2 + b2
    cls = layer_norm(t, w["backbone.norm.weight"], w["backbone.norm.bias"], ln_eps)[:, 0]
    bn = {k: w[f"heads.{head}.bottleneck.0.{k}"] for k in ("weight", "bias", "_mean", "_variance")}
    return (cls - bn["_mean"]) / np.sqrt(bn["_variance"] + bn_eps) * bn["weight"] + bn["bias"]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def save_reference(state, path):
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, str(path))
    return str(path)
