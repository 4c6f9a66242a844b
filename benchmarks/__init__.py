"""Side-by-side benchmarks of yrmpi vs raw mpi4py vs Ray: `python -m benchmarks` (see docs/performance.md)."""
