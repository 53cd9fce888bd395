import math

import numpy as np
import paddle
import pytest

from ppufo.loss import LOSSES, CELoss, CombinedLoss, TripletLoss, build_loss
from ppufo.utils.errors import ConfigError


def t(a, dtype="float32", grad=False):
    x = paddle.to_tensor(np.asarray(a), dtype=dtype)
    x.stop_gradient = not grad
    return x


def np_log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_celoss_plain_and_label_smoothing_vs_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype("float32") * 3
    y = np.array([0, 4, 2, 2, 1, 3])
    lp = np_log_softmax(logits.astype("float64"))
    plain = -lp[np.arange(6), y].mean()
    got = CELoss()({"logits": t(logits)}, t(y, "int64"))
    assert got.shape == [] and abs(float(got) - plain) < 1e-5
    eps = 0.1
    q = np.full((6, 5), eps / 5)
    q[np.arange(6), y] += 1 - eps
    smooth = -(q * lp).sum(1).mean()
    got = CELoss(epsilon=eps)({"logits": t(logits)}, t(y[:, None], "int64"))  # [B, 1] labels too
    assert abs(float(got) - smooth) < 1e-5 and abs(smooth - plain) > 1e-2
    # tiny case by hand: logits (0, ln 3) -> p = (1/4, 3/4)
    got = CELoss()({"logits": t([[0.0, math.log(3.0)]])}, t([1], "int64"))
    assert abs(float(got) - math.log(4 / 3)) < 1e-6


def brute_force_triplet(x, y, margin):
    """Plain loops: hardest positive/negative per anchor, anchors lacking either skipped."""
    n, losses = len(x), []
    for i in range(n):
        dp = [np.linalg.norm(x[i] - x[j]) for j in range(n) if j != i and y[j] == y[i]]
        dn = [np.linalg.norm(x[i] - x[j]) for j in range(n) if y[j] != y[i]]
        if not dp or not dn:
            continue
        v = max(dp) - min(dn)
        losses.append(np.log1p(np.exp(v)) if margin == 0 else max(0.0, v + margin))
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("margin", [0.0, 0.3, 5.0])
def test_batch_hard_triplet_matches_loops(margin):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(13, 6)).astype("float32")
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 9])  # id 9 has no positive: excluded
    ref = brute_force_triplet(x.astype("float64"), y, margin)
    got = TripletLoss(margin=margin)({"feat": t(x)}, t(y, "int64"))
    assert got.shape == [] and abs(float(got) - ref) < 1e-4 * max(1.0, ref)
    # which feature is mined and L2 normalisation
    emb = rng.normal(size=(13, 6)).astype("float32") * 4
    out = {"feat": t(x), "embedding": t(emb)}
    got = TripletLoss(margin, feature_from="embedding", normalize_feature=True)(out, t(y, "int64"))
    embn = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert abs(float(got) - brute_force_triplet(embn.astype("float64"), y, margin)) < 1e-4


def test_triplet_soft_margin_by_hand():
    # 1-D points: id 0 at 0 and 1, id 1 at 3 -> anchors: 0 (ap 1, an 3), 1 (ap 1, an 2); 3 has no positive
    got = TripletLoss()({"feat": t([[0.0], [1.0], [3.0]])}, t([0, 0, 1], "int64"))
    expected = (math.log1p(math.exp(1 - 3)) + math.log1p(math.exp(1 - 2))) / 2
    assert abs(float(got) - expected) < 1e-5
    got = TripletLoss(margin=1.5)({"feat": t([[0.0], [1.0], [3.0]])}, t([0, 0, 1], "int64"))
    assert abs(float(got) - (0.0 + 0.5) / 2) < 1e-5


def test_triplet_gradients_finite_with_duplicates_and_degenerate_batches():
    x = t([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], grad=True)
    loss = TripletLoss()({"feat": x}, t([0, 0, 1, 1, 1], "int64"))
    loss.backward()
    assert np.isfinite(float(loss)) and np.isfinite(x.grad.numpy()).all()
    # one identity only: no negatives -> 0, still differentiable
    x = t(np.random.default_rng(2).normal(size=(4, 3)), grad=True)
    loss = TripletLoss(margin=0.3)({"feat": x}, t([5, 5, 5, 5], "int64"))
    loss.backward()
    assert float(loss) == 0.0 and np.array_equal(x.grad.numpy(), np.zeros((4, 3), "float32"))
    # all distinct ids: no positives -> 0
    assert float(TripletLoss()({"feat": t(np.eye(3))}, t([0, 1, 2], "int64"))) == 0.0


def test_build_loss_weights_sum_and_names():
    rng = np.random.default_rng(3)
    feat, logits = rng.normal(size=(8, 4)), rng.normal(size=(8, 3))
    out = {"feat": t(feat), "embedding": t(feat), "logits": t(logits)}
    y = t([0, 0, 1, 1, 2, 2, 0, 1], "int64")
    ce = float(CELoss()(out, y))
    tri = float(TripletLoss(margin=0.2)(out, y))
    combined = build_loss([{"CELoss": {"weight": 0.5, "epsilon": 0.0}},
                           {"TripletLoss": {"weight": 2.0, "margin": 0.2}}], where="Tasks.person.loss")
    assert isinstance(combined, CombinedLoss)
    terms = combined(out, y)
    assert set(terms) == {"CELoss", "TripletLoss", "loss"}
    assert abs(float(terms["CELoss"]) - 0.5 * ce) < 1e-6
    assert abs(float(terms["TripletLoss"]) - 2.0 * tri) < 1e-5
    assert abs(float(terms["loss"]) - (0.5 * ce + 2.0 * tri)) < 1e-5
    # weight applies to a single loss too; defaults and None arguments
    single = build_loss([{"CELoss": {"weight": 3.0}}], "w")(out, y)
    assert abs(float(single["loss"]) - 3.0 * ce) < 1e-5
    assert abs(float(build_loss([{"CELoss": None}], "w")(out, y)["loss"]) - ce) < 1e-6
    twice = build_loss([{"TripletLoss": {}}, {"TripletLoss": {"margin": 0.2}}], "w")(out, y)
    assert set(twice) == {"TripletLoss", "TripletLoss_1", "loss"}
    assert {"CELoss", "TripletLoss"} <= set(LOSSES.names())


@pytest.mark.parametrize("items, pattern", [
    ([{"FocalLoss": {}}], r"Tasks.person.loss.0: unknown loss 'FocalLoss'; known: CELoss, TripletLoss"),
    ([], r"Tasks.person.loss: expected a non-empty list .*known losses: CELoss, TripletLoss"),
    ({"CELoss": {}}, r"Tasks.person.loss: expected a non-empty list"),
    ([{"CELoss": {}, "TripletLoss": {}}], r"Tasks.person.loss.0: expected a single-key mapping"),
    (["CELoss"], r"Tasks.person.loss.0: expected a single-key mapping"),
    ([{"CELoss": {"epsilom": 0.1}}], r"Tasks.person.loss.0 \(CELoss\): unknown key\(s\) \['epsilom'\]"),
    ([{"CELoss": {"weight": "high"}}], r"Tasks.person.loss.0.CELoss.weight: 'high'; expected a number"),
    ([{"CELoss": [1]}], r"Tasks.person.loss.0 \(CELoss\): expected a mapping of arguments"),
    ([{"CELoss": {"epsilon": 1.0}}], r"^Tasks.person.loss.0.CELoss.epsilon: 1.0 is out of range; allowed: \[0, 1\)$"),
    ([{"TripletLoss": {"margin": -1}}], r"^Tasks.person.loss.0.TripletLoss.margin: -1.0 is out of range; allowed: >= 0$"),
    ([{"TripletLoss": {"feature_from": "logits"}}], r"feature_from='logits'; expected one of \['feat', 'embedding'\]"),
])
def test_build_loss_errors(items, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_loss(items, where="Tasks.person.loss")


@pytest.mark.parametrize("make, pattern", [
    (lambda: CELoss(epsilon=float("nan")), r"^CELoss.epsilon: "),
    (lambda: TripletLoss(margin=-0.5), r"^TripletLoss.margin: -0.5 is out of range; allowed: >= 0$"),
])
def test_loss_arguments_checked_on_direct_construction(make, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make()
