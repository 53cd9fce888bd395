"""Load on the HTTP service (ppufo-serve): valid and hostile requests mixed, batched and unbatched, then
slow-client attacks.

python benchmark/serve_load.py [--requests 2000] [--clients 20] [--hostile 0.12] [--threads 1 2]
    [--batch_wait_ms 0 5] [--batch_threads 0] [--attacks slowloris idle-flood] [--attack_sockets 300]
    [--attack_seconds 30] [--trickle 10] [--attack_addresses 30] [--attack_clients 4]

Exports the quickstart model (random weights: the speed does not depend on them) with a
1000-image gallery, starts `ppufo-serve` in its own process once per run, and sends the same request
mix from `--clients` client threads on 127.0.0.1. The runs: unbatched (--batch_wait_ms 0) once per
`--threads` value (1 predictor, then 2 clones), then batched once per positive `--batch_wait_ms` value
with `--batch_threads` worker threads (0: ppufo-serve's default, 2 x max_batch). Hostile requests are
drawn from the kinds below; each must get its own status code. "Dropped" = no answer, a broken
connection, a non-JSON answer or a wrong status code. Peak memory is the server process's VmHWM;
server CPU is its user + system time over the run, per request. Latency percentiles are over the
valid requests. Each run is warmed up by a burst of valid requests from every client first.

Attacks (after the mixed load; one more server, the first batched run's settings, else the last
--threads value unbatched; the other flags ppufo-serve's defaults): for
--attack_seconds, --attack_clients threads send valid requests back to back from 127.0.0.1, first
alone (the quiet baseline), then beside each attack, and count how many are answered 200 (a request
may take up to 60 s) and their p95. The attackers come from --attack_addresses loopback addresses
(127.0.0.2, ...), so that a per-address cap alone cannot stop them:
  slowloris   --attack_sockets sockets each send a partial request header, then one more header line
              every --trickle seconds; a socket the server closes is reopened within a second;
  idle-flood  --attack_sockets sockets connect and send nothing; closed ones are reopened likewise.
Last line: the req/s of the batched run with ppufo-serve's default wait (else the first batched
run) against the last unbatched one (with both p95s and
the drops), then the worst valid-client p95 under attack against the quiet p95 and each attack's
share of valid requests answered, then the last --threads value against the first.
"""
import argparse
import http.client
import io
import json
import multiprocessing
import os
import random
import socket
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
from ppufo.inference.served_task import DEFAULT_BATCH_WAIT_MS
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
        "unknown task": ("/predict/nowhere", photo, {}, 404),
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


def cpu_seconds(pid):
    """User + system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_gb(pid):
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return kb / 2 ** 20


def start_server(model_dir, index_dir, threads, kinds, batch_wait_ms=0.0, clients=8, cpu_threads=0):
    """(process, port) of a warmed-up ppufo-serve (``threads``, ``cpu_threads`` 0: its defaults)."""
    cmd = [sys.executable, "-m", "ppufo.cli.serve", "--model_dir", model_dir, "--index_dir", index_dir,
           "--port", "0", "--threads", str(threads), "--batch_wait_ms", str(batch_wait_ms),
           "--cpu_threads", str(cpu_threads)]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []  # the default backend (auto) may convert the model to ONNX first: paddle2onnx prints too
    for line in server.stdout:
        seen.append(line)
        if line.startswith("serving ") and "http://" in line:
            break
    else:
        server.terminate()
        raise RuntimeError(f"ppufo-serve did not start: {''.join(seen[-5:])!r}")
    port = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1].rstrip(")"))
    # warm-up: every worker's clone builds its kernels, and a batcher meets the batch sizes the load makes
    valid_clients(port, kinds, clients, requests=5 * clients)
    return server, port


def batching_stats(port):
    """The server's /health batching counters of its one task ("off" without batching)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())["batching"]
    finally:
        conn.close()


def load_run(model_dir, index_dir, threads, plan, kinds, clients, batch_wait_ms, cpu_threads=0):
    """{rate, p50, p95, dropped, wrong, peak, cpu_ms, mean_batch} of one server under the mixed load."""
    server, port = start_server(model_dir, index_dir, threads, kinds, batch_wait_ms, clients, cpu_threads)
    try:
        before = batching_stats(port)
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
        cpu = cpu_seconds(server.pid)
        start = time.perf_counter()
        workers = [threading.Thread(target=client) for _ in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
        cpu = cpu_seconds(server.pid) - cpu
        after = batching_stats(port)
        valid = sorted(t for kind, _, t in results if kind == "valid")
        mean_batch = None
        if isinstance(after, dict):  # the load's own calls, not the warm-up's
            calls = after["calls"] - before["calls"]
            mean_batch = (after["requests"] - before["requests"]) / max(1, calls)
        return {"rate": len(results) / wall, "p50": valid[len(valid) // 2], "p95": valid[int(len(valid) * 0.95)],
                "dropped": sum(not ok for _, ok, _ in results),
                "wrong": sorted({kind for kind, ok, _ in results if not ok}), "peak": peak_memory_gb(server.pid),
                "cpu_ms": cpu / len(results) * 1000, "mean_batch": mean_batch}
    finally:
        server.terminate()
        server.wait(30)


class Attack:
    """``sockets`` slow or idle connections from loopback addresses 127.0.0.2..., kept open: the ones
    the server closes are reopened every second. It runs in a process of its own, so that it does not
    take the valid clients' interpreter lock; ``stop()`` ends it and returns its summary."""

    def __init__(self, kind, port, sockets, addresses, trickle):
        ctx = multiprocessing.get_context("spawn")
        self.done, ready, self.summary = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=attack_process, args=(kind, port, sockets, addresses, trickle, self.done,
                                                             ready, self.summary), daemon=True)
        self.proc.start()
        if not ready.wait(120):
            raise RuntimeError(f"the {kind} attacker did not start")

    def stop(self):
        self.done.set()
        summary = self.summary.get(timeout=60)
        self.proc.join(30)
        return summary


def attack_process(kind, port, sockets, addresses, trickle, done, ready, summary):
    attack = AttackSockets(kind, port, sockets, addresses, trickle, done)
    attack.run(ready)
    summary.put(attack.summary())


class AttackSockets:
    HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"

    def __init__(self, kind, port, sockets, addresses, trickle, done):
        self.kind, self.port, self.addresses, self.trickle, self.done = kind, port, addresses, trickle, done
        self.socks = [None] * sockets
        self.opened = self.closed_by_server = self.refused = 0
        self.answers = {}  # status code the server closed a socket with -> count

    def open(self, i):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2,
                                         source_address=(f"127.0.0.{2 + i % self.addresses}", 0))
            if self.kind == "slowloris":
                s.sendall(self.HEAD)
            s.setblocking(False)
            self.opened += 1
            return s
        except OSError:
            self.refused += 1
            return None

    def closed(self, s):
        """True (and the answer counted) if the server has closed ``s``."""
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        self.closed_by_server += 1
        code = data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "none"
        self.answers[code] = self.answers.get(code, 0) + 1
        s.close()
        return True

    def run(self, ready):
        next_line, n = time.time() + self.trickle, 0
        while not self.done.is_set():
            trickle = self.kind == "slowloris" and time.time() >= next_line
            if trickle:
                next_line, n = time.time() + self.trickle, n + 1
            for i, s in enumerate(self.socks):
                if self.done.is_set():
                    break
                if s is not None and self.closed(s):
                    s = None
                if s is None:
                    s = self.socks[i] = self.open(i)
                elif trickle:
                    try:
                        s.send(b"X-Slow-%d: %d\r\n" % (n, i))
                    except OSError:
                        pass
            ready.set()
            self.done.wait(1.0)
        for s in self.socks:
            if s is not None:
                s.close()

    def summary(self):
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(self.answers.items()))
        return (f"{self.opened} connections opened, {self.closed_by_server} closed by the server"
                f"{' (' + answers + ')' if answers else ''}, {self.refused} connects failed")


def valid_clients(port, kinds, clients, seconds=None, requests=None):
    """[(ok, seconds)] of valid requests sent back to back by ``clients`` threads for ``seconds``
    (or ``requests`` of them in all)."""
    results, lock = [], threading.Lock()
    end = time.time() + seconds if seconds is not None else None

    def more():
        with lock:
            return time.time() < end if end is not None else len(results) + clients <= requests

    def client():
        while more():
            start = time.perf_counter()
            try:
                ok = send(port, *kinds["valid"][:3]) == 200
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
            with lock:
                results.append((ok, time.perf_counter() - start))
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def attack_runs(a, model_dir, index_dir, kinds):
    """{phase: (answered share, p95 seconds, count)} for quiet and each attack."""
    waits = [w for w in a.batch_wait_ms if w > 0]  # ppufo-serve's defaults batch: attack that if measured
    threads, wait = (a.batch_threads, waits[0]) if waits else (a.threads[-1], 0.0)
    server, port = start_server(model_dir, index_dir, threads, kinds, wait, a.attack_clients)
    out = {}
    try:
        for phase in ["quiet"] + a.attacks:
            attack = None if phase == "quiet" else Attack(phase, port, a.attack_sockets, a.attack_addresses,
                                                          a.trickle)
            cpu = cpu_seconds(server.pid)
            results = valid_clients(port, kinds, a.attack_clients, seconds=a.attack_seconds)
            cpu = cpu_seconds(server.pid) - cpu
            if attack:
                summary = attack.stop()
                time.sleep(1.5)  # the server drops the closed sockets
            times = sorted(t for _, t in results)  # a failed request counts with the time it took to fail
            share = sum(ok for ok, _ in results) / max(1, len(results))
            out[phase] = (share, times[int(len(times) * 0.95)], len(results))
            print(f"{phase}: {share:.0%} of {len(results)} valid requests answered, "
                  f"p50 {times[len(times) // 2] * 1000:.0f} ms, p95 {out[phase][1] * 1000:.0f} ms, "
                  f"server CPU {cpu / len(results) * 1000:.1f} ms per valid request"
                  + (f"; attack: {summary}" if attack else ""), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--hostile", type=float, default=0.12)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="worker threads (= predictors) of each unbatched run")
    p.add_argument("--batch_wait_ms", type=float, nargs="+", default=[0, 5],
                   help="0: the unbatched runs (one per --threads value); each value > 0: one batched run")
    p.add_argument("--batch_threads", type=int, default=0,
                   help="worker threads of the batched runs (0: ppufo-serve's default, 2 x max_batch)")
    p.add_argument("--batch_cpu_threads", type=int, default=0,
                   help="math threads of the batched runs' predictor (0: ppufo-serve's default, all cores)")
    p.add_argument("--attacks", nargs="*", default=["slowloris", "idle-flood"], choices=["slowloris", "idle-flood"])
    p.add_argument("--attack_sockets", type=int, default=300)
    p.add_argument("--attack_seconds", type=float, default=30, help="length of the quiet run and of each attack")
    p.add_argument("--trickle", type=float, default=10, help="slowloris: seconds between two header lines")
    p.add_argument("--attack_addresses", type=int, default=30, help="loopback addresses the attackers use")
    p.add_argument("--attack_clients", type=int, default=4, help="valid clients beside each attack")
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

    runs = {}  # (threads, batch_wait_ms) -> load_run's numbers
    plan_runs = ([(t, 0.0) for t in a.threads] if 0 in a.batch_wait_ms else []) + [
        (a.batch_threads, w) for w in a.batch_wait_ms if w > 0]
    for threads, wait in plan_runs:
        r = runs[threads, wait] = load_run(model_dir, index_dir, threads, plan, kinds, a.clients, wait,
                                           a.batch_cpu_threads if wait else 0)
        how = (f"batched, wait {wait:g} ms, {threads or 'default'} threads, mean batch {r['mean_batch']:.2f}" if wait
               else f"unbatched, threads={threads}")
        print(f"{how}: {r['rate']:.0f} req/s, p50 {r['p50'] * 1000:.0f} ms, p95 {r['p95'] * 1000:.0f} ms, "
              f"{r['dropped']} dropped{' (' + ', '.join(r['wrong']) + ')' if r['wrong'] else ''}, server CPU "
              f"{r['cpu_ms']:.1f} ms per request, server peak {r['peak']:.2f} GB", flush=True)
    parts = []
    plain = [k for k in runs if not k[1]]
    batched = [k for k in runs if k[1]]
    if plain and batched:
        key = next((k for k in batched if k[1] == DEFAULT_BATCH_WAIT_MS), batched[0])  # ppufo-serve's default
        u, b = runs[plain[-1]], runs[key]
        parts.append(f"{b['rate'] / u['rate']:.2f}x the req/s batched ({key[1]:g} ms wait, mean batch "
                     f"{b['mean_batch']:.2f}) vs unbatched ({plain[-1][0]} predictor(s)): {b['rate']:.0f} vs "
                     f"{u['rate']:.0f} req/s, p95 {b['p95'] * 1000:.0f} vs {u['p95'] * 1000:.0f} ms, server CPU "
                     f"{b['cpu_ms']:.1f} vs {u['cpu_ms']:.1f} ms per request, {b['dropped']} and {u['dropped']} "
                     f"dropped of {a.requests} ({a.clients} clients, {a.hostile:.0%} hostile)")
    if a.attacks:
        attacks = attack_runs(a, model_dir, index_dir, kinds)
        quiet = attacks["quiet"][1]
        worst = max(attacks[k][1] for k in a.attacks)
        each = "; ".join(f"{k} {attacks[k][0]:.0%} of {attacks[k][2]} answered, p95 {attacks[k][1] * 1000:.0f} ms"
                         for k in a.attacks)
        parts.append(f"{worst / quiet:.2f}x the quiet p95 ({quiet * 1000:.0f} ms) at worst under "
                     f"{a.attack_sockets} attacking sockets from {a.attack_addresses} addresses: {each}")
    if len(plain) > 1:
        first, last = runs[plain[0]], runs[plain[-1]]
        parts.append(f"unbatched {last['rate'] / first['rate']:.2f}x the req/s of {plain[0][0]} predictor(s) with "
                     f"{plain[-1][0]}, {last['rate']:.0f} req/s, p95 {last['p95'] * 1000:.0f} ms, "
                     f"peak {last['peak']:.2f} GB")
    if parts:
        print("; ".join(parts))


if __name__ == "__main__":
    main()
