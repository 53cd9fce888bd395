"""latest and best_model as pointer files to iter_<n> checkpoints, resolved wherever a checkpoint
prefix is taken; full latest.* sets of earlier versions still load."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from ppufo.io.weights import load_weights, weights_file
from ppufo.utils import checkpoint, pointer
from ppufo.utils.checkpoint import (check_output_dir, load_checkpoint, point, prune_checkpoints, read_states,
                                    resolve_prefix, saved_best, saved_checkpoints, save_checkpoint)
from ppufo.utils.errors import ConfigError


def make(width=6):
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, width), paddle.nn.Linear(width, width), paddle.nn.Linear(width, 3))
    opt = paddle.optimizer.AdamW(learning_rate=0.1, parameters=model.parameters())
    return model, opt


def trained(steps, width=6):
    model, opt = make(width)
    for _ in range(steps):
        (model(paddle.ones([2, 6])) ** 2).mean().backward()
        opt.step()
        opt.clear_grad()
    return model, opt


def save_iter(folder, it, latest=True):
    model, opt = trained(it)
    save_checkpoint(str(folder / f"iter_{it}"), model, opt, states={"iteration": it, "best": {"score": None}})
    if latest:
        point(str(folder), "latest", it)
    return model


def weights(model):
    return [v.numpy() for v in model.state_dict().values()]


def test_latest_resolves_to_the_checkpoint_it_names_everywhere_a_prefix_is_taken(tmp_path):
    save_iter(tmp_path, 2)
    model = save_iter(tmp_path, 3)
    assert json.loads((tmp_path / "latest").read_text()) == {"checkpoint": "iter_3", "iteration": 3}
    assert sorted(os.listdir(tmp_path)) == sorted(["latest"] + [f"iter_{i}{e}" for i in (2, 3)
                                                                for e in (".pdparams", ".pdopt", ".pdstates")])
    for given in ("latest", "latest.pdparams", "latest.pdstates"):  # the old habit still works
        assert resolve_prefix(tmp_path / given) == (str(tmp_path / "iter_3"), {"checkpoint": "iter_3", "iteration": 3})
        assert read_states(str(tmp_path / given))["iteration"] == 3
        assert weights_file(str(tmp_path / given)) == str(tmp_path / "iter_3.pdparams")
    assert resolve_prefix(tmp_path / "iter_2") == (str(tmp_path / "iter_2"), None)
    assert checkpoint.has_checkpoint(str(tmp_path / "latest")) and not checkpoint.has_checkpoint(str(tmp_path / "x"))
    other, opt = make()
    assert load_checkpoint(str(tmp_path / "latest"), other, opt)["iteration"] == 3
    for a, b in zip(weights(model), weights(other)):
        np.testing.assert_array_equal(a, b)
    fresh, _ = make()
    assert load_weights(fresh, str(tmp_path / "latest")).path == str(tmp_path / "iter_3.pdparams")


def test_an_old_full_latest_set_still_loads_and_the_first_pointer_replaces_it(tmp_path):
    model, opt = trained(4)
    save_checkpoint(str(tmp_path / "latest"), model, opt, states={"iteration": 4})  # as ppufo wrote it before
    assert resolve_prefix(str(tmp_path / "latest")) == (str(tmp_path / "latest"), None)
    other, opt2 = make()
    assert load_checkpoint(str(tmp_path / "latest"), other, opt2)["iteration"] == 4
    assert weights_file(str(tmp_path / "latest")) == str(tmp_path / "latest.pdparams")
    save_iter(tmp_path, 5)  # a resumed run's first save
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("latest")) == ["latest"]
    assert read_states(str(tmp_path / "latest"))["iteration"] == 5


def test_best_model_is_a_pointer_with_its_score_or_a_full_set_and_each_replaces_the_other(tmp_path):
    save_iter(tmp_path, 2)
    point(str(tmp_path), "best_model", 2, best={"score": 0.5, "iteration": 2})
    # iter_2 was saved before the evaluation that made it best: the pointer's score is the one
    assert read_states(str(tmp_path / "iter_2"))["best"] == {"score": None}
    assert read_states(str(tmp_path / "best_model"))["best"] == {"score": 0.5, "iteration": 2}
    assert saved_best(str(tmp_path)) == {"score": 0.5, "iteration": 2}
    model, opt = trained(3)
    save_checkpoint(str(tmp_path / "best_model"), model, opt,
                    states={"iteration": 3, "best": {"score": 0.7, "iteration": 3}})
    assert not (tmp_path / "best_model").exists()  # the full set replaced the pointer
    assert saved_best(str(tmp_path)) == {"score": 0.7, "iteration": 3}
    save_iter(tmp_path, 4, latest=False)
    point(str(tmp_path), "best_model", 4, best={"score": 0.9, "iteration": 4})
    assert not [n for n in os.listdir(tmp_path) if n.startswith("best_model.")]  # and the pointer the set
    assert saved_best(str(tmp_path)) == {"score": 0.9, "iteration": 4}


def test_a_pointer_to_a_missing_or_moved_checkpoint_names_both(tmp_path):
    save_iter(tmp_path, 2)
    save_iter(tmp_path, 3)
    checkpoint.remove_set(str(tmp_path / "iter_3"))
    assert not checkpoint.has_checkpoint(str(tmp_path / "latest"))  # benchmark/gpnas_quality.py trains again
    with pytest.raises(ConfigError, match=re.escape(f"Global.checkpoints: {tmp_path / 'latest'} points to "
                                                    f"{tmp_path / 'iter_3'} (iteration 3), but {tmp_path / 'iter_3'}"
                                                    f".pdstates is not there") + ".*newest complete checkpoint "
                                                    f"there is {re.escape(str(tmp_path / 'iter_2'))} \\(iteration 2\\)"):
        read_states(str(tmp_path / "latest"))
    with pytest.raises(ConfigError, match=r"Global.pretrained_model: .*latest points to .*iter_3"):
        weights_file(str(tmp_path / "latest"), "Global.pretrained_model")
    (tmp_path / "latest").write_text(json.dumps({"checkpoint": "iter_2", "iteration": 7}))
    with pytest.raises(ConfigError, match=r"points to .*iter_2 at iteration 7, but .*iter_2.pdstates is of iteration 2"):
        read_states(str(tmp_path / "latest"))
    os.truncate(tmp_path / "iter_2.pdparams", 10)
    (tmp_path / "latest").write_text(json.dumps({"checkpoint": "iter_2", "iteration": 2}))
    with pytest.raises(ConfigError, match=r"iter_2 is not one complete checkpoint: .*iter_2.pdparams has 10 bytes"):
        resolve_prefix(str(tmp_path / "latest"))


@pytest.mark.parametrize("text", ['{"iteration": 3}', '{"checkpoint": "../elsewhere/iter_3", "iteration": 3}',
                                  '{"checkpoint": "iter_3", "iteration": "3"}', "{not json"])
def test_a_malformed_pointer_is_refused_naming_it(tmp_path, text):
    save_iter(tmp_path, 3)
    (tmp_path / "latest").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"Global.checkpoints: {tmp_path / 'latest'}: ")
                       + "(expected a checkpoint pointer|not a readable checkpoint pointer)"):
        read_states(str(tmp_path / "latest"))


def test_a_file_that_is_no_pointer_is_read_as_weights(tmp_path):
    model, _ = trained(1)
    paddle.save(model.state_dict(), str(tmp_path / "latest"))  # a pickled state dict under that name
    assert weights_file(str(tmp_path / "latest")) == str(tmp_path / "latest")
    assert pointer.read_pointer(str(tmp_path / "latest")) is None


def test_a_kill_before_the_pointer_rename_keeps_the_previous_latest(tmp_path, monkeypatch):
    save_iter(tmp_path, 2)
    model, opt = trained(3)
    save_checkpoint(str(tmp_path / "iter_3"), model, opt, states={"iteration": 3})

    def killed(src, dst):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(pointer.os, "replace", killed)
        m.setattr(pointer.os, "remove", lambda p: None)  # a kill cleans nothing up
        with pytest.raises(KeyboardInterrupt):
            point(str(tmp_path), "latest", 3)
    assert read_states(str(tmp_path / "latest"))["iteration"] == 2
    left = [n for n in os.listdir(tmp_path) if ".tmp" in n]
    assert left == [f"latest.pointer.tmp{os.getpid()}"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.rename(tmp_path / left[0], tmp_path / f"latest.pointer.tmp{dead.pid}")  # as if its writer died
    checkpoint.remove_stale_temporaries(str(tmp_path))
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_pruning_keeps_what_latest_and_best_model_point_to(tmp_path):
    for it in (1, 2, 3, 4, 5):
        save_iter(tmp_path, it, latest=False)
    point(str(tmp_path), "best_model", 2, best={"score": 0.9, "iteration": 2})
    point(str(tmp_path), "latest", 5)
    removed = prune_checkpoints(str(tmp_path), 1)
    assert removed == [str(tmp_path / f"iter_{i}") for i in (4, 3, 1)]
    assert sorted(os.listdir(tmp_path)) == sorted(["latest", "best_model"] + [
        f"iter_{i}{e}" for i in (2, 5) for e in (".pdparams", ".pdopt", ".pdstates")])
    assert read_states(str(tmp_path / "best_model"))["iteration"] == 2


def test_a_folder_with_pointers_is_another_runs(tmp_path):
    save_iter(tmp_path, 3)
    assert saved_checkpoints(str(tmp_path)) == ["iter_3", "latest"]
    with pytest.raises(ConfigError, match=r"already holds the checkpoints of another run \(iter_3, latest, "
                                          r"latest at iteration 3\)"):
        check_output_dir(str(tmp_path), overwrite=False)
    check_output_dir(str(tmp_path), overwrite=True)


def test_detach_copies_what_best_model_names_before_that_checkpoint_is_written_again(tmp_path):
    assert checkpoint.detach(str(tmp_path), "best_model") is None  # no pointer: nothing to do
    best = save_iter(tmp_path, 2)
    point(str(tmp_path), "best_model", 2, best={"score": 0.5, "iteration": 2})
    assert checkpoint.detach(str(tmp_path), "best_model") == str(tmp_path / "iter_2")
    assert not (tmp_path / "best_model").exists()  # a full set now, with the pointer's score
    assert read_states(str(tmp_path / "best_model"))["best"] == {"score": 0.5, "iteration": 2}
    model, opt = trained(5)
    save_checkpoint(str(tmp_path / "iter_2"), model, opt, states={"iteration": 2})  # iteration 2 again
    again, opt2 = make()
    load_checkpoint(str(tmp_path / "best_model"), again, opt2)  # its recorded hashes hold for the copy
    for a, b in zip(weights(best), weights(again)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights(model)[0], weights(again)[0])
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]
