"""PaddleClas-style entry point of `ppufo.cli.visualize_ranks` (see its docstring, or run with -h)."""
from ppufo.cli.visualize_ranks import main

if __name__ == "__main__":
    main()
