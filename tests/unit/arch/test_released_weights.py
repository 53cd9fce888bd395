"""The released UFO checkpoint (allinone_vitlarge.pdmodel) loads through Global.pretrained_model.

The test writes a state dict with the reference's key names and shapes (as released: the
MultiTaskBatchFuse state_dict, no classifiers) for a small variant, and checks ppufo's features
against a numpy forward written here from the reference's description, not from ppufo's code.
"""
import json
import os
import re
import sys

import numpy as np
import paddle
import pytest

import released_reference
from helpers import ROOT, tiny_config
from released_reference import random_reference, save_reference, unit
from ppufo.arch.multitask import build_model
from ppufo.arch.released import to_ppufo
from ppufo.arch.trained import load_trained_model
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

DIM, DEPTH, HEADS, IMG = 64, 2, 4, 32  # the small variant: width 64, 2 blocks, 4 heads, 32x32
TASK_HEADS = {"face": "task1", "person": "task3", "vehicle": "task3", "product": "task4"}


def reference_shapes(depth=DEPTH, dim=DIM, positions=(IMG // 16) ** 2 + 1):
    return released_reference.reference_shapes(depth, dim, positions)


def reference_forward(w, images, head, heads=HEADS, **kw):
    return released_reference.reference_forward(w, images, head, heads, **kw)


def config_for(root, out, *overrides):
    """The tiny quickstart at width 64 with necks without projection (as the reference's)."""
    return tiny_config(str(root), out, [f"Arch.Backbone.embed_dim={DIM}", f"Arch.Backbone.num_heads={HEADS}"]
                       + [f"Tasks.{t}.neck.feature_dim=null" for t in TASK_HEADS] + list(overrides))


def error_of(fn):
    with pytest.raises(ConfigError) as e:
        fn()
    return str(e.value)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(weights, path of the .pdmodel, preprocessed images)."""
    w = random_reference(reference_shapes())
    path = save_reference(w, tmp_path_factory.mktemp("released") / "allinone_tiny.pdmodel")
    return w, path, np.random.RandomState(1).uniform(-1, 1, (3, 3, IMG, IMG)).astype("float32")


def test_the_numpy_reference_shows_every_detail(released):
    """Each detail the loaded model must reproduce moves the reference feature by far more than
    the 1e-5 the tests allow, so a ppufo model that got one wrong would fail them."""
    w, _, x = released
    base = unit(reference_forward(w, x, "task3"))
    for change in [dict(ln_eps=1e-5), dict(bn_eps=1e-6), dict(exact_gelu=False), dict(heads=2)]:
        assert np.abs(unit(reference_forward(w, x, "task3", **change)) - base).max() > 1e-4, change
    assert np.abs(unit(reference_forward(w, x, "task2")) - base).max() > 0.1
    no_bias = dict(w, **{"backbone.blocks.0.attn.qkv.bias": 0 * w["backbone.blocks.0.attn.qkv.bias"]})
    assert np.abs(unit(reference_forward(no_bias, x, "task3")) - base).max() > 1e-2


def test_pdmodel_loads_through_pretrained_model_with_the_reference_features(released, tmp_path):
    w, path, x = released
    model = load_trained_model(config_for(tmp_path, tmp_path, f"Global.pretrained_model={path}"))
    assert all(model.heads[t].classifier is None for t in TASK_HEADS)  # embedding only
    for task, head in TASK_HEADS.items():
        ref = reference_forward(w, x, head)
        raw = model.embed(paddle.to_tensor(x), task, normalize=False).numpy()
        assert np.abs(raw - ref).max() < 1e-5 * np.linalg.norm(ref, axis=1).min(), task
        np.testing.assert_allclose(model.embed(paddle.to_tensor(x), task).numpy(), unit(ref), atol=1e-5, rtol=0)
    # Global.released_heads picks another reference head for one task; the others keep theirs
    other = load_trained_model(config_for(tmp_path, tmp_path, f"Global.pretrained_model={path}",
                                          "Global.released_heads.person=task2"))
    for task, head in dict(TASK_HEADS, person="task2").items():
        np.testing.assert_allclose(other.embed(paddle.to_tensor(x), task).numpy(),
                                   unit(reference_forward(w, x, head)), atol=1e-5, rtol=0)


def test_exported_model_gives_the_reference_features(released, tmp_path):
    from ppufo.engine.exporter import export_task
    from ppufo.inference.predictor import FeaturePredictor
    w, path, x = released
    cfg = config_for(tmp_path, tmp_path, f"Global.pretrained_model={path}")
    model = load_trained_model(cfg)
    for task in ("face", "product"):
        export_task(model, task, cfg, str(tmp_path / task))
        np.testing.assert_allclose(FeaturePredictor(str(tmp_path / task))(x),
                                   unit(reference_forward(w, x, TASK_HEADS[task])), atol=1e-5, rtol=0)


def test_vit_large_key_list_converts_by_name_and_shape():
    """The full released key list (24 blocks, width 1024, 577 positions) against ppufo's
    ViT-L/16-384 config, shapes only (zero-stride arrays; the model is built lazily)."""
    shapes = reference_shapes(depth=24, dim=1024, positions=577)
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    assert len(fake) == 4 + 24 * 12 + 2 + 4 * 4

    def convert(state, *overrides):
        cfg = load_config(os.path.join(ROOT, "configs/ufo_vitl.yaml"), list(overrides))
        with paddle.LazyGuard():
            model = build_model(cfg)
        return to_ppufo(state, model), model
    (out, mapping), model = convert(fake)
    assert mapping == TASK_HEADS
    own = model.state_dict()
    assert sorted(out) == sorted(own) and len(own) == 294 + 4 * 4
    assert all(list(out[k].shape) == list(own[k].shape) for k in own)
    assert out["heads.vehicle.neck.bn._variance"] is fake["heads.task3.bottleneck.0._variance"]
    assert out["backbone.blocks.23.mlp.fc2.weight"] is fake["backbone.blocks.23.mlp.fc2.weight"]
    msg = error_of(lambda: convert(fake, "Global.image_shape=[3,224,224]"))
    assert "a reference checkpoint of 577 positions but the config has 197 (Global.image_shape)" in msg
    assert "mis-shaped 1: backbone.pos_embed file [1, 577, 1024], model [1, 197, 1024]" in msg
    assert "384x384 images" in msg and "224x224 images" in msg


def test_bad_checkpoints_are_refused_saying_what_they_are(released, tmp_path):
    w, path, _ = released

    def load(file, *overrides):
        return error_of(lambda: load_trained_model(config_for(tmp_path, tmp_path, f"Global.pretrained_model={file}",
                                                              *overrides)))
    # a PaddleClas ImageNet ViT: plain keys, a 1000-class head
    plain = {k[len("backbone."):]: v for k, v in w.items() if k.startswith("backbone.")}
    plain.update({"head.weight": np.zeros([DIM, 1000], "float32"), "head.bias": np.zeros([1000], "float32")})
    msg = load(save_reference(plain, tmp_path / "ViT_imagenet.pdparams"))
    assert "is a PaddleClas ImageNet ViT state dict (keys like patch_embed.proj.weight, head.weight [64, 1000]; " \
           "no backbone./heads. prefix) of depth 2, width 64" in msg
    assert "expected a ppufo checkpoint" in msg and "or the released UFO checkpoint" in msg
    assert f"Arch.Backbone.pretrained={tmp_path / 'ViT_imagenet.pdparams'}" in msg
    # a truncated download
    data = open(path, "rb").read()
    (tmp_path / "cut.pdmodel").write_bytes(data[: len(data) // 2])
    msg = load(tmp_path / "cut.pdmodel")
    assert f"{tmp_path / 'cut.pdmodel'}: not a readable Paddle weights file (truncated" in msg
    # a reference checkpoint of another depth
    msg = load(save_reference(random_reference(reference_shapes(depth=3)), tmp_path / "deep.pdmodel"))
    assert "is a UFO reference checkpoint (backbone.*, heads task1, task2, task3, task4; no classifiers) of " \
           "depth 3, width 64, patch 16, 5 positions (32x32 images)" in msg
    assert "a reference checkpoint of depth 3 but the config has depth 2 (Arch.Backbone.depth)" in msg
    assert "unexpected 12: backbone.blocks.2." in msg and "missing" not in msg
    # one mis-shaped key, named with where it came from
    bad = dict(w, **{"heads.task4.bottleneck.0._mean": np.zeros([DIM - 1], "float32")})
    msg = load(save_reference(bad, tmp_path / "bad.pdmodel"))
    assert "mis-shaped 1: heads.product.neck.bn._mean (heads.task4.bottleneck.0._mean) file [63], model [64]" in msg
    assert "differs" not in msg and "reference checkpoint of depth" not in msg
    # a config whose necks project (the quickstart's feature_dim 128): the reference's have no projection
    msg = load(path, *[f"Tasks.{t}.neck.feature_dim=128" for t in TASK_HEADS])
    assert "missing 4: heads.face.neck.fc.weight [64, 128]" in msg and "mis-shaped 16" in msg
    assert "the reference necks have no projection" in msg
    assert "'task9' is not a head of the released checkpoint; its heads: ['task1', 'task2', 'task3', 'task4']" \
        in load(path, "Global.released_heads.person=task9")
    assert "Global.released_heads: ['persn'] are not tasks" in load(path, "Global.released_heads.persn=task1")


def test_training_from_the_released_weights_starts_the_classifiers_fresh(released, make_config, tmp_path):
    from ppufo.engine.trainer import Trainer
    w, path, _ = released
    base = [f"Arch.Backbone.embed_dim={DIM}", f"Arch.Backbone.num_heads={HEADS}", "Global.max_iters=2",
            "Global.save_interval=0"] + [f"Tasks.{t}.neck.feature_dim=null" for t in TASK_HEADS]
    fresh = Trainer(make_config(*base, output_dir=tmp_path / "fresh")).model.state_dict()
    trainer = Trainer(make_config(*base, f"Global.pretrained_model={path}", output_dir=tmp_path / "run"))
    state = trainer.model.state_dict()
    for k, v in w.items():
        if k.startswith("backbone."):
            np.testing.assert_array_equal(state[k].numpy(), v, err_msg=k)
    for task, head in TASK_HEADS.items():
        for n in ("weight", "bias", "_mean", "_variance"):
            np.testing.assert_array_equal(state[f"heads.{task}.neck.bn.{n}"].numpy(), w[f"heads.{head}.bottleneck.0.{n}"])
        key = f"heads.{task}.classifier.weight"  # what a run without pretrained weights starts from
        np.testing.assert_array_equal(state[key].numpy(), fresh[key].numpy())
        assert not np.array_equal(fresh[f"heads.{task}.neck.bn.weight"].numpy(), w[f"heads.{head}.bottleneck.0.weight"])
    log = open(tmp_path / "run" / "train.log").read()
    assert (f"Global.pretrained_model: loaded pretrained weights from {path} (released UFO checkpoint; "
            f"necks face<-task1, person<-task3, vehicle<-task3, product<-task4): 46 tensors (backbone 30, "
            f"heads.face.neck 4, heads.person.neck 4, heads.vehicle.neck 4, heads.product.neck 4)") in log
    assert ("4 start fresh: heads.face.classifier 1, heads.person.classifier 1, heads.vehicle.classifier 1, "
            "heads.product.classifier 1") in log
    before = trainer.model.backbone.norm.weight.numpy().copy()
    assert trainer.train() == 2
    assert not np.array_equal(trainer.model.backbone.norm.weight.numpy(), before)  # it trained


def test_backbone_pretrained_takes_the_released_backbone_alone(released, tmp_path):
    w, path, x = released
    model = build_model(config_for(tmp_path, tmp_path, f"Arch.Backbone.pretrained={path}"), {t: 5 for t in TASK_HEADS})
    state = model.state_dict()
    for k, v in w.items():
        if k.startswith("backbone."):
            np.testing.assert_array_equal(state[k].numpy(), v, err_msg=k)
    assert np.all(state["heads.face.neck.bn.weight"].numpy() == 1)  # necks start fresh
    msg = error_of(lambda: build_model(config_for(tmp_path, tmp_path, "Arch.Backbone.depth=3",
                                                  f"Arch.Backbone.pretrained={path}")))
    assert f"Arch.Backbone.pretrained: {path}: is a UFO reference checkpoint" in msg
    assert "this ViT has depth 3" in msg and "missing 12: blocks.2." in msg


def test_convert_weights_round_trip(released, tmp_path, monkeypatch, capsys):
    from ppufo.cli.convert_weights import main
    w, path, x = released
    args = ["-c", os.path.join(ROOT, "configs/quickstart.yaml"), "-o", "Global.image_shape=[3,32,32]",
            "Arch.Backbone.depth=2", f"Arch.Backbone.embed_dim={DIM}", f"Arch.Backbone.num_heads={HEADS}",
            *[f"Tasks.{t}.neck.feature_dim=null" for t in TASK_HEADS]]
    monkeypatch.setattr(sys, "argv", ["convert_weights", *args, "--input", path, "--output", str(tmp_path / "conv")])
    main()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: a UFO reference checkpoint (backbone.*, heads task1, task2, task3, task4; no " \
                     f"classifiers) of depth 2, width 64, patch 16, 5 positions (32x32 images)"
    assert out[1:] == [
        f"-> {tmp_path / 'conv'}.pdparams: 46 tensors (backbone 30, heads.face.neck 4, heads.person.neck 4, "
        f"heads.vehicle.neck 4, heads.product.neck 4)",
        "backbone: 30 tensors, names unchanged",
        "face: neck <- heads.task1.bottleneck.0 (4 tensors)", "person: neck <- heads.task3.bottleneck.0 (4 tensors)",
        "vehicle: neck <- heads.task3.bottleneck.0 (4 tensors)", "product: neck <- heads.task4.bottleneck.0 (4 tensors)",
        "not used: heads.task2", "no classifiers: training from it starts them fresh"]
    states = json.load(open(tmp_path / "conv.pdstates"))
    assert states["released_heads"] == TASK_HEADS and states["iteration"] == 0
    direct_cfg = config_for(tmp_path, tmp_path, f"Global.pretrained_model={path}")
    direct = load_trained_model(direct_cfg)
    converted = load_trained_model(config_for(tmp_path, tmp_path, f"Global.pretrained_model={tmp_path / 'conv'}"))
    assert load_config(args[1], args[3:])["Arch"] == direct_cfg["Arch"]  # the command line's model is direct's
    for task in TASK_HEADS:
        np.testing.assert_array_equal(converted.embed(paddle.to_tensor(x), task).numpy(),
                                      direct.embed(paddle.to_tensor(x), task).numpy())
    # anything but the released format is refused
    monkeypatch.setattr(sys, "argv", ["convert_weights", *args, "--input", str(tmp_path / "conv"),
                                      "--output", str(tmp_path / "again")])
    with pytest.raises(SystemExit, match=r"--input: .*conv.pdparams: is a ppufo checkpoint .* expected the released"):
        main()


def test_eval_and_export_tools_run_on_the_released_file(released, demo_root, tmp_path, monkeypatch):
    from ppufo.cli import eval as eval_cli
    from ppufo.cli import export_model
    _, path, _ = released
    args = ["-c", os.path.join(ROOT, "configs/quickstart.yaml"), "-o", "Global.image_shape=[3,32,32]",
            "Arch.Backbone.depth=2", f"Arch.Backbone.embed_dim={DIM}", f"Arch.Backbone.num_heads={HEADS}",
            f"Global.data_root={demo_root}", "Global.generate_demo_data=false", f"Global.output_dir={tmp_path}",
            f"Global.pretrained_model={path}", f"Export.save_dir={tmp_path / 'inf'}", "DataLoader.Eval.num_workers=0",
            *[f"Tasks.{t}.neck.feature_dim=null" for t in TASK_HEADS]]
    monkeypatch.setattr(sys, "argv", ["eval", "--sets", "Market1501", *args])
    eval_cli.main()
    sets = json.load(open(tmp_path / "eval_eval.json"))["sets"]
    assert [s["set"] for s in sets] == ["Market1501"] and sets[0]["num_valid_queries"] > 0
    monkeypatch.setattr(sys, "argv", ["export", *args])
    export_model.main()
    assert sorted(os.listdir(tmp_path / "inf")) == sorted(TASK_HEADS)


def test_supernet_backbone_starts_from_the_released_file(released, tmp_path):
    from helpers import tiny_supernet_config
    w, path, x = released
    cfg = tiny_supernet_config(str(tmp_path), tmp_path, f"Arch.Backbone.embed_dim={DIM}", f"Arch.Backbone.num_heads={HEADS}",
                               "Arch.Backbone.depth=2", "Arch.Backbone.depths=[1,2]", f"Arch.Backbone.pretrained={path}")
    state = build_model(cfg, {t: 5 for t in TASK_HEADS}).backbone.state_dict()
    for k in ("pos_embed", "norm.bias", "blocks.1.attn.proj.weight"):
        np.testing.assert_array_equal(state[k].numpy(), w["backbone." + k], err_msg=k)
    np.testing.assert_array_equal(state["blocks.1.attn.k.weight"].numpy(), w["backbone.blocks.1.attn.qkv.weight"][:, DIM:2 * DIM])
    np.testing.assert_array_equal(state["blocks.1.ffn.task.person.fc2.weight"].numpy(), w["backbone.blocks.1.mlp.fc2.weight"])


@pytest.mark.parametrize("name, says", [("allinone_vitlarge.pdmodel", "expected the released UFO checkpoint"),
                                        ("run/latest.pdparams", "expected a checkpoint prefix"),
                                        ("run/latest", "expected a checkpoint prefix")])
def test_convert_weights_names_what_a_missing_input_should_be(tmp_path, monkeypatch, name, says):
    from ppufo.cli.convert_weights import main
    missing = str(tmp_path / name)
    monkeypatch.setattr(sys, "argv", ["convert_weights", "-c", os.path.join(ROOT, "configs/quickstart.yaml"),
                                      "--input", missing, "--output", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=f"--input: {re.escape(missing)}.* not found \\({says}"):
        main()
