"""Deploy YAMLs per chip (validation, paddle.inference.Config mapping), predict_rec -c/-o, ONNX."""
import glob
import os
import shutil

import numpy as np
import paddle
import paddle.inference as pi
import pytest

from helpers import ROOT
from ppufo.utils.errors import ConfigError

from ppufo.chips import CHIP_NAMES as CHIPS, chip_backend, measurable
from ppufo.inference.backends import config_backend
from ppufo.inference.deploy_config import load_deploy_config, predictor_kwargs
from ppufo.inference.predictor import FeaturePredictor, build_config, config_calls

CONFIGS = os.path.join(ROOT, "deploy", "configs")
SHAPE = [3, 32, 32]


def chip(name, *overrides):
    return load_deploy_config(os.path.join(CONFIGS, name + ".yaml"), overrides)


def calls_of(cfg, fmt="pir", **extra):
    kw = {**predictor_kwargs(cfg), **extra}
    return {name: (args, kwargs)
            for name, args, kwargs in config_calls(SHAPE, fmt, max_batch_size=cfg["Global"]["batch_size"], **kw)}


def test_every_chip_yaml_validates_and_inference_rec_is_cpu_x86_with_backend_auto():
    assert sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONFIGS, "*.yaml"))) == \
        sorted(CHIPS + ("inference_rec",))
    cfgs = {c: chip(c) for c in CHIPS}
    default = chip("inference_rec")
    assert default["Global"].pop("use_onnx") == "auto" and cfgs["cpu_x86"]["Global"]["use_onnx"] is False
    assert default["Global"] == {k: v for k, v in cfgs["cpu_x86"]["Global"].items() if k != "use_onnx"}
    assert {k: v for k, v in default.items() if k != "Global"} == {k: v for k, v in cfgs["cpu_x86"].items()
                                                                    if k != "Global"}
    g = {c: cfgs[c]["Global"] for c in CHIPS}
    assert [c for c in CHIPS if g[c]["device"] == "gpu"] == ["gpu", "gpu_trt_fp16", "gpu_trt_int8"]
    assert [c for c in CHIPS if g[c]["use_tensorrt"]] == ["gpu_trt_fp16", "gpu_trt_int8"]
    assert [c for c in CHIPS if g[c]["use_onnx"] is True] == ["cpu_x86_ort", "onnx"]
    assert all(g[c]["use_onnx"] is False for c in CHIPS if c not in ("cpu_x86_ort", "onnx"))  # each states its runtime
    timed = [c for c in CHIPS if measurable(c)]  # a chip's deploy config serves with the runtime the search times
    assert [config_backend(cfgs[c]) for c in timed] == [chip_backend(c) for c in timed]
    assert [c for c in timed if chip_backend(c) == "onnxruntime"] == ["cpu_x86_ort"]
    assert (g["gpu_trt_fp16"]["precision"], g["gpu_trt_int8"]["precision"]) == ("fp16", "int8")
    # cpu_x86_int8 is cpu_x86 serving an int8 model: the same settings, precision int8 (refuses a float model)
    assert [c for c in CHIPS if g[c]["precision"] == "int8" and not g[c]["use_tensorrt"]] == ["cpu_x86_int8"]
    same = ("model_dir", "precision", "use_onnx")
    assert {k: v for k, v in g["cpu_x86_int8"].items() if k not in same} == \
        {k: v for k, v in g["cpu_x86"].items() if k not in same}
    assert g["cpu_x86_int8"]["model_dir"].endswith("person_int8") and g["cpu_x86_int8"]["use_onnx"] is False
    assert all(cfgs[c]["PreProcess"]["transform_ops"] is None for c in CHIPS)  # from inference.yml


def test_cpu_targets_set_the_real_config_switches(exported):
    _, d = exported
    for name, mkldnn, threads in (("cpu_x86", True, 2), ("arm", False, 4)):
        calls = config_calls(SHAPE, "pir", **predictor_kwargs(chip(name)))
        config = build_config(d, calls)
        assert (config.use_gpu(), config.use_xpu(), config.tensorrt_engine_enabled()) == (False, False, False)
        assert config.mkldnn_enabled() is mkldnn  # Paddle 3 defaults to True: arm must switch it off
        assert config.cpu_math_library_num_threads() == threads
        assert config.ir_optim() is True
    config = build_config(d, config_calls(SHAPE, "pir", **predictor_kwargs(
        chip("cpu_x86", "Global.cpu_num_threads=1", "Global.ir_optim=false", "Global.enable_mkldnn=false"))))
    assert (config.mkldnn_enabled(), config.cpu_math_library_num_threads(), config.ir_optim()) == (False, 1, False)


def test_accelerator_targets_map_to_their_config_calls(exported, tmp_path):
    """GPU/TensorRT/XPU/NPU: the planned calls, and each call binds on the real Config class (a
    CPU-only build then refuses the device at run time, but never with a TypeError). TensorRT on a
    PIR model goes through paddle.tensorrt (test_tensorrt.py), never enable_tensorrt_engine."""
    _, d = exported
    gpu = calls_of(chip("gpu"))
    assert gpu["enable_use_gpu"][0] == (500, 0)
    assert "enable_tensorrt_engine" not in gpu and "enable_mkldnn" not in gpu and "enable_memory_optim" in gpu
    assert calls_of(chip("gpu", "Global.device_id=3", "Global.gpu_mem=1000"))["enable_use_gpu"][0] == (1000, 3)
    for name, precision in (("gpu_trt_fp16", pi.PrecisionType.Half), ("gpu_trt_int8", pi.PrecisionType.Int8)):
        pir = calls_of(chip(name))
        assert list(pir) == ["enable_use_gpu", "switch_ir_optim", "enable_memory_optim", "disable_glog_info"]
        c = calls_of(chip(name), "legacy", trt_cache_dir="/cache/entry")
        trt = c["enable_tensorrt_engine"][1]
        assert (trt["precision_mode"], trt["use_calib_mode"], trt["use_static"], trt["max_batch_size"]) == \
            (precision, False, True, 8)
        # (min, max, opt): the optimum is the serving batch, batch_size unless trt_opt_batch_size says
        assert c["set_trt_dynamic_shape_info"][0] == ({"x": [1, 3, 32, 32]}, {"x": [8, 3, 32, 32]},
                                                      {"x": [8, 3, 32, 32]})
        assert c["set_optim_cache_dir"][0] == ("/cache/entry",)
        with pytest.raises(ValueError, match=r"needs ir_optim=True"):  # else TensorRT would be skipped
            calls_of(chip(name, "Global.ir_optim=false"), "legacy")
        c = calls_of(chip(name, "Global.trt_opt_batch_size=2", "Global.batch_size=16"), "legacy")
        assert c["set_trt_dynamic_shape_info"][0] == ({"x": [1, 3, 32, 32]}, {"x": [16, 3, 32, 32]},
                                                      {"x": [2, 3, 32, 32]})
    xpu = calls_of(chip("xpu", "Global.device_id=1"))
    assert xpu["set_xpu_device_id"][0] == (1,) and "enable_xpu" in xpu and "enable_use_gpu" not in xpu
    assert calls_of(chip("npu"))["enable_custom_device"][0] == ("npu", 0)
    for name, fmt in (("gpu", "pir"), ("gpu_trt_fp16", "legacy"), ("gpu_trt_int8", "legacy"), ("xpu", "pir"),
                      ("npu", "pir")):
        config = pi.Config(d, "inference")
        for method, (args, kwargs) in calls_of(chip(name), fmt, trt_cache_dir=str(tmp_path)).items():
            try:
                getattr(config, method)(*args, **kwargs)
            except RuntimeError as e:  # the C++ side ran: this wheel has no CUDA/TensorRT/XPU
                assert "(PreconditionNotMet)" in str(e), (name, method, e)
    onnx = chip("onnx")
    assert predictor_kwargs(onnx) == {"device": "cpu", "cpu_threads": 2, "device_id": 0}


@pytest.mark.parametrize("overrides, message", [
    (["Global.devise=gpu"], r"Global: unknown key\(s\) \['devise'\]"),
    (["Global.device=tpu"], r"Global.device: 'tpu' is not one of"),
    (["Global.batch_size=0"], r"Global.batch_size: 0 is out of range; allowed: >= 1"),
    (["Global.cpu_num_threads=two"], r"Global.cpu_num_threads: expected int, got str"),
    (["Global.use_gpu=true"], r"Global.use_gpu: PaddleClas key not used by ppufo; write Global.device: gpu"),
    (["Global.use_tensorrt=true"], r"Global.use_tensorrt: TensorRT runs on device gpu, not cpu"),
    (["Global.precision=fp16"], r"Global.precision: fp16 needs Global.use_tensorrt: true"),
    (["Global.precision=fp16", "Global.device=gpu"], r"Global.precision: fp16 needs Global.use_tensorrt: true"),
    (["Global.precision=int8", "Global.enable_mkldnn=false"], r"Global.precision: int8 on cpu runs oneDNN's int8"),
    (["Global.precision=int8", "Global.ir_optim=false"], r"Global.precision: int8 on cpu .*and Global.ir_optim: true"),
    (["Global.precision=int8", "Global.use_onnx=true"], r"Global.precision: int8 on cpu .*ONNX Runtime does not run ppufo's int8 models"),
    (["Global.precision=int8", "Global.device=xpu"], r"Global.precision: int8 needs Global.use_tensorrt: true"),
    (["Global.trt_opt_batch_size=9"], r"Global.trt_opt_batch_size: expected 1..batch_size \(8\), got 9"),
    (["Global.use_onnx=true", "Global.device=xpu"], r"Global.use_onnx: ONNX Runtime runs on cpu or gpu"),
    (["Global.use_onnx=onnx"], r"Global.use_onnx: expected true, false or auto, got 'onnx'"),
    (["PreProcess.transform_ops=[{Rezise: {size: [8, 8]}}]"], r"PreProcess.transform_ops.0: .*Rezise"),
    (["IndexProcess.topk=3"], r"IndexProcess: unknown key\(s\) \['topk'\]"),
])
def test_bad_deploy_config_names_file_and_key(overrides, message):
    with pytest.raises(ConfigError, match=r"cpu_x86.yaml: " + message):
        chip("cpu_x86", *overrides)


def test_bad_deploy_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("Global: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: Global: expected a mapping"):
        load_deploy_config(str(bad))
    with pytest.raises(ConfigError, match="deploy config not found: .*missing.yaml"):
        load_deploy_config(str(tmp_path / "missing.yaml"))


def test_predict_rec_with_deploy_yaml_gives_dygraph_features(exported, demo_root, tmp_path, capsys):
    """The DESIGN.md command (-c inference_rec.yaml -o ...) and the old flags give the same features."""
    from ppufo.cli.predict_rec import main
    from ppufo.data.transforms import build_transforms
    from PIL import Image
    model, d = exported
    imgs = os.path.join(demo_root, "market1501", "query")
    out = tmp_path / "f.npz"
    main(["-c", os.path.join(CONFIGS, "inference_rec.yaml"), "-o", f"Global.model_dir={d}",
          f"Global.infer_imgs={imgs}", f"Global.save_features={out}", "Global.batch_size=5",
          "Global.small_model_mb=0"])  # oneDNN on for this tiny model too (predictor.small_model)
    got = np.load(out)
    files = sorted(os.listdir(imgs))
    assert [os.path.basename(p) for p in got["paths"]] == files and got["features"].shape == (len(files), 128)
    tf = build_transforms(FeaturePredictor(d).info["transforms"])
    x = np.stack([tf(Image.open(os.path.join(imgs, f)).convert("RGB")) for f in files[:6]])
    ref = model.embed(paddle.to_tensor(x), "person").numpy()
    assert np.abs(got["features"][:6] - ref).max() <= 1e-4
    # old flags, no -c; oneDNN off
    main(["--model_dir", d, "--images", imgs, "--enable_mkldnn", "0", "--save_features", str(tmp_path / "g.npz")])
    assert np.abs(np.load(tmp_path / "g.npz")["features"] - got["features"]).max() <= 1e-4
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"inference_rec.yaml: Global.device: 'tpu' is not one of"):
        main(["-c", os.path.join(CONFIGS, "inference_rec.yaml"), "-o", "Global.device=tpu"])
    with pytest.raises(SystemExit, match="Global.model_dir: required"):
        main(["--images", imgs])


def test_onnx_runtime_features_equal_paddle(exported, demo_root, tmp_path):
    pytest.importorskip("paddle2onnx")
    pytest.importorskip("onnxruntime")
    from ppufo.inference.onnx_export import export_onnx
    from ppufo.inference.recognizer import Recognizer
    from ppufo.inference.predictor import OnnxPredictor
    model, d = exported[0], str(tmp_path / "person")
    shutil.copytree(exported[1], d, ignore=shutil.ignore_patterns("inference.onnx*"))  # auto may have converted it
    with pytest.raises(FileNotFoundError, match="onnx_export.py --model_dir"):
        OnnxPredictor(d)
    assert export_onnx(d) == os.path.join(d, "inference.onnx")
    x = np.random.default_rng(1).standard_normal((5, *SHAPE)).astype("float32")
    ref = model.embed(paddle.to_tensor(x), "person").numpy()
    onnx = OnnxPredictor(d, cpu_threads=1)
    for b in (1, 5):  # dynamic batch
        assert np.abs(onnx(x[:b]) - ref[:b]).max() <= 1e-4
    imgs = os.path.join(demo_root, "market1501", "query")
    paths = [os.path.join(imgs, f) for f in sorted(os.listdir(imgs))[:4]]
    via_yaml = Recognizer.from_config(chip("onnx", f"Global.model_dir={d}"))
    assert isinstance(via_yaml.predictor, OnnxPredictor)
    assert np.abs(via_yaml.features(paths) - Recognizer(d, backend="paddle").features(paths)).max() <= 1e-4


def test_the_deploy_docs_gallery_list_line_lists_every_gallery_image_with_its_person_id(demo_root, tmp_path):
    import subprocess

    from ppufo.data.datasets import DATASETS
    from ppufo.inference.gallery import list_gallery
    with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
        line = next(l for l in f if l.startswith("for f in ") and "gallery_list.txt" in l)
    os.makedirs(tmp_path / "data")
    os.symlink(demo_root, tmp_path / "data" / "demo")
    subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True)
    paths, labels = list_gallery(str(tmp_path / "gallery_list.txt"))
    gallery = DATASETS.build({"name": "Market1501", "root": os.path.join(demo_root, "market1501")}).gallery()
    want = sorted((os.path.basename(r.key), r.pid) for r in gallery)
    got = sorted((os.path.basename(p), int(label)) for p, label in zip(paths, labels))
    assert len(got) > 0 and got == want
    assert all(os.path.isfile(tmp_path / p) for p in paths)
