"""Patch geometry (SPEC §1.2–1.3, 1.8): positions, border classes, block projections.

A P×P patch is centred on every pixel with stride 1 and zero padding ⌊(P-1)/2⌋ on every side, so
odd P gives H×W positions and even P (H-1)×(W-1). Positions are flattened row-major: ℓ = i·W_out + j.

Border rule "match": a query patch and a training patch are comparable only if their out-of-image
masks are identical. The mask of the patch at (i, j) is fixed by how far it hangs over each side,
so we label every position with a *border class*; two positions are comparable iff their classes
are equal. Interior positions all share one class.

Second scale ("down", block b = 2; b = 4, … generalise it): the distance between the patches'
orthogonal projections onto b×b-block-constant patches, which equals b²·‖avgpool_b(a − c)‖² over
the P×P patch (P divisible by b). With zero padding and matching masks this is well defined:
out-of-image entries are zero in both patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import NDAError


def padding(P: int) -> int:
    """Zero padding on every side for patch side P."""
    return (P - 1) // 2


def output_size(H: int, W: int, P: int) -> tuple[int, int]:
    """Number of patch positions (H_out, W_out): (H, W) for odd P, (H-1, W-1) for even P."""
    p = padding(P)
    return H + 2 * p - P + 1, W + 2 * p - P + 1


def check_patch(P: int, H: int, W: int, what: str = "patch_size") -> None:
    if P > min(H, W):
        raise NDAError(f"{what}={P} is larger than the images ({H}×{W}); use a patch side ≤ {min(H, W)}")


def _axis_classes(n: int, P: int) -> torch.Tensor:
    """Class of each output index along one axis: 0 = fully inside, else a code of the overhang."""
    p = padding(P)
    n_out = n + 2 * p - P + 1
    idx = torch.arange(n_out)
    before = (p - idx).clamp(min=0)  # rows of the patch above the image
    after = (idx - p + P - n).clamp(min=0)  # rows below the image
    # (before, after) is unique per class; encode as one integer (P+1 > any overhang).
    return before * (P + 1) + after


def border_classes(H: int, W: int, P: int) -> torch.Tensor:
    """(L,) int64 class of every patch position; equal classes ⇔ identical out-of-image masks."""
    rows = _axis_classes(H, P)
    cols = _axis_classes(W, P)
    base = int(cols.max().item()) + 1
    return (rows[:, None] * base + cols[None, :]).reshape(-1)


def comparable(H: int, W: int, P: int, border: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """(L, L) bool: which (query position, training position) pairs are comparable."""
    L = output_size(H, W, P)[0] * output_size(H, W, P)[1]
    if border == "zero":
        return torch.ones(L, L, dtype=torch.bool, device=device)
    c = border_classes(H, W, P).to(device)
    return c[:, None] == c[None, :]


def unfold(images: torch.Tensor, P: int) -> torch.Tensor:
    """All zero-padded P×P patches, (N, C, H, W) → (N, L, C·P·P), features ordered (c, dy, dx)."""
    cols = F.unfold(images, kernel_size=P, padding=padding(P))  # (N, C·P·P, L)
    return cols.transpose(1, 2)


def block_means(patches: torch.Tensor, C: int, P: int, b: int) -> torch.Tensor:
    """Mean of each b×b block of each patch: (..., C·P·P) → (..., C·(P/b)·(P/b)).

    The projection of a patch onto b×b-block-constant patches repeats these means; its squared norm
    distances are b² times the squared distances of the means.
    """
    if P % b:
        raise NDAError(f"patch side {P} is not divisible by the block size {b}")
    shape = patches.shape[:-1]
    x = patches.reshape(*shape, C, P // b, b, P // b, b)
    return x.mean(dim=(-1, -3)).reshape(*shape, C * (P // b) * (P // b))
