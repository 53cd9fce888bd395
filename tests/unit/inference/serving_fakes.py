"""What the HTTP service tests share: a stand-in recognizer, images, a raw HTTP client, a server
starter (the ``server`` fixture in conftest.py). Real sockets on 127.0.0.1, nothing else."""
import io
import json
import socket
import threading
import time

import numpy as np
from PIL import Image

from helpers import bomb_png
from ppufo.inference.served_task import ServedTask
from ppufo.inference.serving import FeatureApp, FeatureServer


class FakeRecognizer:
    """Feature = mean colour (3-d) of the image (``preprocess`` computes it, the "model" normalises);
    counts clones, model calls, the rows of each call and the threads that run it. ``fail_on``: a
    red level that makes the model raise (on any batch holding it); ``nan``: every feature is NaN;
    ``delay``: seconds each call takes; ``channels``: the order of the colour channels in the feature
    (another "model")."""

    def __init__(self, fail_on=None, nan=False, delay=0.0, channels=(0, 1, 2)):
        self.predictor = type("P", (), {"info": {"image_shape": [3, 32, 32], "feature_dim": 3}})()
        self.clones, self.threads, self.fail_on, self.nan, self.delay = [], set(), fail_on, nan, delay
        self.channels = list(channels)
        self.calls, self.batches, self.lock = 0, [], threading.Lock()

    def clone(self):
        self.clones.append(threading.get_ident())
        return self

    def preprocess(self, image):
        return np.asarray(image, np.float32).mean(axis=(0, 1))[self.channels]

    def features_of_arrays(self, arrays):
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls += 1
            self.batches.append(len(arrays))
        time.sleep(self.delay)
        feats = np.stack(arrays).astype(np.float32)
        if self.fail_on is not None and (feats[:, 0].astype(int) == self.fail_on).any():
            raise RuntimeError("predictor exploded")
        if self.nan:
            feats[:] = np.nan
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)

    def features_of_images(self, images):
        return self.features_of_arrays([self.preprocess(im) for im in images])


def encode(image, fmt="PNG"):
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


RED, GREEN = encode(Image.new("RGB", (40, 30), (200, 10, 10))), encode(Image.new("RGB", (40, 30), (10, 200, 10)))


# (request: post()'s arguments, status, part of the error): every refusal the service guarantees that
# no model fault causes; test_serving.py checks them with a stand-in model, test_serving_backends.py
# with each backend's real predictor.
BAD_REQUESTS = [
    ((RED, "/predict?topk=0"), 400, "topk='0'"),
    ((RED, "/predict?topk=-1"), 400, "topk='-1'"),
    ((RED, "/predict?topk=x"), 400, "topk='x'"),
    ((RED, "/predict?topk=1001"), 400, "from 1 to 1000"),
    ((RED, "/predict?topk=%C2%B2"), 400, "topk='\u00b2'"),  # '\u00b2'.isdigit() is True, int() fails
    ((RED, "/predict?topk=%D9%A3"), 400, "from 1 to 1000"),  # Arabic-Indic 3: int() reads it, we do not
    ((RED, "/predict?topk=" + "1" * 5000), 400, "(5000 characters)"),  # over int()'s 4300-digit limit
    ((RED, "/predict?topk=00005"), 400, "topk='00005'"),  # 5 characters: more than 1000 needs
    ((RED, "/predict?topk=+5"), 400, "from 1 to 1000"),
    ((RED, "/predict?topk="), 400, "topk=''"),
    ((RED, "/predict", b"1" * 5000), 400, "Content-Length is invalid"),  # was a dropped connection
    ((RED, "/predict", b"1" * 20), 400, "Content-Length is invalid"),
    ((b"FFFFFFFFFFFFFFFFFFFF\r\nabc", "/predict", b"-", b"Transfer-Encoding: chunked\r\n"), 400,
     "Invalid chunk size: the chunk would take the body over the limit"),  # at once, not at the timeout
    ((b"F" * 2000, "/predict", b"-", b"Transfer-Encoding: chunked\r\n"), 400, "chunk size line is too long"),
    ((b"--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n" + RED + b"\r\n--XX--\r\n", "/predict", None,
      b"Content-Type: multipart/form-data; boundary=XX\r\n"), 400, "send the raw image bytes as the body"),
    ((b"--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n" + RED, "/predict"), 400, "--data-binary @"),
    ((RED, "/predict", b"abc"), 400, "Content-Length is invalid"),
    ((RED, "/predict", b"1.5"), 400, "Content-Length is invalid"),
    ((RED, "/predict", b"-"), 411, "Content-Length required"),
    ((b"", "/predict"), 400, "empty body"),
    ((b"junk", "/predict"), 400, "not a JPEG/PNG/BMP/WEBP image"),
    ((b"%!PS-Adobe-3.0 EPSF-3.0\n", "/predict"), 400, "not a JPEG/PNG/BMP/WEBP image"),  # no Ghostscript
    ((RED[:60], "/predict"), 400, "cannot decode image"),
    ((b"", "/predict", b"999999999"), 413, "over the limit of 1000 bytes"),
    ((bomb_png(13000, 13000), "/predict"), 413, "13000x13000 = 169000000 pixels; the limit is 16777216"),
    ((RED, "/nowhere"), 404, "unknown path /nowhere"),
    ((RED, "/health"), 405, "POST /health"),
]


def check_bad_request(srv, request_, code, message, valid="/predict"):
    """``request_`` answered at once with ``code`` and ``message``, and a valid request to ``valid``
    after it with 200."""
    start = time.time()
    status, body = post(srv.port, *request_)
    assert time.time() - start < 5  # answered at once, none waits for a timeout
    assert (status, message in body["error"]) == (code, True), body
    assert post(srv.port, RED, valid)[0] == 200


def on_task(request_, task):
    """A BAD_REQUESTS entry sent to /predict/<task> (or /gallery/add/<task> ...) instead of the bare route."""
    body, path, *rest = request_
    route, sep, query = path.partition("?")
    return (body, f"{route}/{task}{sep}{query}", *rest)


def server_options(request_):
    """FeatureServer options for a BAD_REQUESTS entry: the body limit that its 413 case expects."""
    return dict(max_bytes=1000 if request_[-1] == b"999999999" else 20 * 2 ** 20, timeout=30, header_timeout=20,
                request_timeout=30)


def start_server(started, recognizer=None, index=None, max_pixels=None, health_ttl=3.0, allow_updates=False,
                 save_dir=None, batch_wait_ms=5.0, max_batch=8, tasks=None, **kwargs):
    """A running FeatureServer: of ``tasks`` (ServedTask), or of one task "person" made of the other
    arguments (batched by default, as ppufo-serve is)."""
    if tasks is None:
        tasks = [ServedTask("person", recognizer or FakeRecognizer(), index, max_pixels, allow_updates, save_dir,
                            batch_wait_ms, max_batch)]
    srv = FeatureServer(FeatureApp(tasks, health_ttl), port=0, **kwargs)
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
