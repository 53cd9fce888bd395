"""End-to-end behaviour of the All-in-One trainer on generated demo data."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppufo.engine.trainer import Trainer
from ppufo.utils.errors import ConfigError, DataError

from conftest import ROOT, tiny_config


def losses_of(trainer, steps):
    out = []
    for it, batch in enumerate(trainer.loader, start=trainer.start_iter + 1):
        out.append(trainer.train_step(batch, it)["loss"])
        if len(out) == steps:
            break
    return out


def test_mixed_batch_holds_every_task_in_one_backbone_pass(make_config):
    trainer = Trainer(make_config())
    images, labels, _, task_ids = next(iter(trainer.loader))
    assert images.shape == [32, 3, 32, 32]
    # tasks contiguous in config order, 8 images each
    assert task_ids.numpy().tolist() == sum([[i] * 8 for i in range(4)], [])
    calls = []
    hook = trainer.model.backbone.register_forward_post_hook(lambda l, i, o: calls.append(o.shape))
    outs = trainer.model(images, [(t, 8) for t in trainer.tasks], labels)
    hook.remove()
    assert calls == [[32, trainer.model.backbone.out_dim]]  # one pass over the whole mixed batch
    assert set(outs) == {"face", "person", "vehicle", "product"}
    for t, out in outs.items():
        assert out["embedding"].shape == [8, 128]
        assert out["logits"].shape == [8, trainer.task_sets[t].num_classes]
    emb = trainer.model.embed(images[:8], "face")
    np.testing.assert_allclose(np.linalg.norm(emb.numpy(), axis=1), 1.0, rtol=1e-5)


def test_one_step_lowers_the_loss_on_a_fixed_batch(make_config):
    trainer = Trainer(make_config("Optimizer.lr.warmup_ratio=0.0", "Arch.Backbone.drop_path_rate=0.0"))
    batch = next(iter(trainer.loader))
    trainer.model.eval()  # fixed BN statistics, so the two losses are comparable
    sizes = [(t, 8) for t in trainer.tasks]

    def total():
        with paddle.no_grad():
            outs = trainer.model(batch[0], sizes, batch[1])
            from ppufo.engine.trainer import labels_of
            return sum(float(trainer.losses[t](o, labels_of(batch[1], sizes, t))["loss"]) for t, o in outs.items())
    before = total()
    trainer.model.train()
    for it in range(1, 4):
        trainer.train_step(batch, it)
    trainer.model.eval()
    after = total()
    assert after < before - 0.05, (before, after)


def test_resume_gives_the_same_next_step_loss(make_config, tmp_path):
    full = Trainer(make_config(output_dir=tmp_path / "full"))
    uninterrupted = losses_of(full, 4)

    first = Trainer(make_config("Global.max_iters=4", output_dir=tmp_path / "resumed"))
    losses_of(first, 2)
    first.save("latest", 2)
    resumed = Trainer(make_config("Global.checkpoints=" + str(tmp_path / "resumed" / "latest"),
                                  output_dir=tmp_path / "resumed"))
    assert resumed.start_iter == 2
    after = losses_of(resumed, 2)
    np.testing.assert_allclose(after, uninterrupted[2:], rtol=1e-5)
    assert abs(resumed.lr.last_lr - full.lr.last_lr) < 1e-12


def test_training_run_writes_checkpoint_config_and_log(make_config, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(make_config("Global.max_iters=2", "Global.use_visualdl=true", output_dir=out))
    assert trainer.train() == 2
    for name in ["latest.pdparams", "latest.pdopt", "latest.pdstates", "config.yaml", "train.log"]:
        assert (out / name).is_file(), name
    log = (out / "train.log").read_text()
    assert "[Train][Iter: 2/2]" in log and "images/s" in log and "eta:" in log
    assert os.listdir(out / "vdl")


@pytest.mark.parametrize("override, error, message", [
    ("Tasks.person.datasets.0.root=nowhere", DataError, "dataset root not found"),
    ("Tasks.person.batch_size=6", ConfigError, "Tasks.person"),
    ("Tasks.person.head.name=Nope", ConfigError, "unknown head 'Nope'"),
    ("Tasks.person.datasets=[]", ConfigError, "Tasks.person.datasets: empty"),
    ("Global.data_root=/nonexistent/demo", DataError, "Global.data_root not found"),
    ("DataLoader.Train.transforms.0.Resize.size=[48,48]", ConfigError, r"shape \[3, 48, 48\], but Global.image_shape is \[3, 32, 32\]"),
])
def test_bad_input_stops_before_training(make_config, override, error, message):
    with pytest.raises(error, match=message):
        Trainer(make_config(override))


def test_corrupt_image_is_an_error_naming_the_file(make_config, demo_root, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(os.path.join(demo_root, "market1501"), root / "market1501")
    for name in ["veri776", "sop", "ms1m", "faces_val"]:
        os.symlink(os.path.join(demo_root, name), root / name)
    files = sorted((root / "market1501" / "bounding_box_train").iterdir())
    files[5].write_bytes(b"not a jpeg")
    trainer = Trainer(make_config("Global.data_root=" + str(root)))
    ds = trainer.task_sets["person"]
    with pytest.raises(DataError, match=files[5].name):
        ds[[ds.record(i).key for i in range(len(ds))].index(str(files[5]))]
    files[0].write_bytes(b"")  # the first image is decoded before training starts
    with pytest.raises(DataError, match=files[0].name):
        Trainer(make_config("Global.data_root=" + str(root)))


@pytest.mark.slow
def test_two_process_cpu_launch_keeps_ranks_in_sync(full_demo_root, tmp_path):
    demo_root = str(full_demo_root)  # the 13 test sets: evaluation is sharded under every protocol
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(tmp_path / "log"), os.path.join(ROOT, "tests", "dist_worker.py"),
           demo_root, str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    logs = "".join((tmp_path / "log" / f).read_text() for f in os.listdir(tmp_path / "log"))
    assert proc.returncode == 0, logs[-3000:]
    w0 = paddle.load(str(out / "rank0.pdparams"))
    w1 = paddle.load(str(out / "rank1.pdparams"))
    init = paddle.load(str(out / "init.pdparams"))
    assert set(w0) == set(w1)
    for k in w0:
        np.testing.assert_allclose(w0[k].numpy(), w1[k].numpy(), rtol=0, atol=1e-6, err_msg=k)
    assert any(not np.allclose(w0[k].numpy(), init[k].numpy()) for k in w0)  # training happened
    s0 = np.load(out / "rank0_samples.npy")
    s1 = np.load(out / "rank1_samples.npy")
    assert s0.shape == s1.shape and s0.shape[1] == 16  # 32 global images per step / 2 ranks
    for a, b in zip(s0, s1):
        assert not set(a) & set(b)  # disjoint samples per rank each step
    assert (out / "latest.pdparams").is_file()  # saved by rank 0
    # evaluation: each rank embedded half the images, and both hold the single-process scores
    from ppufo.engine.evaluator import Evaluator
    from ppufo.utils.checkpoint import load_weights
    e0, e1 = (json.loads((out / f"rank{r}_eval.json").read_text()) for r in (0, 1))
    trainer = Trainer(tiny_config(demo_root, tmp_path / "single", ["Global.max_iters=3"]))
    load_weights(trainer.model, str(out / "latest"))
    embedded, embed = [0], trainer.model.embed
    trainer.model.embed = lambda x, *a, **k: (embedded.__setitem__(0, embedded[0] + x.shape[0]), embed(x, *a, **k))[1]
    single = [r["score"] for r in Evaluator(trainer.cfg, trainer.model).evaluate("single")["sets"]]
    assert e0["scores"] == pytest.approx(single, abs=1e-5) and e1["scores"] == pytest.approx(single, abs=1e-5)
    assert e0["embedded"] + e1["embedded"] == embedded[0] and abs(e0["embedded"] - e1["embedded"]) <= 16


README_LAUNCH = ("-m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/quickstart.yaml "
                 "-o Global.max_iters=6 Global.eval_interval=0")


@pytest.mark.slow
def test_readme_two_process_launch_from_a_clean_copy_writes_demo_data_once(tmp_path):
    """The README's CPU launch in a fresh checkout: both ranks want ./data/demo on first use; one
    writes it while the other waits, then both train (rank 1 used to read a half-written set)."""
    import shutil
    assert README_LAUNCH in open(os.path.join(ROOT, "README.md")).read()
    for folder in ["ppufo", "tools", "configs"]:
        shutil.copytree(os.path.join(ROOT, folder), tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable] + README_LAUNCH.split(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    logs = {f: (tmp_path / "log" / f).read_text() for f in ("workerlog.0", "workerlog.1")}
    assert proc.returncode == 0, logs["workerlog.0"][-2000:] + logs["workerlog.1"][-2000:]
    assert "on 2 process(es)" in logs["workerlog.0"] and "[Train][Iter: 6/6]" in logs["workerlog.0"]
    assert "generating demo sets" in logs["workerlog.0"] or "waiting for another process" in logs["workerlog.0"]
    from ppufo.data.demo import WRITERS, written_sets
    assert set(written_sets(str(tmp_path / "data" / "demo"))) == set(WRITERS)
    assert (tmp_path / "output" / "quickstart" / "latest.pdparams").is_file()
