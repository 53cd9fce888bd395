"""PaddleClas-style entry point of `ppufo.cli.build_latency_table` (see its docstring, or run with -h)."""
from ppufo.cli.build_latency_table import main

if __name__ == "__main__":
    main()
