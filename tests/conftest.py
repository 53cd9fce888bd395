import copy
import os

import pytest

from helpers import EVAL_ONLY_SETS, QUICK_SETS, ROOT, tiny_config
from ppufo.utils.device import resolve_cpu_threads, set_cpu_threads

os.chdir(ROOT)  # configs and tools use paths relative to the repo root
set_cpu_threads(resolve_cpu_threads(0))  # the tests' own Paddle work uses every core, as the tools do


def pytest_collection_modifyitems(items):
    """Everything under tests/e2e/ is slow (whole commands); `-m "not slow"` leaves it out."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)
@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The quickstart's demo sets, generated once per test session."""
    from ppufo.demo import write_all
    root = str(tmp_path_factory.mktemp("demo"))
    write_all(root, seed=0, sets=QUICK_SETS)
    return root


@pytest.fixture(scope="session")
def full_demo_root(demo_root, tmp_path_factory):
    """demo_root plus the sets the quickstart only evaluates on (all 13 test protocols)."""
    from ppufo.demo import write_all
    root = tmp_path_factory.mktemp("demo_full")
    for name in QUICK_SETS:
        os.symlink(os.path.join(demo_root, name), root / name)
    write_all(str(root), seed=0, sets=EVAL_ONLY_SETS)
    return str(root)


@pytest.fixture
def make_config(demo_root, tmp_path):
    def make(*overrides, output_dir=None):
        return copy.deepcopy(tiny_config(demo_root, output_dir or tmp_path / "out", overrides))
    return make


@pytest.fixture(scope="session")
def ufo_tree(full_demo_root, tmp_path_factory):
    """(root, info): the UFO reference's released test-set tree, copied from the session's demo
    sets (same seed, so the same bytes)."""
    from ppufo.demo import WRITERS, write_ufo_test_datasets
    from ppufo.demo.released import TREE
    root = str(tmp_path_factory.mktemp("ufo") / "ufo_test_datasets")
    info = write_ufo_test_datasets(root, WRITERS, seed=0, reuse={s: os.path.join(full_demo_root, s)
                                                                 for s, _ in TREE.values()})
    return root, info
