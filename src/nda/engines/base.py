"""The engine contract: one timestep, one scale → per-(query, training image) scores.

Every engine computes SPEC §1 steps 2–7 for a batch of noised queries against the scaled training
set at one timestep and one scale, and returns τ_t(x, n) (top-k weight sums summed over query
positions), shape (Q, N). Engines differ only in how they compute it and are all tested against
`reference` (brute-force float64).

`Engine.score_steps` is the entry point used by `NDAIndex`: it receives the clean queries, the
clean training set, and the list of `Step`s (timestep, ᾱ_t, ε_t, scale). The default noises the
queries and calls `score_step` once per step; an engine may override it to share work across
timesteps and scales.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class Scale:
    """One patch scale: side `patch` and projection block `block` (1: plain patches, 2: 2×2 blocks)."""

    patch: int
    block: int = 1


@dataclass(frozen=True)
class Step:
    """Everything an engine needs for one (timestep, scale): ᾱ_t, the query noise ε_t (C, H, W)."""

    t: int
    alpha_bar: float
    noise: torch.Tensor
    scale: Scale


Progress = Callable[[int], None]


def _no_progress(n: int) -> None:
    return None


class Engine(ABC):
    """Base class of all engines.

    Args:
        dtype: compute dtype of distances and weights (the reference engine always uses float64).
        device: torch device.
        memory_budget_mb: soft cap on working memory, used to size chunks.
    """

    name = "base"

    def __init__(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 memory_budget_mb: int = 1024) -> None:
        self.dtype = dtype
        self.device = torch.device(device)
        self.memory_budget = int(memory_budget_mb) * 2**20

    def score_steps(self, queries: torch.Tensor, train: torch.Tensor, steps: Sequence[Step],
                    topk: int | None, border: str, progress: Progress = _no_progress) -> list[torch.Tensor]:
        """Scores for every step.

        Args:
            queries: (Q, C, H, W) clean queries, float64, in [-1, 1].
            train: (N, C, H, W) clean training images, float64, in [-1, 1].
            steps: the (timestep, scale) jobs.
            topk: k of SPEC §1.6 (None: keep all).
            border: "match" or "zero".
            progress: called with the number of (query, step) pairs finished.
        Returns:
            one (Q, N) float64 CPU tensor per step, τ_t at that scale.
        """
        out = []
        for step in steps:
            a = torch.tensor(step.alpha_bar, dtype=torch.float64)
            sa, sv = a.sqrt().item(), (1 - a).sqrt().item()
            x_t = queries * sa + step.noise.to(queries.dtype)[None] * sv
            z = train * sa
            out.append(self.score_step(x_t, z, 1.0 - step.alpha_bar, step.scale, topk, border, progress))
        return out

    @abstractmethod
    def score_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                   topk: int | None, border: str, progress: Progress = _no_progress) -> torch.Tensor:
        """τ_t at one scale.

        Args:
            x_t: (Q, C, H, W) noised queries.
            z: (N, C, H, W) training images already scaled by √ᾱ_t.
            variance: 1 - ᾱ_t; weights are softmax(-d / (2·variance)).
        Returns:
            (Q, N) float64 CPU tensor.
        """

    def position_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                      topk: int | None, border: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position detail for ONE query (provenance, heat maps).

        Args:
            x_t: (C, H, W) one noised query; z: (N, C, H, W) training images scaled by √ᾱ_t.
        Returns:
            sums: (L, N) float64, for each query position ℓ the top-k weight sum of image n
                (τ_t = sums.sum(0));
            lse: (L,) float64, log Σ_{n, ℓ′} exp(-d / (2·variance)) — the softmax normaliser, so
                any single weight is exp(logit - lse[ℓ]).
        """
        raise NotImplementedError(f"engine {self.name!r} does not provide per-position detail")

