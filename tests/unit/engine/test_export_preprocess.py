"""An export records the preprocessing evaluation builds, written by the pipeline itself
(Compose.to_config), and serving rebuilds it with the same build_transforms: bit-identical
tensors for every shipped config."""
import glob
import os
import random
import shlex

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import ROOT, tiny_config
from ppufo.ablation.experiment import load_experiment
from ppufo.data import loader
from ppufo.data import transforms as T
from ppufo.data.loader import eval_transforms
from ppufo.engine.exporter import export_transforms
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

# (width, height): odd, non-square, smaller and larger than every shipped image size
SIZES = [(37, 23), (23, 37), (129, 65), (517, 389)]
RANDOM_OPS = [T.RandomCrop([20, 20]), T.RandomHorizontalFlip(0.5), T.ColorJitter(brightness=0.2),
              T.AutoAugment(), T.RandomErasing()]


@pytest.fixture(scope="module")
def images():
    rs = np.random.RandomState(0)
    return [Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def yaml_round_trip(items):
    """What inference.yml holds after the exporter writes it and the deploy side reads it."""
    return yaml.safe_load(yaml.safe_dump(items, sort_keys=False))


def same_tensors(a, b, images):
    for im in images:
        x, y = a(im, random.Random(0)), b(im, random.Random(0))
        assert x.dtype == y.dtype == np.float32
        assert np.array_equal(x, y), f"{im.size}: max diff {np.abs(x - y).max()}"


def tipc_configs():
    """(name, config) per TIPC chain: the train line's -c and -o (the exported config.yaml is the
    run's saved config, or an extracted subnet's, whose DataLoader is a copy of it)."""
    out = []
    for txt in sorted(glob.glob(os.path.join(ROOT, "test_tipc/configs/*/train*_infer_python.txt"))):  # PTQ too
        line = next(ln for ln in open(txt) if ln.startswith("norm_train:"))
        args = shlex.split(line.split(":", 1)[1])
        overrides = [args[i + 1] for i, a in enumerate(args) if a == "-o"]
        out.append((os.path.relpath(txt, ROOT), load_config(args[args.index("-c") + 1], overrides)))
    return out


def shipped_configs():
    """Every config under configs/ (ablation arms too) and every TIPC chain's."""
    out = [(os.path.relpath(p, ROOT), load_config(p)) for p in sorted(glob.glob(os.path.join(ROOT, "configs/*.yaml")))]
    for p in sorted(glob.glob(os.path.join(ROOT, "configs/ablations/**/*.yaml"), recursive=True)):
        exp = load_experiment(p)
        for name, arm in exp.arms.items():
            if not arm.derived:  # a derived arm scores its source's model
                out.append((f"{os.path.relpath(p, ROOT)}:{name}",
                            load_config(exp.base, list(exp.overrides) + list(arm.overrides))))
    return out + tipc_configs()


# ---------------------------------------------------------------- to_config
def test_to_config_round_trips_through_build_transforms_and_yaml(images):
    pipeline = T.Compose([T.Pad([1, 2, 3, 4], fill=[10, 20, 30]), T.Resize([31, 17], "nearest"),
                          T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], scale=1 / 250)])
    items = pipeline.to_config()
    assert items == [{"Pad": {"padding": [1, 2, 3, 4], "fill": [10, 20, 30]}},
                     {"Resize": {"size": [31, 17], "interpolation": "nearest"}},
                     {"Normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1 / 250}}]
    rebuilt = T.build_transforms(yaml_round_trip(items))
    assert rebuilt.to_config() == items and repr(rebuilt) == repr(pipeline)
    same_tensors(pipeline, rebuilt, images)
    assert rebuilt(images[0]).shape == (3, 31, 17)
    default = T.default_eval_transforms([24, 40])
    assert default.to_config() == [{"Resize": {"size": [24, 40], "interpolation": "bicubic"}},
                                   {"Normalize": {"mean": [0.5] * 3, "std": [0.5] * 3, "scale": 1 / 255}}]
    same_tensors(default, T.build_transforms(yaml_round_trip(default.to_config())), images)
    assert T.Pad(5, fill=7).to_config() == {"Pad": {"padding": [5, 5, 5, 5], "fill": 7}}


@pytest.mark.parametrize("op", RANDOM_OPS, ids=lambda op: type(op).__name__)
def test_a_random_op_does_not_serialise(op):
    with pytest.raises(ConfigError, match="per-sample rng"):
        op.to_config()
    pipeline = T.Compose([T.Resize(8), T.Normalize(), op] if op.takes == T.CHW else [T.Resize(8), op, T.Normalize()])
    i = pipeline.ops.index(op)
    with pytest.raises(ConfigError, match=rf"^Eval\.{i}\.{type(op).__name__}: draws from the per-sample rng"):
        pipeline.to_config("Eval")


# ---------------------------------------------------------------- the exporter's pipeline
@pytest.mark.parametrize("name,config", shipped_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_exported_pipeline_is_the_evaluation_pipeline(name, config, images):
    exported = T.build_transforms(yaml_round_trip(export_transforms(config)), where="inference.yml")
    evaluation = eval_transforms(config)
    same_tensors(evaluation, exported, images)
    assert exported(images[0]).shape == tuple(config["Global"]["image_shape"])


def test_every_shipped_config_is_covered():
    names = [n for n, _ in shipped_configs()]
    assert {"configs/quickstart.yaml", "configs/ufo_vitl.yaml", "configs/supernet_vitl.yaml",
            "configs/ablations/paper/hetero_vs_homo.yaml:rn_hetero",
            "test_tipc/configs/ufo_supernet_subnet_tiny/train_infer_python.txt"} <= set(names)


def test_export_follows_a_changed_default(monkeypatch, images):
    """Eval.transforms empty: the export writes whatever evaluation's default is, not a copy of it."""
    def other_default(hw):
        return T.Compose([T.Resize(hw, "bilinear"), T.Normalize(mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4])])
    monkeypatch.setattr(loader, "default_eval_transforms", other_default)
    config = load_config(os.path.join(ROOT, "configs/quickstart.yaml"))
    assert config["DataLoader"]["Eval"]["transforms"] == []
    items = export_transforms(config)
    assert items[0] == {"Resize": {"size": [64, 64], "interpolation": "bilinear"}}
    assert items[1]["Normalize"]["mean"] == [0.4, 0.5, 0.6]
    same_tensors(eval_transforms(config), T.build_transforms(yaml_round_trip(items)), images)


def test_export_refuses_a_random_op_and_a_wrong_output_size(tmp_path):
    base = os.path.join(ROOT, "configs/quickstart.yaml")
    flip = load_config(base, ["DataLoader.Eval.transforms=[{Resize: {size: [64, 64]}}, "
                              "{RandomHorizontalFlip: {prob: 0.5}}, {Normalize: null}]"])
    with pytest.raises(ConfigError, match=r"^DataLoader\.Eval\.transforms\.1\.RandomHorizontalFlip: draws"):
        export_transforms(flip)
    small = load_config(base, ["DataLoader.Eval.transforms=[{Resize: {size: [32, 48]}}, {Normalize: null}]"])
    with pytest.raises(ConfigError, match=r"DataLoader\.Eval\.transforms: gives a \[3, 32, 48\] array .* "
                                          r"Global\.image_shape \[3, 64, 64\]"):
        export_transforms(small)
    unresized = load_config(base, ["DataLoader.Eval.transforms=[{Normalize: null}]"])
    with pytest.raises(ConfigError, match=r"gives a \[3, 23, 37\] array for a 37x23 image"):
        export_transforms(unresized)


# ---------------------------------------------------------------- a real export
@pytest.fixture(scope="module")
def tiny_model():
    import paddle
    from ppufo.arch import build_model
    config = tiny_config("unused", "unused")
    paddle.seed(0)
    model = build_model(config, {t: 10 for t in config["Tasks"]})
    model.eval()
    return model


def test_a_real_export_serves_with_the_evaluation_pipeline(tiny_model, tmp_path, images):
    from ppufo.engine.exporter import export_model
    from ppufo.inference.predictor import model_transforms
    from ppufo.inference.recognizer import Recognizer
    config = tiny_config(str(tmp_path), tmp_path, [
        "Export.task=person", f"Export.save_dir={tmp_path / 'inf'}",
        "DataLoader.Eval.transforms=[{Pad: {padding: [2, 0], fill: [9, 8, 7]}}, "
        "{Resize: {size: [32, 32], interpolation: bilinear}}, "
        "{Normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}]"])
    d = export_model(tiny_model, config)["person"][0]
    with open(os.path.join(d, "inference.yml")) as f:
        written = yaml.safe_load(f)["transforms"]
    assert written == eval_transforms(config).to_config()
    assert written[0] == {"Pad": {"padding": [2, 0, 2, 0], "fill": [9, 8, 7]}}
    served = model_transforms(d)
    same_tensors(eval_transforms(config), served, images)
    rec = Recognizer(d, batch_size=2)  # what predict_rec and the service run
    same_tensors(eval_transforms(config), rec.transform, images)
    # and the features the service returns are the exported model's on those tensors
    x = np.stack([eval_transforms(config)(im, random.Random(0)) for im in images[:2]])
    assert np.array_equal(rec.features_of_images(images[:2]), rec.predictor(x))


def test_export_with_a_random_eval_op_writes_nothing(tiny_model, tmp_path):
    from ppufo.engine.exporter import export_model
    config = tiny_config(str(tmp_path), tmp_path, [
        "Export.task=all", f"Export.save_dir={tmp_path / 'inf'}",
        "DataLoader.Eval.transforms=[{Resize: {size: [32, 32]}}, {Normalize: null}, {RandomErasing: {prob: 0.5}}]"])
    with pytest.raises(ConfigError, match=r"DataLoader\.Eval\.transforms\.2\.RandomErasing"):
        export_model(tiny_model, config)
    assert not os.path.exists(tmp_path / "inf")


def test_model_transforms_names_the_file(tmp_path):
    from ppufo.inference.predictor import model_transforms
    path = tmp_path / "inference.yml"
    path.write_text("image_shape: [3, 32, 32]\n")
    with pytest.raises(ConfigError, match=rf"{path}: no 'transforms'.*export the model again"):
        model_transforms(str(tmp_path))
    path.write_text("image_shape: [3, 32, 32]\ntransforms: [{Resize: {size: [32, 32]}}, {Blur: null}]\n")
    with pytest.raises(ConfigError, match=rf"{path}: transforms\.1: .*Blur"):
        model_transforms(str(tmp_path))


def test_the_deploy_docs_show_what_the_quickstart_exports():
    with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
        text = f.read()
    block = text.split("```yaml\ntransforms:\n", 1)[1].split("```", 1)[0]
    shown = yaml.safe_load("transforms:\n" + block)["transforms"]
    assert shown == export_transforms(load_config(os.path.join(ROOT, "configs/quickstart.yaml")))
