"""Precise BN: backbone BN statistics become the average over heterogeneous batches."""
import numpy as np
import paddle
import pytest

from ppufo.arch import build_model
from ppufo.engine.precise_bn import backbone_bns, heterogeneous_loader, recompute_backbone_bn

pytest.importorskip("paddleclas")
RESNET = "Arch.Backbone={name: PaddleClasBackbone, model: ResNet18}"
TASKS = ["face", "person", "vehicle", "product"]


def batch_stats(model, loader, sizes):
    """{layer name: ([per-batch mean of the BN input], [per-batch biased variance])}, by hooks
    on the BN layers during a plain train-mode pass (independent of precise_bn's momentum trick)."""
    stats, handles = {}, []
    for name, bn in backbone_bns(model):
        def hook(layer, inputs, name=name):
            x = inputs[0].numpy().astype(np.float64)
            axes = tuple(i for i in range(x.ndim) if i != 1)
            stats.setdefault(name, ([], []))
            stats[name][0].append(x.mean(axes))
            stats[name][1].append(x.var(axes))
        handles.append(bn.register_forward_pre_hook(hook))
    model.train()
    with paddle.no_grad():
        for batch in loader:
            model.backbone_features(batch[0], sizes)
    for h in handles:
        h.remove()
    return stats


def test_backbone_bn_becomes_the_mean_of_heterogeneous_batch_statistics(make_config):
    config = make_config(RESNET, "DataLoader.Train.batch_sampler.name=HomogeneousBatchSampler")
    model = build_model(config, {t: 5 for t in TASKS})
    bns = dict(backbone_bns(model))
    assert len(bns) == 21  # ResNet18: stem + 2 per basic block x 8 + 4 shortcut convs (PaddleClas vb)
    for bn in bns.values():  # stale statistics, as after homogeneous training
        bn._mean.set_value(paddle.full(bn._mean.shape, 3.0))
        bn._variance.set_value(paddle.full(bn._variance.shape, 7.0))
    # Paddle's BN running statistics are (non-trainable) parameters: compare the trainable ones
    params = {p.name: p.numpy().copy() for p in model.parameters() if p.trainable}
    necks = {k: v.numpy().copy() for k, v in model.heads.state_dict().items()}
    model.eval()

    loader = heterogeneous_loader(config, 3, seed=5)
    batches = list(loader)
    assert len(batches) == 3 and all(sorted(set(b[3].numpy().ravel().tolist())) == [0, 1, 2, 3] for b in batches)
    sizes = [(t, n) for t, n in loader.batch_sampler.task_counts.items()]
    want = batch_stats(model, heterogeneous_loader(config, 3, seed=5), sizes)
    model.eval()

    summary = recompute_backbone_bn(model, config, 3, seed=5)
    assert summary == {"layers": 21, "batches": 3, "images": 3 * 32}
    for name, bn in bns.items():
        means, variances = want[name]
        assert len(means) == 3
        np.testing.assert_allclose(bn._mean.numpy(), np.mean(means, 0), atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_allclose(bn._variance.numpy(), np.mean(variances, 0), atol=1e-4, rtol=1e-5, err_msg=name)
        assert bn._momentum == pytest.approx(0.9)  # PaddleClas's momentum, put back
    assert params and all(np.array_equal(p.numpy(), params[p.name]) for p in model.parameters() if p.trainable)
    assert all(np.array_equal(v.numpy(), necks[k]) for k, v in model.heads.state_dict().items())
    assert not any(m.training for m in model.sublayers(include_self=True))  # eval mode put back


def test_modes_are_restored_and_the_rng_is_untouched(make_config):
    config = make_config(RESNET)
    model = build_model(config)
    model.train()
    model.heads["face"].eval()
    paddle.seed(123)
    before = paddle.rand([3]).numpy()
    paddle.seed(123)
    recompute_backbone_bn(model, config, 1)
    assert np.array_equal(paddle.rand([3]).numpy(), before)
    assert model.training and model.backbone.training and not model.heads["face"].training


def test_a_backbone_without_batchnorm_is_zero_layers(make_config):
    config = make_config()  # the quickstart ViT: LayerNorm only
    model = build_model(config)
    assert recompute_backbone_bn(model, config, 2) == {"layers": 0, "batches": 0, "images": 0}


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_num_batches_must_be_a_positive_integer(make_config, n):
    from ppufo.utils.errors import ConfigError
    config = make_config(RESNET)
    with pytest.raises(ConfigError, match=r"^precise BN: num_batches: "):
        recompute_backbone_bn(build_model(config), config, n)
