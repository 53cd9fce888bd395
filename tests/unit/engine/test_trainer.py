"""End-to-end behaviour of the All-in-One trainer on generated demo data."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppufo.engine.trainer import Trainer
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
