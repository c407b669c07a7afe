"""Raw-pixel similarity baselines: ``pixel-dot`` and ``pixel-cos``.

Images are flattened as they are ([-1, 1] pixels, no centring): score(x, n) = ⟨x, z⁽ⁿ⁾⟩ or the
cosine ⟨x, z⁽ⁿ⁾⟩ / (‖x‖ ‖z⁽ⁿ⁾‖) (0 where a norm is 0). (queries × train), higher = proponent.
"""
from __future__ import annotations

import numpy as np

from .common import check_pair


def similarity(a: np.ndarray, b: np.ndarray, metric: str = "cos") -> np.ndarray:
    """(len(a), len(b)) dot products or cosines of the rows of a and b (float64)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if metric == "dot":
        return a @ b.T
    if metric == "cos":
        na = np.linalg.norm(a, axis=1, keepdims=True)
        nb = np.linalg.norm(b, axis=1, keepdims=True)
        a = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
        b = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
        return a @ b.T
    raise ValueError(f"unknown metric {metric!r}; use 'dot' or 'cos'")


def pixel_scores(train, queries, metric: str = "cos") -> np.ndarray:
    """(Q, N) pixel dot-product or cosine scores of ``queries`` against ``train``."""
    train, queries = check_pair(train, queries)
    return similarity(queries, train, metric)
