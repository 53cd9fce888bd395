"""PaddleClas-style entry point of `ppufo.cli.plan_memory` (see its docstring, or run with -h)."""
from ppufo.cli.plan_memory import main

if __name__ == "__main__":
    main()
