"""Several task models in one HTTP service, and batching: /predict/<task> reaches its own model and
gallery, the bare routes ask which task, unknown tasks are 404, /health covers every task, and
concurrent requests share predictor calls while each client gets its own feature. ppufo-serve's
--task, --batch_wait_ms, --max_batch and -c (every task's predictor built from the deploy config, as
ppufo-predict builds it). Stand-in models (serving_fakes.FakeRecognizer); test_serving_backends.py
runs the real one."""
import copy
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from ppufo.cli import serve as serve_cli
from ppufo.inference.backends import config_backend
from ppufo.inference.deploy_config import load_deploy_config, predictor_kwargs
from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.recognizer import FORMATS
from ppufo.inference.served_task import ServedTask
from ppufo.inference.serving import TaskSpec
from ppufo.io.image import decode_image
from serving_fakes import (BAD_REQUESTS, GREEN, RED, FakeRecognizer, check_bad_request, encode, exchange, get,
                           on_task, post, server_options)

CONFIGS = os.path.join(ROOT, "deploy", "configs")
SHADES = [encode(Image.new("RGB", (24, 24), (10 + 13 * i, 200 - 11 * i, 60 + 7 * (i % 5)))) for i in range(16)]


def two_tasks(person=None, vehicle=None, **kwargs):
    """person: colour features, the red/green/blue gallery, updates on; vehicle: channels reversed, a
    gallery of its own, no updates."""
    return [ServedTask("person", person or FakeRecognizer(),
                       GalleryIndex(np.eye(3, dtype=np.float32), ["red", "green", "blue"], ["r", "g", "b"]),
                       allow_updates=True, **kwargs),
            ServedTask("vehicle", vehicle or FakeRecognizer(channels=(2, 1, 0)),
                       GalleryIndex(np.eye(3, dtype=np.float32), ["c0", "c1", "c2"], ["0", "1", "2"]), **kwargs)]


def unbatched(image_bytes, rec=None):
    """The feature of one image through the stand-in model alone (one call, no batcher)."""
    return (rec or FakeRecognizer()).features_of_images([decode_image(image_bytes, FORMATS)])[0]


def post_all(port, bodies, paths):
    """POST bodies[i] to paths[i], all at once from one thread each -> [(status, body)]."""
    out = [None] * len(bodies)

    def one(i):
        out[i] = post(port, bodies[i], paths[i])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_each_task_is_served_by_its_own_model_and_gallery(server):
    person, vehicle = FakeRecognizer(), FakeRecognizer(channels=(2, 1, 0))
    srv = server(tasks=two_tasks(person, vehicle))
    status, body = post(srv.port, RED, "/predict/person?topk=1")
    assert status == 200 and body["task"] == "person" and body["top"][0]["label"] == "red"
    np.testing.assert_allclose(body["feature"], unbatched(RED), atol=1e-6)
    status, body = post(srv.port, RED, "/predict/vehicle?topk=1")
    assert status == 200 and body["task"] == "vehicle" and body["top"][0]["label"] == "c2"  # its own gallery
    np.testing.assert_allclose(body["feature"], unbatched(RED)[::-1], atol=1e-6)  # its own model
    assert (person.calls, vehicle.calls) == (1, 1)
    status, body = post(srv.port, GREEN, "/gallery/add/person?label=lime")
    assert (status, body["task"], body["gallery"]) == (200, "person", 4)
    assert post(srv.port, GREEN, "/predict/person?topk=1")[1]["top"][0]["label"] in ("green", "lime")


def get_or_post(port, method, path):
    if method == "POST":
        return post(port, RED, path)
    return exchange(port, f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())


@pytest.mark.parametrize("method, path, code, message", [
    ("POST", "/predict", 400, "/predict: this service holds 2 task models; use /predict/<task> with task one of "
                              "['person', 'vehicle']"),
    ("POST", "/predict?topk=3", 400, "with task one of ['person', 'vehicle']"),
    ("POST", "/predict/face", 404, "unknown task 'face' in /predict/<task>: this service has ['person', 'vehicle']"),
    ("POST", "/predict/", 404, "unknown task ''"),
    ("POST", "/predict/person/x", 404, "unknown task 'person/x'"),
    ("POST", "/predict/" + "x" * 300, 404, "unknown task '" + "x" * 64 + "...' in"),
    ("POST", "/gallery/add?label=x", 400, "/gallery/add: this service holds 2 task models"),
    ("POST", "/gallery/remove/face?id=1", 404, "unknown task 'face' in /gallery/remove/<task>"),
    ("POST", "/gallery/add/vehicle?label=x", 404, "gallery updates are off for task vehicle"),
    ("GET", "/predict/person", 405, "GET /predict/person: use POST /predict/<task> or GET /health; "
                                    "POST /gallery/add/<task> and /gallery/remove/<task>"),
    ("POST", "/health/person", 405, "POST /health/person"),
    ("GET", "/health/face", 404, "unknown task 'face' in /health/<task>"),
    ("POST", "/nowhere", 404, "unknown path /nowhere: POST /predict/<task> with the image bytes, task one of "
                              "['person', 'vehicle'], or GET /health"),
])
def test_a_service_of_several_tasks_says_which_ones_it_has(server, method, path, code, message):
    srv = server(tasks=two_tasks())
    status, body = get_or_post(srv.port, method, path)
    assert (status, message in body["error"]) == (code, True), body
    assert post(srv.port, RED, "/predict/vehicle")[0] == 200


@pytest.mark.parametrize("request_, code, message", [
    (on_task(r, "vehicle"), code, message) for r, code, message in BAD_REQUESTS if r[1].startswith("/predict")])
def test_each_bad_request_to_a_task_gets_its_status(server, request_, code, message):
    srv = server(tasks=two_tasks(), **server_options(request_))
    check_bad_request(srv, request_, code, message, "/predict/vehicle")


def test_health_reports_every_task_and_names_the_failing_one(server):
    vehicle = FakeRecognizer(channels=(2, 1, 0), fail_on=104)  # the health image (124, 116, 104), reversed
    srv = server(tasks=two_tasks(vehicle=vehicle), health_ttl=0.2)
    status, body = get(srv.port)
    assert status == 503 and body["error"] == ("unhealthy: task vehicle: the model failed on a test image: "
                                               "RuntimeError: predictor exploded")
    assert post(srv.port, RED, "/predict/vehicle")[0] == 200  # its requests still run
    status, body = get(srv.port, "/health/person")
    assert status == 200 and body["task"] == "person" and list(body["tasks"]) == ["person"]
    assert body["batching"]["max_batch"] == 8 and body["gallery_updates"] == "in memory"
    assert get(srv.port, "/health/vehicle")[0] == 503
    vehicle.fail_on = None
    time.sleep(0.3)
    status, body = get(srv.port)
    assert status == 200 and body["status"] == "ok" and "feature_dim" not in body  # per task, not at the top
    assert {name: (t["status"], t["feature_dim"], t["gallery"]) for name, t in body["tasks"].items()} == {
        "person": ("ok", 3, 3), "vehicle": ("ok", 3, 3)}
    assert body["connections"]["limit"] == 200


def test_concurrent_requests_are_batched_and_each_client_gets_its_own_feature(server):
    """16 clients post 16 different images at once: fewer model calls than requests, and every answer
    is the feature of the client's own image, as one call alone gives it."""
    rec = FakeRecognizer(delay=0.05)  # requests queue while a call runs
    srv = server(rec, threads=16, max_batch=8, batch_wait_ms=5)
    answers = post_all(srv.port, SHADES, ["/predict"] * 16)
    assert [status for status, _ in answers] == [200] * 16
    np.testing.assert_allclose([body["feature"] for _, body in answers], [unbatched(s) for s in SHADES], atol=1e-5)
    assert sum(rec.batches) == 16 and max(rec.batches) > 1 and max(rec.batches) <= 8
    assert len(rec.threads) == 1 and len(rec.clones) == 1  # the batcher's thread alone runs its clone
    health = get(srv.port)[1]["batching"]
    assert health["requests"] == 17 and health["largest"] == max(rec.batches)  # + the health self-test


def test_a_request_that_breaks_the_model_fails_alone_in_its_batch(server):
    rec = FakeRecognizer(fail_on=200, delay=0.05)  # the red image makes the model raise
    srv = server(rec, threads=8, max_batch=8)
    answers = post_all(srv.port, [RED] + SHADES[:7], ["/predict"] * 8)
    assert answers[0][0] == 500 and "internal error" in answers[0][1]["error"]
    assert [status for status, _ in answers[1:]] == [200] * 7
    np.testing.assert_allclose([b["feature"] for _, b in answers[1:]], [unbatched(s) for s in SHADES[:7]], atol=1e-5)


def test_a_lone_request_is_not_held_for_the_batch_wait(server):
    rec = FakeRecognizer()
    srv = server(rec, batch_wait_ms=1000)
    start = time.time()
    assert post(srv.port, RED)[0] == 200
    assert time.time() - start < 1.0 and rec.batches == [1]  # nothing else was coming: no wait at all


def test_tasks_are_batched_apart(server):
    person, vehicle = FakeRecognizer(delay=0.05), FakeRecognizer(channels=(2, 1, 0), delay=0.05)
    srv = server(tasks=two_tasks(person, vehicle), threads=16)
    paths = ["/predict/person", "/predict/vehicle"] * 8
    answers = post_all(srv.port, SHADES, paths)
    assert [status for status, _ in answers] == [200] * 16
    for i, (_, body) in enumerate(answers):
        want = unbatched(SHADES[i])
        np.testing.assert_allclose(body["feature"], want if i % 2 == 0 else want[::-1], atol=1e-5)
    assert sum(person.batches) == sum(vehicle.batches) == 8 and person.threads.isdisjoint(vehicle.threads)


# --- ppufo-serve's flags

@pytest.mark.parametrize("argv, message", [
    (["--task", "person"], "expected NAME=MODEL_DIR or NAME=MODEL_DIR:INDEX_DIR"),
    (["--task", "person="], "expected NAME=MODEL_DIR"),
    (["--task", "person=m:"], "expected NAME=MODEL_DIR"),
    (["--task", "person=m:i:j"], "paths without ':'"),
    (["--task", "my task=m"], "NAME 'my task': expected 1 to 64 letters, digits"),
    (["--task", "person=m", "--task", "person=n"], "--task person=... given 2 times"),
    (["--task", "person=m", "--model_dir", "m"], "give it instead of --model_dir / --index_dir"),
    (["--model_dir", "m", "--batch_wait_ms", "-1"], "--batch_wait_ms: expected a number >= 0"),
])
def test_bad_task_and_batching_flags_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        serve_cli.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_task_flags_and_batching_defaults_without_a_config():
    a = serve_cli.parse_args(["--task", "person=m/p:i/p", "--task", "vehicle=m/v"])
    s = serve_cli.service_settings(a)
    assert s.tasks == [TaskSpec("person", "m/p", "i/p"), TaskSpec("vehicle", "m/v", None)]
    cores = os.cpu_count()
    # batched: one predictor per task, a core left to the workers' decoding
    assert (s.max_batch, s.threads, s.cpu_threads, s.backend) == (8, 16, max(1, (cores - 1) // 2), "auto")
    s = serve_cli.service_settings(serve_cli.parse_args(["--model_dir", "m", "--batch_wait_ms", "0"]))
    assert (s.tasks, s.threads, s.cpu_threads) == ([TaskSpec(None, "m", None)], 2, max(1, cores // 2))  # as before
    s = serve_cli.service_settings(serve_cli.parse_args(["--model_dir", "m", "--max_batch", "4"]))
    assert (s.max_batch, s.threads, s.cpu_threads) == (4, 8, max(1, cores - 1))


@pytest.mark.parametrize("config", ["cpu_x86.yaml", "cpu_x86_ort.yaml", "onnx.yaml", "inference_rec.yaml", "gpu.yaml",
                                    "gpu_trt_fp16.yaml", "gpu_trt_int8.yaml", "xpu.yaml", "npu.yaml", "arm.yaml"])
def test_with_a_deploy_config_every_task_predictor_is_built_from_it(built, config):
    """-c: each task's Recognizer.from_config gets the config as ppufo-predict reads it (device, TensorRT
    and its precision, oneDNN, ONNX Runtime, threads), with the task's model_dir and index_dir, and
    batch_size = --max_batch (default the config's batch_size; TensorRT sizes its engines by it)."""
    path = os.path.join(CONFIGS, config)
    s = serve_cli.service_settings(serve_cli.parse_args(["-c", path, "--task", "person=m/p:i/p",
                                                         "--task", "vehicle=m/v"]))
    plain = load_deploy_config(path)
    assert s.max_batch == plain["Global"]["batch_size"]
    batch = s.max_batch if s.max_batch > 1 else 1  # arm.yaml: batch_size 1, so no batching
    assert s.tasks == [TaskSpec("person", "m/p", "i/p", "rec1"), TaskSpec("vehicle", "m/v", None, "rec2")]
    for cfg, (model_dir, index_dir) in zip(built, [("m/p", "i/p"), ("m/v", None)]):
        want = copy.deepcopy(plain)
        want["Global"].update(model_dir=model_dir, batch_size=batch)
        want["IndexProcess"]["index_dir"] = index_dir
        assert cfg == want
        assert predictor_kwargs(cfg) == predictor_kwargs(plain)
    assert (s.backend, s.cpu_threads) == (config_backend(plain), plain["Global"]["cpu_num_threads"])


@pytest.mark.parametrize("flags, batch", [(["--max_batch", "4"], 4), (["--batch_wait_ms", "0"], 1),
                                          (["--max_batch", "1"], 1)])
def test_the_predictor_batch_follows_the_batching_flags(built, flags, batch):
    path = os.path.join(CONFIGS, "gpu_trt_fp16.yaml")
    serve_cli.service_settings(serve_cli.parse_args(["-c", path, "--model_dir", "m"] + flags))
    assert [(c["Global"]["batch_size"], c["Global"]["model_dir"], c["Global"]["use_tensorrt"]) for c in built] == [
        (batch, "m", True)]
