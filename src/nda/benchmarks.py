"""LDS benchmarks (public entry point): ``nda.benchmarks.load("fmnist2")``.

Thin re-export of :mod:`nda.eval.benchmarks`; see ``docs/benchmark.md``.
"""
from .eval.benchmarks import SPECS, Benchmark, BenchmarkSpec, build, load, make_subsets, real_data

__all__ = ["load", "build", "Benchmark", "BenchmarkSpec", "SPECS", "make_subsets", "real_data"]
