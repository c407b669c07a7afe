"""The fast engine against the float64 reference engine (SPEC §1), on every code path.

Tolerances (max |Δ| / max |oracle|): float64 1e-8 (measured ~1e-15); float32 FAST_FLOAT32_TOL =
2e-6 (measured 3e-8 – 8e-7 on these inputs, against 1e-7 – 2e-6 for the conv engine on the same
inputs: centring and the exact border classes make the float32 expansion better conditioned).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import smooth_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nda.engines.fast as fast
from nda.config import NDAConfig
from nda.engines import Scale, Step, make_engine
from nda.engines.fast import FastEngine, topk_sums
from nda.noise import query_noise

FLOAT64_TOL = 1e-8
FAST_FLOAT32_TOL = 2e-6
ABAR = NDAConfig().alpha_bar()


def _ref():
    return make_engine("reference", torch.float64, "cpu", 256)


def _fast(dtype=torch.float64, budget_bytes=None):
    eng = FastEngine(dtype=dtype, device="cpu", memory_budget_mb=64)
    if budget_bytes is not None:
        eng.memory_budget = budget_bytes  # bytes: tiny budgets force chunks and two passes
    return eng


def _err(got, want):
    return float((got - want).abs().max() / want.abs().max())


def _rand(Q, N, C, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(Q, C, H, W, generator=g, dtype=torch.float64) * 2 - 1,
            torch.rand(N, C, H, W, generator=g, dtype=torch.float64) * 2 - 1)


def _structured(Q, N, C, H, W, seed):
    """Smooth images with an exactly constant band (exact ties) plus blocky ones."""
    x = torch.from_numpy(smooth_images(Q, C, H, W, seed=seed, flat=True))
    z = torch.from_numpy(smooth_images(N, C, H, W, seed=seed + 1, flat=True))
    z[::3] = torch.from_numpy(np.kron(np.sign(np.random.default_rng(seed).normal(size=(len(z[::3]), C, 2, 2))),
                                      np.ones((1, 1, (H + 1) // 2, (W + 1) // 2))))[..., :H, :W] * 0.8
    return x, z


# (C, H, W, N, P, block, topk, border, variance)
CASES = [
    (1, 7, 7, 4, 3, 1, 4, "match", 0.3),
    (3, 8, 8, 3, 5, 1, 6, "match", 0.05),  # small variance: most rows skip the top-k
    (1, 8, 7, 4, 4, 1, None, "match", 0.4),  # even P
    (3, 7, 8, 3, 4, 1, 3, "zero", 0.2),
    (1, 9, 9, 3, 6, 2, 5, "match", 0.3),  # 2×2 blocks, even P
    (3, 8, 8, 2, 4, 2, None, "zero", 0.6),
    (1, 9, 9, 3, 8, 4, 7, "match", 0.5),  # 4×4 blocks
    (2, 10, 10, 3, 7, 1, 20, "match", 0.9),  # topk < interior positions, flat weights
]


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_score_step_matches_reference(case, structured):
    C, H, W, N, P, b, k, border, var = case
    x, z = (_structured if structured else _rand)(3, N, C, H, W, seed=len(str(case)))
    want = _ref().score_step(x, z, var, Scale(P, b), k, border)
    for budget in (None, 3000, 1):  # default, many chunks, two passes with one image per chunk
        got = _fast(torch.float64, budget).score_step(x, z, var, Scale(P, b), k, border)
        assert got.shape == want.shape and got.dtype == torch.float64
        assert _err(got, want) <= FLOAT64_TOL, (budget, _err(got, want))
    got32 = _fast(torch.float32).score_step(x, z, var, Scale(P, b), k, border)
    assert _err(got32, want) <= FAST_FLOAT32_TOL


@pytest.mark.parametrize("budget", [5000, None])
def test_many_row_blocks(monkeypatch, budget):
    """Blocks smaller than one ℓ-row of a chunk (n·m > BLOCK_ELEMS) and many blocks per chunk."""
    monkeypatch.setattr(fast, "BLOCK_ELEMS", 16)
    x, z = _structured(2, 5, 3, 8, 8, seed=3)
    for P, b, k, border in [(5, 1, 4, "match"), (4, 2, 3, "match"), (3, 1, 5, "zero")]:
        want = _ref().score_step(x, z, 0.2, Scale(P, b), k, border)
        got = _fast(torch.float64, budget).score_step(x, z, 0.2, Scale(P, b), k, border)
        assert _err(got, want) <= FLOAT64_TOL


@pytest.mark.parametrize("border", ["match", "zero"])
def test_score_steps_share_work_across_timesteps(border):
    """The shared form (G1 per query, G2 per timestep) equals noising then scoring each step."""
    C, H, W = 3, 9, 9
    x, z = _structured(3, 5, C, H, W, seed=11)
    steps = [Step(t, float(ABAR[t]), query_noise((C, H, W), t, 0), sc)
             for t in (50, 100, 300, 500) for sc in (Scale(5, 1), Scale(4, 2))]
    want = _ref().score_steps(x, z, steps, 5, border)
    for dtype, tol, budget in [(torch.float64, FLOAT64_TOL, None), (torch.float64, FLOAT64_TOL, 20000),
                               (torch.float64, FLOAT64_TOL, 1), (torch.float32, FAST_FLOAT32_TOL, None)]:
        calls = []
        got = _fast(dtype, budget).score_steps(x, z, steps, 5, border, progress=calls.append)
        assert sum(calls) == len(x) * len(steps)
        for g, w in zip(got, want):
            assert g.shape == (3, 5) and _err(g, w) <= tol, (dtype, budget, _err(g, w))


def test_position_step_matches_reference():
    x, z = _structured(1, 4, 3, 8, 8, seed=5)
    for P, b, k, border in [(5, 1, 4, "match"), (4, 2, 3, "zero"), (3, 1, None, "match")]:
        ws, wl = _ref().position_step(x[0], z, 0.3, Scale(P, b), k, border)
        eng = _fast(torch.float64)
        gs, gl = eng.position_step(x[0], z, 0.3, Scale(P, b), k, border)
        assert gs.shape == ws.shape and gl.shape == wl.shape
        assert _err(gs, ws) <= FLOAT64_TOL
        torch.testing.assert_close(gl, wl, rtol=1e-10, atol=1e-9)
        tau = eng.score_step(x, z, 0.3, Scale(P, b), k, border)[0]
        torch.testing.assert_close(gs.sum(0), tau, rtol=1e-10, atol=1e-12)


def test_topk_sums_cpu_path_equals_torch_topk_with_ties():
    g = torch.Generator().manual_seed(0)
    E = torch.randint(0, 5, (300, 40), generator=g).double() / 4  # heavy ties
    want = torch.topk(E, 7, dim=1).values.sum(1)
    torch.testing.assert_close(topk_sums(E.clone(), 7), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(topk_sums(E.float().clone(), 7), want.float(), rtol=1e-6, atol=0)
    big = torch.rand(4000, 33, generator=g)  # threaded split
    torch.testing.assert_close(topk_sums(big.clone(), 5), torch.topk(big, 5, dim=1).values.sum(1))


def test_plan_respects_budget_and_is_flat_in_N():
    eng = _fast(torch.float32)
    eng.memory_budget = 256 * 2**20
    L, D, pairs = 1024, 147, 465_124
    for N in (1000, 5000, 20000, 200000):
        plan = eng.plan(64, N, L, D, 5, pairs, 5, 4)
        assert plan.working_bytes <= eng.memory_budget, (N, plan)
        assert plan.chunk >= 1
    assert eng.plan(64, 200000, L, D, 5, pairs, 5, 4).two_pass  # table would not fit
    assert not eng.plan(64, 1000, L, D, 5, pairs, 5, 4).two_pass


def test_skip_bound_is_conservative_at_low_noise():
    """Variance 0.02: nearly every row is skipped or has ≤ k non-negligible weights."""
    x, z = _structured(2, 6, 1, 9, 9, seed=21)
    want = _ref().score_step(x, z * 0.99, 0.02, Scale(3, 1), 2, "match")
    got = _fast(torch.float64, 4000).score_step(x, z * 0.99, 0.02, Scale(3, 1), 2, "match")
    assert _err(got, want) <= FLOAT64_TOL


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    C=st.sampled_from([1, 3]),
    H=st.integers(4, 8),
    W=st.integers(4, 8),
    N=st.integers(1, 4),
    Q=st.integers(1, 3),
    P=st.integers(1, 6),
    b=st.sampled_from([1, 2]),
    k=st.one_of(st.none(), st.integers(1, 12)),
    border=st.sampled_from(["match", "zero"]),
    var=st.floats(0.02, 1.0),
    budget=st.sampled_from([None, 2000, 1]),
    seed=st.integers(0, 10_000),
)
def test_property_matches_reference(C, H, W, N, Q, P, b, k, border, var, budget, seed):
    P = min(P, H, W)
    if P % b:
        P = max(b, P - P % b)
        if P > min(H, W):
            return
    x, z = _rand(Q, N, C, H, W, seed)
    if seed % 2:
        x, z = x.round(), z.round()  # exact ties everywhere
    want = _ref().score_step(x, z, var, Scale(P, b), k, border)
    got = _fast(torch.float64, budget).score_step(x, z, var, Scale(P, b), k, border)
    assert _err(got, want) <= FLOAT64_TOL


def test_auto_picks_fast():
    assert make_engine("auto", torch.float32, torch.device("cpu"), 64).name == "fast"


def test_delta_bound_value():
    """δ grows with log N and log m only: the documented bound N·m²·e^−δ/k ≤ η holds."""
    for N, m, k in [(10, 9, 1), (5000, 676, 100), (10**6, 1024, 1)]:
        delta = math.log(N) + 2 * math.log(m) + math.log(1 / fast.ETA[torch.float32])
        assert N * m * m * math.exp(-delta) / k <= fast.ETA[torch.float32] * (1 + 1e-9)
