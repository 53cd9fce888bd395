"""End-to-end behaviour of the All-in-One trainer on generated demo data."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppufo.engine.trainer import Trainer
from ppufo.utils.checkpoint import read_states
from ppufo.utils.errors import ConfigError, DataError

from helpers import ROOT, losses_of


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
    first.save(2)
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
    for name in ["iter_2.pdparams", "iter_2.pdopt", "iter_2.pdstates", "latest", "config.yaml", "train.log"]:
        assert (out / name).is_file(), name
    assert read_states(str(out / "latest"))["iteration"] == 2
    log = (out / "train.log").read_text()
    assert "[Train][Iter: 2/2]" in log and "images/s" in log and "eta:" in log
    assert os.listdir(out / "vdl")


@pytest.mark.parametrize("override, error, message", [
    ("Tasks.person.datasets.0.root=nowhere", DataError, "dataset root not found"),
    ("Tasks.person.batch_size=6", ConfigError, "Tasks.person"),
    ("Tasks.person.head.name=Nope", ConfigError, "unknown head 'Nope'"),
    ("Tasks.person.datasets=[]", ConfigError, "Tasks.person.datasets: empty"),
    ("Global.data_root=/nonexistent/demo", DataError, "dataset root not found: /nonexistent/demo/"),
    ("DataLoader.Train.transforms.0.Resize.size=[48,48]", ConfigError, r"shape \[3, 48, 48\], but Global.image_shape is \[3, 32, 32\]"),
])
def test_bad_input_stops_before_training(make_config, override, error, message):
    with pytest.raises(error, match=message):
        Trainer(make_config(override))


def test_train_tool_checks_the_data_root_before_building_the_trainer(tmp_path):
    """tools/train.py asks for the demo data (ensure_demo_data) right after loading the config:
    a missing root is reported as such, not as the first dataset the trainer fails to open."""
    cmd = [sys.executable, "tools/train.py", "-c", "configs/quickstart.yaml", "-o",
           f"Global.data_root={tmp_path / 'missing'}", "Global.generate_demo_data=false",
           f"Global.output_dir={tmp_path / 'out'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "error: Global.data_root not found or empty" in proc.stderr, proc.stderr
    assert not (tmp_path / "missing").exists() and not (tmp_path / "out").exists()


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


READS = ("numpy", "item", "tolist", "__float__", "__int__", "__index__", "__bool__", "__array__")


def watch_host_reads(monkeypatch, trainer):
    """Wrap trainer.train_step: returns (names of Tensor methods that read a tensor on the host
    during a step, in the main thread; {iteration: stats the step returned})."""
    import threading
    main, stepping, reads, returned = threading.main_thread(), [False], [], {}
    for name in READS:
        def read(self, *a, _orig=getattr(paddle.Tensor, name), _name=name, **k):
            if stepping[0] and threading.current_thread() is main:  # not the loader's thread
                reads.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(paddle.Tensor, name, read)
    step = trainer.train_step

    def watched(batch, it):
        stepping[0] = True
        try:
            returned[it] = step(batch, it)
        finally:
            stepping[0] = False
        return returned[it]
    trainer.train_step = watched
    return reads, returned


def test_a_step_never_waits_for_the_device_and_the_log_prints_its_losses(make_config, monkeypatch):
    """Losses stay tensors through the step (no tensor is read on the host, the task sizes come
    from the batch sampler); every log_interval the trainer reads them once and the log shows them."""
    from ppufo.engine.hooks import host_stats
    trainer = Trainer(make_config("Global.max_iters=3", "Global.log_interval=2"))
    reads, returned = watch_host_reads(monkeypatch, trainer)
    trainer.train()
    assert reads == [] and len(returned) == 3
    assert all(isinstance(v, paddle.Tensor) for stats in returned.values() for v in stats.values())
    with open(os.path.join(trainer.output_dir, "train.log")) as f:
        lines = [m for m in f.read().splitlines() if "[Train][Iter:" in m]
    assert [m.split("[Iter: ")[1].split("]")[0] for m in lines] == ["2/3", "3/3"]
    for line, it in zip(lines, (2, 3)):
        stats = host_stats(returned[it])
        assert stats["loss"] == float(returned[it]["loss"])
        per_task = ", ".join(f"{t}: {stats[f'{t}/loss']:.4f}" for t in trainer.tasks)
        assert f"loss: {stats['loss']:.4f} ({per_task}), ips:" in line


def test_a_supernet_step_never_waits_for_the_device(demo_root, tmp_path, monkeypatch):
    from ppufo.engine import build_trainer
    from helpers import tiny_supernet_config
    trainer = build_trainer(tiny_supernet_config(demo_root, tmp_path, "Supernet.distill_weight=0.5"))
    reads, returned = watch_host_reads(monkeypatch, trainer)
    stats = trainer.train_step(next(iter(trainer.loader)), 1)
    assert reads == [] and all(isinstance(v, paddle.Tensor) for v in stats.values())
    total = sum(float(stats[f"{k}/loss"]) for k in ("largest0", "random1", "smallest2"))
    assert float(stats["loss"]) == pytest.approx(total / 3, rel=1e-6)  # Supernet.combine: mean


def counted(trainer, task_ids):
    """[(task, images)] counted from a batch's task ids, to cross-check the sampler's plan."""
    counts = np.bincount(task_ids.numpy(), minlength=len(trainer.tasks))
    return [(t, int(n)) for t, n in zip(trainer.tasks, counts)]


def test_task_sizes_come_from_the_batch_sampler(make_config):
    trainer = Trainer(make_config())
    batch = next(iter(trainer.loader))
    assert trainer.batch_sizes(batch, 1) == counted(trainer, batch[3]) == [(t, 8) for t in trainer.tasks]
    homogeneous = Trainer(make_config("DataLoader.Train.batch_sampler.name=HomogeneousBatchSampler"))
    assert homogeneous.may_skip_parameters() and not trainer.may_skip_parameters()
    for it, batch in enumerate(homogeneous.loader, start=1):  # one task a step, in turn
        assert homogeneous.batch_sizes(batch, it) == counted(homogeneous, batch[3])
        assert sum(n > 0 for _, n in homogeneous.batch_sizes(batch, it)) == 1
    with pytest.raises(RuntimeError, match="the batch holds 4 images, the batch sampler planned"):
        homogeneous.batch_sizes((batch[0][:4],) + tuple(batch[1:]), it)  # not the planned batch


def test_recompute_selects_one_gradient_all_reduce_per_step(make_config):
    assert not Trainer(make_config()).sync_once
    assert Trainer(make_config("Arch.Backbone.recompute=true")).sync_once


def test_only_the_newest_iter_checkpoints_stay(make_config, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(make_config("Global.max_iters=5", "Global.save_interval=1", "Global.keep_checkpoints=2",
                                  output_dir=out))
    trainer.train()
    names = sorted(p.name for p in out.iterdir() if p.name.startswith(("iter_", "latest")))
    # the end's save is iter_5 too, and pruned after like every save
    assert names == [f"{p}.{e}" for p in ("iter_4", "iter_5") for e in ("pdopt", "pdparams", "pdstates")] + ["latest"]
    log = (out / "train.log").read_text()
    assert all(f"removed checkpoint {out / f'iter_{i}'} (Global.keep_checkpoints=2)" in log for i in (1, 2, 3))


def test_a_save_of_the_iteration_best_model_names_keeps_the_evaluated_weights(make_config, tmp_path):
    """A run resumed from an earlier checkpoint writes an iteration again: best_model, a pointer to
    that iteration's checkpoint, becomes a copy of it first."""
    from ppufo.io.weights import weights_file
    out = tmp_path / "run"
    trainer = Trainer(make_config("Global.max_iters=3", output_dir=out))
    batch = next(iter(trainer.loader))
    trainer.train_step(batch, 1)
    trainer.save(1)
    trainer.best = {"score": 0.5, "iteration": 1}
    trainer.save_best(1)
    assert weights_file(str(out / "best_model")) == str(out / "iter_1.pdparams")  # a pointer: no copy
    evaluated = (out / "iter_1.pdparams").read_bytes()
    trainer.train_step(batch, 2)
    trainer.save(1)  # as a run resumed from iter_0 would on reaching iteration 1 again
    assert (out / "iter_1.pdparams").read_bytes() != evaluated
    assert (out / "best_model.pdparams").read_bytes() == evaluated
    assert read_states(str(out / "best_model"))["best"] == {"score": 0.5, "iteration": 1}
    assert f"best_model named {out / 'iter_1'}, which this save replaces" in (out / "train.log").read_text()



def test_a_run_saved_as_a_full_latest_set_by_an_earlier_version_resumes_and_its_first_save_points(
        make_config, tmp_path):
    from ppufo.utils.checkpoint import save_checkpoint
    out = tmp_path / "run"
    old = Trainer(make_config("Global.max_iters=4", output_dir=out))
    losses_of(old, 2)
    save_checkpoint(str(out / "latest"), old.model, old.optimizer, old.lr,  # what Trainer.save("latest", 2) wrote
                    {"iteration": 2, "best": old.best, "train_flops": old.train_flops})
    resumed = Trainer(make_config("Global.max_iters=4", f"Global.checkpoints={out / 'latest'}", output_dir=out))
    assert resumed.start_iter == 2
    for a, b in zip(old.model.state_dict().values(), resumed.model.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert resumed.train() == 4
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("latest")) == ["latest"]  # the copy is gone
    assert read_states(str(out / "latest"))["iteration"] == 4
