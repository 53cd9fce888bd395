"""Global.pretrained_model = an All-in-One checkpoint starts the supernet from it, whole."""
import logging
import re
import warnings

import numpy as np
import paddle
import pytest

from helpers import tiny_config, tiny_supernet_config
from ppufo.arch import build_model
from ppufo.arch.trained import load_pretrained
from ppufo.utils.checkpoint import save_checkpoint
from ppufo.utils.errors import ConfigError

CLASSES = {"face": 5, "person": 6, "vehicle": 7, "product": 8}


@pytest.fixture
def allinone(demo_root, tmp_path):
    """(model, prefix): a random All-in-One model of the tiny supernet's width and depth, saved
    with the trainer's checkpoint writer."""
    paddle.seed(3)
    cfg = tiny_config(demo_root, tmp_path / "aio", ["Arch.Backbone.embed_dim=48", "Arch.Backbone.depth=3"])
    model = build_model(cfg, CLASSES)
    prefix = str(tmp_path / "aio" / "latest")
    save_checkpoint(prefix, model, states={"iteration": 0})
    return model.eval(), prefix


@pytest.fixture
def warned():
    """The warnings ppufo's logger emits during the test, as one text (caplog misses them once
    init_logger has turned propagation off)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("ppufo").addHandler(handler)
    yield lambda: "\n".join(r.getMessage() for r in records)
    logging.getLogger("ppufo").removeHandler(handler)


def supernet_from(demo_root, tmp_path, prefix, *extra, classes=CLASSES):
    paddle.seed(4)
    cfg = tiny_supernet_config(demo_root, tmp_path, f"Global.pretrained_model={prefix}", *extra)
    model = build_model(cfg, classes)
    return model, load_pretrained(model, cfg)


def test_every_path_of_the_loaded_supernet_gives_the_allinone_features(demo_root, tmp_path, allinone):
    aio, prefix = allinone
    sup, line = supernet_from(demo_root, tmp_path, prefix)
    assert "0 start fresh" in line
    sup.eval()
    logits = [p for ffn in sup._ffns() for p in ffn.mix_logit]
    assert logits and all(float(p) == 0.0 for p in logits)  # sigmoid 0.5 of two equal FFNs: the FFN itself
    x = paddle.to_tensor(np.random.RandomState(0).randn(2, 3, 32, 32).astype("float32"))
    space = sup.space
    for task in CLASSES:
        want = aio.embed(x, task).numpy()
        for path in ("mix", "shared", "task"):
            sup.set_subnets({task: space.uniform(space.depths[-1], space.heads[-1], path, space.ratios[-1])})
            got = sup.embed(x, task).numpy()
            assert np.allclose(got, want, atol=1e-5), (task, path, np.abs(got - want).max())
    heads = {k: v.numpy() for k, v in aio.state_dict().items() if k.startswith("heads.")}
    assert any(".classifier." in k for k in heads)
    own = sup.state_dict()
    assert all(np.array_equal(own[k].numpy(), v) for k, v in heads.items())
    # the paths are copies, not one tensor: training one leaves the others
    ffn = sup.backbone.blocks[0].ffn
    assert ffn.shared.fc1.weight is not ffn.task["person"].fc1.weight


def test_a_classifier_of_other_class_counts_starts_fresh_and_the_rest_loads(demo_root, tmp_path, allinone):
    aio, prefix = allinone
    sup, line = supernet_from(demo_root, tmp_path, prefix, classes=dict(CLASSES, person=9))
    assert "start fresh" in line and "0 start fresh" not in line
    x = paddle.ones([1, 3, 32, 32])
    sup.eval()
    assert np.allclose(sup.embed(x, "person").numpy(), aio.embed(x, "person").numpy(), atol=1e-5)


def test_a_missing_backbone_tensor_is_an_error_naming_it_unless_partial_loads_are_allowed(
        demo_root, tmp_path, allinone, warned):
    from ppufo.utils.safe_load import load_state
    _, prefix = allinone
    state = load_state(prefix + ".pdparams", "test")
    del state["heads.person.neck.bn.weight"]
    cut = str(tmp_path / "cut")
    paddle.save(state, cut + ".pdparams")
    with pytest.raises(ConfigError, match=r"leaves 1 tensors at their initial values .*heads\.person\.neck\.bn\.weight"
                                          r".*Global\.allow_partial_load=true"):
        supernet_from(demo_root, tmp_path, cut)
    with warnings.catch_warnings(record=True) as python_warnings:
        warnings.simplefilter("always")
        sup, line = supernet_from(demo_root, tmp_path, cut, "Global.allow_partial_load=true")
    assert "1 start fresh" in line
    said = warned().splitlines()  # said once, by the check that names the tensor; not by Paddle per key
    assert len(said) == 1 and "leaves 1 tensors at their initial values" in said[0], said
    assert said[0].endswith("(Global.allow_partial_load)")
    assert not [w for w in python_warnings if "Skip loading" in str(w.message)]


def test_an_allinone_state_lacking_a_backbone_tensor_is_refused_naming_it(demo_root, tmp_path, allinone):
    from ppufo.utils.safe_load import load_state
    _, prefix = allinone
    state = load_state(prefix + ".pdparams", "test")
    del state["backbone.blocks.1.mlp.fc2.bias"]
    paddle.save(state, str(tmp_path / "cut.pdparams"))
    with pytest.raises(ConfigError, match=r"Global.pretrained_model: .*cut.pdparams leaves 5 tensors at their initial "
                                          r"values \(backbone 5\): backbone\.blocks\.1\.ffn\.shared\.fc2\.bias, "
                                          r"backbone\.blocks\.1\.ffn\.task\.face\.fc2\.bias"):
        supernet_from(demo_root, tmp_path, str(tmp_path / "cut"))


def test_a_missing_file_says_how_to_make_one(demo_root, tmp_path):
    with pytest.raises(ConfigError, match=r"nothing\.pdparams not found; make an All-in-One checkpoint with "
                                          r"`python tools/train.py -c configs/quickstart.yaml`.*allinone_vitlarge"):
        supernet_from(demo_root, tmp_path, str(tmp_path / "nothing"))


def test_heads_of_tasks_the_checkpoint_lacks_start_fresh_without_the_switch(demo_root, tmp_path):
    """Fine-tuning a new task from a checkpoint (docs/custom_data.md): its neck and head are not in
    the file and start fresh; every tensor the file should hold still has to load."""
    paddle.seed(5)
    one = tiny_config(demo_root, tmp_path / "one", ["Tasks.face=null", "Tasks.vehicle=null", "Tasks.product=null"])
    src = build_model(one, {"person": 6})
    prefix = str(tmp_path / "one" / "latest")
    save_checkpoint(prefix, src, states={"iteration": 0})
    cfg = tiny_config(demo_root, tmp_path / "all", [f"Global.pretrained_model={prefix}"])
    model = build_model(cfg, CLASSES)
    line = load_pretrained(model, cfg)
    own = model.state_dict()
    assert all(np.array_equal(own[k].numpy(), v.numpy()) for k, v in src.state_dict().items())
    fresh = int(line.split("; ")[-1].split(" start fresh")[0])
    assert fresh == sum(1 for k in own if k.startswith(("heads.face.", "heads.vehicle.", "heads.product.")))
    state = {k: v for k, v in src.state_dict().items() if k != "heads.person.neck.bn.weight"}
    assert "heads.person.neck.bn.weight" in own
    with pytest.raises(ConfigError, match="heads.person.neck.bn.weight"):
        load_pretrained(model, dict(cfg, Global=dict(cfg["Global"], pretrained_model=state)))


def allinone_file(demo_root, tmp_path, name, *overrides):
    """The prefix of a random All-in-One model (tiny_config + ``overrides``) saved as a checkpoint."""
    paddle.seed(6)
    cfg = tiny_config(demo_root, tmp_path / name, ["Arch.Backbone.embed_dim=48", *overrides])
    prefix = str(tmp_path / name / "latest")
    save_checkpoint(prefix, build_model(cfg, CLASSES), states={"iteration": 0})
    return prefix


def test_a_deeper_allinone_is_refused_naming_the_extra_blocks_unless_partial_loads_are_allowed(
        demo_root, tmp_path, warned):
    from ppufo.utils.safe_load import load_state
    prefix = allinone_file(demo_root, tmp_path, "deep", "Arch.Backbone.depth=4")  # the supernet has 3 blocks
    extra = r"backbone\.blocks\.3\.attn\.proj\.bias, backbone\.blocks\.3\.attn\.proj\.weight, backbone\.blocks\.3\.attn\.qkv"
    with pytest.raises(ConfigError, match=r"deep/latest\.pdparams holds 12 backbone tensors the model has no place "
                                          rf"for: {extra}.*\(the file's backbone: depth 4, .*; the model's: depth 3, .*"
                                          r"Global\.allow_partial_load=true"):
        supernet_from(demo_root, tmp_path, prefix)
    sup, line = supernet_from(demo_root, tmp_path, prefix, "Global.allow_partial_load=true")
    assert re.search(r"holds 12 backbone tensors the model has no place for: " + extra, warned())
    assert "0 start fresh" in line  # blocks 0-2 and the heads: everything the supernet has
    state = load_state(prefix + ".pdparams", "test")
    np.testing.assert_array_equal(sup.backbone.blocks[2].ffn.task["face"].fc1.weight.numpy(),
                                  state["backbone.blocks.2.mlp.fc1.weight"])


def test_a_shallower_allinone_lists_what_stays_fresh_and_another_width_is_always_refused(demo_root, tmp_path, warned):
    shallow = allinone_file(demo_root, tmp_path, "shallow", "Arch.Backbone.depth=2")
    # block 2: 2 norms, q/k/v/proj (8) and 5 FFN paths (shared + 4 tasks) x fc1/fc2 x weight/bias (20)
    with pytest.raises(ConfigError, match=r"shallow/latest\.pdparams leaves 32 tensors at their initial values "
                                          r"\(backbone 32\): backbone\.blocks\.2\.norm1\.weight.*\(the file's "
                                          r"backbone: depth 2, .*; the model's: depth 3"):
        supernet_from(demo_root, tmp_path, shallow)
    sup, line = supernet_from(demo_root, tmp_path, shallow, "Global.allow_partial_load=true")
    assert "leaves 32 tensors at their initial values" in warned() and "32 start fresh: backbone 32" in line
    wide = allinone_file(demo_root, tmp_path, "wide", "Arch.Backbone.embed_dim=96", "Arch.Backbone.depth=3")
    for switch in ([], ["Global.allow_partial_load=true"]):
        with pytest.raises(ConfigError, match=r"wide/latest\.pdparams: does not fit the model:\n  mis-shaped \d+: "
                                              r"backbone\.blocks\.0\.attn\.k\.bias file \[96\], model \[48\]"):
            supernet_from(demo_root, tmp_path, wide, *switch)


def test_the_released_file_starts_a_supernet_with_its_features_on_every_path(tmp_path):
    """The released format (reference key names, necks heads.task<N>.bottleneck.0, no classifiers)
    through Global.pretrained_model: the reference's features (a numpy forward written from its
    description, tests/released_reference.py) on the shared, task and mix path of every task."""
    from released_reference import random_reference, reference_forward, reference_shapes, save_reference
    from ppufo.arch.trained import load_trained_model
    heads = {"face": "task1", "person": "task3", "vehicle": "task3", "product": "task4"}  # Global.released_heads
    w = random_reference(reference_shapes(2, 64, 5))  # 2 blocks of width 64 at 32x32
    path = save_reference(w, tmp_path / "allinone_tiny.pdmodel")
    small = ["Arch.Backbone.embed_dim=64", "Arch.Backbone.num_heads=4", "Arch.Backbone.heads=[2,4]",
             "Arch.Backbone.depth=2", "Arch.Backbone.depths=[1,2]", *[f"Tasks.{t}.neck.feature_dim=null" for t in heads]]
    sup, line = supernet_from(str(tmp_path), tmp_path, path, *small)
    assert "(released UFO checkpoint; necks face<-task1, person<-task3, vehicle<-task3, product<-task4)" in line
    assert line.endswith("94 tensors (backbone 78, heads.face.neck 4, heads.person.neck 4, heads.vehicle.neck 4, "
                         "heads.product.neck 4); 4 start fresh: heads.face.classifier 1, heads.person.classifier 1, "
                         "heads.vehicle.classifier 1, heads.product.classifier 1")  # 78: 6 stem + 2 x 36 (+ mix logits)
    sup.eval()
    x = np.random.RandomState(1).uniform(-1, 1, (3, 3, 32, 32)).astype("float32")
    sp = sup.space
    for task, head in heads.items():
        ref = reference_forward(w, x, head, 4)
        for path_ in ("shared", "task", "mix"):
            sup.set_subnets({task: sp.uniform(2, 4, path_, 1.0)})
            got = sup.embed(paddle.to_tensor(x), task, normalize=False).numpy()
            assert np.abs(got - ref).max() < 1e-5 * np.linalg.norm(ref, axis=1).min(), (task, path_)
    # it is an All-in-One model: not a supernet to evaluate or extract from
    with pytest.raises(ConfigError, match=r"allinone_tiny\.pdmodel: is an All-in-One checkpoint \(a UFO reference "
                                          r"checkpoint .*\); a supernet checkpoint is expected"):
        load_trained_model(tiny_supernet_config(str(tmp_path), tmp_path, f"Global.pretrained_model={path}", *small))


def test_eval_and_extraction_refuse_an_allinone_checkpoint_saying_how_to_start_a_supernet(
        demo_root, tmp_path, allinone, monkeypatch):
    import sys
    from helpers import ROOT
    from ppufo.arch.trained import load_trained_model
    from ppufo.cli import extract_subnet
    _, prefix = allinone
    says = (r"Global\.pretrained_model: .*aio/latest\.pdparams: is an All-in-One checkpoint \(a ppufo checkpoint .*\); "
            r"a supernet checkpoint is expected .* To start a supernet from this All-in-One checkpoint use "
            r"Global\.pretrained_model when training: python tools/train\.py -c <this supernet config> -o "
            rf"Global\.pretrained_model={re.escape(prefix)}")
    with pytest.raises(ConfigError, match=says):
        load_trained_model(tiny_supernet_config(demo_root, tmp_path, f"Global.pretrained_model={prefix}"))
    monkeypatch.setattr(sys, "argv", [
        "extract", "-c", f"{ROOT}/configs/supernet_quickstart.yaml", "-o", f"Global.data_root={demo_root}",
        "Global.image_shape=[3,32,32]", "Arch.Backbone.embed_dim=48", "Arch.Backbone.depth=3", "Arch.Backbone.depths=[2,3]",
        f"Global.pretrained_model={prefix}", "Extract.subnet=smallest", f"Extract.save_dir={tmp_path}/sub"])
    with pytest.raises(SystemExit, match="error: " + says):
        extract_subnet.main()
    # the supernet's own checkpoint still loads as it is
    sup, _ = supernet_from(demo_root, tmp_path, prefix)
    save_checkpoint(str(tmp_path / "super"), sup, states={"iteration": 0})
    again = load_trained_model(tiny_supernet_config(demo_root, tmp_path, f"Global.pretrained_model={tmp_path}/super"))
    np.testing.assert_array_equal(again.backbone.blocks[1].ffn.shared.fc2.weight.numpy(),
                                  sup.backbone.blocks[1].ffn.shared.fc2.weight.numpy())


def test_a_supernet_without_pretrained_model_trains_from_scratch_with_a_warning(demo_root, tmp_path, warned):
    paddle.seed(4)
    cfg = tiny_supernet_config(demo_root, tmp_path)  # Global.pretrained_model=null
    line = load_pretrained(build_model(cfg, CLASSES), cfg)
    assert line == "Global.pretrained_model: none; the model starts from its initial weights"
    assert ("Global.pretrained_model is null: the supernet trains from scratch (random weights). The article starts "
            "it from a trained All-in-One model: make an All-in-One checkpoint with `python tools/train.py -c "
            "configs/quickstart.yaml`") in warned()
    aio = tiny_config(demo_root, tmp_path / "aio")
    before = warned()
    assert load_pretrained(build_model(aio, CLASSES), aio).endswith("starts from its initial weights")
    assert warned() == before  # an All-in-One model is trained from scratch as a matter of course


def test_the_trainer_starts_a_supernet_from_pretrained_model_but_a_resume_from_its_checkpoint(
        demo_root, tmp_path, allinone):
    from ppufo.engine import build_trainer
    aio, prefix = allinone
    want = aio.state_dict()["backbone.blocks.1.mlp.fc1.weight"].numpy()
    trainer = build_trainer(tiny_supernet_config(demo_root, tmp_path / "a", f"Global.pretrained_model={prefix}"))
    got = trainer.model.backbone.blocks[1].ffn
    for p in [got.shared] + [got.task[t] for t in CLASSES]:
        np.testing.assert_array_equal(p.fc1.weight.numpy(), want)
    trainer.train()
    trained = trainer.model.backbone.blocks[1].ffn.shared.fc1.weight.numpy().copy()
    assert np.abs(trained - want).max() > 0
    # resuming: the checkpoint's weights; Global.pretrained_model (here a file that is gone) is not read
    resumed = build_trainer(tiny_supernet_config(demo_root, tmp_path / "a", f"Global.pretrained_model={tmp_path}/gone",
                                                 f"Global.checkpoints={tmp_path}/a/out/latest", "Global.max_iters=3"))
    np.testing.assert_array_equal(resumed.model.backbone.blocks[1].ffn.shared.fc1.weight.numpy(), trained)
    assert resumed.start_iter == 2


def test_training_from_a_missing_allinone_stops_before_writing_demo_data(tmp_path, monkeypatch):
    import sys
    from helpers import ROOT
    from ppufo.cli import train
    monkeypatch.setattr(sys, "argv", ["train", "-c", f"{ROOT}/configs/supernet_quickstart.yaml", "-o",
                                      f"Global.data_root={tmp_path}/data", f"Global.output_dir={tmp_path}/out",
                                      f"Global.pretrained_model={tmp_path}/quickstart/latest"])
    with pytest.raises(SystemExit, match=rf"^error: Global\.pretrained_model: {re.escape(str(tmp_path))}/quickstart/"
                                         r"latest\.pdparams not found; make an All-in-One checkpoint with `python "
                                         r"tools/train\.py -c configs/quickstart\.yaml`.*; or -o "
                                         r"Global\.pretrained_model=null to train from the initial weights$"):
        train.main()
    assert not (tmp_path / "data").exists()  # generate_demo_data is on: it stopped before


def test_the_shipped_supernet_configs_start_from_their_base_allinone_model(tmp_path):
    """supernet_quickstart.yaml from what quickstart.yaml writes, whole; supernet_vitl.yaml from what
    ufo_vitl.yaml writes, whose geometry and necks (and so the released ViT-L's) it has."""
    from helpers import ROOT
    from ppufo.arch.released import geometry
    from ppufo.utils.config import load_config
    for base, child in (("quickstart", "supernet_quickstart"), ("ufo_vitl", "supernet_vitl")):
        b, c = load_config(f"{ROOT}/configs/{base}.yaml"), load_config(f"{ROOT}/configs/{child}.yaml")
        assert c["Global"]["pretrained_model"] == b["Global"]["output_dir"] + "/latest", child
    b, c = load_config(f"{ROOT}/configs/quickstart.yaml"), load_config(f"{ROOT}/configs/supernet_quickstart.yaml",
                                                                      [f"Global.pretrained_model={tmp_path}/latest"])
    paddle.seed(7)
    aio = build_model(b, CLASSES)
    save_checkpoint(str(tmp_path / "latest"), aio, states={"iteration": 0})
    sup = build_model(c, CLASSES)
    line = load_pretrained(sup, c)
    assert line.endswith("0 start fresh")
    sup.eval(), aio.eval()
    x = paddle.to_tensor(np.random.RandomState(2).randn(1, 3, 64, 64).astype("float32"))
    np.testing.assert_allclose(sup.embed(x, "person").numpy(), aio.embed(x, "person").numpy(), atol=1e-5)
    b, c = load_config(f"{ROOT}/configs/ufo_vitl.yaml"), load_config(f"{ROOT}/configs/supernet_vitl.yaml")
    with paddle.LazyGuard():  # shapes only
        aio, sup = build_model(b, CLASSES).state_dict(), build_model(c, CLASSES).state_dict()
    assert geometry(sup) == geometry(aio) == {"depth": 24, "width": 1024, "patch": 16, "positions": 577}
    assert list(sup["backbone.blocks.23.ffn.shared.fc1.weight"].shape) == list(aio["backbone.blocks.23.mlp.fc1.weight"].shape)
    heads = {k: list(v.shape) for k, v in aio.items() if k.startswith("heads.")}
    assert heads == {k: list(v.shape) for k, v in sup.items() if k.startswith("heads.")}
    assert heads["heads.person.neck.bn._mean"] == [1024] and not any(".neck.fc." in k for k in heads)  # as released
