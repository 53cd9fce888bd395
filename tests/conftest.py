import copy
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.chdir(ROOT)  # configs and tools use paths relative to the repo root

from ppufo.utils.device import resolve_cpu_threads, set_cpu_threads  # noqa: E402

set_cpu_threads(resolve_cpu_threads(0))  # the tests' own Paddle work uses every core, as the tools do

QUICK_SETS = ["market1501", "veri776", "sop", "ms1m", "faces_val"]
EVAL_ONLY_SETS = ["dukemtmc", "msmt17", "vehicleid", "veriwild"]  # quickstart test sets only


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The quickstart's demo sets, generated once per test session."""
    from ppufo.data.demo import write_all
    root = str(tmp_path_factory.mktemp("demo"))
    write_all(root, seed=0, sets=QUICK_SETS)
    return root


@pytest.fixture(scope="session")
def full_demo_root(demo_root, tmp_path_factory):
    """demo_root plus the sets the quickstart only evaluates on (all 13 test protocols)."""
    from ppufo.data.demo import write_all
    root = tmp_path_factory.mktemp("demo_full")
    for name in QUICK_SETS:
        os.symlink(os.path.join(demo_root, name), root / name)
    write_all(str(root), seed=0, sets=EVAL_ONLY_SETS)
    return str(root)


def tiny_config(demo_root, output_dir, overrides=()):
    """The quickstart config shrunk to run a step in well under a second."""
    from ppufo.utils.config import load_config
    base = ["Global.data_root=" + demo_root, "Global.output_dir=" + str(output_dir),
            "Global.generate_demo_data=false", "Global.image_shape=[3,32,32]",
            "DataLoader.Train.transforms.0.Resize.size=[32,32]", "Global.max_iters=4",
            "Global.log_interval=1", "Global.use_visualdl=false", "Arch.Backbone.depth=2",
            "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0",
            "Tasks.face.batch_size=8", "Tasks.person.batch_size=8", "Tasks.vehicle.batch_size=8",
            "Tasks.product.batch_size=8"]
    return load_config(os.path.join(ROOT, "configs/quickstart.yaml"), base + list(overrides))


@pytest.fixture
def make_config(demo_root, tmp_path):
    def make(*overrides, output_dir=None):
        return copy.deepcopy(tiny_config(demo_root, output_dir or tmp_path / "out", overrides))
    return make
