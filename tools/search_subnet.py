"""PaddleClas-style entry point of `ppufo.cli.search_subnet` (see its docstring, or run with -h)."""
from ppufo.cli.search_subnet import main

if __name__ == "__main__":
    main()
