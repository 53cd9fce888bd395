"""BN-neck recalibration per subnet: exact statistics, per subnet, used by the accuracy measure."""
import numpy as np
import paddle
import pytest

from ppufo.arch import build_model
from ppufo.nas.accuracy import SubnetAccuracy
from ppufo.engine.calibrate import NeckCalibration
from ppufo.utils.errors import ConfigError

from helpers import tiny_supernet_config

CLASSES = {"face": 5, "person": 6, "vehicle": 7, "product": 8}


@pytest.fixture
def setup(demo_root, tmp_path):
    cfg = tiny_supernet_config(demo_root, tmp_path)
    paddle.seed(0)
    model = build_model(cfg, CLASSES)
    model.eval()
    return cfg, model


def bn_stats(model, task="person"):
    bn = model.heads[task].neck.bn
    return bn._mean.numpy().copy(), bn._variance.numpy().copy()


def test_calibrated_statistics_are_the_exact_moments_of_the_current_subnet(setup):
    cfg, model = setup
    cal = NeckCalibration(cfg, "person", num_images=40, seed=0)
    assert cal.images.shape == (40, 3, 32, 32)
    sp = model.space
    model.set_subnets({"person": sp.smallest()})
    cal(model)
    x = paddle.to_tensor(cal.images)
    emb = model.embed(x, "person", normalize=False).numpy().astype(np.float64)
    mean, var = bn_stats(model)
    eps = model.heads["person"].neck.bn.epsilon
    # gamma 1, beta 0: the calibration images come out with zero mean and variance var / (var + eps)
    np.testing.assert_allclose(emb.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(emb.var(0), var / (var + eps), rtol=1e-3)
    small = (mean, var)
    model.set_subnets({"person": sp.largest()})
    cal(model)
    assert np.abs(bn_stats(model)[0] - small[0]).max() > 1e-3  # another subnet, other statistics
    model.set_subnets({"person": sp.smallest()})
    cal(model)
    np.testing.assert_allclose(bn_stats(model)[0], small[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn_stats(model)[1], small[1], rtol=1e-6)
    assert not model.training  # the mode is left as found
    face = bn_stats(model, "face")
    model.train()
    cal(model)
    assert model.training
    np.testing.assert_array_equal(bn_stats(model, "face")[0], face[0])  # other tasks untouched


def test_calibration_sample_is_fixed_by_the_seed_and_capped_by_the_set(setup):
    cfg, _ = setup
    a, b = NeckCalibration(cfg, "person", 12, seed=3), NeckCalibration(cfg, "person", 12, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, NeckCalibration(cfg, "person", 12, seed=4).images)
    everything = NeckCalibration(cfg, "person", 10 ** 6)
    assert 12 < everything.num_images == len(everything.images) < 10 ** 6
    with pytest.raises(ConfigError, match="expected at least 2"):
        NeckCalibration(cfg, "person", 1)


def test_subnet_accuracy_recalibrates_before_evaluating(setup):
    cfg, model = setup
    cal = NeckCalibration(cfg, "person", 24)
    plain = SubnetAccuracy(cfg, model, "person", "mAP")
    calibrated = SubnetAccuracy(cfg, model, "person", "mAP", calibration=cal)
    assert plain.context["neck_calibration"] is None
    assert calibrated.context["neck_calibration"] == {"task": "person", "images": 24, "seed": 0}
    sub = model.space.smallest()
    stored = bn_stats(model)
    before = plain(sub)
    np.testing.assert_array_equal(bn_stats(model)[0], stored[0])  # without calibration nothing changes
    after = calibrated(sub)
    assert np.abs(bn_stats(model)[0] - stored[0]).max() > 1e-3
    assert after == plain(sub)  # the calibrated statistics are what the evaluation used
    assert 0 <= before <= 1 and 0 <= after <= 1


def test_extraction_carries_the_subnets_own_statistics_and_stays_exact(setup):
    from ppufo.nas.extract import extract, max_feature_diff
    cfg, model = setup
    cal = NeckCalibration(cfg, "person", 24)
    sub = model.space.smallest()
    running = bn_stats(model)[0]
    _, plain = extract(cfg, model, ["person"], sub, [cal])
    saved = bn_stats(plain)[0]
    assert np.abs(saved - running).max() > 1e-3
    np.testing.assert_allclose(saved, cal(plain)[0], rtol=1e-5, atol=1e-6)  # calibrating it again: no change
    assert max_feature_diff(model, plain, ["person"], sub, [3, 32, 32]) < 1e-5
    with pytest.raises(ConfigError, match=r"calibrations of \['face'\], which are not extracted"):
        extract(cfg, model, ["person"], sub, [NeckCalibration(cfg, "face", 8)])
    with pytest.raises(ConfigError, match="calibration is of task person"):
        SubnetAccuracy(cfg, model, "vehicle", "mAP", calibration=cal)
