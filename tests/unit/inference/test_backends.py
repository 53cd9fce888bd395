"""The backend factory: Paddle Inference or ONNX Runtime from a deploy config or a name, the ONNX
model converted on first use (and again when the model was exported anew), ORT's session options."""
import os
import shutil

import numpy as np
import paddle
import pytest

from helpers import ROOT
from ppufo.inference.backends import auto_backend, build_predictor, config_backend
from ppufo.inference.deploy_config import load_deploy_config
from ppufo.inference.predictor import FeaturePredictor, OnnxPredictor
from ppufo.utils.errors import ConfigError

pytest.importorskip("paddle2onnx")
ort = pytest.importorskip("onnxruntime")
CONFIGS = os.path.join(ROOT, "deploy", "configs")


@pytest.fixture
def model_dir(exported, tmp_path):
    """A copy of the exported model, without inference.onnx: each test converts its own."""
    d = tmp_path / "person"
    shutil.copytree(exported[1], d, ignore=shutil.ignore_patterns("inference.onnx*"))
    return str(d)


def batch(seed=1, n=3):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype("float32")


def test_onnxruntime_converts_on_first_use_logs_it_and_reuses_the_file(exported, model_dir, ppufo_log):
    model, _ = exported
    onnx = os.path.join(model_dir, "inference.onnx")
    pred = build_predictor(model_dir, "onnxruntime", cpu_threads=1)
    assert isinstance(pred, OnnxPredictor) and os.path.isfile(onnx)
    assert any(m.startswith(f"{onnx} is missing: converting") for m in ppufo_log), ppufo_log
    assert any(m.startswith(f"wrote {onnx} in ") for m in ppufo_log)
    assert not [f for f in os.listdir(model_dir) if f.endswith(".tmp")]  # written, then renamed
    x = batch()
    assert np.abs(pred(x) - model.embed(paddle.to_tensor(x), "person").numpy()).max() <= 1e-4
    mtime, n = os.path.getmtime(onnx), len(ppufo_log)
    build_predictor(model_dir, "onnxruntime", cpu_threads=1)
    assert os.path.getmtime(onnx) == mtime and len(ppufo_log) == n  # cached: no second conversion


def test_a_model_exported_again_into_the_folder_is_converted_again(demo_root, model_dir):
    """The stale inference.onnx of the first model must not serve the second one."""
    from helpers import tiny_config
    from ppufo.arch import build_model
    from ppufo.engine.exporter import export_task
    build_predictor(model_dir, "onnxruntime", cpu_threads=1)  # converts the first model
    cfg = tiny_config(demo_root, os.path.dirname(model_dir))
    paddle.seed(7)  # other weights
    other = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    other.eval()
    export_task(other, "person", cfg, model_dir)
    x = batch()
    want = other.embed(paddle.to_tensor(x), "person").numpy()
    assert np.abs(FeaturePredictor(model_dir, cpu_threads=1)(x) - want).max() <= 1e-4
    with pytest.raises(FileNotFoundError, match=r"inference.onnx is older than inference.\w+ \(the model was "
                                                r"exported again\): convert the model first"):
        build_predictor(model_dir, "onnxruntime", convert=False)
    assert np.abs(build_predictor(model_dir, "onnxruntime", cpu_threads=1)(x) - want).max() <= 1e-4


def test_a_conversion_that_cannot_run_says_how_to_convert_and_leaves_nothing(model_dir, monkeypatch):
    import ppufo.inference.onnx_export as onnx_export
    with pytest.raises(FileNotFoundError, match=f"inference.onnx is missing: convert the model first with python "
                                                f"deploy/python/onnx_export.py --model_dir {model_dir}"):
        build_predictor(model_dir, "onnxruntime", convert=False)

    def no_paddle2onnx(model_dir, save_file=None, opset_version=11):
        with open(save_file, "w") as f:
            f.write("half a model")  # what a crash midway leaves
        raise ImportError("paddle2onnx is not installed (pip install paddle2onnx)")
    monkeypatch.setattr(onnx_export, "export_onnx", no_paddle2onnx)
    with pytest.raises(RuntimeError, match=r"inference.onnx is missing, and converting it failed: paddle2onnx is not "
                                           r"installed .*Convert it by hand with python deploy/python/onnx_export.py "
                                           f"--model_dir {model_dir}"):
        build_predictor(model_dir, "onnxruntime")
    assert sorted(os.listdir(model_dir)) == ["inference.json", "inference.onnx.lock", "inference.pdiparams",
                                             "inference.yml"]  # no half-written model left to load later


def test_session_options_are_stated(model_dir):
    opts = build_predictor(model_dir, "onnxruntime", cpu_threads=2).session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    one = build_predictor(model_dir, "onnxruntime", cpu_threads=1).session.get_session_options()
    assert one.intra_op_num_threads == 1


def test_the_backend_comes_from_the_deploy_config_and_options_are_checked(model_dir):
    cfg = {name: load_deploy_config(os.path.join(CONFIGS, f"{name}.yaml"), [f"Global.model_dir={model_dir}"])
           for name in ("cpu_x86", "onnx", "inference_rec")}
    assert [config_backend(cfg[n]) for n in cfg] == ["paddle", "onnxruntime", "auto"]
    assert config_backend(load_deploy_config(None, [])) == "auto"  # the default without a file
    assert isinstance(build_predictor(model_dir, "paddle", max_batch_size=4, cpu_threads=1), FeaturePredictor)
    with pytest.raises(ConfigError, match=r"backend onnxruntime: \['enable_mkldnn'\] are Paddle Inference options"):
        build_predictor(model_dir, "onnxruntime", enable_mkldnn=True)
    with pytest.raises(ConfigError, match=r"backend='tensorrt': expected one of \['auto', 'paddle', 'onnxruntime'\]"):
        build_predictor(model_dir, "tensorrt")


def test_predict_rec_backend_flag_gives_paddles_features(model_dir, demo_root, tmp_path, capsys):
    from ppufo.cli.predict_rec import main, parse_args
    imgs = os.path.join(demo_root, "market1501", "query")
    assert "Global.use_onnx=true" in parse_args(["--backend", "onnxruntime"])[1]
    assert "Global.use_onnx=false" in parse_args(["--backend", "paddle"])[1]
    assert '"auto"' in parse_args(["--backend", "auto"])[1][0] and not parse_args([])[1]  # default: the config's
    for backend in ("paddle", "onnxruntime"):
        main(["--model_dir", model_dir, "--images", imgs, "--backend", backend,
              "--save_features", str(tmp_path / f"{backend}.npz")])
    got = {b: np.load(tmp_path / f"{b}.npz")["features"] for b in ("paddle", "onnxruntime")}
    assert got["paddle"].shape == (len(os.listdir(imgs)), 128)
    assert np.abs(got["onnxruntime"] - got["paddle"]).max() <= 1e-4
    assert os.path.isfile(os.path.join(model_dir, "inference.onnx"))  # converted by the first ORT run
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parse_args(["--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_auto_serves_a_small_cpu_model_with_onnxruntime_and_says_why(exported, model_dir, ppufo_log):
    model, _ = exported
    pred = build_predictor(model_dir, "auto", max_batch_size=8, cpu_threads=1, enable_mkldnn=True, gc_mb=64)
    assert isinstance(pred, OnnxPredictor) and pred.backend == "onnxruntime"  # Paddle's options: not ORT's
    mb = os.path.getsize(os.path.join(model_dir, "inference.pdiparams")) / 2 ** 20
    assert f"{model_dir}: ONNX Runtime (weights {mb:.1f} MB, under small_model_mb 64: faster on CPU; backend auto)" \
        in ppufo_log
    x = batch()
    assert np.abs(pred(x) - model.embed(paddle.to_tensor(x), "person").numpy()).max() <= 1e-4
    assert pred.session.get_session_options().intra_op_num_threads == 1


def test_auto_keeps_paddle_for_large_models_other_devices_and_missing_runtimes(model_dir, monkeypatch, ppufo_log):
    import ppufo.inference.backends as backends
    pred = build_predictor(model_dir, "auto", cpu_threads=1, small_model_mb=0)  # 0: no model counts as small
    assert type(pred) is FeaturePredictor and pred.backend == "paddle"
    mb = os.path.getsize(os.path.join(model_dir, "inference.pdiparams")) / 2 ** 20
    assert f"{model_dir}: Paddle Inference (weights {mb:.1f} MB, not under small_model_mb 0; backend auto)" in ppufo_log
    assert not os.path.exists(os.path.join(model_dir, "inference.onnx"))  # nothing converted
    assert auto_backend(model_dir, device="gpu")[0] == "paddle"
    assert auto_backend(model_dir, device="gpu", use_tensorrt=True) == ("paddle", "device gpu with TensorRT")
    monkeypatch.setattr(backends, "installed", lambda m: m != "onnxruntime")
    assert auto_backend(model_dir) == ("paddle", "onnxruntime is not installed")
    monkeypatch.setattr(backends, "installed", lambda m: m != "paddle2onnx")
    assert auto_backend(model_dir) == ("paddle", "paddle2onnx is not installed to convert the model")
    build_predictor(model_dir, "onnxruntime", cpu_threads=1)  # converted: paddle2onnx no longer needed
    assert auto_backend(model_dir)[0] == "onnxruntime"
    with pytest.raises(FileNotFoundError, match="no inference.pdiparams"):
        auto_backend(os.path.dirname(model_dir))


def test_auto_falls_back_to_paddle_with_a_warning_when_conversion_fails(model_dir, monkeypatch, ppufo_log):
    import ppufo.inference.onnx_export as onnx_export

    def broken(model_dir, save_file=None, opset_version=11):
        raise RuntimeError("paddle2onnx 2.1.0 could not convert it")
    monkeypatch.setattr(onnx_export, "export_onnx", broken)
    pred = build_predictor(model_dir, "auto", cpu_threads=1)
    assert type(pred) is FeaturePredictor
    assert any("converting it failed: paddle2onnx 2.1.0 could not convert it" in m and
               m.endswith("; serving with Paddle Inference instead") for m in ppufo_log), ppufo_log
    with pytest.raises(RuntimeError, match="converting it failed"):  # asked for by name: no fallback
        build_predictor(model_dir, "onnxruntime", cpu_threads=1)
