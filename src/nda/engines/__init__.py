"""Engines: interchangeable implementations of SPEC §1 steps 2–7 behind one contract (`base.Engine`)."""

from __future__ import annotations

import torch

from ..errors import NDAError
from .base import Engine, Scale, Step
from .conv import ConvEngine
from .fast import FastEngine
from .reference import ReferenceEngine

ENGINES: dict[str, type[Engine]] = {"reference": ReferenceEngine, "conv": ConvEngine, "fast": FastEngine}


def make_engine(name: str, dtype: torch.dtype, device: torch.device, memory_budget_mb: int) -> Engine:
    """Instantiate an engine by name ("auto" picks the fastest exact engine available)."""
    if name == "auto":
        name = "fast" if "fast" in ENGINES else "conv"
    if name not in ENGINES:
        raise NDAError(f"engine {name!r} is not available; choose one of {', '.join(['auto', *ENGINES])}")
    dt = torch.float64 if name == "reference" else dtype
    return ENGINES[name](dtype=dt, device=device, memory_budget_mb=memory_budget_mb)


__all__ = ["Engine", "Scale", "Step", "ENGINES", "make_engine", "ConvEngine", "FastEngine", "ReferenceEngine"]
