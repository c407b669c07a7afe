"""Every engine against the float64 oracle, and the reference engine against the naive test oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_images

import oracle
from nda.engines import ENGINES, Scale, make_engine

#: Documented float32 tolerance (max |Δ| / max |oracle|). Measured values are ~1e-7–1e-6.
FLOAT32_TOL = 1e-4
FLOAT64_TOL = 1e-8

CASES = [
    # (C, H, W, N, P, block, topk, border, variance)
    (1, 6, 6, 3, 3, 1, None, "match", 0.3),
    (1, 6, 7, 3, 4, 1, 5, "match", 0.2),
    (3, 5, 5, 2, 5, 1, 3, "match", 0.5),
    (1, 6, 6, 3, 4, 2, 4, "match", 0.4),
    (3, 6, 6, 2, 6, 2, None, "match", 0.6),
    (1, 6, 6, 3, 3, 1, 2, "zero", 0.1),
    (2, 7, 6, 3, 4, 2, None, "zero", 0.3),
    (1, 8, 8, 2, 8, 4, 3, "match", 0.5),
]


def _inputs(C, H, W, N, seed=0, Q=2):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(N, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.rand(Q, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    return x, z


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_naive_oracle(case):
    C, H, W, N, P, b, k, border, var = case
    x, z = _inputs(C, H, W, N)
    got = make_engine("reference", torch.float64, torch.device("cpu"), 256).score_step(x, z, var, Scale(P, b), k, border)
    want = np.stack([oracle.tau_t(x[q].numpy(), z.numpy(), var, P, b, k, border) for q in range(len(x))])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10 * np.abs(want).max())


FAST_ENGINES = [e for e in ENGINES if e != "reference"]


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, FLOAT64_TOL), (torch.float32, FLOAT32_TOL)])
@pytest.mark.parametrize("case", CASES)
def test_engine_matches_reference(engine, dtype, tol, case):
    C, H, W, N, P, b, k, border, var = case
    x, z = _inputs(C, H, W, N, seed=1, Q=3)
    ref = make_engine("reference", torch.float64, torch.device("cpu"), 256).score_step(x, z, var, Scale(P, b), k, border)
    # A tiny budget forces the chunked code paths.
    got = make_engine(engine, dtype, torch.device("cpu"), 16).score_step(x, z, var, Scale(P, b), k, border)
    assert got.shape == ref.shape and got.dtype == torch.float64
    err = (got - ref).abs().max() / ref.abs().max()
    assert err <= tol, f"{engine} {dtype}: relative error {err:.3g} > {tol}"


@pytest.mark.parametrize("engine", FAST_ENGINES)
@pytest.mark.parametrize("flat", [False, True])
def test_engine_structured_images_with_ties(engine, flat):
    """Smooth images with an exactly constant band: many tied distances (top-k must still be exact)."""
    z = torch.from_numpy(smooth_images(4, 1, 9, 9, seed=3, flat=flat))
    x = torch.from_numpy(smooth_images(2, 1, 9, 9, seed=4, flat=flat))
    for P, b, k in [(3, 1, 4), (5, 1, 10), (4, 2, 6)]:
        ref = make_engine("reference", torch.float64, "cpu", 256).score_step(x, z * 0.9, 0.2, Scale(P, b), k, "match")
        got = make_engine(engine, torch.float64, "cpu", 16).score_step(x, z * 0.9, 0.2, Scale(P, b), k, "match")
        assert (got - ref).abs().max() / ref.abs().max() <= FLOAT64_TOL


@pytest.mark.parametrize("engine", [e for e in ENGINES])
def test_position_step_sums_to_score(engine):
    x, z = _inputs(1, 6, 6, 3, seed=5, Q=1)
    eng = make_engine(engine, torch.float64, "cpu", 64)
    sums, lse = eng.position_step(x[0], z, 0.3, Scale(3, 1), 4, "match")
    assert sums.shape == (36, 3) and lse.shape == (36,)
    tau = eng.score_step(x, z, 0.3, Scale(3, 1), 4, "match")
    torch.testing.assert_close(sums.sum(0), tau[0], rtol=1e-10, atol=1e-12)


def _large_constant_trick(x_t, z, variance, P, topk, const):
    """The authors' border trick in float32: pad with a large constant, no mask. Test-only."""
    import torch.nn.functional as F

    p = (P - 1) // 2
    xp = F.pad(x_t.float(), (p, p, p, p), value=const)
    zp = F.pad(z.float(), (p, p, p, p), value=const)
    q = F.unfold(xp, P)[0].T  # (L, D)
    c = F.unfold(zp, P).transpose(1, 2)  # (N, L', D)
    d = (q.pow(2).sum(-1)[:, None, None] + c.pow(2).sum(-1)[None] - 2 * torch.einsum("ld,nmd->lnm", q, c)).clamp(min=0)
    logits = -d / (2 * variance)
    w = torch.softmax(logits.reshape(len(q), -1), dim=1).reshape(logits.shape)
    w = torch.topk(w, topk, dim=-1).values if topk else w
    return w.sum(-1).sum(0).double()


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_float32_exact_border_beats_large_constant_trick(engine):
    """Filling the padding with 1e3 makes ‖a‖²+‖b‖²−2⟨a,b⟩ cancel catastrophically in float32;
    the exact border rule keeps float32 within tolerance on the same inputs."""
    x, z = _inputs(3, 8, 8, 4, seed=7, Q=1)
    var, P, k = 0.1, 5, 8
    ref = make_engine("reference", torch.float64, "cpu", 256).score_step(x, z, var, Scale(P, 1), k, "match")[0]
    ours = make_engine(engine, torch.float32, "cpu", 256).score_step(x, z, var, Scale(P, 1), k, "match")[0]
    trick = _large_constant_trick(x[0:1], z, var, P, k, 1e3)
    ours_err = float((ours - ref).abs().max() / ref.abs().max())
    trick_err = float((trick - ref).abs().max() / ref.abs().max())
    assert ours_err < FLOAT32_TOL
    assert trick_err > 100 * max(ours_err, 1e-7), (ours_err, trick_err)
    # In float64 the trick is exact, which shows the error above is float32 cancellation alone.
    trick64 = _large_constant_trick_64(x[0:1], z, var, P, k, 1e3)
    assert float((trick64 - ref).abs().max() / ref.abs().max()) < 1e-6


def _large_constant_trick_64(x_t, z, variance, P, topk, const):
    import torch.nn.functional as F

    p = (P - 1) // 2
    q = F.unfold(F.pad(x_t, (p, p, p, p), value=const), P)[0].T
    c = F.unfold(F.pad(z, (p, p, p, p), value=const), P).transpose(1, 2)
    d = (q[:, None, None, :] - c[None]).pow(2).sum(-1)
    w = torch.softmax((-d / (2 * variance)).reshape(len(q), -1), dim=1).reshape(d.shape)
    return torch.topk(w, topk, dim=-1).values.sum(-1).sum(0)
