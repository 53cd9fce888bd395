"""Arch.Backbone.recompute: per-block activation recompute gives the plain run's loss and gradients
(DropPath included: the RNG state is replayed), and only runs when training with gradients."""
import numpy as np
import paddle
import pytest

from ppufo.arch.backbone import build_backbone, vit
from ppufo.arch.space import Subnet
from ppufo.utils.errors import ConfigError

PLAIN = {"name": "ViT_tiny_patch16", "embed_dim": 48, "depth": 3, "num_heads": 4, "drop_path_rate": 0.5}
SUPER = {"name": "ViTSupernet", "embed_dim": 48, "depth": 3, "num_heads": 4, "mlp_ratio": 2.0,
         "depths": [2, 3], "heads": [2, 4], "ffn_ratios": [0.5, 1.0], "drop_path_rate": 0.5}


def loss_and_grads(model, forward, recompute, seed=7):
    model.recompute = recompute
    model.clear_gradients(set_to_zero=False)
    paddle.seed(seed)
    out = forward()
    loss = (out * paddle.linspace(-1, 1, out.shape[-1])).sum()
    loss.backward()
    after = paddle.rand([4]).numpy()  # the RNG continues as without recompute
    return float(loss), after, {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(model, forward):
    off, on = (loss_and_grads(model, forward, rc) for rc in (False, True))
    assert off[0] == pytest.approx(on[0], abs=1e-6)
    np.testing.assert_array_equal(off[1], on[1])
    assert sorted(off[2]) == sorted(on[2]) and len(off[2]) > 10
    for name in off[2]:
        np.testing.assert_allclose(on[2][name], off[2][name], atol=1e-6, rtol=0, err_msg=name)
    # DropPath matters here: another seed draws other masks, another loss
    assert abs(loss_and_grads(model, forward, True, seed=8)[0] - off[0]) > 1e-3


def test_plain_vit_recompute_gives_the_same_loss_and_gradients_with_drop_path():
    paddle.seed(0)
    m = build_backbone(dict(PLAIN, recompute=True), img_size=[32, 32])
    assert m.recompute
    m.train()
    x = paddle.randn([4, 3, 32, 32])
    assert_same(m, lambda: m(x))


@pytest.mark.parametrize("kind", ["largest", "smallest", "mixed"])
def test_supernet_recompute_gives_the_same_loss_and_gradients_with_drop_path(kind):
    paddle.seed(0)
    m = build_backbone(dict(SUPER, recompute=True), img_size=[32, 32], tasks=["a", "b"])
    m.train()
    sub = {"largest": m.space.largest(), "smallest": m.space.smallest(),
           "mixed": Subnet(3, [2, 4, 2], ["mix", "task", "shared"], [0.5, 1.0, 1.0])}[kind]
    x = paddle.randn([4, 3, 32, 32])
    assert_same(m, lambda: m(x, "a", sub))


def test_recompute_runs_only_in_training_with_gradients(monkeypatch):
    calls = []

    def counting(block, *args, **kwargs):
        calls.append(type(block).__name__)
        return paddle.distributed.fleet.utils.recompute(block, *args, **kwargs)

    monkeypatch.setattr(vit, "fleet_recompute", counting)
    paddle.seed(0)
    m = build_backbone(dict(PLAIN, recompute=True), img_size=[32, 32])
    x = paddle.randn([2, 3, 32, 32])
    m.train()
    m(x)
    assert calls == ["Block"] * 3
    with paddle.no_grad():
        m(x)
    m.eval()
    out = m(x)
    assert calls == ["Block"] * 3  # neither under no_grad nor in eval
    m.recompute = False
    np.testing.assert_array_equal(out.numpy(), m(x).numpy())


def test_recompute_config_key_is_accepted_and_unknown_keys_still_refused():
    for cfg, kw in ((PLAIN, {}), (SUPER, {"tasks": ["a"]})):
        assert build_backbone(dict(cfg, recompute=True), img_size=[32, 32], **kw).recompute
        assert not build_backbone(dict(cfg), img_size=[32, 32], **kw).recompute  # default off
        with pytest.raises(ConfigError, match=r"unknown key\(s\) \['recomput'\]; accepted: .*'recompute'"):
            build_backbone(dict(cfg, recomput=True), img_size=[32, 32], **kw)
