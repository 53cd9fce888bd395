"""PaddleClas-style entry point of `ppufo.cli.make_demo_data` (see its docstring, or run with -h)."""
from ppufo.cli.make_demo_data import main

if __name__ == "__main__":
    main()
