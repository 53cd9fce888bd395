"""The HTTP service answers every bad request with its status code and JSON, and keeps serving.

The service runs for real (waitress on 127.0.0.1, port 0); the model is a stand-in recognizer so
that these tests check the HTTP behaviour in seconds (tests/e2e/test_export.py serves a real
exported model; tests/unit/inference/test_slow_clients.py attacks it with slow clients)."""
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.recognizer import FORMATS
from ppufo.inference.served_task import ServedTask
from ppufo.inference.serving import default_max_pixels
from ppufo.io.image import ImageTooLarge, decode_image
from ppufo.utils.errors import DataError
from helpers import bomb_png
from serving_fakes import (BAD_REQUESTS, GREEN, RED, FakeRecognizer, check_bad_request, encode, exchange, get, on_task,
                           post, server_options)


def test_features_and_gallery_search(server):
    feats = np.eye(3, dtype=np.float32)
    srv = server(index=GalleryIndex(feats, ["red", "green", "blue"], ["r.jpg", "g.jpg", "b.jpg"]))
    status, body = post(srv.port, GREEN, "/predict?topk=2")
    assert status == 200 and body["feature_dim"] == 3
    assert body["top"][0]["label"] == "green" and len(body["top"]) == 2
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(RED), RED)
    status, body = post(srv.port, chunked, "/predict?topk=1", b"-", b"Transfer-Encoding: chunked\r\n")
    assert status == 200 and [t["label"] for t in body["top"]] == ["red"]
    status, body = get(srv.port)
    assert status == 200 and body["gallery"] == 3 and body["max_pixels"] == 4096 * 4096


# each bad request to /predict, then the /predict ones to /predict/<task> (the valid one after it too)
BAD_ON_BOTH_ROUTES = [(*bad, "/predict") for bad in BAD_REQUESTS] + [
    (on_task(r, "person"), code, message, "/predict/person") for r, code, message in BAD_REQUESTS
    if r[1].startswith("/predict")]


@pytest.mark.parametrize("request_, code, message, valid", BAD_ON_BOTH_ROUTES)
def test_each_bad_request_gets_its_status_and_the_service_keeps_serving(server, request_, code, message, valid):
    check_bad_request(server(**server_options(request_)), request_, code, message, valid)


def test_malformed_request_line_and_unhandled_errors_are_json(server):
    srv = server(FakeRecognizer(fail_on=200))  # the red image makes the model raise
    status, body = exchange(srv.port, b"\x00\x01garbage\r\n\r\n")
    assert status == 400 and "Start line is invalid" in body["error"]
    status, body = post(srv.port, RED)
    assert status == 500 and "internal error" in body["error"] and "exploded" not in body["error"]
    assert post(srv.port, GREEN)[0] == 200


def test_pixel_limit_follows_the_model_input_and_is_checked_before_decoding():
    assert default_max_pixels([3, 32, 32]) == 4096 * 4096  # small models: any photo
    assert default_max_pixels([3, 384, 384]) == 256 * 384 * 384  # ViT-L/384: 37.7 MP
    assert ServedTask("person", FakeRecognizer(), max_pixels=1200, batch_wait_ms=0).max_pixels == 1200
    with pytest.raises(ImageTooLarge, match="40x30 = 1200 pixels; the limit is 1199"):
        decode_image(RED, FORMATS, max_pixels=1199)
    assert decode_image(RED, FORMATS, max_pixels=1200).size == (40, 30)
    with pytest.raises(DataError, match="not a JPEG/PNG/BMP/WEBP"):
        decode_image(encode(Image.new("RGB", (4, 4)), "TIFF"), FORMATS)


def test_a_decompression_bomb_past_pillows_limit_is_refused_naming_the_upload(server):
    """20000x20000 is past Pillow's own bomb limit, which raises in open() (not an OSError) before the
    service's cap is looked at: 413 naming the upload, and the service keeps serving."""
    srv = server()
    status, body = post(srv.port, bomb_png())
    assert status == 413 and body["error"].startswith(
        "image <uploaded bytes> (67 bytes) has too many pixels: Image size (400000000 pixels) exceeds limit"), body
    assert post(srv.port, RED)[0] == 200


def test_a_stalled_upload_is_closed_and_holds_no_worker(server):
    srv = server(threads=1, timeout=1)
    stalled = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + RED[:100])
    assert post(srv.port, GREEN)[0] == 200  # the only worker is free: the partial upload is not a task
    start = time.time()
    assert stalled.recv(100) == b""  # closed by the server, no request was ever complete
    assert time.time() - start < 10
    stalled.close()


def test_without_batching_each_worker_thread_embeds_with_its_own_clone(server):
    rec = FakeRecognizer()
    srv = server(rec, threads=3, batch_wait_ms=0)
    results = []

    def client():
        results.extend(post(srv.port, RED if i % 2 else GREEN)[0] for i in range(8))
    clients = [threading.Thread(target=client) for _ in range(6)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    assert results == [200] * 48
    assert len(rec.clones) == len(set(rec.clones)) == len(rec.threads) <= 3  # one clone per worker thread
    assert rec.threads == set(rec.clones)


def test_health_runs_the_model_and_the_index_and_caches_the_result(server):
    rec = FakeRecognizer()
    srv = server(rec, GalleryIndex(np.eye(3, dtype=np.float32), ["r", "g", "b"], ["r", "g", "b"]), health_ttl=0.5)
    status, body = get(srv.port)
    assert status == 200 and body["status"] == "ok" and rec.calls == 1  # one real inference
    assert body["connections"]["limit"] == 200 and body["connections"]["open"] >= 1
    assert get(srv.port)[1]["checked_seconds_ago"] > 0 and rec.calls == 1  # cached
    time.sleep(0.6)
    assert get(srv.port)[0] == 200 and rec.calls == 2  # stale: run again


@pytest.mark.parametrize("recognizer, reason", [
    (FakeRecognizer(fail_on=124), "the model failed on a test image: RuntimeError: predictor exploded"),
    (FakeRecognizer(nan=True), "non-finite values (NaN or inf)"),
])
def test_health_is_503_with_the_reason_when_the_model_cannot_answer(server, recognizer, reason):
    srv = server(recognizer, health_ttl=0.2)
    status, body = get(srv.port)
    assert status == 503 and reason in body["error"], body
    if recognizer.nan:  # a NaN feature is never searched nor returned as an answer
        status, body = post(srv.port, RED)
        assert status == 500 and "non-finite feature" in body["error"]
    recognizer.fail_on, recognizer.nan = None, False  # the model recovers: health follows within the TTL
    time.sleep(0.3)
    assert get(srv.port)[0] == 200


def test_a_gallery_that_cannot_answer_is_refused_before_serving(tmp_path):
    with pytest.raises(ValueError, match="dimension 4, but the model .* gives 3"):
        ServedTask("person", FakeRecognizer(), GalleryIndex(np.eye(2, 4, dtype=np.float32), ["a", "b"], ["a", "b"]))
    with pytest.raises(ValueError, match=r"gallery is empty .*shape \[0, 3\]"):
        GalleryIndex(np.zeros((0, 3), np.float32), [], [])
    feats = np.eye(3, dtype=np.float32)
    GalleryIndex(feats, ["a", "b", "c"], ["a.jpg", "b.jpg", "c.jpg"]).save(str(tmp_path))
    feats[1, 0] = np.nan
    np.save(tmp_path / "features.npy", feats)
    with pytest.raises(ValueError, match=r"features.npy: 1 of 3 gallery features are not finite .*\['b.jpg'\]"):
        GalleryIndex.load(str(tmp_path))
    np.save(tmp_path / "features.npy", np.eye(3, 5, dtype=np.float32))  # gallery.json records dim 3
    with pytest.raises(ValueError, match=r"features.npy: features have dimension 5, .*gallery.json says 3"):
        GalleryIndex.load(str(tmp_path))


def test_search_never_reads_faiss_no_hit_as_the_last_label():
    index = GalleryIndex(np.eye(3, dtype=np.float32), ["a", "b", "c"], ["a", "b", "c"])
    assert [h["label"] for h in index.search(np.array([[0.1, 1, 0.5]]), 3)[0]] == ["b", "c", "a"]
    assert index.search(np.full((1, 3), np.nan, np.float32), 3) == [[]]  # faiss gives -1 x3: was "c", "c", "c"
