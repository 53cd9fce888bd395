"""HTTP feature + gallery search service on an exported model (ppufo-serve).

ppufo-serve --model_dir inference/quickstart/person --index_dir index/person --port 8866
curl -X POST --data-binary @query.jpg "http://127.0.0.1:8866/predict?topk=5"
-> {"feature_dim": 128, "feature": [...], "top": [{"label", "score", "path"}, ...]}

Served by waitress (docs/deploy.md says why): its I/O thread reads each request whole before a
worker sees it, so a slow or stalled upload never holds a predictor; timeouts, the worker pool,
the connection limit, the backlog and the body limit are its settings. Each worker thread runs
its own predictor clone (weights shared). Every answer, refusals included, is JSON.
"""
import json
import logging
import threading
from http import HTTPStatus
from urllib.parse import parse_qs

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from .gallery import GalleryIndex
from .recognizer import ImageError, ImageTooLarge, Recognizer, load_image

log = logging.getLogger("ppufo.serve")
MAX_TOPK = 1000


def default_max_pixels(image_shape):
    """256x the model's input area, at least 4096x4096: any photo passes, a decompression bomb not."""
    return max(4096 * 4096, 256 * image_shape[1] * image_shape[2])


class HTTPError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _topk(query):
    raw = parse_qs(query).get("topk", ["5"])[-1]
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOPK:
        raise HTTPError(400, f"topk={raw!r}: expected an integer from 1 to {MAX_TOPK}")
    return int(raw)


class FeatureApp:
    """The WSGI application. Paddle Inference predictors are not thread-safe, so each worker
    thread embeds with its own clone of ``recognizer``."""

    def __init__(self, recognizer, index=None, max_pixels=None):
        self.recognizer, self.index = recognizer, index
        self.max_pixels = max_pixels or default_max_pixels(recognizer.predictor.info["image_shape"])
        self.local = threading.local()

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

    def handle(self, environ):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if path == "/health" and method == "GET":
            return {"status": "ok", "gallery": len(self.index.labels) if self.index else 0,
                    "feature_dim": self.recognizer.predictor.info["feature_dim"], "max_pixels": self.max_pixels}
        if path not in ("/predict", "/health"):
            raise HTTPError(404, f"unknown path {path}: POST /predict with the image bytes, or GET /health")
        if path == "/health" or method != "POST":
            raise HTTPError(405, f"{method} {path}: use POST /predict or GET /health")
        if not environ.get("CONTENT_LENGTH"):
            raise HTTPError(411, "Content-Length required: POST the image bytes with their length")
        topk = _topk(environ.get("QUERY_STRING", ""))
        size = int(environ["CONTENT_LENGTH"])  # waitress has checked it is digits, under max_bytes
        if size == 0:
            raise HTTPError(400, "empty body: send the image bytes")
        try:
            image = load_image(environ["wsgi.input"].read(size), self.max_pixels)
        except ImageTooLarge as e:
            raise HTTPError(413, str(e)) from None
        except ImageError as e:
            raise HTTPError(400, str(e)) from None
        feat = self.embed(image)
        body = {"feature_dim": len(feat), "feature": feat.tolist()}
        if self.index is not None:
            body["top"] = self.index.search(feat[None], topk)[0]
        return body


class _JsonErrorTask(ErrorTask):
    """waitress's own refusals (malformed request or Content-Length 400, body over the limit 413,
    unhandled 500) in the same JSON shape as the application's."""

    def execute(self):
        e = self.request.error
        message = e.body
        if e.code == 413:
            message = f"request body over the limit of {self.channel.adj.max_request_body_size - 1} bytes"
        body = json.dumps({"error": f"{e.reason}: {message}"}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


class FeatureServer:
    """waitress serving ``app``: ``run()`` blocks, ``shutdown()`` (from any thread) ends it."""

    def __init__(self, app, host="127.0.0.1", port=8866, threads=2, max_bytes=20 * 2 ** 20, timeout=30,
                 backlog=1024, connection_limit=200):
        self.app = app
        self.server = create_server(
            app, host=host, port=port, threads=threads, backlog=backlog, connection_limit=connection_limit,
            channel_timeout=timeout, cleanup_interval=max(1, timeout // 3),
            max_request_body_size=max_bytes + 1,  # waitress refuses lengths >= this
            ident="ppufo-serve", expose_tracebacks=False, clear_untrusted_proxy_headers=True)
        self.server.channel_class = _JsonErrorChannel
        self.host, self.port = host, self.server.effective_port

    def run(self):
        try:
            self.server.run()
        finally:
            self.server.task_dispatcher.shutdown()

    def shutdown(self):
        def close_all():  # runs on the I/O thread; its loop ends when no socket is left
            for channel in list(self.server._map.values()):
                channel.close()
        self.server.trigger.pull_trigger(close_all)


def serve(model_dir, index_dir=None, host="127.0.0.1", port=8866, threads=2, cpu_threads=1,
          max_pixels=None, **server_kwargs):
    """A FeatureServer for an exported model (and gallery index); call ``run()``."""
    recognizer = Recognizer(model_dir, batch_size=1, cpu_threads=cpu_threads)
    index = GalleryIndex.load(index_dir) if index_dir else None
    return FeatureServer(FeatureApp(recognizer, index, max_pixels), host, port, threads, **server_kwargs)
