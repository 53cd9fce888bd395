"""HTTP feature + gallery search service on an exported model (ppufo-serve).

ppufo-serve --model_dir inference/quickstart/person --index_dir index/person --port 8866
ppufo-serve --model_dir inference/quickstart/person --backend onnxruntime     # or -c deploy/configs/onnx.yaml
curl -X POST --data-binary @query.jpg "http://127.0.0.1:8866/predict?topk=5"
-> {"feature_dim": 128, "feature": [...], "top": [{"id", "label", "score", "path"}, ...]}
ppufo-serve ... --index_dir index/person --allow_gallery_updates [--save_gallery_updates]
curl -X POST --data-binary @new.jpg "http://127.0.0.1:8866/gallery/add?label=0042&path=new.jpg"
curl -X POST "http://127.0.0.1:8866/gallery/remove?id=17&label=0013"

Served by waitress (docs/deploy.md says why): its I/O thread reads each request whole before a
worker sees it, so a slow or stalled upload never holds a predictor. http_limits.py adds what
waitress lacks against slow clients (deadlines per request, a per-address cap, room-making at the
connection limit). Each worker thread runs its own predictor clone (weights shared; ONNX Runtime
shares one session, which runs calls from several threads at once). Every answer,
refusals included, is JSON. ``/health`` answers from one real inference (cached a few seconds).
The gallery routes exist only when the operator turns them on; searches run while no change is
being applied (GalleryIndex's lock), and changes reach disk only when asked.
"""
import json
import logging
import threading
import time
from http import HTTPStatus
from urllib.parse import parse_qs

import numpy as np
from PIL import Image

from ..io.image import ImageTooLarge, decode_image
from ..utils.errors import DataError
from .gallery import GalleryIndex, GalleryWouldBeEmpty, NotInGallery
from .gallery_files import GalleryChanged
from .http_limits import GuardedServer, Limits
from .recognizer import FORMATS, Recognizer

log = logging.getLogger("ppufo.serve")
MAX_TOPK = 1000
MAX_LABEL = 256  # characters of a label or a path given to /gallery/add
GALLERY_ROUTES = ("/gallery/add", "/gallery/remove")
ROUTES_HINT = "POST /predict with the image bytes, or GET /health"
RAW_BYTES_HINT = ("send the raw image bytes as the body, not a form: "
                  "curl -X POST --data-binary @query.jpg \"http://HOST:PORT/predict?topk=5\"")


def default_max_pixels(image_shape):
    """256x the model's input area, at least 4096x4096: any photo passes, a decompression bomb not."""
    return max(4096 * 4096, 256 * image_shape[1] * image_shape[2])


class HTTPError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _topk(query):
    """topk from the query string: ASCII digits only, at most 4 of them (int() is never asked to
    read '²' or a 5000-digit number), 1..MAX_TOPK; anything else is a 400."""
    raw = parse_qs(query, keep_blank_values=True).get("topk", ["5"])[-1]
    if raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_TOPK)) and 1 <= int(raw) <= MAX_TOPK:
        return int(raw)
    shown = raw if len(raw) <= 20 else raw[:20] + f"... ({len(raw)} characters)"
    raise HTTPError(400, f"topk={shown!r}: expected an integer from 1 to {MAX_TOPK}")


def _text(query, key, required):
    """One printable value of ``key`` (1..MAX_LABEL characters), None if absent and not ``required``."""
    values = parse_qs(query, keep_blank_values=True).get(key)
    if not values:
        if required:
            raise HTTPError(400, f"{key} missing: give ?{key}=<text>")
        return None
    if len(values) > 1:
        raise HTTPError(400, f"{key} given {len(values)} times; expected once")
    v = values[0]
    if not 1 <= len(v) <= MAX_LABEL or not v.isprintable():
        raise HTTPError(400, f"{key}={v[:40]!r}: expected 1 to {MAX_LABEL} printable characters")
    return v


def _ids(query):
    """The ``id`` values: ASCII digits, at most 18 of them (an int64 faiss id)."""
    ids = parse_qs(query, keep_blank_values=True).get("id", [])
    bad = [i for i in ids if not (i.isascii() and i.isdigit() and len(i) <= 18)]
    if bad:
        raise HTTPError(400, f"id={bad[0][:40]!r}: expected a gallery id, a non-negative integer")
    return [int(i) for i in ids]


def _looks_like_a_form(environ, head):
    return (environ.get("CONTENT_TYPE", "").lower().startswith("multipart/")
            or (head.startswith(b"--") and b"content-disposition" in head[:1024].lower()))


class FeatureApp:
    """The WSGI application. Paddle Inference predictors are not thread-safe, so each worker
    thread embeds with its own clone of ``recognizer``. ``health_ttl``: seconds a /health
    self-test result is reused."""

    def __init__(self, recognizer, index=None, max_pixels=None, health_ttl=3.0, allow_updates=False, save_dir=None):
        info = recognizer.predictor.info
        if index is not None:
            index.check_dim(info["feature_dim"], getattr(recognizer, "model_dir", "being served"))
        if (allow_updates or save_dir) and index is None:
            raise ValueError("gallery updates need a gallery to update: give --index_dir")
        if save_dir and not allow_updates:
            raise ValueError("--save_gallery_updates needs --allow_gallery_updates")
        self.recognizer, self.index = recognizer, index
        self.allow_updates, self.save_dir = allow_updates, save_dir
        self.max_pixels = max_pixels or default_max_pixels(info["image_shape"])
        self.local = threading.local()
        self.health_ttl, self._health, self._health_lock = health_ttl, None, threading.Lock()
        self.connection_stats = None  # set by FeatureServer: its slow-client counters

    def embed(self, image):
        if not hasattr(self.local, "recognizer"):
            self.local.recognizer = self.recognizer.clone()
        return self.local.recognizer.features_of_images([image])[0]

    def __call__(self, environ, start_response):
        try:
            code, body = 200, self.handle(environ)
        except HTTPError as e:
            code, body = e.code, {"error": str(e)}
        except Exception:  # the client gets a 500, the log the traceback; the service keeps serving
            log.exception("unhandled error serving %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            code, body = 500, {"error": "internal error while serving this request (the server log has the details)"}
        data = json.dumps(body).encode()
        start_response(f"{code} {HTTPStatus(code).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def self_test(self):
        """(None, details) if one tiny inference through the model and the index works, else
        (reason, details)."""
        info = self.recognizer.predictor.info
        _, h, w = info["image_shape"]
        details = {"feature_dim": info["feature_dim"], "gallery": len(self.index) if self.index else 0,
                   "index_type": self.index.kind if self.index else None, "gallery_updates": self.updates_mode()}
        try:
            feat = np.asarray(self.embed(Image.new("RGB", (w, h), (124, 116, 104))))
        except Exception as e:
            log.exception("health self-test: inference failed")
            return f"the model failed on a test image: {type(e).__name__}: {str(e)[:200]}", details
        if feat.shape != (info["feature_dim"],):
            return f"the model gave a feature of shape {list(feat.shape)}, expected [{info['feature_dim']}]", details
        if not np.isfinite(feat).all():
            return "the model gave non-finite values (NaN or inf) for a test image", details
        if self.index is not None:
            try:
                top = self.index.search(feat[None], 1)[0]
            except Exception as e:
                log.exception("health self-test: gallery search failed")
                return f"the gallery search failed: {type(e).__name__}: {str(e)[:200]}", details
            if not top or not np.isfinite(top[0]["score"]):
                return "the gallery search found no valid neighbour for a test image", details
        return None, details

    def health(self):
        """-> (status code, body): the self-test, rerun when older than ``health_ttl`` seconds."""
        with self._health_lock:
            now = time.monotonic()
            if self._health is None or now - self._health[0] > self.health_ttl:
                self._health = (now, *self.self_test())
            at, reason, details = self._health
        body = {"status": "failing" if reason else "ok", **details, "max_pixels": self.max_pixels,
                "checked_seconds_ago": round(time.monotonic() - at, 3)}
        if reason:
            body["reason"] = reason
        if self.connection_stats is not None:
            body["connections"] = self.connection_stats()
        return (503 if reason else 200), body

    def updates_mode(self):
        return "saved" if self.save_dir else "in memory" if self.allow_updates else "off"

    def handle(self, environ):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/health" and method == "GET":
            code, body = self.health()
            if code != 200:
                raise HTTPError(code, f"unhealthy: {body['reason']}")
            return body
        if path in GALLERY_ROUTES and not self.allow_updates:
            raise HTTPError(404, f"{path}: gallery updates are off in this service (start ppufo-serve with "
                                 f"--index_dir and --allow_gallery_updates to turn them on)")
        if path not in ("/predict", "/health") + (GALLERY_ROUTES if self.allow_updates else ()):
            raise HTTPError(404, f"unknown path {path}: {ROUTES_HINT}"
                                 + (", POST /gallery/add or /gallery/remove" if self.allow_updates else ""))
        if path == "/health" or method != "POST":
            raise HTTPError(405, f"{method} {path}: use POST /predict or GET /health"
                                 + ("; POST /gallery/add and /gallery/remove" if self.allow_updates else ""))
        query = environ.get("QUERY_STRING", "")
        if path == "/gallery/remove":
            return self.remove(query)
        if not environ.get("CONTENT_LENGTH"):
            raise HTTPError(411, "Content-Length required: POST the image bytes with their length")
        if path == "/gallery/add":
            label, where = _text(query, "label", True), _text(query, "path", False) or ""
            return self.add(self.feature(environ), label, where)
        topk = _topk(query)
        feat = self.feature(environ)
        body = {"feature_dim": len(feat), "feature": feat.tolist()}
        if self.index is not None:
            body["top"] = self.index.search(feat[None], topk)[0]
        return body

    def feature(self, environ):
        """The feature of the image in the request body (400 / 413 for a bad one, 500 if not finite)."""
        size = int(environ["CONTENT_LENGTH"])  # the parser has checked: at most 19 ASCII digits, under max_bytes
        if size == 0:
            raise HTTPError(400, "empty body: send the image bytes")
        data = environ["wsgi.input"].read(size)
        if _looks_like_a_form(environ, data[:1024]):
            raise HTTPError(400, f"a multipart form upload: {RAW_BYTES_HINT}")
        try:
            image = decode_image(data, FORMATS, self.max_pixels, where="<uploaded bytes>")
        except ImageTooLarge as e:
            raise HTTPError(413, str(e)) from None
        except DataError as e:
            raise HTTPError(400, str(e)) from None
        feat = self.embed(image)
        if not np.isfinite(feat).all():
            log.error("the model gave a non-finite feature for a %dx%d image", *image.size)
            raise HTTPError(500, "the model gave a non-finite feature (NaN or inf) for this image")
        return feat

    def add(self, feat, label, path):
        (new,) = self.index.add(feat[None], [label], [path])
        log.info("gallery: added id %d (label %r)", new, label)
        return {"id": new, "label": label, "path": path, "gallery": len(self.index),
                **self.persist(f"added as id {new}")}

    def remove(self, query):
        ids, label = _ids(query), parse_qs(query, keep_blank_values=True).get("label", [])
        if not (ids or label):
            raise HTTPError(400, "nothing to remove: give id=<gallery id> and/or label=<label> (repeatable)")
        try:
            removed = self.index.remove(ids, label)
        except NotInGallery as e:
            raise HTTPError(404, str(e)) from None
        except GalleryWouldBeEmpty as e:
            raise HTTPError(409, str(e)) from None
        log.info("gallery: removed ids %s", removed)
        return {"removed": removed, "gallery": len(self.index), **self.persist(f"removed ids {removed}")}

    def persist(self, done):
        """Save the gallery if the operator asked to; -> what the answer says about it."""
        if not self.save_dir:
            return {"saved": False, "note": "in memory only: lost when the service stops (start it with "
                                            "--save_gallery_updates to keep changes)"}
        try:
            self.index.save(self.save_dir)
        except (OSError, DataError, GalleryChanged) as e:
            log.error("gallery: %s in memory, but saving to %s failed: %s", done, self.save_dir, e)
            raise HTTPError(500, f"{done} in memory, but saving the gallery failed ({type(e).__name__}; the server "
                                 f"log has the details); the next successful save writes it") from None
        return {"saved": True}


class FeatureServer:
    """waitress (with http_limits' slow-client guard) serving ``app``: ``run()`` blocks,
    ``shutdown()`` (from any thread) ends it. ``timeout``: seconds of inactivity before a connection
    is closed; ``header_timeout`` / ``request_timeout``: deadlines for a request's headers / the
    whole request, however active the client; ``per_client``: connections one address may hold
    (0 = no cap)."""

    def __init__(self, app, host="127.0.0.1", port=8866, threads=2, max_bytes=20 * 2 ** 20, timeout=30,
                 backlog=1024, connection_limit=200, header_timeout=10.0, request_timeout=60.0, per_client=32):
        self.app = app
        self.server = GuardedServer(
            app, Limits(header_timeout, request_timeout, per_client), host=host, port=port, threads=threads,
            backlog=backlog, connection_limit=connection_limit, channel_timeout=timeout,
            max_request_body_size=max_bytes + 1,  # waitress refuses lengths >= this
            ident="ppufo-serve", expose_tracebacks=False, clear_untrusted_proxy_headers=True)
        app.connection_stats = lambda: {"open": self.server.open_connections(),
                                        "limit": connection_limit, **self.server.stats}
        self.host, self.port = host, self.server.effective_port

    def run(self):
        try:
            self.server.run()
        finally:
            self.server.task_dispatcher.shutdown()

    def shutdown(self):
        def close_all():  # runs on the I/O thread; its loop ends when no socket is left
            for channel in list(self.server.socket_map.values()):
                channel.close()
        self.server.trigger.pull_trigger(close_all)


def serve(model_dir=None, index_dir=None, host="127.0.0.1", port=8866, threads=2, cpu_threads=1,
          max_pixels=None, health_ttl=3.0, backend="auto", recognizer=None, index_settings=None,
          allow_gallery_updates=False, save_gallery_updates=False, **server_kwargs):
    """A FeatureServer for an exported model (and gallery index); call ``run()``. The model runs on
    ``backend`` (backends.BACKENDS) with ``cpu_threads`` per predictor, or ``recognizer`` is served
    as given (e.g. Recognizer.from_config of a deploy config); the gallery's faiss index is built per
    ``index_settings`` (IndexSettings). Refuses to start (ValueError naming the file) on an empty or
    non-finite gallery, a gallery of another dimension than the model's, or a model that fails its
    self-test. ``allow_gallery_updates``: /gallery/add and /gallery/remove exist;
    ``save_gallery_updates``: each change is saved to ``index_dir``."""
    if (allow_gallery_updates or save_gallery_updates) and not index_dir:
        raise ValueError("gallery updates need a gallery to update: give --index_dir")
    if recognizer is None:
        recognizer = Recognizer(model_dir, batch_size=1, backend=backend, cpu_threads=cpu_threads)
    model_dir = recognizer.model_dir
    index = GalleryIndex.load(index_dir, index_settings) if index_dir else None
    app = FeatureApp(recognizer, index, max_pixels, health_ttl, allow_gallery_updates,
                     index_dir if save_gallery_updates else None)
    reason, _ = app.self_test()
    if reason:
        raise ValueError(f"{model_dir}{' + ' + index_dir if index_dir else ''}: self-test failed: {reason}")
    app.local = threading.local()  # the test's predictor clone belongs to this thread, not a worker
    return FeatureServer(app, host, port, threads, **server_kwargs)
