"""HTTP feature + gallery search service (ppufo-serve; deploy/serving/server.py)."""
import argparse
import logging
import os
import sys

from ..inference.serving import serve
from ..utils.config import arg_range


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--index_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=arg_range(min=0, max=65535), default=8866, help="0 picks a free port")
    p.add_argument("--threads", type=arg_range(min=1), default=2,
                   help="worker threads, each with its own predictor clone (default 2)")
    p.add_argument("--cpu_threads", type=arg_range(min=0), default=0,
                   help="math threads per predictor (default 0: cores // threads, at least 1)")
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
    if a.header_timeout > a.request_timeout:
        p.error(f"--header_timeout ({a.header_timeout:g}) must not exceed --request_timeout ({a.request_timeout:g})")
    return a


def main(argv=None):
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s %(levelname)s: %(message)s")
    cpu_threads = a.cpu_threads or max(1, (os.cpu_count() or 1) // a.threads)
    try:
        server = serve(a.model_dir, a.index_dir, a.host, a.port, threads=a.threads, cpu_threads=cpu_threads,
                       max_pixels=a.max_pixels or None, health_ttl=a.health_ttl, max_bytes=a.max_bytes,
                       timeout=a.timeout, header_timeout=a.header_timeout, request_timeout=a.request_timeout,
                       per_client=a.per_client, backlog=a.backlog, connection_limit=a.connection_limit)
    except (OSError, ValueError, ImportError) as e:  # refused at start: say why, no traceback
        sys.exit(f"error: {e}")
    print(f"serving {a.model_dir} on http://{server.host}:{server.port} (POST /predict, GET /health); "
          f"{a.threads} predictors x {cpu_threads} CPU threads, images up to {server.app.max_pixels} pixels",
          flush=True)
    server.run()


if __name__ == "__main__":
    main()
