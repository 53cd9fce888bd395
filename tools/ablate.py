"""PaddleClas-style entry point of `ppufo.cli.ablate` (see its docstring, or run with -h)."""
from ppufo.cli.ablate import main

if __name__ == "__main__":
    main()
