"""Load on the HTTP service (ppufo-serve): valid and hostile requests mixed, then slow-client attacks.

python benchmark/serve_load.py [--requests 2000] [--clients 20] [--hostile 0.12] [--threads 1 2]
    [--attacks slowloris idle-flood] [--attack_sockets 300] [--attack_seconds 30] [--trickle 10]
    [--attack_addresses 30] [--attack_clients 4]

Exports the quickstart model (random weights: the speed does not depend on them) with a
1000-image gallery, starts `ppufo-serve` in its own process once per `--threads` value (1
predictor, then 2 clones), and sends the same request mix from `--clients` client threads on
127.0.0.1. Hostile requests are drawn from the kinds below; each must get its own status code.
"Dropped" = no answer, a broken connection, a non-JSON answer or a wrong status code.
Peak memory is the server process's VmHWM. Latency percentiles are over the valid requests.

Attacks (after the mixed load; one more server, --threads = the last value, default flags): for
--attack_seconds, --attack_clients threads send valid requests back to back from 127.0.0.1, first
alone (the quiet baseline), then beside each attack, and count how many are answered 200 (a request
may take up to 60 s) and their p95. The attackers come from --attack_addresses loopback addresses
(127.0.0.2, ...), so that a per-address cap alone cannot stop them:
  slowloris   --attack_sockets sockets each send a partial request header, then one more header line
              every --trickle seconds; a socket the server closes is reopened within a second;
  idle-flood  --attack_sockets sockets connect and send nothing; closed ones are reopened likewise.
Last line: the worst valid-client p95 under attack against the quiet p95, each attack's share of
valid requests answered, then the mixed load's drops and the last --threads value against the first.
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


def cpu_seconds(pid):
    """User + system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_gb(pid):
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return kb / 2 ** 20


def start_server(model_dir, index_dir, threads, kinds):
    """(process, port) of a warmed-up ppufo-serve."""
    cmd = [sys.executable, "-m", "ppufo.cli.serve", "--model_dir", model_dir, "--index_dir", index_dir,
           "--port", "0", "--threads", str(threads)]
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
    for _ in range(2 * threads):  # warm-up: each worker's clone builds its oneDNN kernels
        send(port, *kinds["valid"][:3])
    return server, port


def load_run(model_dir, index_dir, threads, plan, kinds, clients):
    server, port = start_server(model_dir, index_dir, threads, kinds)
    try:
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


def valid_clients(port, kinds, clients, seconds):
    """[(ok, seconds)] of valid requests sent back to back by ``clients`` threads for ``seconds``."""
    results, lock, end = [], threading.Lock(), time.time() + seconds

    def client():
        while time.time() < end:
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
    server, port = start_server(model_dir, index_dir, a.threads[-1], kinds)
    out = {}
    try:
        for phase in ["quiet"] + a.attacks:
            attack = None if phase == "quiet" else Attack(phase, port, a.attack_sockets, a.attack_addresses,
                                                          a.trickle)
            cpu = cpu_seconds(server.pid)
            results = valid_clients(port, kinds, a.attack_clients, a.attack_seconds)
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
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="predictor threads per run")
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
    mixed = (f"mixed load {dropped} dropped of {a.requests} ({a.clients} clients, {a.hostile:.0%} hostile), "
             f"{rates[last] / rates[first]:.2f}x the req/s of {first} predictor(s) with {last}, "
             f"{rates[last]:.0f} req/s, p95 {p95 * 1000:.0f} ms, peak {peak:.2f} GB")
    if not a.attacks:
        print(mixed)
        return
    attacks = attack_runs(a, model_dir, index_dir, kinds)
    quiet = attacks["quiet"][1]
    worst = max(attacks[k][1] for k in a.attacks)
    each = "; ".join(f"{k} {attacks[k][0]:.0%} of {attacks[k][2]} answered, p95 {attacks[k][1] * 1000:.0f} ms"
                     for k in a.attacks)
    print(f"{worst / quiet:.2f}x the quiet p95 ({quiet * 1000:.0f} ms) at worst under {a.attack_sockets} attacking "
          f"sockets from {a.attack_addresses} addresses: {each}; {mixed}")


if __name__ == "__main__":
    main()
