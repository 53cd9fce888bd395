"""HTTP feature + gallery search service on an exported model.

ppufo-serve --model_dir inference/quickstart/person --index_dir index/person --port 8866
curl -X POST --data-binary @query.jpg "http://127.0.0.1:8866/predict?topk=5"
-> {"feature_dim": 128, "feature": [...], "top": [{"label", "score", "path"}, ...]}
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from .gallery import GalleryIndex
from .recognizer import Recognizer, load_image

MAX_BYTES = 20 * 2 ** 20


def make_handler(recognizer, index):
    lock = threading.Lock()  # one predictor, one request at a time

    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if urlparse(self.path).path == "/health":
                return self.reply(200, {"status": "ok", "gallery": len(index.labels) if index else 0})
            self.reply(404, {"error": "use POST /predict with the image bytes, or GET /health"})

        def do_POST(self):
            url = urlparse(self.path)
            if url.path != "/predict":
                return self.reply(404, {"error": f"unknown path {url.path}; use /predict"})
            size = int(self.headers.get("Content-Length") or 0)
            if size <= 0:
                return self.reply(400, {"error": "empty body: send the image bytes"})
            if size > MAX_BYTES:
                return self.reply(413, {"error": f"image larger than {MAX_BYTES} bytes"})
            try:
                topk = int(parse_qs(url.query).get("topk", ["5"])[0])
                img = load_image(self.rfile.read(size))
            except ValueError as e:  # ImageError or a bad topk
                return self.reply(400, {"error": str(e)})
            with lock:
                feat = recognizer.features_of_images([img])[0]
            body = {"feature_dim": len(feat), "feature": feat.tolist()}
            if index is not None:
                body["top"] = index.search(feat[None], topk)[0]
            self.reply(200, body)

        def log_message(self, fmt, *args):
            pass

    return Handler


def serve(model_dir, index_dir=None, host="127.0.0.1", port=8866, **predictor_kwargs):
    """Start the server (returns it; call serve_forever or shutdown)."""
    rec = Recognizer(model_dir, batch_size=1, **predictor_kwargs)
    index = GalleryIndex.load(index_dir) if index_dir else None
    return ThreadingHTTPServer((host, port), make_handler(rec, index))
