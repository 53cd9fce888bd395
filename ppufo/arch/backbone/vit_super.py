"""ViT supernet for One-for-All: elastic heads and depth, multi-path FFN with elastic width.

Elastic widths are PaddleSlim OFA ``SuperLinear`` layers: called with ``channel=c`` they use
the first c output columns, and they always use the first rows matching the input width, so a
subnet is the leading slice of every weight. q, k and v are separate layers so that h heads
are the first h * head_dim columns of each (a fused qkv would interleave them).
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...io.weights import backbone_part
from ...utils.errors import ConfigError
from ..space import SearchSpace
from .registry import BACKBONES
from .vit import DropPath, ViTStem, attention, run_block


def _super_linear(in_dim, out_dim, bias=True):
    from paddleslim.nas.ofa.layers import SuperLinear  # imported when a supernet is built
    return SuperLinear(in_dim, out_dim, bias_attr=None if bias else False)


class SuperAttention(nn.Layer):
    def __init__(self, dim, max_heads, head_dim, qkv_bias=True, fused=True):
        super().__init__()
        self.head_dim, self.scale, self.fused = head_dim, head_dim ** -0.5, fused
        inner = max_heads * head_dim
        self.q = _super_linear(dim, inner, qkv_bias)
        self.k = _super_linear(dim, inner, qkv_bias)
        self.v = _super_linear(dim, inner, qkv_bias)
        self.proj = _super_linear(inner, dim)

    def forward(self, x, heads):
        b, n, c = x.shape[0], x.shape[1], heads * self.head_dim
        q, k, v = (f(x, channel=c).reshape([b, n, heads, self.head_dim]) for f in (self.q, self.k, self.v))
        out = attention(q, k, v, self.scale, self.fused).reshape([b, n, c])
        return self.proj(out)  # proj uses its first c input rows


class SuperMlp(nn.Layer):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = _super_linear(dim, hidden)
        self.fc2 = _super_linear(hidden, dim)

    def forward(self, x, hidden):
        return self.fc2(F.gelu(self.fc1(x, channel=hidden)))


class MultiPathFFN(nn.Layer):
    """One shared FFN, one FFN per task, and per task a learned mixing logit a:
    mix = sigmoid(a) * shared + (1 - sigmoid(a)) * task."""

    def __init__(self, dim, hidden, tasks):
        super().__init__()
        self.tasks = list(tasks)
        self.shared = SuperMlp(dim, hidden)
        self.task = nn.LayerDict({t: SuperMlp(dim, hidden) for t in self.tasks})
        self.mix_logit = nn.ParameterList([self.create_parameter(
            [1], default_initializer=nn.initializer.Constant(0.0)) for _ in self.tasks])

    def mix_weight(self, task):
        return F.sigmoid(self.mix_logit[self.tasks.index(task)])

    def forward(self, x, task, path, hidden):
        if path == "shared":
            return self.shared(x, hidden)
        if path == "task":
            return self.task[task](x, hidden)
        a = self.mix_weight(task)
        return a * self.shared(x, hidden) + (1.0 - a) * self.task[task](x, hidden)


class SuperBlock(nn.Layer):
    def __init__(self, dim, max_heads, head_dim, hidden, tasks, qkv_bias, drop_path, epsilon,
                 fused_attention=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=epsilon)
        self.attn = SuperAttention(dim, max_heads, head_dim, qkv_bias, fused_attention)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, epsilon=epsilon)
        self.ffn = MultiPathFFN(dim, hidden, tasks)

    def forward(self, x, task, heads, path, hidden):
        x = x + self.drop_path(self.attn(self.norm1(x), heads))
        return x + self.drop_path(self.ffn(self.norm2(x), task, path, hidden))


@BACKBONES.register
class ViTSupernet(ViTStem):
    """The largest ViT of the space plus per-task FFNs; ``forward(x, task, subnet)``.

    depths / heads / ffn_ratios: the choices of the search space (ffn_ratios are fractions of
    embed_dim * mlp_ratio). ``tasks`` is injected from the config's Tasks section.
    Arch.Backbone.pretrained (loaded by build_backbone through checkpoint_filter): a plain ViT, or
    an All-in-One checkpoint (its backbone.* part). recompute: per-block activation recompute in
    training, as VisionTransformer's.
    """

    def __init__(self, tasks, img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12,
                 num_heads=3, head_dim=None, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0,
                 epsilon=1e-6, depths=None, heads=None, ffn_ratios=(0.5, 0.75, 1.0),
                 paths=("shared", "task", "mix"), fused_attention=True, recompute=False):
        super().__init__()
        if not tasks:
            raise ConfigError("ViTSupernet: needs at least one task")
        self.tasks, self.recompute = list(tasks), bool(recompute)
        self._init_stem(img_size, patch_size, in_chans, embed_dim)
        head_dim = head_dim or embed_dim // num_heads
        self.space = SearchSpace(embed_dim, depth, num_heads, head_dim, mlp_ratio,
                                 depths or [depth], heads or [num_heads], ffn_ratios, paths,
                                 patch_size, self.img_size, in_chans, qkv_bias)
        rates = np.linspace(0, drop_path_rate, depth)
        self.blocks = nn.LayerList([SuperBlock(embed_dim, num_heads, head_dim, self.space.full_hidden,
                                               self.tasks, qkv_bias, float(r), epsilon, fused_attention)
                                    for r in rates])
        self.norm = nn.LayerNorm(embed_dim, epsilon=epsilon)
        self._init_linears()

    def forward(self, x, task, subnet):
        if task not in self.tasks:
            raise ConfigError(f"ViTSupernet: unknown task '{task}'; tasks: {self.tasks}")
        x = self.embed_tokens(x)
        for i in range(subnet.depth):
            x = run_block(self.blocks[i], x, self.recompute, task, subnet.heads[i], subnet.paths[i],
                          self.space.hidden(subnet.ratios[i]))
        return self.norm(x)[:, 0]

    def checkpoint_filter(self, state, source):
        """A plain ViT's weights (or a checkpoint's backbone.* part) as this supernet's: qkv split
        into q/k/v, each block's MLP copied into every FFN path; the mixing logits keep their
        initial values (a plain ViT has none). What the file lacks is left out and what has no
        place here (e.g. blocks past this depth) passes under its own name: the loader names both."""
        state = {k: paddle.to_tensor(v) if not isinstance(v, paddle.Tensor) else v
                 for k, v in backbone_part(state).items()}
        out = {k: v for k, v in self.state_dict().items() if ".mix_logit." in k}
        taken = set()

        def take(key, *targets, split=False):
            if key not in state:
                return
            taken.add(key)
            parts = paddle.split(state[key], 3, axis=-1) if split else [state[key]] * len(targets)
            out.update(zip(targets, parts))
        for k in ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "norm.weight", "norm.bias"):
            take(k, k)
        if "pos_embed" in state:
            taken.add("pos_embed")
            out["pos_embed"] = self.fit_pos_embed(state["pos_embed"])
        for i in range(len(self.blocks)):
            p = f"blocks.{i}."
            for w in ("weight", "bias"):
                for n in ("norm1", "norm2", "attn.proj"):
                    take(f"{p}{n}.{w}", f"{p}{n}.{w}")
                take(f"{p}attn.qkv.{w}", *(f"{p}attn.{part}.{w}" for part in "qkv"), split=True)
                for fc in ("fc1", "fc2"):
                    take(f"{p}mlp.{fc}.{w}", *(f"{p}{ffn}.{fc}.{w}" for ffn in
                                               ["ffn.shared"] + [f"ffn.task.{t}" for t in self.tasks]))
        out.update({k: v for k, v in state.items() if k not in taken})
        return out
