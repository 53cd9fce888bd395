"""PaddleClas-style entry point of `ppufo.cli.extract_subnet` (see its docstring, or run with -h)."""
from ppufo.cli.extract_subnet import main

if __name__ == "__main__":
    main()
