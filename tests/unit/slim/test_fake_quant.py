"""Int8 simulated in dygraph: calibrated as Paddle's PostTrainingQuantization calibrates the real
int8 model, rounding where oneDNN's int8 kernels round, close to the real int8 model's error, and
the float model untouched after it."""
import json
import os

import numpy as np
import paddle
import pytest

from helpers import TINY_QUANT, tiny_config
from ppufo.engine.calibrate import task_images
from ppufo.inference.predictor import FeaturePredictor
from ppufo.slim.fake_quant import (LEVELS, ActivationStats, Int8Simulation, calibrate, fake_quantized, int8_weight,
                                   linear_roles)
from ppufo.slim.report import cosine
from ppufo.utils.errors import ConfigError



@pytest.fixture(scope="module")
def real(tiny_int8, demo_root):
    """(config, model, float folder, int8 folder, calibration images, test images): the tiny model
    quantised for real, as ppufo-quantize does."""
    cfg = tiny_int8[0]
    return (*tiny_int8, task_images(cfg, "person", 48, seed=5))


def embed(model, x):
    with paddle.no_grad():
        return model.embed(paddle.to_tensor(x), "person").numpy()


def test_thresholds_are_the_scales_paddles_quantisation_computed(real):
    """Every input / output threshold of the simulation is one of the real int8 program's @scale
    values (hist: the 0.99999 quantile of a 2048-bin histogram), and every Linear's weight
    threshold its weight's per-tensor scale."""
    cfg, model, float_dir, q, images, _ = real
    with open(os.path.join(q, "scales.json")) as f:
        scales = np.array([v[0] for v in json.load(f).values()])
    ours, ran = calibrate(model, "person", images, "hist", 8)
    int8, fused = linear_roles(model)
    assert len(int8) == 8 and len(fused) == 2  # 2 blocks x (qkv, proj, fc1, fc2); fc1's output is fc2's input
    assert {(l, "in") for l in int8} | {(l, "out") for l in int8 if l not in fused} == set(ours)
    assert model.heads["person"].neck.fc in ran and (model.heads["person"].neck.fc, "in") not in ours  # float
    for t in ours.values():
        assert np.min(np.abs(scales - t) / t) < 1e-5, t
    for layer in ran:
        assert np.min(np.abs(scales - np.abs(layer.weight.numpy()).max())) < 1e-6
    avg, _ = calibrate(model, "person", images, "avg", 8)  # mean per-image max: below the 0.99999 quantile
    assert all(avg[k] <= ours[k] * 1.001 for k in ours) and any(avg[k] < ours[k] * 0.99 for k in ours)


def test_simulated_features_carry_int8_error_of_the_real_models_size(real):
    """Measured: 1 - cosine to float is 6.6e-4 simulated vs 1.9e-3 for oneDNN's int8 on this tiny
    model (1.2e-4 vs 2.6e-4 on the trained quickstart person model; Paddle's own quantised program
    run in float: 1.3e-4); docs/notes/quantization.md."""
    cfg, model, float_dir, q, images, x = real
    f32, i8 = FeaturePredictor(float_dir)(x), FeaturePredictor(q)(x)
    with fake_quantized(model, "person", images, "hist", 8):
        fq = embed(model, x)
    err_fq, err_int8 = 1 - cosine(fq, f32)["mean"], 1 - cosine(i8, f32)["mean"]
    assert 0.1 * err_int8 < err_fq < 2 * err_int8, (err_fq, err_int8)
    np.testing.assert_allclose(embed(model, x), f32, atol=1e-5)  # float weights back, no hook left


def test_weights_are_rounded_per_tensor_then_per_output_channel():
    w = np.random.RandomState(0).standard_normal([64, 32]).astype(np.float32)
    w[:, 3] *= 10  # one column holds the tensor's max
    per_tensor = int8_weight(w, False).numpy()
    grid = np.abs(w).max() / LEVELS
    np.testing.assert_allclose(per_tensor / grid, np.round(per_tensor / grid), atol=1e-3)
    assert len(np.unique(np.round(per_tensor[:, 0] / grid))) < 20  # small columns keep few levels
    both = int8_weight(w, True).numpy()
    col = np.abs(both).max(axis=0) / LEVELS
    np.testing.assert_allclose(both / col, np.round(both / col), atol=1e-3)
    np.testing.assert_allclose(np.abs(both).max(axis=0), np.abs(per_tensor).max(axis=0), rtol=1e-6)
    assert np.abs(both - w).max() <= np.abs(per_tensor - w).max() + col.max()


def test_activation_statistics_follow_paddles_algorithms():
    rng = np.random.RandomState(0)
    batches = [rng.standard_normal([4, 10, 8]) * s for s in (1.0, 3.0)]
    st = ActivationStats()
    for b in batches:
        st.first_pass(b)
    for b in batches:
        st.second_pass(b)
    assert st.threshold("abs_max") == pytest.approx(max(np.abs(b).max() for b in batches))
    avg = np.mean([np.abs(b).reshape(4, -1).max(1).mean() for b in batches])
    assert st.threshold("avg") == pytest.approx(avg)
    a = np.sort(np.abs(np.concatenate([b.ravel() for b in batches])))
    width = (a[-1] - a[0]) / 2048
    assert abs(st.threshold("hist") - a[int(np.ceil(0.99999 * len(a))) - 1]) < 2 * width
    assert 0.2 * a[-1] < st.threshold("KL") < a[-1]  # Paddle's KL search clips the tail of a normal


def test_unsupported_settings_are_named(real, demo_root, tmp_path):
    cfg, model, _, _, images, _ = real
    with pytest.raises(ConfigError, match=r"Quant.algo=mse: the int8 simulation \(fake quant\) computes"):
        with fake_quantized(model, "person", images, "mse"):
            pass
    with pytest.raises(ConfigError, match=r"Quant.int8_ops=\[\]: the int8 simulation"):
        with fake_quantized(model, "person", images, "hist", int8_ops=[]):
            pass
    with pytest.raises(ConfigError, match="has no ViT block"):
        linear_roles(paddle.nn.Sequential(paddle.nn.Linear(4, 4)))
    sim = Int8Simulation(tiny_config(demo_root, tmp_path, TINY_QUANT + ["Quant.seed=3"]), "person")
    assert sim.images.shape == (16, 3, 32, 32) and sim.context["seed"] == 3 and sim.context["algo"] == "hist"
    with pytest.raises(ConfigError, match="Int8Simulation of person asked to simulate task vehicle"):
        sim(model, "vehicle")
