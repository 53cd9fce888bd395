"""Load on the HTTP service (ppufo-serve) with valid and hostile requests mixed, one run.

python benchmark/serve_load.py [--requests 2000] [--clients 20] [--hostile 0.12] [--threads 1 2]

Exports the quickstart model (random weights: the speed does not depend on them) with a
1000-image gallery, starts `ppufo-serve` in its own process once per `--threads` value (1
predictor, then 2 clones), and sends the same request mix from `--clients` client threads on
127.0.0.1. Hostile requests are drawn from the kinds below; each must get its own status code.
"Dropped" = no answer, a broken connection, a non-JSON answer or a wrong status code.
Peak memory is the server process's VmHWM. Latency percentiles are over the valid requests.
Last line: the last --threads value against the first, then its counts.
"""
import argparse
import http.client
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

import ppufo  # noqa: F401  (before paddle: it configures MKL)
import numpy as np
import paddle
from PIL import Image

from ppufo.arch import build_model
from ppufo.engine.exporter import export_task
from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.predictor import load_model_info
from ppufo.utils.config import load_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def encode(image, fmt):
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def request_kinds(rs):
    """name -> (path, body, headers, expected status)."""
    photo = encode(Image.fromarray(rs.randint(0, 256, (256, 128, 3), dtype=np.uint8)), "JPEG")
    bomb = encode(Image.new("1", (13000, 13000)), "PNG")  # 20 KB, 169 MP
    return {
        "valid": ("/predict?topk=5", photo, {}, 200),
        "bad topk": ("/predict?topk=-1", photo, {}, 400),
        "bad Content-Length": ("/predict", photo, {"Content-Length": "1.5"}, 400),
        "no Content-Length": ("/predict", b"", {"Content-Length": None}, 411),
        "pixel bomb": ("/predict", bomb, {}, 413),
        "body over limit": ("/predict", b"", {"Content-Length": str(10 ** 9)}, 413),
        "not an image": ("/predict", b"<html>" * 100, {}, 400),
        "truncated JPEG": ("/predict", photo[:len(photo) // 3], {}, 400),
    }


def send(port, path, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("POST", path)
        length = headers.get("Content-Length", str(len(body)))
        if length is not None:
            conn.putheader("Content-Length", length)
        conn.endheaders()
        conn.send(body)
        resp = conn.getresponse()
        json.loads(resp.read())
        return resp.status
    finally:
        conn.close()


def peak_memory_gb(pid):
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return kb / 2 ** 20


def load_run(model_dir, index_dir, threads, plan, kinds, clients):
    cmd = [sys.executable, "-m", "ppufo.cli.serve", "--model_dir", model_dir, "--index_dir", index_dir,
           "--port", "0", "--threads", str(threads)]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        if "http://" not in line:
            raise RuntimeError(f"ppufo-serve did not start: {line!r}")
        port = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1].rstrip(")"))
        for _ in range(2 * threads):  # warm-up: each worker's clone builds its oneDNN kernels
            send(port, *kinds["valid"][:3])
        todo, lock = list(enumerate(plan)), threading.Lock()
        results = [None] * len(plan)

        def client():
            while True:
                with lock:
                    if not todo:
                        return
                    i, kind = todo.pop()
                path, body, headers, expected = kinds[kind]
                start = time.perf_counter()
                try:
                    ok = send(port, path, body, headers) == expected
                except (OSError, http.client.HTTPException, ValueError):
                    ok = False
                results[i] = (kind, ok, time.perf_counter() - start)
        start = time.perf_counter()
        workers = [threading.Thread(target=client) for _ in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
        return wall, results, peak_memory_gb(server.pid)
    finally:
        server.terminate()
        server.wait(30)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--hostile", type=float, default=0.12)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="predictor threads per run")
    a = p.parse_args()
    rs = np.random.RandomState(0)
    kinds = request_kinds(rs)
    hostile = [k for k in kinds if k != "valid"]
    n_bad = round(a.requests * a.hostile)
    plan = ["valid"] * (a.requests - n_bad) + [hostile[i % len(hostile)] for i in range(n_bad)]
    random.Random(0).shuffle(plan)

    cfg = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), ["Export.chip=cpu_x86"])
    paddle.seed(0)
    model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    model.eval()
    with tempfile.TemporaryDirectory() as work:
        run_all(a, cfg, model, work, rs, kinds, plan)


def run_all(a, cfg, model, work, rs, kinds, plan):
    """Export the model and a random gallery into ``work``, then one load run per --threads value."""
    hostile = [k for k in kinds if k != "valid"]
    n_bad = sum(k != "valid" for k in plan)
    model_dir, index_dir = os.path.join(work, "model"), os.path.join(work, "index")
    export_task(model, "person", cfg, model_dir)
    dim = load_model_info(model_dir)["feature_dim"]
    feats = rs.randn(1000, dim).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    GalleryIndex(feats, [str(i // 4) for i in range(1000)], [f"g{i}.jpg" for i in range(1000)]).save(index_dir)
    print(f"quickstart model {cfg['Global']['image_shape']}, {a.requests} requests from {a.clients} clients, "
          f"{n_bad} hostile ({', '.join(hostile)}); {os.cpu_count()} cores")

    rates = {}
    for threads in a.threads:
        wall, results, peak = load_run(model_dir, index_dir, threads, plan, kinds, a.clients)
        dropped = sum(not ok for _, ok, _ in results)
        valid = sorted(t for kind, _, t in results if kind == "valid")
        p50, p95 = valid[len(valid) // 2], valid[int(len(valid) * 0.95)]
        rates[threads] = len(results) / wall
        wrong = sorted({kind for kind, ok, _ in results if not ok})
        print(f"threads={threads}: {rates[threads]:.0f} req/s, p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
              f"{dropped} dropped{' (' + ', '.join(wrong) + ')' if wrong else ''}, server peak {peak:.2f} GB")
    first, last = a.threads[0], a.threads[-1]
    print(f"{rates[last] / rates[first]:.2f}x the req/s of {first} predictor(s) with {last}: {dropped} dropped of "
          f"{a.requests} ({a.clients} clients, {a.hostile:.0%} hostile), {rates[last]:.0f} req/s, "
          f"p95 {p95 * 1000:.0f} ms, peak {peak:.2f} GB")


if __name__ == "__main__":
    main()
