"""A corrupt image sampled mid-run ends training with an error naming it, instead of a hang."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import QUICK_SETS, ROOT


@pytest.fixture(scope="module")
def bad_root(demo_root, tmp_path_factory):
    """The demo sets with every Market1501 training image but the first (decoded before
    training starts, to check the image shape) corrupt, so a mid-run batch hits one."""
    root = tmp_path_factory.mktemp("bad_data")
    shutil.copytree(os.path.join(demo_root, "market1501"), root / "market1501")
    for name in QUICK_SETS:
        if name != "market1501":
            os.symlink(os.path.join(demo_root, name), root / name)
    files = sorted((root / "market1501" / "bounding_box_train").iterdir())
    bad = files[len(files) // 2]
    bad.write_bytes(b"not a jpeg")
    return root, bad.name


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_mid_run_exits_naming_it(bad_root, tmp_path, workers):
    root, bad = bad_root
    cmd = [sys.executable, os.path.join(ROOT, "tools/train.py"), "-c", os.path.join(ROOT, "configs/quickstart.yaml"),
           "-o", f"Global.data_root={root}", f"Global.output_dir={tmp_path}/out", "Global.generate_demo_data=false",
           "Global.image_shape=[3,32,32]", "DataLoader.Train.transforms.0.Resize.size=[32,32]",
           "Global.max_iters=500", "Global.log_interval=50", "Global.use_visualdl=true", "Arch.Backbone.depth=2",
           f"DataLoader.Train.num_workers={workers}", "DataLoader.Eval.num_workers=0", "Global.eval_interval=0",
           "Global.save_interval=0", "Tasks.face.batch_size=8", "Tasks.person.batch_size=8",
           "Tasks.vehicle.batch_size=8", "Tasks.product.batch_size=8"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    took = time.time() - start
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert took < 30, f"took {took:.0f}s"
    assert bad in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "Blocking queue is killed" not in proc.stderr
