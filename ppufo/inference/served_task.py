"""One task model as ppufo-serve serves it: recognizer, gallery, pixel limit, batcher, self-test.

serving.FeatureApp routes each request to one of these by task name (``/predict/<task>``). The
image is decoded and preprocessed in the request's thread; the model call is the task's Batcher's
(batcher.py), or, with batching off, the request thread's own predictor clone (Paddle Inference
predictors are not thread-safe; an ONNX Runtime "clone" is the shared session, which is).
"""
import contextlib
import logging
import re
import threading
import time

import numpy as np
from PIL import Image

from .batcher import Batcher

log = logging.getLogger("ppufo.serve")
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BATCH = 8


def default_max_pixels(image_shape):
    """256x the model's input area, at least 4096x4096: any photo passes, a decompression bomb not."""
    return max(4096 * 4096, 256 * image_shape[1] * image_shape[2])


def check_task_name(name, where="task name"):
    """``name`` if it can be a URL path segment (/predict/<task>), else a ValueError naming ``where``."""
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        raise ValueError(f"{where} {name!r}: expected 1 to 64 letters, digits, '_', '.' or '-', starting with a "
                         f"letter or digit")
    return name


class ServedTask:
    """``name``: the task in URLs; ``recognizer``: preprocess / features_of_arrays / clone
    (recognizer.Recognizer); ``index``: its GalleryIndex or None. ``batch_wait_ms`` > 0 and
    ``max_batch`` > 1 turn batching on (batcher.py); otherwise each request thread runs the model
    with its own clone, as before batching existed."""

    def __init__(self, name, recognizer, index=None, max_pixels=None, allow_updates=False, save_dir=None,
                 batch_wait_ms=DEFAULT_BATCH_WAIT_MS, max_batch=DEFAULT_MAX_BATCH):
        self.name = check_task_name(name)
        info = recognizer.predictor.info
        if index is not None:
            index.check_dim(info["feature_dim"], getattr(recognizer, "model_dir", "being served"))
        if (allow_updates or save_dir) and index is None:
            raise ValueError("gallery updates need a gallery to update: give --index_dir")
        if save_dir and not allow_updates:
            raise ValueError("--save_gallery_updates needs --allow_gallery_updates")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch={max_batch!r} (--max_batch): expected an integer >= 1")
        if not batch_wait_ms >= 0:
            raise ValueError(f"batch_wait_ms={batch_wait_ms!r} (--batch_wait_ms): expected milliseconds >= 0")
        self.recognizer, self.index = recognizer, index
        self.allow_updates, self.save_dir = allow_updates, save_dir
        self.max_pixels = max_pixels or default_max_pixels(info["image_shape"])
        self.local = threading.local()
        self._health, self._health_lock = None, threading.Lock()
        self.batcher = None
        if batch_wait_ms > 0 and max_batch > 1:
            # the clone is made in the batcher's thread, which alone runs it
            self.batcher = Batcher(lambda: recognizer.clone().features_of_arrays, max_batch, batch_wait_ms, name)

    @property
    def info(self):
        return self.recognizer.predictor.info

    @contextlib.contextmanager
    def embedding(self):
        """``with task.embedding() as embed: ...decode...; feature = embed(image)``. With batching, the
        batcher knows from the start of the block that a request is coming (and may wait for it)."""
        if self.batcher is None:
            yield self._embed_here
            return
        with self.batcher.expecting() as submit:
            yield lambda image: submit(self.recognizer.preprocess(image))

    def embed(self, image):
        with self.embedding() as embed:
            return embed(image)

    def _embed_here(self, image):
        if not hasattr(self.local, "recognizer"):
            self.local.recognizer = self.recognizer.clone()
        rec = self.local.recognizer
        return rec.features_of_arrays([rec.preprocess(image)])[0]

    def forget_thread_clones(self):
        """Drop the calling thread's clone (serve's start-up self-test ran on a thread that serves nothing)."""
        self.local = threading.local()

    def updates_mode(self):
        return "saved" if self.save_dir else "in memory" if self.allow_updates else "off"

    def details(self):
        info = self.info
        return {"feature_dim": info["feature_dim"], "gallery": len(self.index) if self.index else 0,
                "index_type": self.index.kind if self.index else None, "gallery_updates": self.updates_mode(),
                "max_pixels": self.max_pixels,
                "batching": self.batcher.snapshot() if self.batcher else "off"}

    def self_test(self):
        """None if one tiny inference through the model (the batcher, if on) and the index works,
        else the reason."""
        info = self.info
        _, h, w = info["image_shape"]
        try:
            feat = np.asarray(self.embed(Image.new("RGB", (w, h), (124, 116, 104))))
        except Exception as e:
            log.exception("health self-test of task %s: inference failed", self.name)
            return f"the model failed on a test image: {type(e).__name__}: {str(e)[:200]}"
        if feat.shape != (info["feature_dim"],):
            return f"the model gave a feature of shape {list(feat.shape)}, expected [{info['feature_dim']}]"
        if not np.isfinite(feat).all():
            return "the model gave non-finite values (NaN or inf) for a test image"
        if self.index is not None:
            try:
                top = self.index.search(feat[None], 1)[0]
            except Exception as e:
                log.exception("health self-test of task %s: gallery search failed", self.name)
                return f"the gallery search failed: {type(e).__name__}: {str(e)[:200]}"
            if not top or not np.isfinite(top[0]["score"]):
                return "the gallery search found no valid neighbour for a test image"
        return None

    def health(self, ttl):
        """{"status", details..., "checked_seconds_ago", "reason"?}: the self-test, rerun when older
        than ``ttl`` seconds (one test at a time per task)."""
        with self._health_lock:
            now = time.monotonic()
            if self._health is None or now - self._health[0] > ttl:
                self._health = (now, self.self_test())
            at, reason = self._health
        body = {"status": "failing" if reason else "ok", **self.details(),
                "checked_seconds_ago": round(time.monotonic() - at, 3)}
        if reason:
            body["reason"] = reason
        return body

    def close(self):
        if self.batcher is not None:
            self.batcher.close()
