"""Deterministic noising of queries (SPEC §1.1).

x_t = √ᾱ_t · x + √(1-ᾱ_t) · ε_t, with ε_t ~ N(0, I) of shape (C, H, W) drawn in float32 from
``torch.Generator("cpu").manual_seed(1000 * noise_seed + t)`` and cast afterwards, so every engine,
device and dtype sees the same ε_t. The same ε_t is used for every query at that t, as in the
authors' code.
"""

from __future__ import annotations

import torch


def query_noise(shape: tuple[int, int, int], t: int, noise_seed: int) -> torch.Tensor:
    """ε_t, (C, H, W) float32 on the CPU."""
    gen = torch.Generator("cpu").manual_seed(1000 * int(noise_seed) + int(t))
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32)


def noise_queries(queries: torch.Tensor, t: int, alpha_bar_t: float, noise_seed: int) -> torch.Tensor:
    """Noise a batch of queries at timestep t.

    Args:
        queries: (Q, C, H, W) clean queries in [-1, 1] (any float dtype / device).
        t: timestep, alpha_bar_t: ᾱ_t, noise_seed: see module docstring.
    Returns:
        (Q, C, H, W) x_t, same dtype and device as `queries`.
    """
    eps = query_noise(tuple(queries.shape[1:]), t, noise_seed).to(device=queries.device, dtype=queries.dtype)
    a = torch.tensor(alpha_bar_t, dtype=torch.float64)
    return queries * a.sqrt().item() + eps[None] * (1.0 - a).sqrt().item()
