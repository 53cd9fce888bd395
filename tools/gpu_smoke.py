"""PaddleClas-style entry point of `ppufo.cli.gpu_smoke` (see its docstring, or run with -h)."""
from ppufo.cli.gpu_smoke import main

if __name__ == "__main__":
    main()
