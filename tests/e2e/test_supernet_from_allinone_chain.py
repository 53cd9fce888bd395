"""The documented One-for-All chain: the quickstart All-in-One, then the supernet quickstart started
from it by its default Global.pretrained_model (docs/one_for_all.md)."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT


def train(config, cwd, *overrides):
    """tools/train.py run in ``cwd`` (so ./output/... is there), with this checkout's ppufo."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, f"{ROOT}/tools/train.py", "-c", f"{ROOT}/configs/{config}", "-o",
                           *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_supernet_quickstart_starts_from_the_quickstart_allinone_by_default(full_demo_root, tmp_path):
    from ppufo.arch import build_model
    from ppufo.arch.trained import load_pretrained, load_trained_model
    from ppufo.utils.config import load_config
    # both shrunk alike (2 blocks at 32x32); the supernet keeps its default Global.pretrained_model
    shrink = [f"Global.data_root={full_demo_root}", "Global.generate_demo_data=false", "Global.image_shape=[3,32,32]",
              "DataLoader.Train.transforms.0.Resize.size=[32,32]", "Arch.Backbone.depth=2", "Global.log_interval=1",
              "Global.use_visualdl=false", "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0",
              *[f"Tasks.{t}.batch_size=8" for t in ("face", "person", "vehicle", "product")]]
    train("quickstart.yaml", tmp_path, *shrink, "Global.max_iters=2")
    log = train("supernet_quickstart.yaml", tmp_path, *shrink, "Arch.Backbone.depths=[1,2]", "Global.max_iters=1")
    assert "Global.pretrained_model: loaded pretrained weights from ./output/quickstart/iter_2.pdparams" in log
    assert "0 start fresh" in log and "from scratch" not in log

    aio = paddle.load(str(tmp_path / "output/quickstart/iter_2.pdparams"))  # what latest names
    sup = paddle.load(str(tmp_path / "output/supernet_quickstart/iter_1.pdparams"))
    # one AdamW step (lr 1e-3) from the All-in-One: every FFN path within a step of its MLP (a
    # supernet from random weights would differ by ~0.02, the init's std)
    for i in range(2):
        for path in ["shared", "task.face", "task.person", "task.vehicle", "task.product"]:
            for w in ("fc1.weight", "fc2.weight"):
                diff = np.abs(np.asarray(sup[f"backbone.blocks.{i}.ffn.{path}.{w}"])
                              - np.asarray(aio[f"backbone.blocks.{i}.mlp.{w}"])).max()
                assert diff < 2e-3, (i, path, w, diff)

    # at step 0, the supernet of the run's own config gives the All-in-One model's features on every path
    at = [f"Global.data_root={full_demo_root}", f"Global.pretrained_model={tmp_path}/output/quickstart/latest"]
    cfg = load_config(str(tmp_path / "output/supernet_quickstart/config.yaml"), at)
    net = build_model(cfg, {t: int(np.asarray(aio[f"heads.{t}.classifier.weight"]).shape[-1]) for t in cfg["Tasks"]})
    load_pretrained(net, cfg)
    plain = load_trained_model(load_config(str(tmp_path / "output/quickstart/config.yaml"), at))
    net.eval()
    x = paddle.to_tensor(np.random.RandomState(0).uniform(-1, 1, (2, 3, 32, 32)).astype("float32"))
    sp = net.space
    for task in cfg["Tasks"]:
        want = plain.embed(x, task).numpy()
        for path in ("shared", "task", "mix"):
            net.set_subnets({task: sp.uniform(2, 3, path, 1.0)})
            np.testing.assert_allclose(net.embed(x, task).numpy(), want, atol=1e-5, err_msg=f"{task} {path}")
