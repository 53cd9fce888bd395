"""PaddleClas-style entry point of `ppufo.cli.export_model` (see its docstring, or run with -h)."""
from ppufo.cli.export_model import main

if __name__ == "__main__":
    main()
