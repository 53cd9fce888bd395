"""PaddleClas-style entry point of `ppufo.cli.check_data` (see its docstring, or run with -h)."""
from ppufo.cli.check_data import main

if __name__ == "__main__":
    main()
