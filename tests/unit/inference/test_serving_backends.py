"""The HTTP service on a real exported model with each backend (Paddle Inference, ONNX Runtime):
the same status codes as with the stand-in model (test_serving.py), the same features, and
ppufo-serve choosing the backend from --backend or a deploy config's Global.use_onnx."""
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.predictor import FeaturePredictor, OnnxPredictor
from ppufo.inference.recognizer import Recognizer
from ppufo.inference.serving import serve
from serving_fakes import BAD_REQUESTS, GREEN, RED, check_bad_request, encode, get, post, server_options

pytest.importorskip("paddle2onnx")
pytest.importorskip("onnxruntime")
BACKENDS = ("paddle", "onnxruntime")
PREDICTORS = {"paddle": FeaturePredictor, "onnxruntime": OnnxPredictor}
CONFIGS = os.path.join(ROOT, "deploy", "configs")


@pytest.fixture(scope="module")
def model_dir(exported, tmp_path_factory):
    """The exported model in a folder of this module's own (the ONNX backend converts into it)."""
    d = tmp_path_factory.mktemp("serve") / "person"
    shutil.copytree(exported[1], d, ignore=shutil.ignore_patterns("inference.onnx*"))
    return str(d)


@pytest.fixture(scope="module")
def recognizers(model_dir):
    """One served recognizer per backend, as ppufo-serve builds it (batch 1, one thread each)."""
    return {b: Recognizer(model_dir, batch_size=1, backend=b, cpu_threads=1) for b in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("request_, code, message", BAD_REQUESTS)
def test_each_bad_request_gets_its_status_with_each_backend(server, recognizers, backend, request_, code, message):
    check_bad_request(server(recognizers[backend], **server_options(request_)), request_, code, message)


def test_both_backends_serve_the_same_features_from_concurrent_workers(server, recognizers):
    """Two worker threads each embed with their clone (Paddle) or the shared session (ONNX Runtime)."""
    images = [RED, GREEN] * 4
    answers = {}
    for backend, rec in recognizers.items():
        srv = server(rec, threads=2)
        got = [None] * len(images)

        def client(i):
            got[i] = post(srv.port, images[i])
        clients = [threading.Thread(target=client, args=(i,)) for i in range(len(images))]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        assert [status for status, _ in got] == [200] * len(images), (backend, got)
        answers[backend] = np.array([body["feature"] for _, body in got])
        assert answers[backend].shape == (8, 128)
        np.testing.assert_allclose(answers[backend][::2], answers[backend][0:1].repeat(4, 0), atol=1e-6)  # all RED alike
        status, body = get(srv.port)
        assert status == 200 and body["status"] == "ok" and body["feature_dim"] == 128
    assert np.abs(answers["onnxruntime"] - answers["paddle"]).max() <= 1e-4
    assert np.abs(answers["paddle"][0] - answers["paddle"][1]).max() > 1e-3  # red and green do differ


def test_serve_runs_the_backend_it_is_given_and_searches_the_gallery(model_dir, recognizers):
    feats = recognizers["paddle"].features([RED, GREEN])
    idx = os.path.join(os.path.dirname(model_dir), "idx")
    GalleryIndex(feats, ["red", "green"], ["r.png", "g.png"]).save(idx)
    srv = serve(model_dir, idx, port=0, threads=1, backend="onnxruntime")
    task = srv.app.single
    assert isinstance(task.recognizer.predictor, OnnxPredictor) and task.name == "person"  # inference.yml's task
    threading.Thread(target=srv.run, daemon=True).start()
    try:
        status, body = post(srv.port, GREEN, "/predict?topk=2")
        assert status == 200 and [t["label"] for t in body["top"]] == ["green", "red"]
        assert post(srv.port, GREEN, "/predict/person?topk=2")[1]["top"] == body["top"]
        assert body["top"][0]["score"] > 0.9999  # the Paddle-built gallery, queried through ONNX Runtime
        assert get(srv.port)[1]["gallery"] == 2
    finally:
        srv.shutdown()


@pytest.mark.parametrize("argv, backend, threads", [
    ([], "auto", None),
    (["-c", "inference_rec.yaml"], "auto", 2),  # the default deploy config: ONNX Runtime for this small model
    (["--backend", "onnxruntime"], "onnxruntime", None),
    (["--backend", "onnxruntime", "--cpu_threads", "3"], "onnxruntime", 3),
    (["-c", "onnx.yaml"], "onnxruntime", 2),  # the config's Global.use_onnx and cpu_num_threads
    (["-c", "onnx.yaml", "--backend", "paddle"], "paddle", 2),  # the flag over the config
    (["-c", "cpu_x86.yaml"], "paddle", 2),
    (["-c", "cpu_x86.yaml", "--backend", "onnxruntime", "--cpu_threads", "1"], "onnxruntime", 1),
])
def test_ppufo_serve_picks_the_backend_from_the_flag_or_the_deploy_config(model_dir, argv, backend, threads):
    from ppufo.cli import serve as serve_cli
    argv = [os.path.join(CONFIGS, a) if a.endswith(".yaml") else a for a in argv]
    a = serve_cli.parse_args(["--model_dir", model_dir, "--threads", "2", "--batch_wait_ms", "0"] + argv)
    service = serve_cli.service_settings(a)
    (task,) = service.tasks
    recognizer, cpu_threads = task.recognizer, service.cpu_threads
    assert (task.model_dir, task.index_dir, service.backend, service.index_settings.index_type) == (
        model_dir, None, backend, "auto")
    assert cpu_threads == (threads or max(1, os.cpu_count() // 2))
    if recognizer is not None:  # with -c the deploy config builds it
        assert type(recognizer.predictor) is PREDICTORS["onnxruntime" if backend == "auto" else backend]
        if backend == "onnxruntime":
            assert recognizer.predictor.session.get_session_options().intra_op_num_threads == cpu_threads


def test_ppufo_serve_needs_a_model(capsys):
    from ppufo.cli import serve as serve_cli
    with pytest.raises(SystemExit) as e:
        serve_cli.parse_args(["--backend", "onnxruntime"])
    assert e.value.code == 2 and "--model_dir is required (or -c" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        serve_cli.parse_args(["--model_dir", "m", "--backend", "tvm"])
    assert e.value.code == 2 and "invalid choice: 'tvm'" in capsys.readouterr().err


@pytest.mark.parametrize("config, backend", [("cpu_x86.yaml", "paddle"), ("onnx.yaml", "onnxruntime")])
def test_a_deploy_config_serves_two_tasks_batched_with_the_features_of_one_image_alone(model_dir, recognizers,
                                                                                      config, backend):
    """ppufo-serve -c <config> --task a=... --task b=...: 16 clients at once, alternating tasks, get the
    features a batch-1 predictor gives their own image (within 1e-5), and the batchers formed batches."""
    from ppufo.cli import serve as serve_cli
    a = serve_cli.parse_args(["-c", os.path.join(CONFIGS, config), "--task", f"a={model_dir}", "--task",
                              f"b={model_dir}", "--batch_wait_ms", "20"])
    service = serve_cli.service_settings(a)
    srv = serve(tasks=service.tasks, port=0, threads=service.threads, batch_wait_ms=a.batch_wait_ms,
                max_batch=service.max_batch)
    assert [type(t.recognizer.predictor) for t in srv.app.tasks.values()] == [PREDICTORS[backend]] * 2
    threading.Thread(target=srv.run, daemon=True).start()
    rs = np.random.RandomState(0)
    images = [encode(Image.fromarray(rs.randint(0, 256, (40, 48, 3), dtype=np.uint8))) for _ in range(16)]
    got = [None] * 16

    def client(i):
        got[i] = post(srv.port, images[i], f"/predict/{'ab'[i % 2]}")
    try:
        clients = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
        assert [status for status, _ in got] == [200] * 16, got
        np.testing.assert_allclose([body["feature"] for _, body in got], recognizers[backend].features(images),
                                   atol=1e-5)
        health = get(srv.port)[1]["tasks"]
        assert max(health[t]["batching"]["largest"] for t in "ab") > 1, health
    finally:
        srv.shutdown()
