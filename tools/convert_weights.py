"""PaddleClas-style entry point of `ppufo.cli.convert_weights` (see its docstring, or run with -h)."""
from ppufo.cli.convert_weights import main

if __name__ == "__main__":
    main()
