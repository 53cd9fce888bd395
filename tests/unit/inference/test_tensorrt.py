"""TensorRT (ppufo/inference/trt.py): refused at construction where it cannot run (this CPU wheel
is such a place), the paddle.tensorrt conversion plan, and the engine cache (with a stand-in
converter: no TensorRT here)."""
import json
import os
import re
import shutil
import types

import paddle
import pytest
import yaml

from helpers import ROOT
from ppufo import chips
from ppufo.chips import chip_absent, chip_present, tensorrt_problem
from ppufo.inference import trt
from ppufo.inference.deploy_config import load_deploy_config, predictor_kwargs
from ppufo.inference.predictor import FeaturePredictor
from ppufo.utils.errors import ConfigError

CONFIGS = os.path.join(ROOT, "deploy", "configs")
SHAPE = [3, 8, 8]
GPU = {"paddle": "3.3.1 (abc)", "cuda": True, "gpus": 1, "device_id": 0, "trt_compiled": (10, 5, 0),
       "gpu_name": "NVIDIA A100", "paddle_tensorrt": True, "tensorrt_python": True}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny PIR export (inference.json + .pdiparams + inference.yml), as tools/export_model.py lays out."""
    d = tmp_path_factory.mktemp("trt") / "model"
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Flatten())
    paddle.jit.save(net, str(d / "inference"), [paddle.static.InputSpec([None, *SHAPE], "float32", "x")])
    (d / "inference.yml").write_text(yaml.safe_dump({"image_shape": SHAPE, "transforms": []}))
    return str(d)


def fake_converter(plans, engines=True):
    """Stands in for the paddle.tensorrt child process: a program naming an engine file."""
    def convert(model_prefix, out_prefix, plan, device_id, log):
        plans.append(plan)
        engine = out_prefix + "_engines/engine_1.trt"
        os.makedirs(os.path.dirname(engine))
        open(engine, "wb").close()
        shutil.copy(model_prefix + ".pdiparams", out_prefix + ".pdiparams")
        with open(out_prefix + ".json", "w") as f:
            json.dump({"ops": ["1.tensorrt_engine" if engines else "1.conv2d", engine]}, f)
    return convert


def test_tensorrt_is_refused_at_construction_on_this_cpu_wheel(model, tmp_path):
    """Nothing runs without TensorRT when TensorRT is asked for: the predictor, the deploy configs
    and predict_rec stop with the reason, and nothing is written."""
    with pytest.raises(trt.TensorRTUnavailable, match=r"paddlepaddle 3\.3\.1 .* is a CPU-only build.*"
                                                      r"deploy/configs/gpu\.yaml"):
        FeaturePredictor(model, device="gpu", use_tensorrt=True, precision="fp16")
    cfg = load_deploy_config(os.path.join(CONFIGS, "gpu_trt_fp16.yaml"), [f"Global.model_dir={model}"])
    with pytest.raises(trt.TensorRTUnavailable, match=r"gpu_trt_fp16\.yaml.*CPU-only build"):
        FeaturePredictor(model, max_batch_size=8, **predictor_kwargs(cfg))
    cfg = load_deploy_config(os.path.join(CONFIGS, "gpu_trt_int8.yaml"), [f"Global.model_dir={model}"])
    with pytest.raises(trt.TensorRTUnavailable, match=r"in int8, but the model has no quantize_linear ops"):
        FeaturePredictor(model, max_batch_size=8, **predictor_kwargs(cfg))
    assert not os.path.exists(os.path.join(model, "_trt_cache"))
    from ppufo.cli.predict_rec import main
    with pytest.raises(SystemExit, match=r"error: TensorRT was asked for .* CPU-only build"):
        main(["-c", os.path.join(CONFIGS, "gpu_trt_fp16.yaml"), "-o", f"Global.model_dir={model}",
              f"Global.infer_imgs={tmp_path}"])


def test_predictor_hands_its_options_to_tensorrt(model, monkeypatch):
    import ppufo.inference.predictor as predictor
    seen = []

    def stop(*args):
        seen.append(args)
        raise trt.TensorRTUnavailable("stop")
    monkeypatch.setattr(predictor, "prepare", stop)
    with pytest.raises(trt.TensorRTUnavailable, match="stop"):
        FeaturePredictor(model, device="gpu", device_id=1, use_tensorrt=True, precision="fp16", max_batch_size=4,
                         opt_batch_size=2, min_subgraph_size=5, trt_cache_dir="/c")
    cfg = load_deploy_config(os.path.join(CONFIGS, "gpu_trt_fp16.yaml"), ["Global.trt_opt_batch_size=1"])
    with pytest.raises(trt.TensorRTUnavailable, match="stop"):  # as Recognizer builds it
        FeaturePredictor(model, max_batch_size=cfg["Global"]["batch_size"], **predictor_kwargs(cfg))
    assert seen == [(model, "pir", SHAPE, "fp16", 4, 2, 5, 1, "/c"), (model, "pir", SHAPE, "fp16", 8, 1, 3, 0, None)]
    with pytest.raises(ValueError, match="optimum batch 9: expected 1..8"):  # checked before anything else
        FeaturePredictor(model, device="gpu", use_tensorrt=True, precision="fp16", opt_batch_size=9)


@pytest.mark.parametrize("change, fmt, precision, quantized, message", [
    ({"cuda": False, "gpus": 0}, "pir", "fp16", False, r"is a CPU-only build"),
    ({"gpus": 0}, "pir", "fp16", False, r"GPU 0 is not visible \(0 CUDA GPU"),
    ({"gpus": 1, "device_id": 1}, "pir", "fp16", False, r"GPU 1 is not visible \(1 CUDA GPU"),
    ({"trt_compiled": (0, 0, 0)}, "legacy", "fp16", False, r"compiled without TensorRT"),
    ({"paddle_tensorrt": False}, "pir", "fp16", False, r"PIR program \(inference.json\).*no paddle.tensorrt"),
    ({"paddle_tensorrt": False}, "legacy", "fp16", False, None),  # enable_tensorrt_engine route
    ({"tensorrt_python": False}, "pir", "fp32", False, r"pip install tensorrt==10\.5\.0\.\*"),
    ({"tensorrt_python": False}, "legacy", "fp32", False, None),
    ({}, "pir", "int8", False, r"in int8, but the model has no quantize_linear ops.*PaddleSlim"),
    ({}, "pir", "int8", True, None),
    ({}, "pir", "fp16", False, None),
])
def test_refusal_reasons(change, fmt, precision, quantized, message):
    why = tensorrt_problem({**GPU, **change}, fmt, precision, quantized)
    if message is None:
        assert why is None
    else:
        assert why.startswith("TensorRT was asked for (Global.use_tensorrt: true") and \
            why.endswith("Search.chip=gpu / Search.latency=table")
        assert re.search(message, why), why


def test_convert_plan_tunes_for_the_serving_batch():
    plan = trt.convert_plan(SHAPE, "fp16", 8, 2, min_subgraph_size=5)
    assert plan == {"min_input_shape": [1, 3, 8, 8], "optim_input_shape": [2, 3, 8, 8],
                    "max_input_shape": [8, 3, 8, 8], "precision_mode": "FP16", "min_subgraph_size": 5,
                    "workspace_size": 1 << 30}
    assert trt.convert_plan(SHAPE, "int8", 4)["optim_input_shape"] == [4, 3, 8, 8]  # default: the largest batch
    with pytest.raises(ValueError, match=r"TensorRT optimum batch 9: expected 1..8"):
        trt.convert_plan(SHAPE, "fp16", 8, 9)
    with pytest.raises(ValueError, match=r"optimum batch 0"):
        trt.batch_shapes(SHAPE, 8, 0)


def test_engine_cache_is_reused_and_keyed_by_model_shapes_precision_and_build(model, tmp_path):
    plans = []
    convert = fake_converter(plans)
    args = dict(precision="fp16", max_batch_size=8, opt_batch_size=2, env=GPU, convert=convert)
    entry, load = trt.prepare(model, "pir", SHAPE, **args)
    assert load == entry and os.path.dirname(entry) == os.path.join(model, "_trt_cache")
    assert os.path.basename(entry).startswith("fp16_b1-2-8_") and len(plans) == 1
    assert json.load(open(os.path.join(entry, trt.DONE)))["plan"] == plans[0]
    assert trt.prepare(model, "pir", SHAPE, **args) == (entry, entry) and len(plans) == 1  # reused
    others = {trt.prepare(model, "pir", SHAPE, **{**args, **change})[0] for change in (
        {"opt_batch_size": 8}, {"max_batch_size": 16}, {"precision": "fp32"},
        {"env": {**GPU, "gpu_name": "Tesla T4"}}, {"env": {**GPU, "trt_compiled": (8, 6, 1)}})}
    assert len(others) == 5 and entry not in others and len(plans) == 6
    # a changed model (same folder, new weights) is not served the old engines
    changed = str(tmp_path / "changed")
    shutil.copytree(model, changed, ignore=shutil.ignore_patterns("_trt_cache"))
    assert trt.prepare(changed, "pir", SHAPE, **args)[0].rsplit("_", 1)[1] == entry.rsplit("_", 1)[1]
    with open(os.path.join(changed, "inference.pdiparams"), "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    assert trt.prepare(changed, "pir", SHAPE, **args)[0].rsplit("_", 1)[1] != entry.rsplit("_", 1)[1]
    # an entry whose engine file is gone, or that was never finished, is rebuilt
    os.remove(os.path.join(entry, "inference_engines", "engine_1.trt"))
    n = len(plans)
    assert trt.prepare(model, "pir", SHAPE, **args)[0] == entry and len(plans) == n + 1
    os.remove(os.path.join(entry, trt.DONE))
    assert trt.prepare(model, "pir", SHAPE, **args)[0] == entry and len(plans) == n + 2
    # a configured cache folder; a legacy model is loaded as is, its engines serialised into the entry
    assert os.path.dirname(trt.prepare(model, "pir", SHAPE, cache_dir=str(tmp_path / "c"), **args)[0]) == \
        str(tmp_path / "c")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "inference.pdmodel").write_bytes(b"program")
    (legacy / "inference.pdiparams").write_bytes(b"params")
    n = len(plans)
    entry, load = trt.prepare(str(legacy), "legacy", SHAPE, **args)
    assert load == str(legacy) and os.path.isdir(entry) and len(plans) == n


def test_conversion_that_puts_nothing_into_tensorrt_is_refused(model, tmp_path):
    plans = []
    with pytest.raises(trt.TensorRTUnavailable, match=r"put no part of .* into TensorRT \(min_subgraph_size 3"):
        trt.prepare(model, "pir", SHAPE, "fp16", 8, env=GPU, convert=fake_converter(plans, engines=False),
                    cache_dir=str(tmp_path))
    entry = [e for e in os.listdir(tmp_path) if not e.endswith(".lock")]
    assert len(entry) == 1 and not os.path.exists(tmp_path / entry[0] / trt.DONE)  # not reused later


def test_failed_conversion_stops_with_its_log(model, tmp_path):
    """The real child process: on this wheel it fails at importing paddle.tensorrt."""
    plan = trt.convert_plan(SHAPE, "fp16", 8)
    entry = str(tmp_path / "entry")
    with pytest.raises(trt.TensorRTUnavailable, match=r"(?s)paddle.tensorrt.convert failed on .*inference.json "
                                                      r"\(exit 1; .*No module named 'paddle.tensorrt'"):
        trt.pir_program(model, plan, entry)
    assert os.path.isfile(os.path.join(entry, "convert.log")) and not os.path.exists(os.path.join(entry, trt.DONE))


def test_int8_needs_a_quantised_model(model, tmp_path):
    assert not trt.is_quantized(model, "pir")
    q = tmp_path / "q"
    shutil.copytree(model, q)
    with open(q / "inference.json", "a") as f:
        f.write(' {"#":"1.dequantize_linear"}')
    assert trt.is_quantized(str(q), "pir")
    plans = []
    entry, _ = trt.prepare(str(q), "pir", SHAPE, "int8", 8, env=GPU, convert=fake_converter(plans))
    assert plans[0]["precision_mode"] == "INT8" and os.path.basename(entry).startswith("int8_b1-8-8_")


def test_chip_gpu_trt_fp16_is_absent_without_tensorrt(monkeypatch):
    """The search never times plain CUDA kernels as a TensorRT latency: the chip is absent (so
    Search.latency=auto falls back to the table and =measure refuses) and says why."""
    from ppufo.nas.latency import build_latency
    assert not chip_present("gpu_trt_fp16")
    assert "CPU-only build" in chip_absent("gpu_trt_fp16")
    monkeypatch.setattr(chips, "tensorrt_env", lambda device_id=0: {**GPU, "trt_compiled": (0, 0, 0)})
    assert "compiled without TensorRT" in chip_absent("gpu_trt_fp16")
    monkeypatch.setattr(chips, "tensorrt_env", lambda device_id=0: {**GPU, "tensorrt_python": False})
    assert "pip install tensorrt" in chip_absent("gpu_trt_fp16")
    monkeypatch.setattr(chips, "tensorrt_env", lambda device_id=0: GPU)
    assert chip_present("gpu_trt_fp16")
    monkeypatch.undo()
    search = {"latency": "measure", "chip": "gpu_trt_fp16", "batch_size": 1, "latency_table": None}
    with pytest.raises(ConfigError, match="chip gpu_trt_fp16 is not present on this machine"):
        build_latency(search, None, None, None)
    with pytest.raises(ConfigError, match=r"latency table not found: .*gpu_trt_fp16.json"):
        build_latency({**search, "latency": "auto"}, {"Global": {"image_shape": [3, 32, 32]}},
                      types.SimpleNamespace(space=None), None)
