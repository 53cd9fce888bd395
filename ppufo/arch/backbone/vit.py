"""Plain ViT (pre-LN, CLS token), parameter names and shapes as PaddleClas's VisionTransformer."""
import inspect
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.distributed.fleet.utils import recompute as fleet_recompute

from ...io.weights import backbone_part
from ...utils.checkpoint import format_problems, state_problems
from ...utils.errors import ConfigError
from ..released import describe, geometry, geometry_text
from .registry import BACKBONES


def _pair(x):
    return [int(x), int(x)] if isinstance(x, (int, float)) else [int(v) for v in x]


class DropPath(nn.Layer):
    """Per-sample stochastic depth; survivors rescaled by 1/keep."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = paddle.floor(keep + paddle.rand([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype))
        return x / keep * mask


class Mlp(nn.Layer):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def attention(q, k, v, scale, fused=True, dropout=0.0, training=False):
    """Multi-head attention of q, k, v laid out [B, N, heads, head_dim] -> [B, N, heads, head_dim].

    fused: Paddle's scaled_dot_product_attention (flash / memory-efficient kernels where the
    device and dtype have them; on CPU the same matmul-softmax-matmul as the manual path).
    The manual path keeps the [B, heads, N, N] map for backward and is kept for comparison."""
    if fused:
        # Paddle picks flash attention only for scale=None (its default is head_dim ** -0.5)
        scale = None if scale == q.shape[-1] ** -0.5 else scale
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, training=training, scale=scale)
    q, k, v = (t.transpose([0, 2, 1, 3]) for t in (q, k, v))
    attn = F.softmax(paddle.matmul(q * scale, k, transpose_y=True), axis=-1)
    if dropout:
        attn = F.dropout(attn, dropout, training=training)
    return paddle.matmul(attn, v).transpose([0, 2, 1, 3])


def run_block(block, x, recompute, *args):
    """block(x, *args); with recompute, when training with gradients, its activations are
    dropped after the forward and recomputed in backward (only x is kept). The RNG state is
    replayed, so DropPath draws the same masks. The hook-based (non-reentrant) recompute keeps
    parameter gradients in the ordinary autograd graph."""
    if recompute and block.training and paddle.is_grad_enabled():
        return fleet_recompute(block, x, *args, preserve_rng_state=True, use_reentrant=False)
    return block(x, *args)


def packed_attention(x, weight, bias, heads, head_dim, scale):
    """Inference-only attention of x [B, N, C] -> [B, N, heads * head_dim], written as the pattern
    Paddle Inference's ``self_attention_fuse_pass`` turns into one ``self_dp_attention`` CPU kernel:
    qkv [B, N, 3, heads, head_dim] transposed to [3, B, heads, N, head_dim], q, k, v sliced off it,
    softmax(q k^T) v with no scale op between (the pass would drop it: the fused kernel runs with
    alpha 1), transposed back. The scale is folded into the q columns of the qkv weight and bias,
    which Paddle Inference's constant folding computes once at load. Same result as ``attention``
    up to float rounding (exact when the scale is a power of two, as for head_dim 64)."""
    inner = heads * head_dim
    n = x.shape[1]
    cols = paddle.concat([paddle.full([inner], scale, weight.dtype), paddle.ones([2 * inner], weight.dtype)])
    qkv = F.linear(x, weight * cols, None if bias is None else bias * cols)
    qkv = qkv.reshape([-1, n, 3, heads, head_dim]).transpose([2, 0, 3, 1, 4])
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = F.softmax(paddle.matmul(q, k.transpose([0, 1, 3, 2])), axis=-1)
    return paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([-1, n, inner])


class Attention(nn.Layer):
    def __init__(self, dim, num_heads, qkv_bias=True, attn_drop=0.0, head_dim=None, fused=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias_attr=None if qkv_bias else False)
        self.attn_drop, self.fused = attn_drop, fused
        self.packed = False  # the export layout (packed_attention), set by the exporter while it traces
        self.proj = nn.Linear(inner, dim)

    def forward(self, x):
        n = x.shape[1]
        if self.packed:
            return self.proj(packed_attention(x, self.qkv.weight, self.qkv.bias, self.num_heads, self.head_dim,
                                              self.scale))
        # unbind, not qkv[0], qkv[1], qkv[2]: three slices cost a third of the block's backward on CPU
        q, k, v = paddle.unbind(self.qkv(x).reshape([-1, n, 3, self.num_heads, self.head_dim]), axis=2)
        out = attention(q, k, v, self.scale, self.fused, self.attn_drop, self.training)
        return self.proj(out.reshape([-1, n, self.num_heads * self.head_dim]))


class Block(nn.Layer):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, attn_drop=0.0, drop_path=0.0,
                 epsilon=1e-6, mlp_hidden=None, head_dim=None, fused_attention=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=epsilon)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, head_dim, fused_attention)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, epsilon=epsilon)
        self.mlp = Mlp(dim, mlp_hidden or int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Layer):
    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2D(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose([0, 2, 1])


def resize_pos_embed(pos, old_grid, new_grid):
    """[1, 1+h*w, C] -> [1, 1+H*W, C], bicubic on the grid, CLS row kept."""
    if list(old_grid) == list(new_grid):
        return pos
    cls, grid = pos[:, :1], pos[:, 1:]
    c = grid.shape[-1]
    grid = grid.reshape([1, old_grid[0], old_grid[1], c]).transpose([0, 3, 1, 2])
    grid = F.interpolate(grid, size=list(new_grid), mode="bicubic", align_corners=False)
    return paddle.concat([cls, grid.transpose([0, 2, 3, 1]).reshape([1, -1, c])], axis=1)


def vit_param_count(embed_dim, patch_size, num_patches, blocks, in_chans=3, qkv_bias=True):
    """Parameters of a ViT whose blocks are [(attention width heads*head_dim, MLP hidden)]."""
    c = embed_dim
    total = in_chans * patch_size ** 2 * c + c + (num_patches + 1) * c + c + 2 * c  # patch, pos, cls, norm
    for inner, hidden in blocks:
        total += 4 * c + (c + qkv_bias) * 3 * inner + inner * c + c + c * hidden + hidden + hidden * c + c
    return total


def vit_flops(embed_dim, patch_size, num_patches, blocks, in_chans=3):
    """Forward FLOPs per image: 2 x multiply-adds of the patch conv and every block's matmuls."""
    n, c = num_patches + 1, embed_dim
    total = num_patches * in_chans * patch_size ** 2 * c
    for inner, hidden in blocks:
        total += n * c * 3 * inner + 2 * n * n * inner + n * inner * c + 2 * n * c * hidden
    return 2 * total


def _per_block(values, depth, name):
    if values is None:
        return None
    if len(values) != depth:
        raise ConfigError(f"Arch.Backbone.{name}: {len(values)} entries for depth {depth}; expected one per block")
    return [int(v) for v in values]


class ViTStem(nn.Layer):
    """Patch embedding, CLS token, position embedding and weight init, shared by the plain ViT
    and the supernet (same parameter names, so weights move between them)."""

    def _init_stem(self, img_size, patch_size, in_chans, embed_dim, drop_rate=0.0):
        self.img_size, self.patch_size = _pair(img_size), patch_size
        self.grid = [s // patch_size for s in self.img_size]
        self.out_dim = self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self._init = nn.initializer.TruncatedNormal(std=0.02)
        self.pos_embed = self.create_parameter([1, 1 + self.grid[0] * self.grid[1], embed_dim],
                                               default_initializer=self._init)
        self.cls_token = self.create_parameter([1, 1, embed_dim], default_initializer=self._init)
        self.pos_drop = nn.Dropout(drop_rate)

    def _init_linears(self):
        for m in self.sublayers():
            if isinstance(m, nn.Linear):
                self._init(m.weight)
                if m.bias is not None:
                    nn.initializer.Constant(0.0)(m.bias)

    def embed_tokens(self, x):
        grid = [x.shape[2] // self.patch_size, x.shape[3] // self.patch_size]
        x = self.patch_embed(x)
        pos = resize_pos_embed(self.pos_embed, self.grid, grid)
        x = paddle.concat([self.cls_token.expand([x.shape[0], -1, -1]).astype(x.dtype), x], axis=1)
        return self.pos_drop(x + pos)

    def fit_pos_embed(self, pos):
        """A checkpoint's position embedding on this model's grid. A file records only its number
        of positions, so a grid other than the model's is taken to be square (ImageNet ViTs are)."""
        if list(pos.shape) == list(self.pos_embed.shape):
            return pos
        side = math.isqrt(pos.shape[1] - 1)
        if side * side != pos.shape[1] - 1:
            raise ConfigError(f"pos_embed has {pos.shape[1] - 1} positions, not a square grid, and this model's "
                              f"grid is {self.grid[0]}x{self.grid[1]}: cannot tell the file's grid to resize it")
        return resize_pos_embed(paddle.to_tensor(pos), [side, side], self.grid)


class VisionTransformer(ViTStem):
    """block_heads / block_mlp_hidden give per-block widths (extracted subnets); head_dim
    defaults to embed_dim // num_heads. fused_attention=False writes the attention out (same
    result, more memory). recompute: per-block activation recompute in training (run_block).
    Weights to start from (Arch.Backbone.pretrained) are loaded by build_backbone through
    checkpoint_filter."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 epsilon=1e-6, head_dim=None, block_heads=None, block_mlp_hidden=None,
                 fused_attention=True, recompute=False):
        super().__init__()
        if head_dim is None and embed_dim % num_heads:
            raise ConfigError(f"Arch.Backbone: embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        self._init_stem(img_size, patch_size, in_chans, embed_dim, drop_rate)
        self.depth, self.num_heads, self.mlp_ratio = depth, num_heads, mlp_ratio
        self.in_chans, self.qkv_bias, self.recompute = in_chans, qkv_bias, bool(recompute)
        head_dim = head_dim or embed_dim // num_heads
        heads = _per_block(block_heads, depth, "block_heads") or [num_heads] * depth
        hidden = _per_block(block_mlp_hidden, depth, "block_mlp_hidden") or [int(embed_dim * mlp_ratio)] * depth
        rates = np.linspace(0, drop_path_rate, depth)
        self.blocks = nn.LayerList([Block(embed_dim, h, mlp_ratio, qkv_bias, attn_drop_rate, float(r),
                                          epsilon, mlp_hidden=m, head_dim=head_dim,
                                          fused_attention=fused_attention)
                                    for r, h, m in zip(rates, heads, hidden)])
        self.norm = nn.LayerNorm(embed_dim, epsilon=epsilon)
        self._init_linears()

    def forward(self, x):
        x = self.embed_tokens(x)
        for blk in self.blocks:
            x = run_block(blk, x, self.recompute)
        return self.norm(x)[:, 0]

    def block_widths(self):
        """[(attention width, MLP hidden)] per block."""
        return [(b.attn.num_heads * b.attn.head_dim, b.mlp.fc1.weight.shape[1]) for b in self.blocks]

    def forward_flops(self, img_hw=None):
        """Forward FLOPs per image (2 x multiply-adds of matmuls and the patch conv)."""
        h, w = _pair(img_hw) if img_hw else self.img_size
        t = (h // self.patch_size) * (w // self.patch_size)
        return vit_flops(self.embed_dim, self.patch_size, t, self.block_widths(), self.in_chans)

    def checkpoint_filter(self, state, source):
        """A plain ViT (PaddleClas's ImageNet ViTs; the classifier is dropped) or the backbone.*
        part of a ppufo or released UFO checkpoint (its heads are not taken), position embedding
        on this model's grid; refused unless every key fits."""
        full, state = state, backbone_part(state)
        if "pos_embed" in state:
            state["pos_embed"] = self.fit_pos_embed(state["pos_embed"])
        own = self.state_dict()
        problems = state_problems(state, own)
        if any(problems):
            raise ConfigError(f"is {describe(full)}; this ViT has {geometry_text(geometry(own, ''))}:\n  "
                              + format_problems(state, own, *problems))
        return state


def _factory(name, dim, depth, heads):
    def build(img_size=224, **kwargs):
        cfg = dict(embed_dim=dim, depth=depth, num_heads=heads, patch_size=16, img_size=img_size)
        cfg.update(kwargs)
        return VisionTransformer(**cfg)
    build.__name__ = name
    # the registry checks config keys against this: VisionTransformer's arguments, preset defaults
    preset = dict(embed_dim=dim, depth=depth, num_heads=heads, patch_size=16)
    params = list(inspect.signature(VisionTransformer.__init__).parameters.values())[1:]
    build.__signature__ = inspect.Signature(
        [p.replace(default=preset.get(p.name, p.default)) for p in params])
    BACKBONES.register(build, name=name)


BACKBONES.register(VisionTransformer)  # every argument explicit (extracted subnets)


PRESETS = {"ViT_tiny_patch16": (192, 12, 3), "ViT_small_patch16": (384, 12, 6),
           "ViT_base_patch16": (768, 12, 12), "ViT_large_patch16": (1024, 24, 16),
           "ViT_huge_patch16": (1280, 32, 16)}  # (embed dim, depth, heads)
for _name, (_dim, _depth, _heads) in PRESETS.items():
    _factory(_name, _dim, _depth, _heads)
