"""PaddleClas-style entry point of `ppufo.cli.quantize` (see its docstring, or run with -h)."""
from ppufo.cli.quantize import main

if __name__ == "__main__":
    main()
