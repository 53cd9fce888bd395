"""A corrupt image or RecordIO record sampled mid-run ends training with an error naming it,
instead of a hang."""
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from helpers import QUICK_SETS, ROOT
from ppufo.data.datasets.face import MS1MRecordIO
from ppufo.data.samplers.identity import RandomSampler

FACE_BATCH, SEED = 8, 42  # the run's face batch size and the quickstart's Global.seed


def demo_copy(demo_root, root, copied):
    """``root`` holding the quick demo sets: ``copied`` ones copied (to be damaged), the rest linked."""
    for name in QUICK_SETS:
        if name in copied:
            shutil.copytree(os.path.join(demo_root, name), root / name)
        else:
            os.symlink(os.path.join(demo_root, name), root / name)
    return root


def train(root, out, workers, cwd):
    """(completed process, seconds) of a 500-iteration tiny run on ``root``."""
    cmd = [sys.executable, os.path.join(ROOT, "tools/train.py"), "-c", os.path.join(ROOT, "configs/quickstart.yaml"),
           "-o", f"Global.data_root={root}", f"Global.output_dir={out}", "Global.generate_demo_data=false",
           "Global.image_shape=[3,32,32]", "DataLoader.Train.transforms.0.Resize.size=[32,32]",
           "Global.max_iters=500", "Global.log_interval=50", "Global.use_visualdl=true", "Arch.Backbone.depth=2",
           f"DataLoader.Train.num_workers={workers}", "DataLoader.Eval.num_workers=0", "Global.eval_interval=0",
           "Global.save_interval=0", f"Tasks.face.batch_size={FACE_BATCH}", "Tasks.person.batch_size=8",
           "Tasks.vehicle.batch_size=8", "Tasks.product.batch_size=8", f"Global.seed={SEED}"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(cwd))
    return proc, time.time() - start


def assert_stopped_naming(proc, took, name):
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert took < 30, f"took {took:.0f}s"
    assert name in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "Blocking queue is killed" not in proc.stderr


@pytest.fixture(scope="module")
def bad_root(demo_root, tmp_path_factory):
    """The demo sets with every Market1501 training image but the first (decoded before
    training starts, to check the image shape) corrupt, so a mid-run batch hits one."""
    root = demo_copy(demo_root, tmp_path_factory.mktemp("bad_data"), ["market1501"])
    files = sorted((root / "market1501" / "bounding_box_train").iterdir())
    bad = files[len(files) // 2]
    bad.write_bytes(b"not a jpeg")
    return root, bad.name


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_mid_run_exits_naming_it(bad_root, tmp_path, workers):
    root, bad = bad_root
    proc, took = train(root, tmp_path / "out", workers, tmp_path)
    assert_stopped_naming(proc, took, bad)


def face_key_at_iteration(num_images, iteration):
    """The MS1M image key the face RandomSampler draws first at ``iteration`` (1-based): face is
    the first task, so its dataset index i is global index i, and image keys are 1..N."""
    sampler = RandomSampler(list(range(num_images)), FACE_BATCH, seed=SEED)
    for _ in range(iteration - 1):
        sampler.next_batch(build=False)
    return int(sampler.next_batch()[0]) + 1


@pytest.mark.parametrize("damage,workers", [("continuation", 0), ("continuation", 1), ("jpeg_marker", 1)])
def test_corrupt_record_mid_run_exits_naming_it(demo_root, tmp_path, damage, workers):
    """A record that still indexes (its header and label read fine) but cannot be read whole
    (continuation flag 0 -> 1: the reader looks for a next part) or decoded (JPEG SOI marker
    broken) is found only when sampled, here at iteration 10."""
    os.makedirs(tmp_path / "data")
    root = demo_copy(demo_root, tmp_path / "data", ["ms1m"])
    rec = root / "ms1m" / "train.rec"
    ms1m = MS1MRecordIO(str(root / "ms1m"), label_cache=False)
    key = face_key_at_iteration(ms1m.num_images, 10)
    offset = ms1m.reader.offset(key)
    ms1m.reader.close()
    with open(rec, "r+b") as fh:
        fh.seek(offset)
        magic, lrec = struct.unpack("<II", fh.read(8))
        assert lrec >> 29 == 0  # a record in one piece
        if damage == "continuation":
            fh.seek(offset + 4)
            fh.write(struct.pack("<I", lrec | 1 << 29))
        else:
            fh.seek(offset + 8 + 24)  # the image bytes follow the 24-byte IRHeader
            assert fh.read(2) == b"\xff\xd8"
            fh.seek(offset + 8 + 24)
            fh.write(b"\x00\x00")
    proc, took = train(root, tmp_path / "out", workers, tmp_path)
    assert_stopped_naming(proc, took, f"train.rec: record {key} at offset {offset}")
    assert "[Iter: 50/500]" not in proc.stdout  # stopped at iteration 10, not later
