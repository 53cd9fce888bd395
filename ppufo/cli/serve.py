"""HTTP feature + gallery search service (ppufo-serve; deploy/serving/server.py).

ppufo-serve --model_dir inference/quickstart/person [--backend onnxruntime]
ppufo-serve -c deploy/configs/onnx.yaml --model_dir inference/quickstart/person
ppufo-serve --task person=inference/quickstart/person:index/person --task vehicle=inference/quickstart/vehicle
ppufo-serve --model_dir ... --index_dir index/person --allow_gallery_updates [--save_gallery_updates]
ppufo-serve -c serve_tasks.yaml   # Global.tasks: {person: {model_dir: ..., index_dir: ...}, vehicle: {...}}
With -c every model's predictor is built from the deploy config, as ppufo-predict builds it
(Recognizer.from_config: device, TensorRT, oneDNN, ONNX Runtime, int8 models alike), and
--model_dir, --index_dir, --index_type, --backend and --cpu_threads override its keys; each --task
replaces Global.model_dir and IndexProcess.index_dir with its own, as each entry of the config's
Global.tasks does (--task adds tasks to those). Concurrent requests to one model
are batched (--batch_wait_ms, --max_batch; docs/deploy.md).
"""
import argparse
import collections
import json
import logging
import os
import signal
import sys

from ..inference.backends import BACKENDS, RUNTIME_NAMES, USE_ONNX, config_backend
from ..inference.deploy_config import load_deploy_config
from ..inference.recognizer import Recognizer
from ..inference.search_index import INDEX_TYPES, IndexSettings
from ..inference.served_task import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH, check_task_name
from ..inference.serving import TaskSpec, serve
from ..utils.config import arg_range

# What main() hands to serve(): the tasks (TaskSpec) and what their predictors share.
Service = collections.namedtuple("Service", "tasks backend cpu_threads index_settings max_batch threads")


def task_arg(text):
    """An argparse ``type`` for --task NAME=MODEL_DIR[:INDEX_DIR] -> TaskSpec."""
    name, eq, dirs = text.partition("=")
    model_dir, _, index_dir = dirs.partition(":")
    if not (eq and model_dir) or ":" in index_dir or (dirs.endswith(":") and not index_dir):
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL_DIR or NAME=MODEL_DIR:INDEX_DIR (paths without "
                                         f"':'), got {text!r}")
    try:
        check_task_name(name, "NAME")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return TaskSpec(name, model_dir, index_dir or None)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="deploy YAML whose Global section sets the predictor (model_dir, device, "
                                          "use_onnx, cpu_num_threads, ...) and IndexProcess.index_dir the gallery")
    p.add_argument("--model_dir", help="exported model folder (Global.model_dir; required without -c or --task); "
                                       "served at /predict and /predict/<its task>")
    p.add_argument("--index_dir", help="gallery index (IndexProcess.index_dir)")
    p.add_argument("--task", action="append", type=task_arg, metavar="NAME=MODEL_DIR[:INDEX_DIR]",
                   help="a task model (and its gallery) served at /predict/NAME (and /gallery/add/NAME, "
                        "/gallery/remove/NAME); repeat for several models in one service. Replaces --model_dir "
                        "and --index_dir; with -c every task's predictor is built from the config")
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
    p.add_argument("--batch_wait_ms", type=arg_range(float, min=0), default=DEFAULT_BATCH_WAIT_MS,
                   help="batching: how long a request may wait for others to the same model to form one "
                        "predictor call (only while others are being decoded; default 5; 0 = no batching: each "
                        "worker thread runs its own predictor clone)")
    p.add_argument("--max_batch", type=arg_range(min=0), default=0,
                   help="batching: most requests in one predictor call (default 0: the config's Global.batch_size "
                        f"with -c, else {DEFAULT_MAX_BATCH}; 1 = no batching)")
    p.add_argument("--threads", type=arg_range(min=0), default=0,
                   help="worker threads: they read, decode and preprocess requests (default 0: 2 x --max_batch "
                        "with batching, so one batch is decoded while another runs; else 2, each with its own "
                        "predictor clone per task)")
    p.add_argument("--cpu_threads", type=arg_range(min=0), default=0,
                   help="math threads per predictor (default 0: the config's Global.cpu_num_threads with -c; "
                        "else with batching (cores - 1) // tasks, a core left to the workers' decoding; without, "
                        "cores // threads; at least 1)")
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
    if not (a.model_dir or a.config or a.task):
        p.error("--model_dir is required (or -c, a deploy config naming Global.model_dir, or --task NAME=MODEL_DIR)")
    if a.task and (a.model_dir or a.index_dir):
        p.error("--task NAME=MODEL_DIR[:INDEX_DIR] names each model and its gallery: give it instead of "
                "--model_dir / --index_dir")
    names = [t.name for t in a.task or ()]
    again = sorted({n for n in names if names.count(n) > 1})
    if again:
        p.error(f"--task {again[0]}=... given {names.count(again[0])} times: one model per task name")
    if a.save_gallery_updates and not a.allow_gallery_updates:
        p.error("--save_gallery_updates needs --allow_gallery_updates")
    if a.header_timeout > a.request_timeout:
        p.error(f"--header_timeout ({a.header_timeout:g}) must not exceed --request_timeout ({a.request_timeout:g})")
    return a


def batching_on(wait_ms, max_batch):
    return wait_ms > 0 and max_batch > 1


def service_settings(a):
    """Service(tasks, backend, cpu_threads, index settings, max_batch, worker threads). With -c each
    task's recognizer is the deploy config's (ppufo-predict's) with the flags over its keys, its own
    model_dir and index_dir, and batch_size = max_batch (TensorRT's engines are sized by it; 1
    without batching). Without -c, serve() builds them from the flags."""
    specs = a.task or [TaskSpec(None, a.model_dir, a.index_dir)]
    cores = os.cpu_count() or 1
    if not a.config:
        max_batch = a.max_batch or DEFAULT_MAX_BATCH
        batching = batching_on(a.batch_wait_ms, max_batch)
        threads = a.threads or (2 * max_batch if batching else 2)
        # batched: one predictor per task computes while the workers decode, parse and write JSON in
        # Python (about one core, the GIL's): leave them that core (2 cores, docs/deploy.md#batching:
        # 2.7-2.9 ms of server CPU per request with 1 math thread, 4.0 with 2). Unbatched: every
        # worker's clone may compute at once.
        cpu = max(1, (cores - 1) // len(specs)) if batching else max(1, cores // threads)
        settings = IndexSettings(**({"index_type": a.index_type} if a.index_type else {}))
        return Service(specs, a.backend or "auto", a.cpu_threads or cpu, settings, max_batch, threads)
    flags = {"IndexProcess.index_type": a.index_type,
             "Global.use_onnx": None if a.backend is None else USE_ONNX[a.backend],
             "Global.cpu_num_threads": a.cpu_threads or None}
    shared = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    base = load_deploy_config(a.config, shared)
    specs = config_tasks(a, base["Global"].get("tasks")) or specs
    max_batch = a.max_batch or base["Global"]["batch_size"]
    batching = batching_on(a.batch_wait_ms, max_batch)
    tasks = []
    for spec in specs:
        own = {"Global.model_dir": spec.model_dir, "IndexProcess.index_dir": spec.index_dir, "Global.tasks": None}
        if spec.name is None:  # --model_dir / --index_dir override the config's only when given
            own = {k: v for k, v in own.items() if v is not None}
        own["Global.batch_size"] = max_batch if batching else 1
        cfg = load_deploy_config(a.config, shared + [f"{k}={json.dumps(v)}" for k, v in own.items()])
        tasks.append(TaskSpec(spec.name, cfg["Global"]["model_dir"], cfg["IndexProcess"]["index_dir"],
                              Recognizer.from_config(cfg)))
    return Service(tasks, config_backend(base), base["Global"]["cpu_num_threads"],
                   IndexSettings.from_config(base["IndexProcess"]), max_batch,
                   a.threads or (2 * max_batch if batching else 2))


def config_tasks(a, tasks):
    """The config's Global.tasks as TaskSpecs, then the --task flags; None if it lists none."""
    if not tasks:
        return None
    if a.model_dir or a.index_dir:
        raise ValueError(f"--model_dir / --index_dir: {a.config} lists its task models under Global.tasks; add "
                         f"another with --task NAME=MODEL_DIR[:INDEX_DIR]")
    again = [t.name for t in a.task or () if t.name in tasks]
    if again:
        raise ValueError(f"--task {again[0]}=...: task {again[0]} is also in {a.config} (Global.tasks.{again[0]}); "
                         f"define each task once")
    return [TaskSpec(name, t["model_dir"], t["index_dir"]) for name, t in tasks.items()] + list(a.task or ())


def describe(server, service, a):
    """The start-up lines: where, which tasks on which runtime, how requests reach the models."""
    app = server.app
    batching = batching_on(a.batch_wait_ms, service.max_batch)
    how = (f"{service.threads} worker threads; batches of up to {service.max_batch} requests within "
           f"{a.batch_wait_ms:g} ms on one predictor per task x {service.cpu_threads} CPU threads" if batching else
           f"{service.threads} worker threads, each with its own predictor per task x {service.cpu_threads} CPU "
           f"threads (no batching)")
    lines = []
    for name, task in app.tasks.items():
        runtime = RUNTIME_NAMES[task.recognizer.predictor.backend]  # what auto picked
        gallery = "" if task.index is None else (
            f"; gallery of {len(task.index)} items, {task.index.kind} index, updates "
            + {"off": "off", "in memory": "ON (POST /gallery/add, /gallery/remove), in memory only: lost at exit",
               "saved": f"ON (POST /gallery/add, /gallery/remove), saved to {task.save_dir}"}[task.updates_mode()])
        lines.append((name, task.recognizer.model_dir, runtime, task.max_pixels, gallery))
    where = f"http://{server.host}:{server.port}"
    if app.single:
        name, model_dir, runtime, pixels, gallery = lines[0]
        return [f"serving {model_dir} with {runtime} on {where} (POST /predict or /predict/{name}, GET /health); "
                f"{how}, images up to {pixels} pixels{gallery}"]
    return ([f"serving {len(lines)} tasks on {where} (POST /predict/<task>, GET /health or /health/<task>); {how}"]
            + [f"  {name}: {model_dir} with {runtime}, images up to {pixels} pixels{gallery}"
               for name, model_dir, runtime, pixels, gallery in lines])


def main(argv=None):
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s %(levelname)s: %(message)s")
    try:
        service = service_settings(a)
        server = serve(tasks=service.tasks, host=a.host, port=a.port, threads=service.threads,
                       cpu_threads=service.cpu_threads, max_pixels=a.max_pixels or None, health_ttl=a.health_ttl,
                       backend=service.backend, index_settings=service.index_settings,
                       allow_gallery_updates=a.allow_gallery_updates, save_gallery_updates=a.save_gallery_updates,
                       batch_wait_ms=a.batch_wait_ms, max_batch=service.max_batch, max_bytes=a.max_bytes,
                       timeout=a.timeout, header_timeout=a.header_timeout, request_timeout=a.request_timeout,
                       per_client=a.per_client, backlog=a.backlog, connection_limit=a.connection_limit)
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # refused at start: say why, no traceback
        sys.exit(f"error: {e}")
    print("\n".join(describe(server, service, a)), flush=True)
    # SIGTERM ends run() as Ctrl-C does (Paddle's own handler would abort the process): its finally
    # lets the workers finish and stops the batcher threads
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()


if __name__ == "__main__":
    main()
