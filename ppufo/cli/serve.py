"""HTTP feature + gallery search service (ppufo-serve; deploy/serving/server.py).

ppufo-serve --model_dir inference/quickstart/person [--backend onnxruntime]
ppufo-serve -c deploy/configs/onnx.yaml --model_dir inference/quickstart/person
ppufo-serve --model_dir ... --index_dir index/person --allow_gallery_updates [--save_gallery_updates]
With -c the predictor is built from the deploy config, as ppufo-predict builds it, and --model_dir,
--index_dir, --index_type, --backend and --cpu_threads override its keys. Requests are embedded one
at a time.
"""
import argparse
import json
import logging
import os
import sys

from ..inference.backends import BACKENDS, RUNTIME_NAMES, USE_ONNX, config_backend
from ..inference.deploy_config import load_deploy_config
from ..inference.recognizer import Recognizer
from ..inference.search_index import INDEX_TYPES, IndexSettings
from ..inference.serving import serve
from ..utils.config import arg_range


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="deploy YAML whose Global section sets the predictor (model_dir, device, "
                                          "use_onnx, cpu_num_threads, ...) and IndexProcess.index_dir the gallery")
    p.add_argument("--model_dir", help="exported model folder (Global.model_dir; required without -c)")
    p.add_argument("--index_dir", help="gallery index (IndexProcess.index_dir)")
    p.add_argument("--index_type", choices=INDEX_TYPES,
                   help="faiss index built for the gallery at start (IndexProcess.index_type; default auto: exact "
                        "flat under 100000 items, else ivf)")
    p.add_argument("--allow_gallery_updates", action="store_true",
                   help="turn on POST /gallery/add and /gallery/remove (off: they answer 404); changes stay in "
                        "memory unless --save_gallery_updates")
    p.add_argument("--save_gallery_updates", action="store_true",
                   help="save each gallery change to --index_dir (atomically) as it is made")
    p.add_argument("--backend", choices=BACKENDS,
                   help="paddle (Paddle Inference), onnxruntime (ONNX Runtime on inference.onnx, converted on "
                        "first use) or auto (ONNX Runtime for a model under 64 MB of weights on CPU, faster there; "
                        "else Paddle Inference); default: the config's Global.use_onnx, else auto")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=arg_range(min=0, max=65535), default=8866, help="0 picks a free port")
    p.add_argument("--threads", type=arg_range(min=1), default=2,
                   help="worker threads, each with its own predictor clone (default 2)")
    p.add_argument("--cpu_threads", type=arg_range(min=0), default=0,
                   help="math threads per predictor (default 0: the config's Global.cpu_num_threads with -c, "
                        "else cores // threads, at least 1)")
    p.add_argument("--max_bytes", type=arg_range(min=1), default=20 * 2 ** 20, help="largest request body (413 above)")
    p.add_argument("--max_pixels", type=arg_range(min=0), default=0,
                   help="largest image width x height, checked before decoding (413 above; default 0: "
                        "256x the model's input area, at least 4096x4096)")
    p.add_argument("--timeout", type=arg_range(min=1), default=30,
                   help="seconds without any traffic before a connection is closed (default 30)")
    p.add_argument("--header_timeout", type=arg_range(float, above=0), default=10.0,
                   help="seconds a request's line and headers may take to arrive, however active the client "
                        "(default 10; 408 after)")
    p.add_argument("--request_timeout", type=arg_range(float, above=0), default=60.0,
                   help="seconds a whole request (headers and body) may take to arrive (default 60; 408 after)")
    p.add_argument("--per_client", type=arg_range(min=0), default=32,
                   help="connections one client address may hold open (429 above; default 32; 0 = no cap, "
                        "for use behind a reverse proxy)")
    p.add_argument("--backlog", type=arg_range(min=1), default=1024)
    p.add_argument("--connection_limit", type=arg_range(min=1), default=200,
                   help="open connections at most; at the limit the one that has waited longest without "
                        "delivering a request (idle, silent or slow) is closed to make room (default 200)")
    p.add_argument("--health_ttl", type=arg_range(float, above=0), default=3.0,
                   help="seconds a /health self-test result is reused (default 3)")
    a = p.parse_args(argv)
    if not (a.model_dir or a.config):
        p.error("--model_dir is required (or -c, a deploy config naming Global.model_dir)")
    if a.save_gallery_updates and not a.allow_gallery_updates:
        p.error("--save_gallery_updates needs --allow_gallery_updates")
    if a.header_timeout > a.request_timeout:
        p.error(f"--header_timeout ({a.header_timeout:g}) must not exceed --request_timeout ({a.request_timeout:g})")
    return a


def predictor_settings(a):
    """(recognizer or None, model_dir, index_dir, backend, cpu_threads, index settings). With -c: the
    deploy config's predictor (ppufo-predict's) and IndexProcess, the flags over its keys, batch 1.
    Without: ``serve`` builds one from the flags (the predictor's own defaults, as before deploy
    configs reached the service)."""
    if not a.config:
        settings = IndexSettings(**({"index_type": a.index_type} if a.index_type else {}))
        return (None, a.model_dir, a.index_dir, a.backend or "auto",
                a.cpu_threads or max(1, (os.cpu_count() or 1) // a.threads), settings)
    flags = {"Global.model_dir": a.model_dir, "IndexProcess.index_dir": a.index_dir,
             "IndexProcess.index_type": a.index_type,
             "Global.use_onnx": None if a.backend is None else USE_ONNX[a.backend],
             "Global.cpu_num_threads": a.cpu_threads or None, "Global.batch_size": 1}
    cfg = load_deploy_config(a.config, [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None])
    g = cfg["Global"]
    return (Recognizer.from_config(cfg), g["model_dir"], cfg["IndexProcess"]["index_dir"], config_backend(cfg),
            g["cpu_num_threads"], IndexSettings.from_config(cfg["IndexProcess"]))


def main(argv=None):
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s %(levelname)s: %(message)s")
    try:
        recognizer, model_dir, index_dir, backend, cpu_threads, settings = predictor_settings(a)
        server = serve(model_dir, index_dir, a.host, a.port, threads=a.threads, cpu_threads=cpu_threads,
                       max_pixels=a.max_pixels or None, health_ttl=a.health_ttl, backend=backend,
                       recognizer=recognizer, index_settings=settings, allow_gallery_updates=a.allow_gallery_updates,
                       save_gallery_updates=a.save_gallery_updates, max_bytes=a.max_bytes, timeout=a.timeout,
                       header_timeout=a.header_timeout, request_timeout=a.request_timeout, per_client=a.per_client,
                       backlog=a.backlog, connection_limit=a.connection_limit)
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # refused at start: say why, no traceback
        sys.exit(f"error: {e}")
    app = server.app
    runtime = RUNTIME_NAMES[app.recognizer.predictor.backend]  # what auto picked
    gallery = "" if app.index is None else (
        f"; gallery of {len(app.index)} items, {app.index.kind} index, updates "
        + {"off": "off", "in memory": "ON (POST /gallery/add, /gallery/remove), in memory only: lost at exit",
           "saved": f"ON (POST /gallery/add, /gallery/remove), saved to {index_dir}"}[app.updates_mode()])
    print(f"serving {model_dir} with {runtime} on http://{server.host}:{server.port} (POST /predict, "
          f"GET /health); {a.threads} predictors x {cpu_threads} CPU threads, images up to {app.max_pixels} "
          f"pixels{gallery}", flush=True)
    server.run()


if __name__ == "__main__":
    main()
