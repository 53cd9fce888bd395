"""Training memory per GPU from a config's own shapes (the model is built under paddle.LazyGuard:
shapes only, no weights allocated), for ViT backbones (closed formulas, below) and PaddleClas CNN
backbones such as ResNet50 (BatchNorm; measured, see ``measure_cnn``).

Counted: parameters, gradients, optimizer state (SGD with momentum 0: none; Momentum: 1 buffer;
AdamW: 2), fp32 master weights under AMP O2; the input batch; every tensor Paddle 3.3.1's autograd
keeps for backward, views included (per block as listed in ``block_saved``; in fp32 on CPU equal
to the byte to what Paddle's allocator holds after the forward, tests/unit/arch/test_memory_plan.py);
the working set of the one block running backward (the gradients of its attention map or MLP
hidden layer) and the largest parameter gradient before it is added to ``.grad``. The classifier
weights and logits (face: [1024, 93431]) are counted, in fp32 (the heads run in fp32).
16-bit sizes (O1 / O2) follow Paddle's AMP op lists; they were not measured (no GPU here).
A PaddleClas CNN's activations are no closed formula over a few shapes: its backbone is built for
real on the CPU and what it keeps for backward is measured with Paddle's CPU allocator around one
train-mode forward at the planned image size, at batch 1 and 2 (per image = the difference, the
rest per step: BN's saved batch statistics), and its backward's excess over that at batch 2; the
16-bit sizes are computed from that measurement (under AMP every kept activation is 16-bit: conv2d
is on the white list, BN, ReLU, add and pooling run in their input's dtype; plus the conv's 16-bit
copy of the images and, under O1, of the conv weights). The heads are built lazily as for the ViT.
A HomogeneousBatchSampler config (one task a step) is planned at its costliest step.
Not counted, covered by the margin instead (MARGIN_FIXED + MARGIN_FRACTION of the tensors): the
CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers and the caching allocator's fragmentation.
"""
import gc

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


def is_paddleclas(backbone_cfg):
    """True when Arch.Backbone names a PaddleClas model (PaddleClasBackbone, or a shortcut such
    as ResNet50): a real model is then built and measured (measure_cnn)."""
    from .backbone import BACKBONES
    name = backbone_cfg.get("name") if isinstance(backbone_cfg, dict) else None
    return name in BACKBONES and BACKBONES.get(name).__module__.endswith(".paddleclas_backbones")


def _allocated():
    from paddle.base import core
    return core.host_memory_stat_current_value("Allocated", 0)


def _kept_and_peak(backbone, x):
    """(bytes allocated after a train-mode forward of ``x`` with its output alive, the peak over
    that forward and the backward), both over the allocation before it (``x`` included there)."""
    from paddle.base import core
    gc.collect()
    base = _allocated()
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    out = backbone(x)
    kept = _allocated() - base
    out.square().mean().backward()
    del out
    peak = core.host_memory_stat_peak_value("Allocated", 0) - base
    for p in backbone.parameters():
        p.clear_gradient(set_to_zero=True)  # the gradients stay allocated: baseline of the next pass
    return kept, peak


def measure_cnn(backbone, image_hw):
    """What a real (CPU) CNN backbone keeps for backward, measured with Paddle's host allocator
    around one training step per batch size at the planned image size, fp32:

    - ``per_image``: bytes kept after the forward at batch 2 minus at batch 1 (every tensor
      autograd holds for backward, plus the [B, C] output; the input images are counted apart);
    - ``fixed``: the rest at batch 1, independent of the batch (BN's saved mean / variance);
    - ``working_per_image``: the backward's peak at batch 2 over the kept bytes, less the largest
      parameter gradient (counted apart, before it is added to ``.grad``), per image, at least 0;
    - ``weights16``: elements of the conv / linear weights (the 16-bit copies O1 keeps).

    A first step at a small size allocates the parameter gradients (kept, zeroed) beforehand.
    ResNet50 at 384x384 on CPU: a few seconds. tests/unit/arch/test_memory_plan.py checks the result
    against the tensors each layer's backward needs and linearity in the batch."""
    from paddle.nn.layer.conv import _ConvNd
    backbone.train()
    small = [min(int(v), 64) for v in image_hw]
    _kept_and_peak(backbone, paddle.ones([2, 3] + small))
    kept1, _ = _kept_and_peak(backbone, paddle.ones([1, 3] + list(image_hw)))
    kept2, peak2 = _kept_and_peak(backbone, paddle.ones([2, 3] + list(image_hw)))
    largest = 4 * max(int(np.prod(p.shape)) for p in backbone.parameters())
    weights = [m.weight for m in backbone.sublayers() if isinstance(m, (_ConvNd, paddle.nn.Linear))]
    return {"per_image": kept2 - kept1, "fixed": 2 * kept1 - kept2,
            "working_per_image": max(0, peak2 - kept2 - largest) / 2,
            "weights16": parameter_count(weights)}


def cnn_memory(measured, image_hw, batch, precision="fp32"):
    """Bytes of a measured CNN backbone's training step over ``batch`` images, as backbone_memory:
    {"input", "saved", "working"}. fp32 as measured; under AMP the activations in 16 bits, a 16-bit
    copy of the images, and under O1 the 16-bit copies of the conv weights (once per step)."""
    pixels, half = 3 * image_hw[0] * image_hw[1], precision != "fp32"
    per_image = measured["per_image"] / (2 if half else 1) + (2 * pixels if half else 0)
    return {"input": batch * pixels * 4,
            "saved": batch * per_image + measured["fixed"] + (2 * measured["weights16"] if precision == "O1" else 0),
            "working": batch * measured["working_per_image"] / (2 if half else 1)}


def _cnn_model(config, num_classes):
    """The model build_model makes, with its PaddleClas backbone built for real on the current
    device (it runs a forward when built, and is measured) and the heads under paddle.LazyGuard."""
    from .backbone import build_backbone
    from .head import HEADS, NECKS
    from .multitask import ARCHS, TaskHead
    bb = {k: v for k, v in config["Arch"]["Backbone"].items() if k != "pretrained"}  # weights change no size
    backbone = build_backbone(bb, img_size=list(config["Global"]["image_shape"][1:]), tasks=list(config["Tasks"]))
    heads = {}
    with paddle.LazyGuard():  # as build_model does
        for t, tcfg in config["Tasks"].items():
            neck = NECKS.build(tcfg["neck"], where=f"Tasks.{t}.neck", in_dim=backbone.out_dim)
            clf = HEADS.build(tcfg["head"], where=f"Tasks.{t}.head", in_dim=neck.out_dim, num_classes=num_classes[t])
            heads[t] = TaskHead(neck, clf)
    return ARCHS.get(config["Arch"]["name"])(backbone, heads)


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
    config's: Global.amp, Arch.Backbone.recompute, fused_attention on a GPU device. A PaddleClas
    CNN backbone (``self.cnn``) is built for real on the CPU and measured (``self.measured``,
    measure_cnn); it has no recompute and no attention."""

    def __init__(self, config, num_classes=None, precision=None, recompute=None, attention=None):
        from .multitask import build_model
        g, bb = config["Global"], config["Arch"]["Backbone"]
        self.config, self.image_hw = config, [int(v) for v in g["image_shape"][1:]]
        self.precision = precision or precision_of(g)
        self.cnn = is_paddleclas(bb)
        self.recompute = bool(bb.get("recompute", False)) if recompute is None else recompute
        if self.cnn and self.recompute:
            raise ConfigError("recompute: PaddleClas backbones have none (Arch.Backbone.recompute is the ViT's)")
        gpu = str(g.get("device", "cpu")).startswith("gpu")
        self.attention = None if self.cnn else attention or (
            "flash" if gpu and bb.get("fused_attention", True) else "math")
        self.num_classes = classifier_sizes(config, num_classes)
        sampler = ((config.get("DataLoader") or {}).get("Train") or {}).get("batch_sampler") or {}
        self.homogeneous = sampler.get("name") == "HomogeneousBatchSampler"  # one task a step
        if self.cnn:
            device = paddle.get_device()
            paddle.set_device("cpu")  # measured with the host allocator
            try:
                self.model = _cnn_model(config, self.num_classes)
                self.measured = measure_cnn(self.model.backbone, self.image_hw)
            finally:
                paddle.set_device(device)
        else:
            with paddle.LazyGuard():  # shapes only
                self.model = build_model(config, self.num_classes)
        self.backbone = bk = self.model.backbone
        if not self.cnn and (not hasattr(bk, "blocks") or not hasattr(bk, "patch_size")):
            raise ConfigError(f"Arch.Backbone: the memory plan models ViT backbones and PaddleClas CNNs "
                              f"(PaddleClasBackbone, ResNet50), not {type(bk).__name__}")
        heads = self.model.heads
        self.params = {"backbone": parameter_count(bk.parameters()),
                       "necks": parameter_count(p for t in heads for p in heads[t].neck.parameters()),
                       "classifiers": parameter_count(p for t in heads for p in heads[t].classifier.parameters())}
        self.largest_param = max(int(np.prod(p.shape)) for p in self.model.parameters())
        self.buffers = optimizer_buffers(config["Optimizer"])
        self.supernet = hasattr(bk, "space")
        self.blocks = None if self.cnn else vit_blocks(bk)  # the largest subnet of a supernet

    def backbone_memory(self, batch, precision=None, recompute=None):
        """{"input", "saved", "working"} bytes of the backbone over ``batch`` images (one pass)."""
        precision, rc = precision or self.precision, self.recompute if recompute is None else recompute
        if self.cnn:
            if rc:
                raise ConfigError("recompute: PaddleClas backbones have none")
            return cnn_memory(self.measured, self.image_hw, batch, precision)
        return backbone_memory(self.backbone, self.blocks, self.image_hw, batch, precision, self.attention, rc)

    def per_image(self, precision, recompute=False):
        """Saved + working bytes per image, without the per-step parts (O1 weight copies, slices,
        BN statistics)."""
        one, two = (self.backbone_memory(b, precision, recompute) for b in (1, 2))
        return two["saved"] + two["working"] - one["saved"] - one["working"]

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
        mem = [self.backbone_memory(v, precision, rc) for v in slices]
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

    def step_batches(self, gpus):
        """[{task: images per GPU}] of the kinds of step the batch sampler draws: one mixed step,
        or (HomogeneousBatchSampler) one step per task at its own batch size."""
        share = self.per_gpu(gpus)
        return [{t: v} for t, v in share.items()] if self.homogeneous else [share]

    def peak_step(self, gpus, **kw):
        """(task_batch, step parts) of the costliest kind of step on one of ``gpus`` GPUs."""
        return max(((tb, self.step(tb, **kw)) for tb in self.step_batches(gpus)), key=lambda s: s[1]["peak"])

    def max_batch(self, gpu_bytes, **kw):
        """The largest per-GPU batch whose peak fits in ``gpu_bytes``: of the config's task mix,
        or (homogeneous) of one task a step, for every task (the costliest one decides)."""
        def largest(fits):
            lo, hi = 0, 1
            while fits(hi) and hi < 2 ** 20:
                lo, hi = hi, hi * 2
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            return lo
        if self.homogeneous:
            return min(largest(lambda b, t=t: self.step({t: b}, **kw)["peak"] <= gpu_bytes) for t in self.per_gpu(1))
        share = self.per_gpu(1)
        total = sum(share.values())
        return largest(lambda b: self.step({t: b * v / total for t, v in share.items()}, **kw)["peak"] <= gpu_bytes)
