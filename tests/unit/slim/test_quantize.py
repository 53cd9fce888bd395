"""ppufo-quantize: an int8 model written beside the float export, run by Paddle Inference on oneDNN's
int8 kernels, close to the float model, calibrated reproducibly; bad inputs named."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from helpers import ROOT, TINY_QUANT, tiny_config
from ppufo.arch import build_model
from ppufo.engine.calibrate import task_images
from ppufo.inference.backends import auto_backend, build_predictor
from ppufo.inference.predictor import FeaturePredictor
from ppufo.slim.legacy import save_legacy
from ppufo.slim.quantize import int8_dir, quantize_task, run_job
from ppufo.slim.report import PredictorModel, compare, cosine
from ppufo.utils.errors import ConfigError

# a random tiny ViT (depth 2, 32x32) quantised on 16 images keeps its features this close (measured
# with per-tensor weight scales: mean 0.998, min 0.997; 0.989 / 0.983 per channel; the trained
# quickstart model: mean 0.9996, docs/notes/quantization.md)
MIN_MEAN_COSINE = 0.99
QUANT = TINY_QUANT


@pytest.fixture(scope="module")
def setup(tiny_int8):
    """(config, model, float folder, int8 folder, calibration images): the tiny model quantised once."""
    return tiny_int8


def test_int8_model_is_written_beside_the_float_one_and_says_how_it_was_calibrated(setup):
    cfg, _, float_dir, q, images = setup
    assert q == float_dir + "_int8" == int8_dir(float_dir + "/")
    assert {"inference.pdmodel", "inference.pdiparams", "inference.yml", "scales.json"} <= set(os.listdir(q))
    assert os.path.isfile(os.path.join(float_dir, "inference.json"))  # the float export, as ppufo-export writes it
    with open(os.path.join(q, "inference.yml")) as f:
        info = yaml.safe_load(f)
    with open(os.path.join(float_dir, "inference.yml")) as f:
        float_info = yaml.safe_load(f)
    assert info["precision"] == "int8" and info["format"] == "legacy" and info["int8_ops"] == ["fc"]
    assert info["calibration"]["images"] == len(images) == 16
    assert info["calibration"]["seed"] == 0 and info["calibration"]["algo"] == cfg["Quant"]["algo"]
    assert info["calibration"]["datasets"] == ["Market1501"]
    assert info["transforms"] == float_info["transforms"] and info["image_shape"] == [3, 32, 32]
    with open(os.path.join(q, "scales.json")) as f:
        scales = json.load(f)
    assert len(scales) > 10 and all(v and all(np.isfinite(v)) for v in scales.values())


def test_int8_model_runs_in_the_predictor_close_to_the_float_model(setup):
    _, _, float_dir, q, images = setup
    p = FeaturePredictor(q)
    assert p.format == "legacy" and p.int8 and not p.small  # oneDNN stays on for an int8 model
    assert ("enable_mkldnn_int8", ({"fc"},), {}) in p.calls
    f, g = FeaturePredictor(float_dir)(images), p(images)
    assert g.shape == f.shape == (16, 128)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, rtol=1e-5)
    c = cosine(f, g)
    assert c["mean"] > MIN_MEAN_COSINE and c["min"] > MIN_MEAN_COSINE - 0.03, c
    assert c["mean"] < 1 - 1e-6  # it is not the float model run again
    assert auto_backend(q)[0] == "paddle"
    with pytest.raises(ConfigError, match="int8 model runs with Paddle Inference"):
        build_predictor(q, backend="onnxruntime")


def test_int8_model_runs_on_onednn_int8_kernels(setup):
    """oneDNN's own log of the primitives a run executes: the fc layers are s8 x s8 inner products."""
    q, x = setup[3], setup[4][:2]
    np.save(os.path.join(q, "..", "x.npy"), x)
    code = ("import numpy as np; from ppufo.inference.predictor import FeaturePredictor; "
            f"FeaturePredictor({q!r})(np.load({os.path.join(q, '..', 'x.npy')!r}))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, ONEDNN_VERBOSE="1", PYTHONPATH=ROOT))
    assert run.returncode == 0, run.stderr[-2000:]
    fc = [line for line in run.stdout.splitlines() if ",exec," in line and ",inner_product," in line]
    assert fc and all("src:s8" in line and "wei:s8" in line for line in fc), fc[:3]


def test_same_images_and_seed_give_the_same_scales(setup, tmp_path):
    cfg, model, float_dir, q, images = setup
    np.testing.assert_array_equal(task_images(cfg, "person", 16, seed=0), images)
    assert not np.array_equal(task_images(cfg, "person", 16, seed=1), images)  # another draw
    again, _ = quantize_task(model, cfg, "person", str(tmp_path / "person"), images=task_images(cfg, "person", 16, 0))
    for name in ("scales.json", "inference.pdiparams"):
        with open(os.path.join(q, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name


def test_report_scores_both_exported_models_with_the_task_metric(setup):
    cfg, _, float_dir, q, _ = setup
    r = compare(cfg, "person", float_dir, q)
    assert r["cosine"]["on"] == "test-set images" and r["cosine"]["mean"] > MIN_MEAN_COSINE
    s, = r["sets"]
    assert s["set"] == "Market1501" and set(s["delta"]) == {"rank1", "mAP"}
    assert all(abs(d) <= 1 for d in s["delta"].values())
    # the float export scored through the predictor gives the dygraph model's evaluation
    from ppufo.engine.evaluator import Evaluator
    own = Evaluator(cfg, setup[1], only=["person"]).evaluate()["sets"][0]
    assert s["float"] == own["headline"]


def test_bad_inputs_are_named(setup, make_config, tmp_path):
    cfg, model, float_dir, q, _ = setup
    for override, key in (("Quant.algo=kl2", "Quant.algo"), ("Quant.num_images=0", "Quant.num_images")):
        with pytest.raises(ConfigError, match=key):
            make_config(override)
    bad = make_config(*QUANT, "Quant.int8_ops=[1]")
    with pytest.raises(ConfigError, match="Quant.int8_ops"):
        quantize_task(model, bad, "person", str(tmp_path / "p"))
    with pytest.raises(RuntimeError, match="FLAGS_enable_pir_api=0"):  # this (test) process traces PIR
        save_legacy(model, [3, 32, 32], str(tmp_path / "x" / "inference"))
    with pytest.raises(RuntimeError, match="(?s)ppufo.slim.ptq_job.*config file not found"):  # the child's own error, shown
        run_job({"config": str(tmp_path / "missing.yaml"), "task": "person"}, str(tmp_path))
    with pytest.raises(ConfigError, match="embeds task 'person', asked for 'face'"):
        PredictorModel(FeaturePredictor(q), "person").embed(paddle.zeros([1, 3, 32, 32]), "face")


def test_cpu_x86_int8_serves_the_int8_model_and_refuses_a_float_one(setup):
    """The int8 chip's deploy config and its search predictor: the int8 model as the plain predictor
    runs it; a float model (which would run, and be timed, in fp32 under the int8 name) refused."""
    from ppufo.inference.backends import auto_backend
    from ppufo.inference.deploy_config import load_deploy_config
    from ppufo.inference.recognizer import Recognizer
    from ppufo.nas.latency import chip_predictor
    _, _, float_dir, q, images = setup
    chip_yaml = os.path.join(ROOT, "deploy", "configs", "cpu_x86_int8.yaml")
    rec = Recognizer.from_config(load_deploy_config(chip_yaml, [f"Global.model_dir={q}"]))
    assert rec.predictor.int8 and ("enable_mkldnn_int8", ({"fc"},), {}) in rec.predictor.calls
    np.testing.assert_allclose(rec.predictor(images), FeaturePredictor(q)(images), atol=1e-6)
    assert chip_predictor(q, "cpu_x86_int8", 1).int8
    for build in (lambda: Recognizer.from_config(load_deploy_config(chip_yaml, [f"Global.model_dir={float_dir}"])),
                  lambda: chip_predictor(float_dir, "cpu_x86_int8", 1)):
        with pytest.raises(ConfigError, match=r"person: precision int8 on cpu serves an int8 model .*this one is fp32"):
            build()
    assert auto_backend(float_dir, precision="int8")[0] == "paddle"  # not ORT in fp32: Paddle, which refuses it
    with pytest.raises(ValueError, match=r"needs enable_mkldnn=True, ir_optim=True"):
        FeaturePredictor(q, precision="int8", enable_mkldnn=False)
    with pytest.raises(ValueError, match=r"needs enable_mkldnn=True, ir_optim=True"):
        FeaturePredictor(q, precision="int8", ir_optim=False)  # Paddle would ignore enable_mkldnn_int8


def test_square_weights_with_uneven_channels_keep_their_accuracy_on_onednn_int8(demo_root, tmp_path):
    """A trained ViT's output channels differ in range, and its attention proj weight is square:
    Paddle's oneDNN pass applies a square weight's per-channel scales along the wrong axis, which
    ppufo avoids with per-tensor weight scales. Measured on this model (proj columns scaled over a
    10x range): cosine 0.997 per tensor, 0.822 per channel."""
    cfg = tiny_config(demo_root, tmp_path, QUANT + [f"Export.save_dir={tmp_path / 'inf'}"])
    paddle.seed(0)
    model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    model.eval()
    square = [p for n, p in model.named_parameters() if n.endswith("attn.proj.weight")]
    assert len(square) == 2 and all(p.shape[0] == p.shape[1] for p in square)
    for p in square:  # [in, out]: output channel j scaled by 10 ** (j / (out - 1) - 0.5)
        p.set_value(p.numpy() * np.logspace(-0.5, 0.5, p.shape[1], dtype=np.float32)[None, :])
    images = task_images(cfg, "person", 16, 0)
    float_dir = str(tmp_path / "inf" / "person")
    q, _ = quantize_task(model, cfg, "person", float_dir, images=images)
    c = cosine(FeaturePredictor(float_dir)(images), FeaturePredictor(q)(images))
    assert c["mean"] > 0.99, c


def test_gpu_trt_int8_takes_the_int8_model_and_refuses_the_float_one(setup, monkeypatch):
    """gpu_trt_int8.yaml on ppufo-quantize's legacy int8 model gets past the quantised-model check
    and stops only at this CPU-only wheel; the float export stops at the int8 check. With a GPU
    build faked, the int8 folder itself reaches Paddle's Config on the .pdmodel route, as TensorRT
    int8 without calibration (the scales are the model's), under the program's own input name."""
    import paddle.inference as pi

    import ppufo.inference.predictor as predictor
    from ppufo.inference import trt
    from ppufo.inference.deploy_config import load_deploy_config, predictor_kwargs
    _, _, float_dir, q, _ = setup
    chip_yaml = os.path.join(ROOT, "deploy", "configs", "gpu_trt_int8.yaml")

    def build(model_dir):
        cfg = load_deploy_config(chip_yaml, [f"Global.model_dir={model_dir}"])
        return FeaturePredictor(model_dir, max_batch_size=cfg["Global"]["batch_size"], **predictor_kwargs(cfg))
    assert load_deploy_config(chip_yaml)["Global"]["model_dir"].endswith("person_int8")  # as cpu_x86_int8.yaml
    with pytest.raises(trt.TensorRTUnavailable, match=r"gpu_trt_int8\.yaml.*CPU-only build") as e:
        build(q)
    assert "quantize_linear" not in str(e.value)
    with pytest.raises(trt.TensorRTUnavailable, match=r"in int8, but the model has no quantize_linear ops"):
        build(float_dir)

    gpu = {"paddle": "3.3.1", "cuda": True, "gpus": 1, "device_id": 0, "trt_compiled": (10, 5, 0),
           "gpu_name": "a GPU", "paddle_tensorrt": True, "tensorrt_python": True}
    monkeypatch.setattr(trt, "tensorrt_env", lambda device_id=0: gpu)
    seen = []

    def stop(model_dir, calls):
        seen.append((model_dir, calls))
        raise trt.TensorRTUnavailable("stop before paddle: no GPU here")
    monkeypatch.setattr(predictor, "build_config", stop)
    with pytest.raises(trt.TensorRTUnavailable, match="stop before paddle"):
        build(q)
    (model_dir, calls), = seen
    assert model_dir == q  # the .pdmodel route loads the int8 model as it is
    calls = {name: (args, kwargs) for name, args, kwargs in calls}
    engine = calls["enable_tensorrt_engine"][1]
    assert engine["precision_mode"] == pi.PrecisionType.Int8 and engine["use_calib_mode"] is False
    assert not {"enable_mkldnn", "enable_mkldnn_int8"} & set(calls)
    monkeypatch.undo()
    inputs = pi.create_predictor(predictor.build_config(q, [])).get_input_names()
    assert [list(shapes) for shapes in calls["set_trt_dynamic_shape_info"][0]] == [inputs] * 3
    assert calls["set_trt_dynamic_shape_info"][0][2]["x"] == [8, 3, 32, 32]  # opt: the config's batch_size
