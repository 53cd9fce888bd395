import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppufo.arch.backbone import BACKBONES, build_backbone
from ppufo.io.weights import load_weights
from ppufo.utils.errors import ConfigError

VARIANTS = {"ViT_tiny_patch16": (192, 12, 3), "ViT_small_patch16": (384, 12, 6),
            "ViT_base_patch16": (768, 12, 12), "ViT_large_patch16": (1024, 24, 16),
            "ViT_huge_patch16": (1280, 32, 16)}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_shapes(name):
    dim, depth, heads = VARIANTS[name]
    m = build_backbone({"name": name, "depth": 1}, img_size=[32, 48])
    assert (m.out_dim, m.num_heads, len(m.blocks)) == (dim, heads, 1)
    from ppufo.arch.backbone.vit import PRESETS
    assert PRESETS[name] == (dim, depth, heads)  # the paper's presets (ViT-L: 24 blocks, 16 heads)
    assert m.blocks[0].mlp.fc1.weight.shape == [dim, 4 * dim]
    assert m.pos_embed.shape == [1, 1 + 2 * 3, dim]
    assert m(paddle.randn([2, 3, 32, 48])).shape == [2, dim]


def test_vit_base_parameter_count():
    m = build_backbone({"name": "ViT_base_patch16"})
    d, n = 768, 197
    per_block = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    expected = 3 * 16 * 16 * d + d + n * d + d + 12 * per_block + 2 * d
    assert sum(int(np.prod(p.shape)) for p in m.parameters()) == expected == 85_798_656
    # 2 x MACs: patch conv + per block (qkv, attention QK^T and AV, proj, MLP)
    assert m.forward_flops() == 2 * (196 * 768 * 768 + 12 * (n * d * 3 * d + 2 * n * n * d + n * d * d + 8 * n * d * d))


def test_paddleclas_vit_base_weights_give_the_same_features():
    from paddleclas.ppcls.arch.backbone.model_zoo.vision_transformer import ViT_base_patch16_224
    paddle.seed(0)
    theirs = ViT_base_patch16_224(pretrained=False)
    theirs.eval()
    ours = build_backbone({"name": "ViT_base_patch16"})
    load_weights(ours, theirs.state_dict())
    ours.eval()
    x = paddle.randn([2, 3, 224, 224])
    np.testing.assert_allclose(ours(x).numpy(), theirs.forward_features(x).numpy(), atol=1e-5, rtol=0)


def test_position_embedding_interpolation():
    paddle.seed(1)
    small = build_backbone({"name": "ViT_tiny_patch16", "depth": 2}, img_size=[32, 32])
    small.eval()
    big = build_backbone({"name": "ViT_tiny_patch16", "depth": 2}, img_size=[64, 64])
    load_weights(big, small.state_dict())
    big.eval()
    x = paddle.randn([1, 3, 64, 64])
    # running the 32-built model at 64 interpolates on the fly, like loading resized weights
    np.testing.assert_allclose(small(x).numpy(), big(x).numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="missing"):
        load_weights(big, {k: v for k, v in small.state_dict().items() if k != "norm.weight"})


def test_drop_path_is_random_only_in_training():
    m = build_backbone({"name": "ViT_tiny_patch16", "depth": 4, "drop_path_rate": 0.5}, img_size=[32, 32])
    x = paddle.randn([4, 3, 32, 32])
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())
    m.train()
    assert not np.allclose(m(x).numpy(), m(x).numpy())
    rates = [b.drop_path.p for b in m.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)


def test_paddleclas_is_imported_lazily_and_resnet50_builds():
    code = "import sys, ppufo.arch; print('paddleclas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("False"), out.stderr[-500:]
    r = build_backbone({"name": "ResNet50"}, img_size=[64, 64])
    assert r.out_dim == 2048 and r(paddle.randn([2, 3, 64, 64])).shape == [2, 2048]
    with pytest.raises(ConfigError, match="unknown backbone 'ViT_gigantic'; known: .*ViT_base_patch16"):
        BACKBONES.get("ViT_gigantic")
    with pytest.raises(ConfigError, match="not a PaddleClas backbone"):
        build_backbone({"name": "PaddleClasBackbone", "model": "NoSuchNet"})


def _sliced_attention(layer, x):
    """The attention as it was written before (qkv[0], qkv[1], qkv[2] slices), as a reference."""
    n, h, d = x.shape[1], layer.num_heads, layer.head_dim
    qkv = layer.qkv(x).reshape([-1, n, 3, h, d]).transpose([2, 0, 3, 1, 4])
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = paddle.nn.functional.softmax(paddle.matmul(q * layer.scale, k, transpose_y=True), axis=-1)
    return layer.proj(paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([-1, n, h * d]))


def _output_and_grads(layer, x, forward):
    x = x.detach()
    x.stop_gradient = False
    for p in layer.parameters():
        p.clear_gradient()
    out = forward(x)
    (out * paddle.linspace(-1, 1, out.shape[-1])).sum().backward()
    return [out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]


@pytest.mark.parametrize("fused", [True, False])
def test_unbound_attention_equals_the_sliced_one_forward_and_backward(fused):
    from ppufo.arch.backbone.vit import Attention
    paddle.seed(3)
    layer = Attention(48, 4, head_dim=12, fused=fused)
    x = paddle.randn([3, 17, 48])
    got = _output_and_grads(layer, x, layer)
    want = _output_and_grads(layer, x, lambda t: _sliced_attention(layer, t))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)
    assert np.abs(got[1]).max() > 1e-3  # gradients flow to the input


def test_supernet_attention_fused_equals_manual_forward_and_backward():
    from ppufo.arch.backbone.vit_super import SuperAttention
    paddle.seed(4)
    layer = SuperAttention(48, 4, 12)
    x = paddle.randn([2, 9, 48])
    for heads in (2, 4):  # a subnet's leading heads and the full width
        layer.fused = True
        got = _output_and_grads(layer, x, lambda t: layer(t, heads))
        layer.fused = False
        want = _output_and_grads(layer, x, lambda t: layer(t, heads))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_attention_dropout_is_applied_only_in_training():
    from ppufo.arch.backbone.vit import Attention
    paddle.seed(5)
    layer = Attention(32, 2, attn_drop=0.5)
    x = paddle.randn([2, 5, 32])
    layer.eval()
    np.testing.assert_allclose(layer(x).numpy(), _sliced_attention(layer, x).numpy(), atol=1e-5)
    layer.train()
    assert not np.allclose(layer(x).numpy(), layer(x).numpy())


@pytest.mark.parametrize("scale", [None, 0.1])
def test_fused_attention_equals_manual_forward_and_gradients_wrt_q_k_v(scale, monkeypatch):
    from ppufo.arch.backbone import vit
    paddle.seed(6)
    qkv = [paddle.randn([2, 9, 3, 16]) for _ in range(3)]
    weight = paddle.randn([2, 9, 3, 16])
    scale = scale or 16 ** -0.5
    scales = []
    sdpa = paddle.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(vit.F, "scaled_dot_product_attention", lambda *a, **kw: scales.append(kw["scale"]) or sdpa(*a, **kw))

    def run(fused):
        ts = [t.detach() for t in qkv]
        for t in ts:
            t.stop_gradient = False
        out = vit.attention(*ts, scale, fused=fused)
        (out * weight).sum().backward()
        return [out.numpy()] + [t.grad.numpy() for t in ts]

    for got, want in zip(run(True), run(False)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the default scale goes to Paddle as None: its flash kernel refuses an explicit scale
    assert scales == [None if scale == 16 ** -0.5 else scale]
