"""Brute-force float64 oracle of SPEC §1: explicit patches, explicit squared differences.

No expansion ‖a‖² + ‖b‖² − 2⟨a, b⟩ (which cancels catastrophically), no tricks: for every query
position ℓ it forms every difference (query patch − training patch), takes the (projected) squared
norm, masks incomparable pairs, normalises over all (n, ℓ′) jointly and sums the top-k weights
per training image. Small inputs only; it is the test oracle for every other engine.
"""

from __future__ import annotations

import torch

from ..errors import NDAError
from ..patches import block_means, comparable, unfold
from .base import Engine, Progress, Scale, _no_progress

#: Largest (L · N · L′ · D) the oracle accepts, to keep it from running for hours by mistake.
MAX_WORK = 2_000_000_000


class ReferenceEngine(Engine):
    name = "reference"

    def score_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                   topk: int | None, border: str, progress: Progress = _no_progress) -> torch.Tensor:
        out = torch.zeros(x_t.shape[0], z.shape[0], dtype=torch.float64)
        for q in range(x_t.shape[0]):
            out[q] = self.position_step(x_t[q], z, variance, scale, topk, border)[0].sum(0)
            progress(1)
        return out

    def position_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                      topk: int | None, border: str) -> tuple[torch.Tensor, torch.Tensor]:
        x_t = x_t.to(device=self.device, dtype=torch.float64)[None]
        z = z.to(device=self.device, dtype=torch.float64)
        _, C, H, W = x_t.shape
        N = z.shape[0]
        P, b = scale.patch, scale.block
        qp = unfold(x_t, P)[0]  # (L, D)
        zp = unfold(z, P)  # (N, L', D)
        L, D = qp.shape
        if L * N * L * D > MAX_WORK:
            raise NDAError(
                f"the reference engine is a brute-force oracle for small inputs (here {L}·{N}·{L}·{D} "
                "operations per query); use engine='auto' or 'conv'"
            )
        ok = comparable(H, W, P, border, self.device)  # (L, L')
        # (L, N, L', D) differences → squared (projected) norms (L, N, L').
        diff = qp[:, None, None, :] - zp[None, :, :, :]
        if b > 1:
            d = b * b * block_means(diff, C, P, b).pow(2).sum(-1)
        else:
            d = diff.pow(2).sum(-1)
        logits = (-d / (2.0 * variance)).masked_fill(~ok[:, None, :], float("-inf"))
        lse = torch.logsumexp(logits.reshape(L, -1), dim=1)  # (L,) over all (n, ℓ′)
        w = torch.exp(logits - lse[:, None, None])  # (L, N, L')
        if topk is not None and topk < w.shape[-1]:
            w = torch.topk(w, topk, dim=-1).values
        return w.sum(-1).cpu(), lse.cpu()
