"""Each private Paddle attribute ppufo uses (ppufo/utils/paddle_internals.py) still exists and behaves
as relied on in the installed Paddle: an upgrade that changes one fails here, by name."""
import numpy as np
import paddle
import pytest

from ppufo.utils import paddle_internals as pi


def test_every_private_use_is_listed_here():
    """The module is the one place: no other file of ppufo names these attributes."""
    import pathlib
    import re
    root = pathlib.Path(pi.__file__).parents[1]
    private = re.compile(r"\._(master_weights|param_groups|velocity_acc_str|map|momentum|use_global_stats)\b"
                         r"|_BatchNormBase")
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "paddle_internals.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert found == []


def test_master_weights_are_filled_by_set_state_dict_saved_by_state_dict_and_popped():
    lin = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.SGD(0.1, parameters=lin.parameters())
    assert pi.pop_master_weights(opt) == {}
    masters = {lin.weight.name: paddle.full([3, 2], 0.5)}
    opt.set_state_dict({"master_weights": masters})  # as a resumed AMP O2 checkpoint does
    assert opt.state_dict()["master_weights"] is masters  # saved again with every checkpoint ...
    popped = pi.pop_master_weights(opt)
    assert list(popped) == [lin.weight.name] and float(popped[lin.weight.name].mean()) == 0.5
    assert "master_weights" not in opt.state_dict()  # ... until popped
    assert pi.pop_master_weights(opt) == {}


@pytest.mark.parametrize("make", [lambda: paddle.nn.BatchNorm1D(4), lambda: paddle.nn.BatchNorm2D(4),
                                  lambda: paddle.nn.BatchNorm3D(4), lambda: paddle.nn.SyncBatchNorm(4),
                                  lambda: paddle.nn.BatchNorm(4)])
def test_batch_norm_types_cover_every_batch_norm(make):
    assert isinstance(make(), pi.batch_norm_types())


def test_batch_norm_types_exclude_other_norms():
    for layer in (paddle.nn.LayerNorm(4), paddle.nn.InstanceNorm2D(4), paddle.nn.GroupNorm(2, 4), paddle.nn.Linear(4, 4)):
        assert not isinstance(layer, pi.batch_norm_types()), type(layer).__name__


def test_use_global_stats_freezes_the_running_statistics_in_train_mode():
    x = paddle.to_tensor(np.arange(24, dtype=np.float32).reshape(6, 4))
    frozen, plain = paddle.nn.BatchNorm1D(4, use_global_stats=True), paddle.nn.BatchNorm1D(4)
    assert pi.bn_uses_global_stats(frozen) and not pi.bn_uses_global_stats(plain)
    frozen.train(), plain.train()
    frozen(x), plain(x)
    np.testing.assert_array_equal(frozen._mean.numpy(), 0.0)
    assert not np.allclose(plain._mean.numpy(), 0.0)


def test_bn_momentum_is_read_by_every_forward():
    x = paddle.to_tensor(np.arange(24, dtype=np.float32).reshape(6, 4))
    batch_mean = x.numpy().mean(0)
    bn = paddle.nn.BatchNorm1D(4, momentum=0.9)
    assert pi.bn_momentum(bn) == pytest.approx(0.9)
    bn.train()
    pi.set_bn_momentum(bn, 0.5)  # running = m * running + (1 - m) * batch
    bn(x)
    np.testing.assert_allclose(bn._mean.numpy(), 0.5 * batch_mean, rtol=1e-6)
    pi.set_bn_momentum(bn, 0.0)  # the batch alone: the cumulative mean's first step
    bn(x)
    np.testing.assert_allclose(bn._mean.numpy(), batch_mean, rtol=1e-6)
    assert pi.bn_momentum(bn) == 0.0


def test_sdpa_selections_records_the_kernel_each_call_chose_and_unwraps():
    import paddle.nn.functional.sdpa as sdpa
    real = sdpa.select_sdp_for_sdpa
    q = paddle.randn([2, 5, 3, 8])
    with pi.sdpa_selections() as seen:
        out = paddle.nn.functional.scaled_dot_product_attention(q, q, q)
        paddle.nn.functional.scaled_dot_product_attention(q, q, q)
    assert seen == {"math": 2}  # a CPU has only the math path
    assert sdpa.select_sdp_for_sdpa is real
    ref = paddle.nn.functional.softmax(paddle.matmul(q.transpose([0, 2, 1, 3]) * 8 ** -0.5,
                                                     q.transpose([0, 2, 3, 1])), -1)
    np.testing.assert_allclose(out.numpy(), paddle.matmul(ref, q.transpose([0, 2, 1, 3])).transpose(
        [0, 2, 1, 3]).numpy(), atol=1e-5)  # the wrapped choice still computes attention
