"""Benchmarks (``python -m ablate.bench``): the trainer's throughput against the tutorial loop, fused groups and
packed processes (``throughput``), Ray's overhead of a grid, and the bookkeeping at scale (``bookkeeping``).
Nothing in ablate imports this package (an import-linter contract keeps it so)."""

from ablate.bench.cli import main
from ablate.bench.throughput import fused_rates, grid_overhead, packing, trainer_rates, tutorial_loop

__all__ = ["main", "tutorial_loop", "trainer_rates", "fused_rates", "packing", "grid_overhead"]
