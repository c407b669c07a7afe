"""The linear datamodeling score (LDS), SPEC §3.

Given attribution scores τ (queries × train, higher = proponent), M training subsets S_m and the
measured model outputs f_m(x_q) (the per-sample denoising loss of the model trained on S_m), the
attribution method predicts

    pred[m, q] = − Σ_{n ∈ S_m} τ(x_q, n)

(lower loss when proponents are included, so a good method gives a *positive* correlation; a
constant shift of the prediction does not matter). For each query the LDS is the Spearman rank
correlation, across the M subsets, between pred[:, q] and outputs[:, q]; the reported LDS is the
mean over queries, with a 95 % percentile-bootstrap confidence interval obtained by resampling the
M subsets (rows) with replacement and recomputing the mean LDS.

Undefined correlations: when pred[:, q] or outputs[:, q] is constant over the (resampled) subsets,
the Spearman correlation is undefined. It is stored as NaN in ``per_query`` and counted in
``n_undefined``, and it counts as **0** (no information) in the mean, so a method cannot raise its
LDS by returning constant scores for hard queries. Ties are ranked with the average rank (as
:func:`scipy.stats.spearmanr` does).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.stats import rankdata


@dataclasses.dataclass
class LDSResult:
    per_query: np.ndarray  # (Q,) Spearman per query, NaN where undefined
    mean: float  # mean over queries, undefined counted as 0
    ci: tuple  # (lo, hi) 95 % bootstrap CI over subsets
    n_subsets: int
    n_queries: int
    n_undefined: int
    n_boot: int
    boot: np.ndarray  # (n_boot,) bootstrap means

    @property
    def lds(self) -> float:
        return self.mean

    def to_dict(self) -> dict:
        return {
            "lds": float(self.mean),
            "ci": [float(self.ci[0]), float(self.ci[1])],
            "n_subsets": self.n_subsets,
            "n_queries": self.n_queries,
            "n_undefined": self.n_undefined,
            "n_boot": self.n_boot,
        }


def _columnwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation between a[:, q] and b[:, q] for every column q; NaN if undefined."""
    ra = rankdata(a, axis=0)
    rb = rankdata(b, axis=0)
    ra = ra - ra.mean(0)
    rb = rb - rb.mean(0)
    num = (ra * rb).sum(0)
    den = np.sqrt((ra * ra).sum(0) * (rb * rb).sum(0))
    out = np.full(a.shape[1], np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return np.clip(out, -1.0, 1.0)


def _check(scores, subsets, outputs):
    scores = np.asarray(scores)
    subsets = np.asarray(subsets)
    outputs = np.asarray(outputs)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (queries, train), got shape {scores.shape}")
    if subsets.ndim != 2:
        raise ValueError(f"subsets must be 2-D (subsets, train) booleans, got shape {subsets.shape}")
    if outputs.ndim != 2:
        raise ValueError(f"outputs must be 2-D (subsets, queries), got shape {outputs.shape}")
    if subsets.dtype != bool:
        if np.issubdtype(subsets.dtype, np.integer) and np.isin(subsets, (0, 1)).all():
            subsets = subsets.astype(bool)
        else:
            raise ValueError(f"subsets must be a boolean mask (or 0/1 integers), got dtype {subsets.dtype}")
    q, n = scores.shape
    m = subsets.shape[0]
    if subsets.shape[1] != n:
        raise ValueError(
            f"scores has {n} training columns but subsets has {subsets.shape[1]}: "
            "both must index the same training set"
        )
    if outputs.shape != (m, q):
        raise ValueError(
            f"outputs must be (subsets, queries) = ({m}, {q}), got {outputs.shape} "
            "(transpose it if it is (queries, subsets))" if outputs.shape == (q, m) else
            f"outputs must be (subsets, queries) = ({m}, {q}), got {outputs.shape}"
        )
    if q == 0 or n == 0:
        raise ValueError("empty scores: need at least one query and one training item")
    if m < 3:
        raise ValueError(f"need at least 3 subsets for a rank correlation, got {m}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN/Inf")
    if not np.isfinite(outputs).all():
        raise ValueError("outputs contain NaN/Inf")
    return scores.astype(np.float64), subsets, outputs.astype(np.float64)


def predictions(scores, subsets) -> np.ndarray:
    """pred[m, q] = −Σ_{n∈S_m} τ(x_q, n), shape (M, Q)."""
    scores = np.asarray(scores, dtype=np.float64)
    return -(np.asarray(subsets, dtype=np.float64) @ scores.T)


def lds(scores, subsets, outputs, n_boot: int = 1000, seed: int = 0) -> LDSResult:
    """LDS of ``scores`` (Q, N) against ``subsets`` (M, N) bool and ``outputs`` (M, Q).

    Returns an :class:`LDSResult` (``.per_query``, ``.mean``, ``.ci``); see the module docstring
    for the definition, the bootstrap and how undefined correlations are handled.
    """
    scores, subsets, outputs = _check(scores, subsets, outputs)
    pred = predictions(scores, subsets)
    per_query = _columnwise_spearman(pred, outputs)
    mean = float(np.nan_to_num(per_query, nan=0.0).mean())
    m = pred.shape[0]
    rng = np.random.default_rng(seed)
    boot = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        idx = rng.integers(0, m, size=m)
        boot[b] = np.nan_to_num(_columnwise_spearman(pred[idx], outputs[idx]), nan=0.0).mean()
    if n_boot > 0:
        lo, hi = np.percentile(boot, [2.5, 97.5])
    else:
        lo = hi = float("nan")
    return LDSResult(
        per_query=per_query,
        mean=mean,
        ci=(float(lo), float(hi)),
        n_subsets=int(m),
        n_queries=int(pred.shape[1]),
        n_undefined=int(np.isnan(per_query).sum()),
        n_boot=int(n_boot),
        boot=boot,
    )
