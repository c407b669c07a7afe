"""An independent float64 implementation of SPEC §1, written from the text alone, for tests.

Deliberately naive and separate from `nda.patches` / `nda.engines`: explicit zero padding, explicit
out-of-image masks compared element by element (no border classes), explicit loops over positions.
Tiny inputs only.
"""

from __future__ import annotations

import numpy as np


def _patches(img: np.ndarray, P: int):
    """All patches of one (C, H, W) image with their in-image masks, row-major positions."""
    C, H, W = img.shape
    p = (P - 1) // 2
    padded = np.zeros((C, H + 2 * p, W + 2 * p))
    padded[:, p : p + H, p : p + W] = img
    inside = np.zeros((H + 2 * p, W + 2 * p), dtype=bool)
    inside[p : p + H, p : p + W] = True
    n_out = (H + 2 * p - P + 1, W + 2 * p - P + 1)
    patches, masks = [], []
    for i in range(n_out[0]):
        for j in range(n_out[1]):
            patches.append(padded[:, i : i + P, j : j + P].copy())
            masks.append(inside[i : i + P, j : j + P].copy())
    return patches, masks


def _project(patch: np.ndarray, b: int) -> np.ndarray:
    """Orthogonal projection onto b×b-block-constant patches (each block → its mean)."""
    C, P, _ = patch.shape
    m = patch.reshape(C, P // b, b, P // b, b).mean(axis=(2, 4), keepdims=True)
    return np.broadcast_to(m, (C, P // b, b, P // b, b)).reshape(C, P, P)


def tau_t(x_t: np.ndarray, z_scaled: np.ndarray, variance: float, P: int, block: int, topk, border: str) -> np.ndarray:
    """τ_t(x, n) for one noised query (C, H, W) against (N, C, H, W) scaled training images → (N,)."""
    qp, qm = _patches(x_t, P)
    train = [_patches(z, P) for z in z_scaled]
    N, Lp = len(train), len(train[0][0])
    out = np.zeros(N)
    for a, ma in zip(qp, qm):
        logits = np.full((N, Lp), -np.inf)
        for n, (zp, zm) in enumerate(train):
            for l2, (c, mc) in enumerate(zip(zp, zm)):
                if border == "match" and not np.array_equal(ma, mc):
                    continue
                diff = a - c  # out-of-image entries are zero in both when masks match
                if block > 1:
                    diff = _project(diff, block)
                logits[n, l2] = -np.sum(diff * diff) / (2 * variance)
        m = logits.max()
        w = np.exp(logits - m)
        w /= w.sum()
        k = Lp if topk is None else min(topk, Lp)
        out += np.sort(w, axis=1)[:, ::-1][:, :k].sum(axis=1)
    return out


def scores(train: np.ndarray, queries: np.ndarray, timesteps, alpha_bar, patch, down, gamma, topk, border, noise_seed=0):
    """Full SPEC score (Q, N) with the SPEC noise seeding; `patch`, `down`, `gamma` map t → value."""
    import torch

    Q, N = len(queries), len(train)
    total = np.zeros((Q, N))
    for t in timesteps:
        a = float(alpha_bar[t])
        eps = torch.randn(tuple(queries.shape[1:]), generator=torch.Generator("cpu").manual_seed(1000 * noise_seed + t),
                          dtype=torch.float32).double().numpy()
        for q in range(Q):
            x_t = np.sqrt(a) * queries[q] + np.sqrt(1 - a) * eps
            z = np.sqrt(a) * train
            s = gamma[t] * tau_t(x_t, z, 1 - a, patch[t], 1, topk, border) if gamma[t] > 0 else 0.0
            if gamma[t] < 1:
                s = s + (1 - gamma[t]) * tau_t(x_t, z, 1 - a, down[t], 2, topk, border)
            total[q] += s
    return total / len(timesteps)
