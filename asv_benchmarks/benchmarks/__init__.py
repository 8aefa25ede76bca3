"""asv benchmarks of adam_c: run with `asv run --python=same` from asv_benchmarks/ (adam_c installed)."""
