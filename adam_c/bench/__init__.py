"""adam_c.bench: adam_c against its memory floor, NumPy and torch, interleaved in one process (python -m adam_c.bench).

The package: `harness` (timing, shared arrays, host description) and the workloads that time through it (`step`,
`loop`, `threshold`, `dropin`, `mixed`, `compressed`, with `plot`); `cli` is the command line. The harness names are
re-exported here (the asv suite imports them); nothing in the harness imports a workload."""
from .harness import (BETAS, EPS, LR, Settings, SharedBuffers, Skipped, Timed, bytes_per_element, format_time,
                      measure_interleaved, optional_module)

__all__ = ["BETAS", "EPS", "LR", "Settings", "SharedBuffers", "Skipped", "Timed", "bytes_per_element",
           "format_time", "main", "measure_interleaved", "optional_module"]


def main(argv=None):
    """python -m adam_c.bench's entry point (see adam_c.bench.cli); returns the exit status."""
    from .cli import main as cli_main
    return cli_main(argv)
