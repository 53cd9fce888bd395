"""PaddleClas-style entry point of `ppufo.cli.eval` (see its docstring, or run with -h)."""
from ppufo.cli.eval import main

if __name__ == "__main__":
    main()
