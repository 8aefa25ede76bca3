"""python -m adam_c.bench: runs the benchmark command line (adam_c.bench.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
