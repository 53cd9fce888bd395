"""Training memory per GPU from a config's own shapes (the model is built under paddle.LazyGuard:
shapes only, no weights allocated).

Counted: parameters, gradients, optimizer state (SGD with momentum 0: none; Momentum: 1 buffer;
AdamW: 2), fp32 master weights under AMP O2; the input batch; every tensor Paddle 3.3.1's autograd
keeps for backward, views included (per block as listed in ``block_saved``; in fp32 on CPU equal
to the byte to what Paddle's allocator holds after the forward, tests/unit/arch/test_memory_plan.py);
the working set of the one block running backward (the gradients of its attention map or MLP
hidden layer) and the largest parameter gradient before it is added to ``.grad``. The classifier
weights and logits (face: [1024, 93431]) are counted, in fp32 (the heads run in fp32).
16-bit sizes (O1 / O2) follow Paddle's AMP op lists; they were not measured (no GPU here).
Not counted, covered by the margin instead (MARGIN_FIXED + MARGIN_FRACTION of the tensors): the
CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers and the caching allocator's fragmentation.
"""
import numpy as np
import paddle

from ..utils.errors import ConfigError

GiB = 2 ** 30
MARGIN_FIXED = 2 * GiB  # CUDA context + library workspaces + NCCL buffers
MARGIN_FRACTION = 0.10  # allocator fragmentation, on top of the counted tensors
# training identities of the full public training sets (the paper's), for classifier sizes
TRAIN_IDS = {"MS1MRecordIO": 93431, "Market1501": 751, "DukeMTMC": 702, "MSMT17": 1041,
             "VeRi776": 576, "VehicleID": 13164, "VeRiWild": 30671, "SOP": 11318}
# bytes per element of each kind of saved tensor. stream: the fp32 residual stream (16-bit under
# O2); act: matmul inputs/outputs (16-bit under AMP); stat: LayerNorm / softmax statistics (fp32);
# map: the [B, H, N, N] softmax output (O1 keeps it fp32 - softmax is on the black list - plus the
# 16-bit copy the following matmul saves)
BYTES = {"fp32": {"stream": 4, "act": 4, "stat": 4, "map": 4, "param": 4},
         "O1": {"stream": 4, "act": 2, "stat": 4, "map": 6, "param": 4},
         "O2": {"stream": 2, "act": 2, "stat": 4, "map": 2, "param": 2}}


def precision_of(global_cfg):
    """"fp32", "O1" or "O2" from a loaded config's Global.amp section (load_config upgrades the old bool)."""
    amp = global_cfg["amp"]
    return amp["level"] if amp["enable"] else "fp32"


def optimizer_buffers(opt_cfg):
    """fp32 state tensors per parameter the Optimizer section's optimizer keeps."""
    name = str(opt_cfg.get("name", "SGD"))
    if "Adam" in name:
        return 2
    return 1 if float(opt_cfg.get("momentum", 0.9)) else 0


def block_saved(n, dim, heads, head_dim, hidden, drop_path, attention, path="plain", fused_qkv=True):
    """[(what, elements per image, kind)] that one pre-LN block keeps for backward.
    attention: "math" (CPU, or fused_attention off) keeps q*scale, k, v and the [H, N, N] map;
    "flash" (scaled_dot_product_attention on a GPU: flash / memory-efficient kernels) keeps q, k, v,
    the output and an O(N) log-sum-exp. With one fused qkv Linear (the plain ViT) k and v are
    views (unbind, transpose) that keep the whole qkv output alive. path "mix" runs two FFNs."""
    inner, ffns = heads * head_dim, 2 if path == "mix" else 1
    out = [("LayerNorm inputs", 2 * n * dim, "stream"), ("LayerNorm mean/var", 4 * n, "stat"),
           ("qkv / fc1 inputs (LayerNorm outputs)", 2 * n * dim, "act")]
    if attention == "math":
        qkv = ("qkv output (k, v are views of it), q*scale, proj input", 5 * n * inner) if fused_qkv else \
            ("q*scale, k, v, proj input", 4 * n * inner)
        out += [qkv + ("act",), ("attention map", heads * n * n, "map")]
    else:
        out += [("q, k, v, attention output", 4 * n * inner, "act"), ("softmax log-sum-exp", heads * n, "stat")]
    out += [("fc1 outputs (GELU inputs)", ffns * n * hidden, "act"),
            ("fc2 inputs (GELU outputs)", ffns * n * hidden, "act")]
    if path == "mix":
        out.append(("shared and task FFN outputs (mix)", 2 * n * dim, "act"))
    if drop_path:
        out += [("DropPath inputs", 2 * n * dim, "act"), ("DropPath masks", 2, "act")]
    return out


def block_working(n, dim, heads, head_dim, hidden, attention, path, precision):
    """Bytes per image live only while the block runs backward: the incoming and residual
    gradients, plus the gradients of the map (math: dmap and dscores) or of q, k, v and the output
    (flash), or of the MLP hidden layers, whichever is larger."""
    b, ffns = BYTES[precision], 2 if path == "mix" else 1
    attn = 2 * heads * n * n * b["map"] if attention == "math" else 4 * n * heads * head_dim * b["act"]
    return 2 * n * dim * b["stream"] + max(attn, 2 * ffns * n * hidden * b["act"])


def _sum(items, precision):
    return sum(e * BYTES[precision][kind] for _, e, kind in items)


class BlockShape:
    """What one block runs with: widths, DropPath rate, FFN path, and the matmul weights it uses
    (under O1 each is cast to 16 bits and the copy kept for backward; a supernet's narrower
    slices of its weights are views, no copies)."""

    def __init__(self, heads, head_dim, hidden, drop_path, path="plain", weights=0, fused_qkv=True):
        self.heads, self.head_dim, self.hidden, self.fused_qkv = heads, head_dim, hidden, fused_qkv
        self.drop_path, self.path, self.weights = drop_path, path, weights

    def bytes(self, n, dim, batch, precision, attention):
        """(saved, working) bytes of this block over ``batch`` images."""
        per_batch = (self.weights * 2 if precision == "O1" else 0) + (8 if self.path == "mix" else 0)
        saved = _sum(block_saved(n, dim, self.heads, self.head_dim, self.hidden, self.drop_path, attention,
                                 self.path, self.fused_qkv), precision)
        working = block_working(n, dim, self.heads, self.head_dim, self.hidden, attention, self.path, precision)
        return batch * saved + per_batch, batch * working


def vit_blocks(backbone, subnet=None):
    """[BlockShape] of a VisionTransformer, or of a ViTSupernet on ``subnet`` (default: the
    largest, which keeps the most: every head, the widest FFN, both FFNs of the mix path).
    Matmul weights per block from the model's own block_widths: qkv + proj 4 c w, the FFN(s) 2 c m."""
    c = backbone.embed_dim
    if not hasattr(backbone, "space"):
        return [BlockShape(b.attn.num_heads, b.attn.head_dim, m, b.drop_path.p, weights=4 * c * w + 2 * c * m)
                for b, (w, m) in zip(backbone.blocks, backbone.block_widths())]
    space = backbone.space
    subnet = subnet or space.largest()
    return [BlockShape(h, space.head_dim, space.hidden(r), blk.drop_path.p, p, 4 * c * w + 2 * c * m, fused_qkv=False)
            for blk, h, p, r, (w, m) in zip(backbone.blocks, subnet.heads, subnet.paths, subnet.ratios,
                                            space.block_widths(subnet))]


def tokens(backbone, image_hw):
    return (image_hw[0] // backbone.patch_size) * (image_hw[1] // backbone.patch_size) + 1


def backbone_memory(backbone, blocks, image_hw, batch, precision="fp32", attention="math", recompute=False):
    """Bytes of a ViT backbone's training step over ``batch`` images: {"input": the fp32 image
    batch, "saved": what autograd keeps when backward starts, "working": what the block running
    backward adds on top (with recompute: its recomputed activations too)}."""
    n, c, b = tokens(backbone, image_hw), backbone.embed_dim, BYTES[precision]
    # the final LayerNorm's input, statistics and output (the CLS feature is a view of it, kept by
    # the heads); under AMP the conv's 16-bit copy of the images
    outside = 2 * n * c * b["stream"] + 2 * n * 4 + (3 * image_hw[0] * image_hw[1] * 2 if precision != "fp32" else 0)
    saved, work = zip(*(s.bytes(n, c, batch, precision, attention) for s in blocks))
    out = {"input": batch * 3 * image_hw[0] * image_hw[1] * 4}
    if not recompute:
        return dict(out, saved=batch * outside + sum(saved), working=max(work))
    # each block's input stays; one block's activations come back (its input is already kept)
    i = max(range(len(blocks)), key=lambda k: saved[k] + work[k])
    return dict(out, saved=batch * (outside + len(blocks) * n * c * b["stream"]),
                working=saved[i] - batch * n * c * b["stream"] + work[i])


def head_memory(in_dim, feature_dim, num_classes, batch, has_fc, triplet):
    """(saved, working) bytes of one task's BN neck, CosFace-style classifier and losses over
    ``batch`` images, all fp32: the normalised weight copy [D, K], three [B, K] logit tensors
    (cosine, log-softmax, the gathered copy); in backward two [B, K] gradients."""
    d, k = feature_dim, num_classes
    per_image = (in_dim if has_fc else 0) + 4 * d + 3 * k + 4
    saved = 4 * (batch * per_image + d * k + 2 * k + 4 * d + (6 * batch * batch if triplet else 0))
    return saved, 4 * 2 * batch * k


def classifier_sizes(config, given=None):
    """{task: number of classes}: ``given`` first, else the training identities of the task's
    datasets when they are known public sets (TRAIN_IDS)."""
    given, out = dict(given or {}), {}
    for t, tcfg in config["Tasks"].items():
        if t in given:
            out[t] = int(given[t])
            continue
        names = [d.get("name") for d in tcfg["datasets"]]
        unknown = [nm for nm in names if nm not in TRAIN_IDS]
        if unknown:
            raise ConfigError(f"Tasks.{t}.datasets: classes of {unknown} unknown to the memory plan; "
                              f"give them (e.g. --num_classes {t}=1000)")
        out[t] = sum(TRAIN_IDS[nm] for nm in names)
    return out


def parameter_count(params):
    """Number of values in ``params`` (shapes only: works under paddle.LazyGuard)."""
    return sum(int(np.prod(p.shape)) for p in params)


class MemoryPlan:
    """Memory of one training step on one GPU for ``config`` (see the module docstring).
    precision ("fp32" | "O1" | "O2"), recompute and attention ("flash" | "math") default to the
    config's: Global.amp, Arch.Backbone.recompute, fused_attention on a GPU device."""

    def __init__(self, config, num_classes=None, precision=None, recompute=None, attention=None):
        from .multitask import build_model
        g, bb = config["Global"], config["Arch"]["Backbone"]
        self.config, self.image_hw = config, [int(v) for v in g["image_shape"][1:]]
        self.precision = precision or precision_of(g)
        self.recompute = bool(bb.get("recompute", False)) if recompute is None else recompute
        gpu = str(g.get("device", "cpu")).startswith("gpu")
        self.attention = attention or ("flash" if gpu and bb.get("fused_attention", True) else "math")
        self.num_classes = classifier_sizes(config, num_classes)
        with paddle.LazyGuard():  # shapes only
            self.model = build_model(config, self.num_classes)
        self.backbone = bk = self.model.backbone
        if not hasattr(bk, "blocks") or not hasattr(bk, "patch_size"):
            raise ConfigError(f"Arch.Backbone: the memory plan models ViT backbones, not {type(bk).__name__}")
        heads = self.model.heads
        self.params = {"backbone": parameter_count(bk.parameters()),
                       "necks": parameter_count(p for t in heads for p in heads[t].neck.parameters()),
                       "classifiers": parameter_count(p for t in heads for p in heads[t].classifier.parameters())}
        self.largest_param = max(int(np.prod(p.shape)) for p in self.model.parameters())
        self.buffers = optimizer_buffers(config["Optimizer"])
        self.supernet = hasattr(bk, "space")
        self.blocks = vit_blocks(bk)  # the largest subnet of a supernet

    def static(self):
        """{part: bytes} independent of the batch."""
        pb, ph, b = self.params["backbone"], self.params["necks"] + self.params["classifiers"], BYTES[self.precision]
        weights = pb * b["param"] + ph * 4
        return {"parameters": weights, "gradients": weights, "optimizer state": 4 * self.buffers * (pb + ph),
                "fp32 master weights": 4 * pb if self.precision == "O2" else 0}

    def step(self, task_batch, recompute=None, precision=None):
        """{part: bytes} of one training step with ``task_batch`` {task: images on this GPU}:
        static parts, the input batch, saved activations, the working set at the peak, the margin.
        A supernet runs the backbone once per task slice; its costliest sandwich pass is the
        largest subnet's (passes run forward and backward one after another)."""
        precision, rc = precision or self.precision, self.recompute if recompute is None else recompute
        slices = [v for v in task_batch.values() if v] if self.supernet else [sum(task_batch.values())]
        mem = [backbone_memory(self.backbone, self.blocks, self.image_hw, v, precision, self.attention, rc)
               for v in slices]
        heads = [head_memory(self.backbone.out_dim, self.model.heads[t].neck.out_dim, self.num_classes[t], v,
                             getattr(self.model.heads[t].neck, "fc", None) is not None,
                             any("TripletLoss" in term for term in self.config["Tasks"][t]["loss"]))
                 for t, v in task_batch.items() if v]
        parts = dict(self.static(), **{
            "input batch": sum(m["input"] for m in mem),
            "backbone activations": sum(m["saved"] for m in mem),
            "heads (normalised weights, logits)": sum(h[0] for h in heads),
            # a gradient is computed whole before it is added to .grad
            "working set (one block's backward / heads' gradients)":
                max(max(m["working"] for m in mem), sum(h[1] for h in heads)) + 4 * self.largest_param})
        tensors = sum(parts.values())
        parts["margin (2 GiB + 10%)"] = MARGIN_FIXED + MARGIN_FRACTION * tensors
        parts["peak"] = tensors + parts["margin (2 GiB + 10%)"]
        return parts

    def per_gpu(self, gpus):
        """{task: images per GPU}: Tasks.<t>.batch_size / gpus."""
        return {t: tcfg["batch_size"] / gpus for t, tcfg in self.config["Tasks"].items()}

    def max_batch(self, gpu_bytes, **kw):
        """The largest per-GPU batch (the config's task mix) whose peak fits in ``gpu_bytes``."""
        share = self.per_gpu(1)
        total = sum(share.values())
        fits = lambda b: self.step({t: b * v / total for t, v in share.items()}, **kw)["peak"] <= gpu_bytes
        lo, hi = 0, 1
        while fits(hi) and hi < 2 ** 20:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo
