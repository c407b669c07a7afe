"""Evaluation tools: diffusion training harness, LDS benchmarks, the LDS metric.

Submodules import heavy dependencies (torch, diffusers) lazily; importing this package is cheap.
"""
from .lds import LDSResult, lds

__all__ = ["lds", "LDSResult"]
