"""What the HTTP service tests share: a stand-in recognizer, images, a raw HTTP client, a server
starter (the ``server`` fixture in conftest.py). Real sockets on 127.0.0.1, nothing else."""
import io
import json
import socket
import threading
import time

import numpy as np
from PIL import Image

from ppufo.inference.serving import FeatureApp, FeatureServer


class FakeRecognizer:
    """Feature = mean colour (3-d) of the image; counts clones, calls and the threads that embed.
    ``fail_on``: a red level that makes the model raise; ``nan``: every feature is NaN; ``delay``:
    seconds each call takes."""

    def __init__(self, fail_on=None, nan=False, delay=0.0):
        self.predictor = type("P", (), {"info": {"image_shape": [3, 32, 32], "feature_dim": 3}})()
        self.clones, self.threads, self.fail_on, self.nan, self.delay = [], set(), fail_on, nan, delay
        self.calls = 0

    def clone(self):
        self.clones.append(threading.get_ident())
        return self

    def features_of_images(self, images):
        self.threads.add(threading.get_ident())
        self.calls += 1
        time.sleep(self.delay)
        feat = np.asarray(images[0], np.float32).mean(axis=(0, 1))
        if self.fail_on is not None and int(feat[0]) == self.fail_on:
            raise RuntimeError("predictor exploded")
        if self.nan:
            feat[:] = np.nan
        return (feat / np.linalg.norm(feat))[None]


def encode(image, fmt="PNG"):
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


RED, GREEN = encode(Image.new("RGB", (40, 30), (200, 10, 10))), encode(Image.new("RGB", (40, 30), (10, 200, 10)))


def start_server(started, recognizer=None, index=None, max_pixels=None, health_ttl=3.0, **kwargs):
    app = FeatureApp(recognizer or FakeRecognizer(), index, max_pixels, health_ttl)
    srv = FeatureServer(app, port=0, **kwargs)
    threading.Thread(target=srv.run, daemon=True).start()
    started.append(srv)
    return srv


def read_answer(sock):
    """(status, JSON body) of the answer on ``sock``, read until the server closes it."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def exchange(port, data, timeout=20, source="127.0.0.1"):
    """Raw bytes in, (status, JSON body) out; the connection is closed after one request."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
        s.sendall(data)
        return read_answer(s)


def request(body, path="/predict", length=None, headers=b""):
    length = str(len(body)).encode() if length is None else length
    cl = b"" if length == b"-" else b"Content-Length: " + length + b"\r\n"
    return b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + cl + headers + b"\r\n" + body


def post(port, body, path="/predict", length=None, headers=b"", source="127.0.0.1"):
    return exchange(port, request(body, path, length, headers), source=source)


def get(port, path="/health"):
    return exchange(port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
