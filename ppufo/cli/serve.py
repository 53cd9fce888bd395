"""HTTP feature + gallery search service (ppufo-serve; deploy/serving/server.py)."""
import argparse

from ..inference.serving import serve


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--index_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8866)
    a = p.parse_args(argv)
    server = serve(a.model_dir, a.index_dir, a.host, a.port)
    print(f"serving {a.model_dir} on http://{a.host}:{server.server_address[1]} (POST /predict, GET /health)")
    server.serve_forever()


if __name__ == "__main__":
    main()
