"""Global.pretrained_model = an All-in-One checkpoint starts the supernet from it, whole."""
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
        demo_root, tmp_path, allinone, caplog):
    from ppufo.utils.safe_load import load_state
    _, prefix = allinone
    state = load_state(prefix + ".pdparams", "test")
    del state["heads.person.neck.bn.weight"]
    cut = str(tmp_path / "cut")
    paddle.save(state, cut + ".pdparams")
    with pytest.raises(ConfigError, match=r"leaves 1 tensors at their initial values .*heads\.person\.neck\.bn\.weight"
                                          r".*Global\.allow_partial_load=true"):
        supernet_from(demo_root, tmp_path, cut)
    sup, line = supernet_from(demo_root, tmp_path, cut, "Global.allow_partial_load=true")
    assert "1 start fresh" in line


def test_an_allinone_state_lacking_a_backbone_tensor_is_refused_naming_it(demo_root, tmp_path, allinone):
    from ppufo.utils.safe_load import load_state
    _, prefix = allinone
    state = load_state(prefix + ".pdparams", "test")
    del state["backbone.blocks.1.mlp.fc2.bias"]
    paddle.save(state, str(tmp_path / "cut.pdparams"))
    with pytest.raises(ConfigError, match=r"Global.pretrained_model: .*cut.pdparams: .*blocks\.1\.mlp\.fc2\.bias"):
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
