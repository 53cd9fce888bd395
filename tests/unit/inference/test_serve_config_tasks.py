"""ppufo-serve -c <config> with several task models listed in the config (Global.tasks): each task's
predictor is the config's with its own model_dir and index_dir, --task adds more, and bad entries
are errors naming the key."""
import copy
import os
import threading

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import ROOT, tiny_config
from ppufo.cli import serve as serve_cli
from ppufo.engine.exporter import export_task
from ppufo.inference.deploy_config import load_deploy_config
from ppufo.inference.recognizer import Recognizer
from ppufo.inference.serving import TaskSpec, serve
from ppufo.utils.errors import ConfigError
from serving_fakes import encode, get, post

BASE = os.path.join(ROOT, "deploy", "configs", "cpu_x86.yaml")


def config_with(tmp_path, global_=None, index=None, name="serve.yaml"):
    """cpu_x86.yaml with these Global / IndexProcess keys changed, written to ``tmp_path``."""
    with open(BASE, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["Global"].update({"model_dir": None, **(global_ or {})})
    cfg["IndexProcess"].update(index or {})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


TWO = {"person": {"model_dir": "m/p", "index_dir": "i/p"}, "vehicle": {"model_dir": "m/v"}}


def test_each_task_of_the_config_gets_the_config_with_its_own_folders_and_task_flags_add_more(tmp_path, built):
    path = config_with(tmp_path, {"tasks": TWO})
    s = serve_cli.service_settings(serve_cli.parse_args(["-c", path, "--task", "face=m/f:i/f"]))
    assert s.tasks == [TaskSpec("person", "m/p", "i/p", "rec1"), TaskSpec("vehicle", "m/v", None, "rec2"),
                       TaskSpec("face", "m/f", "i/f", "rec3")]
    plain = load_deploy_config(config_with(tmp_path, name="plain.yaml"))
    for cfg, (model_dir, index_dir) in zip(built, [("m/p", "i/p"), ("m/v", None), ("m/f", "i/f")]):
        want = copy.deepcopy(plain)
        want["Global"].update(model_dir=model_dir, batch_size=s.max_batch)
        want["IndexProcess"]["index_dir"] = index_dir
        assert cfg == want and "tasks" not in cfg["Global"]


@pytest.mark.parametrize("global_, index, message", [
    ({"tasks": {"person": {"index_dir": "i"}}}, None, "Global.tasks.person.model_dir: required key is missing"),
    ({"tasks": {"person": {"model_dir": "m", "gallery": "g"}}}, None,
     "Global.tasks.person: unknown key(s) ['gallery']; allowed: ['index_dir', 'model_dir']"),
    ({"tasks": {"person": {"model_dir": 3}}}, None, "Global.tasks.person.model_dir"),
    ({"tasks": {"person": {"model_dir": ""}}}, None, "Global.tasks.person.model_dir: expected the task's exported"),
    ({"tasks": {"my task": {"model_dir": "m"}}}, None, "Global.tasks.my task: task name 'my task': expected 1 to 64"),
    ({"tasks": ["person", "vehicle"]}, None, "Global.tasks: expected a mapping"),
    ({"tasks": {}}, None, "Global.tasks: needs at least one entry"),
    ({"tasks": TWO, "model_dir": "m"}, None, "Global.tasks: names each task's model_dir; leave Global.model_dir null"),
    ({"tasks": TWO}, {"index_dir": "i"}, "IndexProcess.index_dir: with Global.tasks each task names its own"),
])
def test_bad_task_entries_name_the_key(tmp_path, global_, index, message):
    path = config_with(tmp_path, global_, index)
    with pytest.raises(ConfigError) as e:
        load_deploy_config(path)
    assert message in str(e.value) and path in str(e.value)


@pytest.mark.parametrize("argv, message", [
    (["--task", "person=m/x"], "--task person=...: task person is also in {} (Global.tasks.person); define each "
                               "task once"),
    (["--model_dir", "m"], "--model_dir / --index_dir: {} lists its task models under Global.tasks"),
])
def test_flags_that_clash_with_the_config_tasks_are_refused(tmp_path, built, argv, message):
    path = config_with(tmp_path, {"tasks": TWO})
    with pytest.raises(ValueError) as e:
        serve_cli.service_settings(serve_cli.parse_args(["-c", path] + argv))
    assert str(e.value).startswith(message.format(path)) and not built


def test_a_config_of_tasks_without_tasks_is_one_model_again_and_predict_says_so(tmp_path):
    path = config_with(tmp_path, {"tasks": TWO})
    assert "tasks" not in load_deploy_config(path, ["Global.tasks=null", "Global.model_dir=m"])["Global"]
    with pytest.raises(ConfigError, match=r"Global.tasks: lists task models for ppufo-serve \(person, vehicle\)"):
        Recognizer.from_config(load_deploy_config(path))


def test_a_service_of_two_config_tasks_answers_each_with_its_own_model(exported, demo_root, tmp_path):
    """The person and vehicle heads of one model, exported as two task models: each route gets the
    features its own model gives the image alone."""
    model, person = exported
    vehicle = str(tmp_path / "vehicle")
    export_task(model, "vehicle", tiny_config(demo_root, tmp_path, ["Export.task=vehicle"]), vehicle)
    path = config_with(tmp_path, {"tasks": {"person": {"model_dir": person}, "vehicle": {"model_dir": vehicle}},
                                  "cpu_num_threads": 1})
    a = serve_cli.parse_args(["-c", path, "--port", "0"])
    service = serve_cli.service_settings(a)
    srv = serve(tasks=service.tasks, port=0, threads=4, batch_wait_ms=a.batch_wait_ms, max_batch=service.max_batch)
    threading.Thread(target=srv.run, daemon=True).start()
    image = encode(Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 48, 3), dtype=np.uint8)))
    try:
        got = {task: post(srv.port, image, f"/predict/{task}") for task in ("person", "vehicle")}
        assert {t: status for t, (status, _) in got.items()} == {"person": 200, "vehicle": 200}
        for task, folder in (("person", person), ("vehicle", vehicle)):
            alone = Recognizer(folder, batch_size=1, backend="paddle", cpu_threads=1).features([image])[0]
            np.testing.assert_allclose(got[task][1]["feature"], alone, atol=1e-5)
        assert np.abs(np.subtract(got["person"][1]["feature"], got["vehicle"][1]["feature"])).max() > 1e-3
        assert sorted(get(srv.port)[1]["tasks"]) == ["person", "vehicle"]
    finally:
        srv.shutdown()
