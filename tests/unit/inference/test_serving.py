"""The HTTP service answers every bad request with its status code and JSON, and keeps serving.

The service runs for real (waitress on 127.0.0.1, port 0); the model is a stand-in recognizer so
that these tests check the HTTP behaviour in seconds (tests/e2e/test_export.py serves a real
exported model)."""
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.recognizer import ImageError, ImageTooLarge, load_image
from ppufo.inference.serving import FeatureApp, FeatureServer, default_max_pixels


class FakeRecognizer:
    """Feature = mean colour (3-d) of the image; counts clones and the threads that embed."""

    def __init__(self, fail_on=None):
        self.predictor = type("P", (), {"info": {"image_shape": [3, 32, 32], "feature_dim": 3}})()
        self.clones, self.threads, self.fail_on = [], set(), fail_on

    def clone(self):
        self.clones.append(threading.get_ident())
        return self

    def features_of_images(self, images):
        self.threads.add(threading.get_ident())
        feat = np.asarray(images[0], np.float32).mean(axis=(0, 1))
        if self.fail_on is not None and int(feat[0]) == self.fail_on:
            raise RuntimeError("predictor exploded")
        return (feat / np.linalg.norm(feat))[None]


def encode(image, fmt="PNG"):
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


RED, GREEN = encode(Image.new("RGB", (40, 30), (200, 10, 10))), encode(Image.new("RGB", (40, 30), (10, 200, 10)))


@pytest.fixture
def server():
    started = []

    def start(recognizer=None, index=None, max_pixels=None, **kwargs):
        app = FeatureApp(recognizer or FakeRecognizer(), index, max_pixels)
        srv = FeatureServer(app, port=0, **kwargs)
        threading.Thread(target=srv.run, daemon=True).start()
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.shutdown()


def exchange(port, data, timeout=20):
    """Raw bytes in, (status, JSON body) out; the connection is closed after one request."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def post(port, body, path="/predict", length=None, headers=b""):
    length = str(len(body)).encode() if length is None else length
    cl = b"" if length == b"-" else b"Content-Length: " + length + b"\r\n"
    return exchange(port, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + cl + headers
                    + b"\r\n" + body)


def test_features_and_gallery_search(server):
    feats = np.eye(3, dtype=np.float32)
    srv = server(index=GalleryIndex(feats, ["red", "green", "blue"], ["r.jpg", "g.jpg", "b.jpg"]))
    status, body = post(srv.port, GREEN, "/predict?topk=2")
    assert status == 200 and body["feature_dim"] == 3
    assert body["top"][0]["label"] == "green" and len(body["top"]) == 2
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(RED), RED)
    status, body = post(srv.port, chunked, "/predict?topk=1", b"-", b"Transfer-Encoding: chunked\r\n")
    assert status == 200 and [t["label"] for t in body["top"]] == ["red"]
    status, body = exchange(srv.port, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 200 and body["gallery"] == 3 and body["max_pixels"] == 4096 * 4096


@pytest.mark.parametrize("request_, code, message", [
    ((RED, "/predict?topk=0"), 400, "topk='0'"),
    ((RED, "/predict?topk=-1"), 400, "topk='-1'"),
    ((RED, "/predict?topk=x"), 400, "topk='x'"),
    ((RED, "/predict?topk=1001"), 400, "from 1 to 1000"),
    ((RED, "/predict", b"abc"), 400, "Content-Length is invalid"),
    ((RED, "/predict", b"1.5"), 400, "Content-Length is invalid"),
    ((RED, "/predict", b"-"), 411, "Content-Length required"),
    ((b"", "/predict"), 400, "empty body"),
    ((b"junk", "/predict"), 400, "not a JPEG/PNG/BMP/WEBP image"),
    ((b"%!PS-Adobe-3.0 EPSF-3.0\n", "/predict"), 400, "not a JPEG/PNG/BMP/WEBP image"),  # no Ghostscript
    ((RED[:60], "/predict"), 400, "cannot decode image"),
    ((b"", "/predict", b"999999999"), 413, "over the limit of 1000 bytes"),
    ((encode(Image.new("1", (13000, 13000))), "/predict"), 413, "13000x13000 = 169000000 pixels"),
    ((RED, "/nowhere"), 404, "unknown path /nowhere"),
    ((RED, "/health"), 405, "POST /health"),
])
def test_each_bad_request_gets_its_status_and_the_service_keeps_serving(server, request_, code, message):
    srv = server(max_bytes=1000 if request_[-1] == b"999999999" else 20 * 2 ** 20)
    status, body = post(srv.port, *request_)
    assert (status, message in body["error"]) == (code, True), body
    assert post(srv.port, RED)[0] == 200


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
    assert FeatureApp(FakeRecognizer(), max_pixels=1200).max_pixels == 1200
    with pytest.raises(ImageTooLarge, match="40x30 = 1200 pixels; the limit is 1199"):
        load_image(RED, max_pixels=1199)
    assert load_image(RED, max_pixels=1200).size == (40, 30)
    with pytest.raises(ImageError, match="not a JPEG/PNG/BMP/WEBP"):
        load_image(encode(Image.new("RGB", (4, 4)), "TIFF"))


def test_a_stalled_upload_is_closed_and_holds_no_worker(server):
    srv = server(threads=1, timeout=1)
    stalled = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + RED[:100])
    assert post(srv.port, GREEN)[0] == 200  # the only worker is free: the partial upload is not a task
    start = time.time()
    assert stalled.recv(100) == b""  # closed by the server, no request was ever complete
    assert time.time() - start < 10
    stalled.close()


def test_each_worker_thread_embeds_with_its_own_clone(server):
    rec = FakeRecognizer()
    srv = server(rec, threads=3)
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
