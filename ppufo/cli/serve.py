"""HTTP feature + gallery search service (ppufo-serve; deploy/serving/server.py)."""
import argparse
import logging
import os

from ..inference.serving import serve


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--index_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8866, help="0 picks a free port")
    p.add_argument("--threads", type=int, default=2,
                   help="worker threads, each with its own predictor clone (default 2)")
    p.add_argument("--cpu_threads", type=int, default=0,
                   help="math threads per predictor (default: cores // threads, at least 1)")
    p.add_argument("--max_bytes", type=int, default=20 * 2 ** 20, help="largest request body (413 above)")
    p.add_argument("--max_pixels", type=int, default=0,
                   help="largest image width x height, checked before decoding (413 above; default "
                        "256x the model's input area, at least 4096x4096)")
    p.add_argument("--timeout", type=int, default=30, help="seconds before an idle or stalled connection is closed")
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("--connection_limit", type=int, default=200)
    a = p.parse_args(argv)
    for name in ("threads", "max_bytes", "timeout", "backlog", "connection_limit"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(a, name)}")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s %(levelname)s: %(message)s")
    cpu_threads = a.cpu_threads or max(1, (os.cpu_count() or 1) // a.threads)
    server = serve(a.model_dir, a.index_dir, a.host, a.port, threads=a.threads, cpu_threads=cpu_threads,
                   max_pixels=a.max_pixels or None, max_bytes=a.max_bytes, timeout=a.timeout,
                   backlog=a.backlog, connection_limit=a.connection_limit)
    print(f"serving {a.model_dir} on http://{server.host}:{server.port} (POST /predict, GET /health); "
          f"{a.threads} predictors x {cpu_threads} CPU threads, images up to {server.app.max_pixels} pixels",
          flush=True)
    server.run()


if __name__ == "__main__":
    main()
