"""Checkpoints are saved and loaded as one unit, and weights files never run code."""
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppufo.utils import checkpoint
from ppufo.io.weights import load_weights
from ppufo.utils.checkpoint import load_checkpoint, read_states, save_checkpoint, remove_stale_temporaries
from ppufo.utils.errors import ConfigError
from ppufo.utils.safe_load import load_state

from helpers import ROOT, tiny_config, tiny_supernet_config

X = paddle.to_tensor(np.random.RandomState(0).randn(8, 6).astype("float32"))


def make():
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 5), paddle.nn.BatchNorm1D(5), paddle.nn.Linear(5, 3))
    lr = paddle.optimizer.lr.CosineAnnealingDecay(0.1, 20)
    return model, paddle.optimizer.AdamW(learning_rate=lr, parameters=model.parameters()), lr


def step(model, opt, lr, n=1):
    for _ in range(n):
        loss = (model(X) ** 2).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        lr.step()
    return float(loss)


def snapshot(model, opt):
    return ({k: v.numpy().copy() for k, v in model.state_dict().items()},
            {k: v.numpy().copy() for k, v in opt.state_dict().items() if isinstance(v, paddle.Tensor)})


def trained(prefix, iteration, also=()):
    """Save a model trained ``iteration`` steps under prefix (and the ``also`` prefixes)."""
    model, opt, lr = make()
    step(model, opt, lr, iteration)
    for p in (prefix, *also):
        save_checkpoint(str(p), model, opt, lr, {"iteration": iteration})
    return model, opt, lr


def resume(prefix):
    model, opt, lr = make()
    states = load_checkpoint(str(prefix), model, opt, lr)
    return states, model, opt, lr


def test_a_checkpoint_round_trips_bit_exactly_and_records_its_files(tmp_path):
    model, opt, lr = trained(tmp_path / "latest", 3)
    states, model2, opt2, lr2 = resume(tmp_path / "latest")
    assert states["iteration"] == 3 and set(states["files"]) == {".pdparams", ".pdopt"}
    for ext, rec in states["files"].items():
        assert rec["size"] == os.path.getsize(tmp_path / f"latest{ext}") and len(rec["sha256"]) == 64
    # the state_dict keys differ between instances (Paddle's generated names): compare in order
    for a, b in zip(snapshot(model, opt), snapshot(model2, opt2)):
        assert len(a) == len(b) > 0
        for x, y in zip(a.values(), b.values()):
            np.testing.assert_array_equal(x, y)
    assert lr2.last_epoch == lr.last_epoch and step(model, opt, lr, 2) == step(model2, opt2, lr2, 2)
    assert sorted(os.listdir(tmp_path)) == ["latest.pdopt", "latest.pdparams", "latest.pdstates"]


def test_the_safe_loader_returns_what_paddle_load_returns(tmp_path):
    model, opt, lr = trained(tmp_path / "c", 2)
    paddle.save(model.state_dict(), str(tmp_path / "p2.pdparams"), protocol=2)  # older PaddleClas files
    for path in ["c.pdparams", "c.pdopt", "p2.pdparams"]:
        ours, theirs = load_state(str(tmp_path / path), "test"), paddle.load(str(tmp_path / path))
        if "optimizer" in theirs:
            assert ours["lr"] == theirs["lr"]
            ours, theirs = ours["optimizer"], theirs["optimizer"]
        assert list(ours) == list(theirs)
        for k, v in theirs.items():
            if isinstance(v, paddle.Tensor):
                assert ours[k].name == v.name and ours[k].dtype == v.dtype
                np.testing.assert_array_equal(ours[k].numpy(), v.numpy())
            else:
                assert ours[k] == v


# ------------------------------------------------------------------- interrupted and mixed saves

FAIL_POINTS = [("paddle.save", 1, "previous"), ("paddle.save", 2, "previous"), ("json.dump", 1, "previous"),
               ("os.replace", 1, "previous"), ("os.replace", 2, "refused"), ("os.replace", 3, "refused")]


class Killed(BaseException):
    pass


@pytest.mark.parametrize("target,nth,outcome", FAIL_POINTS)
def test_a_kill_between_any_two_file_writes_never_resumes_wrongly(tmp_path, monkeypatch, target, nth, outcome):
    trained(tmp_path / "latest", 5, also=[tmp_path / "iter_5"])
    good5 = snapshot(*resume(tmp_path / "latest")[1:3])
    model, opt, lr = make()
    step(model, opt, lr, 10)
    save_checkpoint(str(tmp_path / "iter_10"), model, opt, lr, {"iteration": 10})
    module, name = {"paddle.save": (paddle, "save"), "json.dump": (checkpoint.json, "dump"),
                    "os.replace": (checkpoint.os, "replace")}[target]
    real, calls = getattr(module, name), []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise Killed
        return real(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(module, name, dies)
        m.setattr(checkpoint.os, "remove", lambda p: None)  # a kill cleans nothing up
        with pytest.raises(Killed):
            save_checkpoint(str(tmp_path / "latest"), model, opt, lr, {"iteration": 10})
    if outcome == "previous":
        states, model5, opt5, _ = resume(tmp_path / "latest")
        assert states["iteration"] == 5
        for a, b in zip(good5, snapshot(model5, opt5)):
            for x, y in zip(a.values(), b.values()):
                np.testing.assert_array_equal(x, y)
    else:
        with pytest.raises(ConfigError) as e:
            resume(tmp_path / "latest")
        msg = str(e.value)
        assert "latest.pdparams" in msg and "not one complete checkpoint" in msg
        assert f"Global.checkpoints={tmp_path / 'iter_10'}" in msg and "iteration 10" in msg
    # the next save cleans up what the kill left (here: temporaries of this live process, once
    # older than a finished save) and the checkpoint is whole again
    save_checkpoint(str(tmp_path / "latest"), model, opt, lr, {"iteration": 10})
    save_checkpoint(str(tmp_path / "iter_11"), model, opt, lr, {"iteration": 10})
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]
    assert resume(tmp_path / "latest")[0]["iteration"] == 10


@pytest.mark.parametrize("odd", [".pdparams", ".pdopt", ".pdstates"])
def test_files_of_different_saves_are_refused(tmp_path, odd):
    trained(tmp_path / "five" / "latest", 5)
    trained(tmp_path / "ten" / "latest", 10, also=[tmp_path / "ten" / "iter_10"])
    shutil.copy(tmp_path / "five" / f"latest{odd}", tmp_path / "ten" / f"latest{odd}")
    with pytest.raises(ConfigError) as e:
        resume(tmp_path / "ten" / "latest")
    msg = str(e.value)
    named = [".pdopt"] if odd == ".pdopt" else [".pdparams"] if odd == ".pdparams" else [".pdparams", ".pdopt"]
    for ext in named:
        assert f"{tmp_path / 'ten' / 'latest'}{ext} has" in msg
    assert ("latest.pdopt has" in msg) == (odd != ".pdparams")
    assert f"resume with Global.checkpoints={tmp_path / 'ten' / 'iter_10'}" in msg
    # with no complete iter_* beside it, the message says so
    shutil.copy(tmp_path / "five" / "latest.pdopt", tmp_path / "ten" / "iter_10.pdopt")
    with pytest.raises(ConfigError, match="holds no complete iter_\\* checkpoint"):
        resume(tmp_path / "ten" / "latest")


def test_a_resume_from_a_mixed_set_stops_the_trainer(demo_root, tmp_path):
    from ppufo.engine.trainer import Trainer
    out = tmp_path / "out"
    trainer = Trainer(tiny_config(demo_root, out))
    trainer.save(0)
    trainer.train_step(next(iter(trainer.loader)), 1)
    trainer.save(1)  # latest now names iter_1
    shutil.copy(out / "iter_0.pdopt", out / "iter_1.pdopt")
    with pytest.raises(ConfigError, match=re.escape(f"{out}/iter_1.pdopt has") + ".*" + re.escape(f"Global.checkpoints={out}/iter_0")):
        Trainer(tiny_config(demo_root, out, [f"Global.checkpoints={out}/latest"]))


@pytest.mark.parametrize("ext", [".pdparams", ".pdopt", ".pdstates"])
@pytest.mark.parametrize("keep", [0, 0.5])
def test_truncated_and_empty_files_are_refused_naming_the_file(tmp_path, ext, keep):
    trained(tmp_path / "latest", 2)
    path = tmp_path / f"latest{ext}"
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        resume(tmp_path / "latest")
    if ext != ".pdstates":  # without a size record the unpickler still names the file
        states = json.loads((tmp_path / "latest.pdstates").read_text())
        (tmp_path / "latest.pdstates").write_text(json.dumps({"iteration": states["iteration"]}))
        with pytest.raises(ConfigError, match=re.escape(f"{path}: not a readable Paddle weights file")):
            resume(tmp_path / "latest")
        with pytest.raises(ConfigError, match=re.escape(f"{path}: not a readable Paddle weights file")):
            load_state(str(path), "test")


@pytest.mark.parametrize("text,why", [("[]", "expected a JSON object"), ('{"iteration": "5"}', "integer 'iteration'"),
                                      ('{"iteration": 5, "files": {".pdparams": 3}}', "'files'"),
                                      ("\xff", "not a readable checkpoint states file")])
def test_a_malformed_states_file_is_refused_naming_it(tmp_path, text, why):
    trained(tmp_path / "latest", 1)
    (tmp_path / "latest.pdstates").write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'latest.pdstates'}: ") + f".*{why}"):
        read_states(str(tmp_path / "latest"))


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_old_states_files_without_checksums_load_with_a_warning(tmp_path):
    model, opt, lr = trained(tmp_path / "latest", 4)
    (tmp_path / "latest.pdstates").write_text(json.dumps({"iteration": 4, "best": {"score": None}}))
    handler = ListHandler()
    logging.getLogger("ppufo").addHandler(handler)
    try:
        states, model2, opt2, lr2 = resume(tmp_path / "latest")
    finally:
        logging.getLogger("ppufo").removeHandler(handler)
    assert states == {"iteration": 4, "best": {"score": None}}
    assert any("no checksums" in m and "cannot verify" in m for m in handler.messages)
    assert step(model, opt, lr, 2) == step(model2, opt2, lr2, 2)


def test_weights_only_checkpoints_still_load(tmp_path):
    trained(tmp_path / "model", 2)  # a full checkpoint first: its .pdopt must not survive
    model, _, _ = make()
    save_checkpoint(str(tmp_path / "model"), model, states={"iteration": 0, "tasks": ["person"]})
    assert sorted(os.listdir(tmp_path)) == ["model.pdparams", "model.pdstates"]
    assert list(read_states(str(tmp_path / "model"))["files"]) == [".pdparams"]
    other, opt, lr = make()
    step(other, opt, lr)
    load_weights(other, str(tmp_path / "model"))
    assert load_checkpoint(str(tmp_path / "model"), other)["tasks"] == ["person"]
    with pytest.raises(ConfigError, match="lists no .pdopt .*Global.pretrained_model"):
        load_checkpoint(str(tmp_path / "model"), other, opt, lr)


def test_stale_temporaries_are_removed_when_saving(tmp_path):
    trained(tmp_path / "iter_1", 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_dead = tmp_path / f"latest.pdparams.tmp{dead.pid}"
    stale_old = tmp_path / f"iter_0.pdopt.tmp{os.getpid()}"
    live_new = tmp_path / f"other.pdstates.tmp{os.getpid()}"
    unrelated = tmp_path / "notes.tmp1"
    for p in (stale_dead, stale_old, live_new, unrelated):
        p.write_bytes(b"x")
    past = os.path.getmtime(tmp_path / "iter_1.pdstates") - 60
    os.utime(stale_old, (past, past))
    remove_stale_temporaries(str(tmp_path))
    assert not stale_dead.exists() and not stale_old.exists()
    assert live_new.exists() and unrelated.exists()  # maybe a save in progress; not ours to judge
    os.utime(live_new, (past, past))
    trained(tmp_path / "iter_2", 2)
    assert not live_new.exists() and unrelated.exists()


def test_only_the_newest_iter_checkpoints_are_kept(tmp_path):
    for it in (2, 4, 6, 8, 10):
        for ext in (".pdparams", ".pdopt", ".pdstates"):
            (tmp_path / f"iter_{it}{ext}").write_bytes(b"x")
    others = ["latest.pdparams", "latest.pdstates", "best_model.pdparams", "best_model.pdstates",
              "iter_1.pdparams.tmp123", "eval_iter_2.json", "iter_x.pdparams", "my_iter_3.pdparams"]
    for n in others:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "iter_1.pdparams").write_bytes(b"x")  # an orphan of an interrupted save
    removed = checkpoint.prune_checkpoints(str(tmp_path), 2)
    assert removed == [str(tmp_path / f"iter_{i}") for i in (6, 4, 2, 1)]
    kept = [f"iter_{i}{e}" for i in (8, 10) for e in (".pdparams", ".pdopt", ".pdstates")]
    assert sorted(os.listdir(tmp_path)) == sorted(kept + others)


SGD_LR = {"name": "WarmupCosine", "learning_rate": 0.1, "warmup_iters": 2}


def sgd_run(tmp_path, old, steps, save_at=None):
    """Plain SGD for ``steps`` steps; ``old``: the optimizer ppufo built for momentum 0 before,
    paddle Momentum(momentum=0). ``save_at``: save a checkpoint after that step."""
    from ppufo.optimizer import build_lr, build_optimizer
    from ppufo.optimizer.optimizer import MomentumOptimizer
    model, _, _ = make()
    if old:
        lr = build_lr(SGD_LR, 20)
        opt = MomentumOptimizer(learning_rate=lr, momentum=0.0, parameters=model.parameters(), weight_decay=1e-3)
    else:
        opt, lr = build_optimizer({"name": "SGD", "momentum": 0.0, "weight_decay": 1e-3, "lr": SGD_LR},
                                  model.parameters(), 20)
    for i in range(steps):
        step(model, opt, lr)
        if i + 1 == save_at:
            save_checkpoint(str(tmp_path / "old"), model, opt, lr, {"iteration": save_at})
    return model, opt, lr


def test_a_momentum_0_checkpoint_resumes_into_plain_sgd_without_its_buffers(tmp_path):
    """Momentum 0 builds paddle SGD now (no velocity per parameter). A checkpoint written by the
    Momentum(momentum=0) before resumes exactly: its velocity only held the last gradient."""
    guard = paddle.utils.unique_name.guard  # fresh parameter names, as in a new process
    with guard():
        reference, _, _ = sgd_run(tmp_path, old=True, steps=5, save_at=3)
    old_opt = load_state(str(tmp_path / "old.pdopt"), "t")["optimizer"]
    assert sum(k.endswith("_velocity_0") for k in old_opt) == sum(not p.stop_gradient for p in reference.parameters()) == 6
    with guard():
        model, opt, lr = sgd_run(tmp_path, old=False, steps=0)
        assert not isinstance(opt, paddle.optimizer.Momentum)
        load_checkpoint(str(tmp_path / "old"), model, opt, lr)
        step(model, opt, lr, 2)
    for (n, p), q in zip(reference.named_parameters(), model.parameters()):
        np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-6, atol=1e-7, err_msg=n)
    assert not [k for k in opt.state_dict() if "velocity" in k]  # not carried into the next save
    save_checkpoint(str(tmp_path / "new"), model, opt, lr, {"iteration": 5})
    assert os.path.getsize(tmp_path / "new.pdopt") < os.path.getsize(tmp_path / "old.pdopt") / 2


def test_o2_master_weights_follow_their_parameters_across_instances(tmp_path):
    """AMP O2 keeps fp32 master weights in the optimizer, keyed by Paddle's generated parameter
    names, which differ in another process; a resume must hand each its own."""
    guard = paddle.utils.unique_name.guard
    with guard():
        model, opt, lr = make()
        step(model, opt, lr)
        opt._master_weights = {p.name: paddle.full(p.shape, float(i)) for i, p in enumerate(model.parameters())}
        save_checkpoint(str(tmp_path / "o2"), model, opt, lr, {"iteration": 1})
        saved = {n: float(i) for i, (n, _) in enumerate(model.named_parameters())}
    paddle.utils.unique_name.switch()  # as if other layers had been built first: other names
    paddle.nn.Linear(2, 2)
    other, opt2, lr2 = make()
    assert [p.name for p in other.parameters()] != [p.name for p in model.parameters()]
    load_checkpoint(str(tmp_path / "o2"), other, opt2, lr2)
    for n, p in other.named_parameters():
        assert float(opt2._master_weights[p.name].mean()) == saved[n], n


# ------------------------------------------------------------------------- hostile weights

class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile(tmp_path):
    """<tmp>/evil/model.{pdparams,pdopt,pdstates}: pickles that touch MARKER when unpickled,
    with a states file whose checksums match them (anyone can write those)."""
    folder, marker = tmp_path / "evil", tmp_path / "MARKER"
    folder.mkdir()
    files = {}
    for ext in (".pdparams", ".pdopt"):
        data = pickle.dumps({"heads.person.classifier.weight": Payload(marker)}, protocol=2)
        (folder / f"model{ext}").write_bytes(data)
        files[ext] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "model.pdstates").write_text(json.dumps({"iteration": 1, "files": files}))
    yield str(folder / "model"), marker
    assert not marker.exists()


def refused(path, fn):
    with pytest.raises(ConfigError) as e:
        fn()
    msg = str(e.value)
    assert f"{path}.pdparams: refused" in msg and "posix.system' is refused" in msg, msg


def test_a_hostile_pickle_is_refused_by_the_loader(hostile, tmp_path):
    prefix, marker = hostile
    refused(prefix, lambda: load_state(prefix + ".pdparams", "test"))
    for payload in [{"w": np.array([b"a", 1], dtype=object)}, {"w": eval}]:
        (tmp_path / "x.pdparams").write_bytes(pickle.dumps(payload, protocol=4))
        with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'x.pdparams'}: refused")):
            load_state(str(tmp_path / "x.pdparams"), "test")


def test_a_hostile_pickle_is_refused_through_the_trainer(hostile, demo_root, tmp_path):
    from ppufo.engine.trainer import Trainer
    prefix, _ = hostile
    for key in ["pretrained_model", "checkpoints"]:
        refused(prefix, lambda: Trainer(tiny_config(demo_root, tmp_path / key, [f"Global.{key}={prefix}"])))


def test_a_hostile_pickle_is_refused_as_backbone_weights(hostile, demo_root, tmp_path):
    from ppufo.arch.backbone import build_backbone
    prefix, _ = hostile
    vit = build_backbone({"name": "VisionTransformer", "embed_dim": 48, "depth": 1, "num_heads": 3}, img_size=[32, 32])
    refused(prefix, lambda: load_weights(vit, prefix + ".pdparams"))
    refused(prefix, lambda: build_backbone({"name": "ViTSupernet", "embed_dim": 48, "depth": 2, "num_heads": 3,
                                            "pretrained": prefix}, img_size=[32, 32], tasks=["person"]))
    from ppufo.engine import build_trainer
    refused(prefix, lambda: build_trainer(tiny_supernet_config(demo_root, tmp_path, f"Arch.Backbone.pretrained={prefix}")))
    pytest.importorskip("paddleclas")
    refused(prefix, lambda: build_backbone({"name": "PaddleClasBackbone", "model": "ResNet18",
                                            "pretrained": prefix + ".pdparams"}, img_size=[32, 32]))


def test_a_hostile_pickle_is_refused_by_eval_and_export(hostile, demo_root, tmp_path):
    from ppufo.arch.trained import load_trained_model
    prefix, _ = hostile
    refused(prefix, lambda: load_trained_model(tiny_config(demo_root, tmp_path, [f"Global.pretrained_model={prefix}"])))
    proc = subprocess.run([sys.executable, "tools/eval.py", "-c", "configs/quickstart.yaml", "-o",
                           f"Global.pretrained_model={prefix}", f"Global.data_root={demo_root}",
                           "Global.generate_demo_data=false", f"Global.output_dir={tmp_path / 'out'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and f"{prefix}.pdparams: refused" in proc.stderr, proc.stderr
