"""PaddleClas-style entry point of `ppufo.cli.train` (see its docstring, or run with -h)."""
from ppufo.cli.train import main

if __name__ == "__main__":
    main()
