"""HTTP feature + gallery search service on exported task models (ppufo-serve).

ppufo-serve --model_dir inference/quickstart/person --index_dir index/person --port 8866
ppufo-serve --task person=inference/quickstart/person:index/person --task vehicle=inference/quickstart/vehicle
ppufo-serve -c deploy/configs/onnx.yaml --model_dir inference/quickstart/person
curl -X POST --data-binary @query.jpg "http://127.0.0.1:8866/predict?topk=5"          # one model
curl -X POST --data-binary @query.jpg "http://127.0.0.1:8866/predict/person?topk=5"   # any service
-> {"task": "person", "feature_dim": 128, "feature": [...], "top": [{"id", "label", "score", "path"}, ...]}
ppufo-serve ... --index_dir index/person --allow_gallery_updates [--save_gallery_updates]
curl -X POST --data-binary @new.jpg "http://127.0.0.1:8866/gallery/add/person?label=0042&path=new.jpg"
curl -X POST "http://127.0.0.1:8866/gallery/remove/person?id=17&label=0013"

Every route exists as ``/<route>/<task>``; the bare ``/predict``, ``/gallery/add`` and
``/gallery/remove`` serve a service of one model, and with several they answer 400 naming the
tasks. ``GET /health`` checks every task (``/health/<task>`` one).

Served by waitress (docs/deploy.md says why): its I/O thread reads each request whole before a
worker sees it, so a slow or stalled upload never holds a predictor. http_limits.py adds what
waitress lacks against slow clients (deadlines per request, a per-address cap, room-making at the
connection limit). Worker threads decode and preprocess; each task's model call is batched across
requests by its batcher thread, or, with batching off, run by the worker's own predictor clone
(served_task.py). Every answer, refusals included, is JSON. ``/health`` answers from one real
inference per task (cached a few seconds). The gallery routes exist only when the operator turns
them on; searches run while no change is being applied (GalleryIndex's lock), and changes reach
disk only when asked.
"""
import collections
import json
import logging
import os
from http import HTTPStatus
from urllib.parse import parse_qs

import numpy as np

from ..io.image import ImageTooLarge, decode_image
from ..utils.errors import DataError
from .batcher import BatcherClosed
from .gallery import GalleryIndex, GalleryWouldBeEmpty, NotInGallery
from .gallery_files import GalleryChanged
from .http_limits import GuardedServer, Limits
from .recognizer import FORMATS, Recognizer
from .served_task import (DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH, TASK_NAME, ServedTask,
                          default_max_pixels)  # noqa: F401  (default_max_pixels: part of this module's API)

log = logging.getLogger("ppufo.serve")
MAX_TOPK = 1000
MAX_LABEL = 256  # characters of a label or a path given to /gallery/add
GALLERY_ROUTES = ("/gallery/add", "/gallery/remove")
ROUTES = ("/predict", "/health") + GALLERY_ROUTES
RAW_BYTES_HINT = ("send the raw image bytes as the body, not a form: "
                  "curl -X POST --data-binary @query.jpg \"http://HOST:PORT/predict?topk=5\"")

# One model to serve: ``name`` None takes the task recorded in its inference.yml (else the folder's
# name); ``recognizer`` None builds one from ``model_dir`` with serve()'s backend and threads.
TaskSpec = collections.namedtuple("TaskSpec", "name model_dir index_dir recognizer", defaults=(None, None, None))


class HTTPError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _route(path):
    """(route, task or None) for ``/route`` or ``/route/<task>``; (None, None) for any other path."""
    for route in ROUTES:
        if path == route:
            return route, None
        if path.startswith(route + "/"):
            return route, path[len(route) + 1:]
    return None, None


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
    """The WSGI application over ``tasks`` (ServedTask, one per task model, distinct names).
    ``health_ttl``: seconds a task's /health self-test result is reused."""

    def __init__(self, tasks, health_ttl=3.0):
        self.tasks = {}
        for task in tasks:
            if task.name in self.tasks:
                raise ValueError(f"task {task.name!r} given twice (--task): each task name serves one model")
            self.tasks[task.name] = task
        if not self.tasks:
            raise ValueError("no model to serve: give --model_dir, or --task NAME=MODEL_DIR (repeatable)")
        self.health_ttl = health_ttl
        self.connection_stats = None  # set by FeatureServer: its slow-client counters

    @property
    def single(self):
        """The task of a one-model service (the bare routes serve it), else None."""
        return next(iter(self.tasks.values())) if len(self.tasks) == 1 else None

    @property
    def allow_updates(self):
        return any(t.allow_updates for t in self.tasks.values())

    def close(self):
        """Stop every task's batcher (queued requests get 503)."""
        for task in self.tasks.values():
            task.close()

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

    def health(self, task=None):
        """-> (status code, body) for ``task`` or, if None, every task: each one's cached self-test.
        One task's details stand at the top level too (as before several tasks were served)."""
        tasks = [task] if task else list(self.tasks.values())
        each = {t.name: t.health(self.health_ttl) for t in tasks}
        failing = {name: b["reason"] for name, b in each.items() if "reason" in b}
        if len(each) == 1:
            (name, body), = each.items()
            body = {"task": name, **body}
        else:
            body = {"status": "failing" if failing else "ok"}
            if failing:
                body["reason"] = "; ".join(f"task {name}: {reason}" for name, reason in failing.items())
        body["tasks"] = each
        if self.connection_stats is not None:
            body["connections"] = self.connection_stats()
        return (503 if failing else 200), body

    def routes_hint(self):
        if self.single:
            return "POST /predict with the image bytes, or GET /health" + (
                ", POST /gallery/add or /gallery/remove" if self.allow_updates else "")
        return (f"POST /predict/<task> with the image bytes, task one of {self.names()}, or GET /health"
                + (", POST /gallery/add/<task> or /gallery/remove/<task>" if self.allow_updates else ""))

    def names(self):
        return sorted(self.tasks)

    def task_for(self, route, name):
        """The task ``route`` (with ``/<name>`` if given) is for: 400 without a name on a service of
        several models, 404 for a name it does not serve."""
        if name is None:
            if self.single:
                return self.single
            raise HTTPError(400, f"{route}: this service holds {len(self.tasks)} task models; use "
                                 f"{route}/<task> with task one of {self.names()}")
        task = self.tasks.get(name)
        if task is None:
            shown = name if len(name) <= 64 else name[:64] + "..."
            raise HTTPError(404, f"unknown task {shown!r} in {route}/<task>: this service has {self.names()}")
        return task

    def handle(self, environ):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        route, name = _route(path)
        if route is None:
            raise HTTPError(404, f"unknown path {path}: {self.routes_hint()}")
        task = None if route == "/health" and name is None else self.task_for(route, name)
        if route == "/health" and method == "GET":
            code, body = self.health(task)
            if code != 200:
                raise HTTPError(code, f"unhealthy: {body['reason']}")
            return body
        if route in GALLERY_ROUTES and not task.allow_updates:
            raise HTTPError(404, f"{path}: gallery updates are off "
                                 + ("in this service" if self.single else f"for task {task.name}")
                                 + " (start ppufo-serve with --index_dir (or --task NAME=MODEL_DIR:INDEX_DIR) and "
                                   "--allow_gallery_updates to turn them on)")
        if route == "/health" or method != "POST":
            some = "" if self.single else "/<task>"
            raise HTTPError(405, f"{method} {path}: use POST /predict{some} or GET /health"
                                 + (f"; POST /gallery/add{some} and /gallery/remove{some}" if self.allow_updates
                                    else ""))
        query = environ.get("QUERY_STRING", "")
        if route == "/gallery/remove":
            return self.remove(task, query)
        if not environ.get("CONTENT_LENGTH"):
            raise HTTPError(411, "Content-Length required: POST the image bytes with their length")
        if route == "/gallery/add":
            label, where = _text(query, "label", True), _text(query, "path", False) or ""
            return self.add(task, self.feature(environ, task), label, where)
        topk = _topk(query)
        feat = self.feature(environ, task)
        body = {"task": task.name, "feature_dim": len(feat), "feature": feat.tolist()}
        if task.index is not None:
            body["top"] = task.index.search(feat[None], topk)[0]
        return body

    def feature(self, environ, task):
        """The feature of the image in the request body (400 / 413 for a bad one, 500 if not finite,
        503 if the service is shutting down). The body is read and decoded in this thread."""
        size = int(environ["CONTENT_LENGTH"])  # the parser has checked: at most 19 ASCII digits, under max_bytes
        if size == 0:
            raise HTTPError(400, "empty body: send the image bytes")
        try:
            with task.embedding() as embed:
                data = environ["wsgi.input"].read(size)
                if _looks_like_a_form(environ, data[:1024]):
                    raise HTTPError(400, f"a multipart form upload: {RAW_BYTES_HINT}")
                try:
                    image = decode_image(data, FORMATS, task.max_pixels, where="<uploaded bytes>")
                except ImageTooLarge as e:
                    raise HTTPError(413, str(e)) from None
                except DataError as e:
                    raise HTTPError(400, str(e)) from None
                feat = embed(image)
        except BatcherClosed as e:
            raise HTTPError(503, str(e)) from None
        if not np.isfinite(feat).all():
            log.error("task %s: the model gave a non-finite feature for a %dx%d image", task.name, *image.size)
            raise HTTPError(500, "the model gave a non-finite feature (NaN or inf) for this image")
        return feat

    def add(self, task, feat, label, path):
        (new,) = task.index.add(feat[None], [label], [path])
        log.info("gallery of task %s: added id %d (label %r)", task.name, new, label)
        return {"task": task.name, "id": new, "label": label, "path": path, "gallery": len(task.index),
                **self.persist(task, f"added as id {new}")}

    def remove(self, task, query):
        ids, label = _ids(query), parse_qs(query, keep_blank_values=True).get("label", [])
        if not (ids or label):
            raise HTTPError(400, "nothing to remove: give id=<gallery id> and/or label=<label> (repeatable)")
        try:
            removed = task.index.remove(ids, label)
        except NotInGallery as e:
            raise HTTPError(404, str(e)) from None
        except GalleryWouldBeEmpty as e:
            raise HTTPError(409, str(e)) from None
        log.info("gallery of task %s: removed ids %s", task.name, removed)
        return {"task": task.name, "removed": removed, "gallery": len(task.index),
                **self.persist(task, f"removed ids {removed}")}

    def persist(self, task, done):
        """Save ``task``'s gallery if the operator asked to; -> what the answer says about it."""
        if not task.save_dir:
            return {"saved": False, "note": "in memory only: lost when the service stops (start it with "
                                            "--save_gallery_updates to keep changes)"}
        try:
            task.index.save(task.save_dir)
        except (OSError, DataError, GalleryChanged) as e:
            log.error("gallery of task %s: %s in memory, but saving to %s failed: %s", task.name, done,
                      task.save_dir, e)
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
            self.server.task_dispatcher.shutdown()  # the workers finish what they hold (batchers still run)
            self.app.close()  # then the batcher threads end

    def shutdown(self):
        def close_all():  # runs on the I/O thread; its loop ends when no socket is left
            for channel in list(self.server.socket_map.values()):
                channel.close()
        self.server.trigger.pull_trigger(close_all)


def task_name(recognizer):
    """The URL name of a model given without one: the task its inference.yml records, else its folder's
    name, else "model"."""
    for name in (recognizer.predictor.info.get("task"), os.path.basename(os.path.normpath(recognizer.model_dir))):
        if isinstance(name, str) and TASK_NAME.fullmatch(name):
            return name
    return "model"


def serve(model_dir=None, index_dir=None, host="127.0.0.1", port=8866, threads=2, cpu_threads=1,
          max_pixels=None, health_ttl=3.0, backend="auto", recognizer=None, index_settings=None,
          allow_gallery_updates=False, save_gallery_updates=False, tasks=None,
          batch_wait_ms=DEFAULT_BATCH_WAIT_MS, max_batch=DEFAULT_MAX_BATCH, **server_kwargs):
    """A FeatureServer for exported models (and gallery indexes); call ``run()``.

    ``tasks``: [TaskSpec] for a service of one or more task models; without it, the one model
    ``model_dir`` (or ``recognizer``) with the gallery ``index_dir``. A model without a recognizer
    runs on ``backend`` (backends.BACKENDS) with ``cpu_threads`` per predictor; a recognizer is
    served as given (e.g. Recognizer.from_config of a deploy config). Galleries' faiss indexes are
    built per ``index_settings`` (IndexSettings). ``batch_wait_ms`` > 0 and ``max_batch`` > 1:
    each model's calls are batched (batcher.py); else every worker thread runs its own clone.
    Refuses to start (ValueError naming the file) on an empty or non-finite gallery, a gallery of
    another dimension than its model's, or a model that fails its self-test.
    ``allow_gallery_updates``: /gallery/add and /gallery/remove exist for every task with a
    gallery; ``save_gallery_updates``: each change is saved to that task's ``index_dir``."""
    specs = list(tasks) if tasks else [TaskSpec(None, model_dir, index_dir, recognizer)]
    if (allow_gallery_updates or save_gallery_updates) and not any(s.index_dir for s in specs):
        raise ValueError("gallery updates need a gallery to update: give --index_dir (or --task "
                         "NAME=MODEL_DIR:INDEX_DIR)")
    batching = batch_wait_ms > 0 and max_batch > 1
    served = []
    try:
        for spec in specs:
            rec = spec.recognizer or Recognizer(spec.model_dir, batch_size=max_batch if batching else 1,
                                                backend=backend, cpu_threads=cpu_threads)
            index = GalleryIndex.load(spec.index_dir, index_settings) if spec.index_dir else None
            updates = allow_gallery_updates and index is not None
            served.append(ServedTask(spec.name or task_name(rec), rec, index, max_pixels, updates,
                                     spec.index_dir if updates and save_gallery_updates else None,
                                     batch_wait_ms, max_batch))
        app = FeatureApp(served, health_ttl)
        for spec, task in zip(specs, served):
            reason = task.self_test()
            if reason:
                where = f"{task.recognizer.model_dir}{' + ' + spec.index_dir if spec.index_dir else ''}"
                which = f"task {task.name}: " if len(specs) > 1 else ""
                raise ValueError(f"{which}{where}: self-test failed: {reason}")
            task.forget_thread_clones()  # the test's predictor clone belongs to this thread, not a worker
        return FeatureServer(app, host, port, threads, **server_kwargs)
    except BaseException:
        for task in served:
            task.close()
        raise
