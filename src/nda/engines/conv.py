"""The authors' formulation: every query patch is a convolution kernel over all training images.

For a chunk of B query patches of one query, one `conv2d` over the (N, C, H, W) training set gives
the inner products ⟨x_t patch ℓ, √ᾱ z⁽ⁿ⁾ patch ℓ′⟩ for every (b, n, ℓ′); squared distances follow
from ‖a‖² + ‖c‖² − 2⟨a, c⟩. Memory O(B·N·L′), time O(N·L·L′·C·P²) per query and timestep.

Differences from the authors' code, kept deliberately: the border rule is applied exactly (a mask of
comparable positions) instead of filling padded pixels with a large constant, and the 2×2-block
scale uses the projected query patch as kernel. This engine is the speed baseline every faster
engine is compared with, side by side, in `benchmarks/engine_speed.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..patches import block_means, comparable, padding, unfold
from .base import Engine, Progress, Scale, _no_progress


def projected_patch_norms(z: torch.Tensor, P: int, b: int) -> torch.Tensor:
    """‖projection of each zero-padded P×P patch onto b×b-block-constant patches‖².

    Args:
        z: (N, C, H, W). Returns (N, H_out, W_out).
    """
    C = z.shape[1]
    p = padding(P)
    zp = F.pad(z, (p, p, p, p))
    if b > 1:
        # b×b means at every pixel offset, then a dilated (P/b)×(P/b) window picks one per block.
        zp = F.avg_pool2d(zp, b, stride=1)
    ones = torch.ones(1, C, P // b, P // b, dtype=z.dtype, device=z.device)
    return (b * b) * F.conv2d(zp * zp, ones, dilation=b)[:, 0]


class ConvEngine(Engine):
    name = "conv"

    def score_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                   topk: int | None, border: str, progress: Progress = _no_progress) -> torch.Tensor:
        out = torch.zeros(x_t.shape[0], z.shape[0], dtype=torch.float64)
        for q in range(x_t.shape[0]):
            out[q] = self.position_step(x_t[q], z, variance, scale, topk, border)[0].sum(0)
            progress(1)
        return out

    def position_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                      topk: int | None, border: str) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dt = self.device, self.dtype
        x_t = x_t.to(device=dev, dtype=dt)[None]
        z = z.to(device=dev, dtype=dt)
        _, C, H, W = x_t.shape
        N = z.shape[0]
        P, b = scale.patch, scale.block
        p = padding(P)
        z_norm = projected_patch_norms(z, P, b).reshape(N, -1)  # (N, L')
        Lp = z_norm.shape[1]
        ok = comparable(H, W, P, border, dev)  # (L, L')
        # Chunk of query patches: the (B, N, L') logits plus top-k scratch must fit the budget.
        bytes_per_patch = N * Lp * x_t.element_size() * 4
        B = max(1, min(Lp, self.memory_budget // max(1, bytes_per_patch)))
        inv = 1.0 / (2.0 * variance)
        patches = unfold(x_t, P)[0]  # (L, C·P·P)
        if b > 1:  # project each query patch onto b×b-block-constant patches
            means = block_means(patches, C, P, b).reshape(-1, C, P // b, 1, P // b, 1)
            patches = means.expand(-1, C, P // b, b, P // b, b).reshape(-1, C * P * P)
        q_norm = patches.pow(2).sum(-1)  # (L,)
        kernels = patches.reshape(-1, C, P, P)
        L = kernels.shape[0]
        sums = torch.zeros(L, N, dtype=torch.float64)
        lses = torch.zeros(L, dtype=torch.float64)
        for s in range(0, L, B):
            e = min(s + B, L)
            cross = F.conv2d(z, kernels[s:e], padding=p)  # (N, B, H_out, W_out)
            cross = cross.reshape(N, e - s, Lp).transpose(0, 1)  # (B, N, L')
            d = (q_norm[s:e, None, None] + z_norm[None] - 2.0 * cross).clamp_(min=0.0)
            logits = (d * -inv).masked_fill_(~ok[s:e, None, :], float("-inf"))
            lse = torch.logsumexp(logits.reshape(e - s, -1), dim=1)
            w = torch.exp(logits - lse[:, None, None])
            if topk is not None and topk < Lp:
                w = torch.topk(w, topk, dim=-1).values
            sums[s:e] = w.sum(dim=2).to(torch.float64).cpu()
            lses[s:e] = lse.to(torch.float64).cpu()
        return sums, lses
