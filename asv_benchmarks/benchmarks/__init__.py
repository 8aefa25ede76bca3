"""asv benchmarks of adam_c, timed by adam_c.bench's harness: from asv_benchmarks/, with adam_c installed,
`asv machine --yes && asv run --python=same --quick --set-commit-hash=$(git rev-parse HEAD)` (asv saves results
of an existing environment only with --set-commit-hash)."""
