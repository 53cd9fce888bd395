import math

import numpy as np
import paddle
import pytest

from ppufo.arch.head import HEADS, NECKS, ArcFace, BNNeck, CosFace, LinearHead
from ppufo.utils.errors import ConfigError

# weight columns (1,0), (0,2), (1,1) -> unit columns (1,0), (0,1), (1,1)/sqrt2
W = np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]], dtype="float32")
X = np.array([[3.0, 4.0], [1.0, 0.0], [-1.0, -0.1]], dtype="float32")
R2 = math.sqrt(2.0)
N3 = math.sqrt(1.01)
# cos(x_i, w_j) written out by hand
COS = np.array([[0.6, 0.8, 1.4 / R2],
                [1.0, 0.0, 1.0 / R2],
                [-1.0 / N3, -0.1 / N3, -1.1 / (R2 * N3)]])


def with_weight(head):
    head.weight.set_value(paddle.to_tensor(W))
    return head


def test_cosface_logits_by_hand():
    head = with_weight(CosFace(2, 3, scale=10.0, margin=0.2))
    assert head.weight.shape == [2, 3] and head.num_classes == 3
    train = head(paddle.to_tensor(X), paddle.to_tensor([1, 0, 2])).numpy()
    expected = 10.0 * COS
    expected[0, 1] = 10.0 * (0.8 - 0.2)
    expected[1, 0] = 10.0 * (1.0 - 0.2)
    expected[2, 2] = 10.0 * (-1.1 / (R2 * N3) - 0.2)
    np.testing.assert_allclose(train, expected, atol=1e-5)
    np.testing.assert_allclose(train[0], [6.0, 6.0, 9.899495], atol=1e-5)
    # eval: no label, no margin
    np.testing.assert_allclose(head(paddle.to_tensor(X)).numpy(), 10.0 * COS, atol=1e-5)
    # a [B, 1] label behaves like [B]
    np.testing.assert_allclose(head(paddle.to_tensor(X), paddle.to_tensor([[1], [0], [2]])).numpy(),
                               train, atol=1e-6)


def test_arcface_logits_by_hand_including_fallback():
    m, s = 0.5, 2.0
    head = with_weight(ArcFace(2, 3, scale=s, margin=m))
    out = head(paddle.to_tensor(X), paddle.to_tensor([1, 2, 0])).numpy()
    expected = s * COS
    # row 0: cos 0.8, sin 0.6 -> cos(theta + m)
    expected[0, 1] = s * (0.8 * math.cos(m) - 0.6 * math.sin(m))
    # row 1: theta = pi/4 -> cos(pi/4 + 0.5)
    expected[1, 2] = s * math.cos(math.pi / 4 + m)
    # row 2: cos = -0.995 < cos(pi - m) = -0.878 -> fallback cos - sin(pi - m) * m
    assert COS[2, 0] < math.cos(math.pi - m)
    expected[2, 0] = s * (COS[2, 0] - math.sin(math.pi - m) * m)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(out[1, 2], 2 * 0.2815395, atol=1e-5)
    np.testing.assert_allclose(head(paddle.to_tensor(X)).numpy(), s * COS, atol=1e-5)

    easy = with_weight(ArcFace(2, 3, scale=s, margin=m, easy_margin=True))
    out = easy(paddle.to_tensor(X), paddle.to_tensor([1, 2, 0])).numpy()
    expected[2, 0] = s * COS[2, 0]  # cos <= 0: unchanged with easy margin
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_arcface_gradient_finite_when_feature_equals_class_weight():
    head = with_weight(ArcFace(2, 3))
    x = paddle.to_tensor([[1.0, 0.0], [0.0, 5.0]], stop_gradient=False)  # cos exactly 1
    head(x, paddle.to_tensor([0, 1])).sum().backward()
    assert np.isfinite(x.grad.numpy()).all() and np.isfinite(head.weight.grad.numpy()).all()


def test_linear_head_is_plain_fc():
    head = LinearHead(2, 3, bias=True)
    head.weight.set_value(paddle.to_tensor(W))
    head.bias.set_value(paddle.to_tensor([1.0, -1.0, 0.5]))
    np.testing.assert_allclose(head(paddle.to_tensor(X), paddle.to_tensor([0, 1, 2])).numpy(),
                               X @ W + [1.0, -1.0, 0.5], atol=1e-5)
    assert LinearHead(2, 3).bias is None and "weight" in dict(LinearHead(2, 3).named_parameters())


def test_bnneck_shapes_init_and_frozen_beta():
    paddle.seed(0)
    proj, plain = BNNeck(8, 4), BNNeck(8)
    assert proj.out_dim == 4 and plain.out_dim == 8 and plain.fc is None
    assert proj.fc.weight.shape == [8, 4] and proj.fc.bias is None
    assert BNNeck(8, 8).fc is None
    for neck in (proj, plain):
        np.testing.assert_array_equal(neck.bn.weight.numpy(), 1.0)
        np.testing.assert_array_equal(neck.bn.bias.numpy(), 0.0)
        assert neck.bn.bias.stop_gradient and not neck.bn.weight.stop_gradient
    x = paddle.randn([16, 8]) * 3 + 2
    y = proj(x)
    assert y.shape == [16, 4]
    # train mode, gamma 1 / beta 0: standardised per feature
    np.testing.assert_allclose(y.numpy().mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.numpy().var(0), 1.0, atol=1e-3)
    c = paddle.arange(4, dtype="float32")
    (y[:5] * c).sum().backward()
    # gamma still learns with beta frozen (plain Paddle BN drops both gradients)
    assert proj.bn.bias.grad is None
    np.testing.assert_allclose(proj.bn.weight.grad.numpy(), (y.numpy()[:5] * c.numpy()).sum(0), atol=1e-5)
    assert {"fc.weight", "bn.weight", "bn.bias", "bn._mean", "bn._variance"} == set(proj.state_dict())
    # running stats: momentum 0.9 from (0, 1); eval uses them
    h = x.numpy() @ proj.fc.weight.numpy()
    np.testing.assert_allclose(proj.bn._mean.numpy(), 0.1 * h.mean(0), rtol=1e-4, atol=1e-5)
    proj.eval()
    rm, rv = proj.bn._mean.numpy(), proj.bn._variance.numpy()
    np.testing.assert_allclose(proj(x).numpy(), (h - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-4)
    opt = paddle.optimizer.SGD(0.1, parameters=proj.parameters(), weight_decay=0.1)
    opt.step()
    np.testing.assert_array_equal(proj.bn.bias.numpy(), 0.0)
    assert not np.allclose(proj.bn.weight.numpy(), 1.0)


def test_registry_build_injects_dims_and_validates():
    neck = NECKS.build({"name": "BNNeck", "feature_dim": 16}, in_dim=32)
    head = HEADS.build({"name": "CosFace", "scale": 50.0, "margin": 0.3}, in_dim=neck.out_dim,
                       num_classes=7)
    assert head.weight.shape == [16, 7] and (head.scale, head.margin) == (50.0, 0.3)
    assert HEADS.build({"name": "LinearHead"}, in_dim=4, num_classes=2).num_classes == 2
    with pytest.raises(ConfigError, match=r"^CosFace\.scale: 0\.0 is out of range; allowed: > 0$"):
        CosFace(4, 2, scale=0)
    with pytest.raises(ConfigError, match=r"^ArcFace\.margin: -0\.1 is out of range; allowed: \[0, 1\.5\)$"):
        ArcFace(4, 2, margin=-0.1)
    with pytest.raises(ConfigError, match=r"^CosFace\.margin: 1\.5 is out of range"):
        CosFace(4, 2, margin=1.5)
    with pytest.raises(ConfigError, match=r"^BNNeck\.feature_dim: 0 is out of range; allowed: >= 1$"):
        BNNeck(4, 0)
    with pytest.raises(ConfigError, match=r"^LinearHead\.num_classes: expected int, got float 2\.5$"):
        LinearHead(4, 2.5)
    # built from the config, the error names the config key
    with pytest.raises(ConfigError, match=r"^Tasks\.person\.head\.scale: 0\.0 is out of range; allowed: > 0$"):
        HEADS.build({"name": "CosFace", "scale": 0}, where="Tasks.person.head", in_dim=4, num_classes=2)
    with pytest.raises(ConfigError, match=r"^Tasks\.person\.head\.scale: nan is not a finite number$"):
        HEADS.build({"name": "ArcFace", "scale": float("nan")}, where="Tasks.person.head", in_dim=4, num_classes=2)
    assert NECKS.build({"name": "BNNeck"}, in_dim=np.int64(8)).out_dim == 8  # numpy ints count as ints
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['margn'\]"):
        HEADS.build({"name": "CosFace", "margn": 0.1}, in_dim=4, num_classes=2)


def test_bnneck_running_stats_follow_the_global_batch_under_data_parallel(monkeypatch):
    import ppufo.arch.head as head_mod
    rng = np.random.default_rng(0)
    mine = rng.normal(2.0, 3.0, size=(6, 4)).astype("float32")
    other = rng.normal(-1.0, 0.5, size=(6, 4)).astype("float32")  # the other rank's batch
    other_stats = np.concatenate([other.mean(0), (other ** 2).mean(0)])
    monkeypatch.setattr(head_mod, "process_group", lambda: (0, 2))
    monkeypatch.setattr(head_mod, "_mean_over_ranks",
                        lambda t: (t + paddle.to_tensor(other_stats)) / 2)
    neck = BNNeck(4)
    neck.bn.weight.set_value(paddle.to_tensor([1.0, 2.0, 0.5, 1.0]))
    x = paddle.to_tensor(mine, stop_gradient=False)
    y = neck(x)
    # normalised with this rank's own batch statistics (biased variance), then gamma
    local = (mine - mine.mean(0)) / np.sqrt(mine.var(0) + 1e-5) * [1.0, 2.0, 0.5, 1.0]
    np.testing.assert_allclose(y.numpy(), local, rtol=1e-4, atol=1e-4)
    both = np.concatenate([mine, other])
    np.testing.assert_allclose(neck.bn._mean.numpy(), 0.1 * both.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(neck.bn._variance.numpy(), 0.9 + 0.1 * both.var(0), rtol=1e-4)
    y.sum().backward()
    assert neck.bn.weight.grad is not None and neck.bn.bias.grad is None and x.grad is not None
