"""Patch-level provenance (`nda.provenance`) against a brute-force float64 computation and the scores."""

import numpy as np
import pytest
import torch

import oracle
from conftest import smooth_images
from nda import provenance as prov_mod
from nda.attribution import NDAIndex
from nda.config import NDAConfig
from nda.errors import NDAError
from nda.noise import query_noise
from nda.provenance import explain, position_of_pixel, to_pixels


def brute_weights(x, train, t, cfg, P, block):
    """Kept weights, float64, from the SPEC text: (L, N, L′) with the non-kept ones set to 0."""
    abar = cfg.alpha_bar()[t]
    eps = query_noise(x.shape, t, cfg.noise_seed).double().numpy()
    x_t = np.sqrt(abar) * x + np.sqrt(1 - abar) * eps
    z = np.sqrt(abar) * train
    qp, qm = oracle._patches(x_t, P)
    tp = [oracle._patches(zz, P) for zz in z]
    N, L, Lp = len(train), len(qp), len(tp[0][0])
    logits = np.full((L, N, Lp), -np.inf)
    for l, (a, ma) in enumerate(zip(qp, qm)):
        for n, (zp, zm) in enumerate(tp):
            for l2, (c, mc) in enumerate(zip(zp, zm)):
                if cfg.border == "match" and not np.array_equal(ma, mc):
                    continue
                diff = a - c
                if block > 1:
                    diff = oracle._project(diff, block)
                logits[l, n, l2] = -np.sum(diff * diff) / (2 * (1 - abar))
    mx = logits.reshape(L, -1).max(1)
    w = np.exp(logits - mx[:, None, None])
    w /= w.reshape(L, -1).sum(1)[:, None, None]
    k = Lp if cfg.topk is None else min(cfg.topk, Lp)
    kept = np.zeros_like(w)
    order = np.argsort(-w, axis=2, kind="stable")[:, :, :k]
    np.put_along_axis(kept, order, np.take_along_axis(w, order, axis=2), axis=2)
    return kept


CASES = [
    dict(patch_size=3, topk=5, border="match"),
    dict(patch_size=4, topk=None, border="zero"),
    dict(patch_size=3, down_patch_size=4, gamma=0.7, topk=6, border="match"),
]


@pytest.mark.parametrize("case", CASES, ids=["P3-match-top5", "P4even-zero-all", "two-scales"])
def test_matches_brute_force_float64(case):
    data = smooth_images(5, 2, 6, 6, seed=3)
    train, x = data[:4], data[4]
    cfg = NDAConfig(timesteps=(100, 400), engine="reference", dtype="float64", **case)
    m, r = 7, 3
    p = explain(train, x, cfg, images=[2, 0, 3, 1], m=m, r=r)
    assert p.engine == "reference" and len(p.steps) == (4 if "down_patch_size" in case else 2)
    for s in p.steps:
        kept = brute_weights(x, train, s.t, cfg, s.scale.patch, s.scale.block)
        L, N, Lp = kept.shape
        np.testing.assert_allclose(s.sums, kept.sum(2), rtol=1e-10, atol=1e-14)
        for j, n in enumerate(p.selected):
            # training-side map: Σ_ℓ kept weights at ℓ′
            np.testing.assert_allclose(s.train_heat(n).ravel(), kept[:, n, :].sum(0), rtol=1e-10, atol=1e-14)
            # per-(ℓ, image) top-r matches
            top = np.sort(kept[:, n, :], axis=1)[:, ::-1][:, :r]
            np.testing.assert_allclose(s.match_w[j], top, rtol=1e-10, atol=1e-14)
            got = np.take_along_axis(kept[:, n, :], np.maximum(s.match_pos[j], 0), axis=1)
            np.testing.assert_allclose(np.where(s.match_pos[j] >= 0, got, 0), top, rtol=1e-10, atol=1e-14)
        # the exact sparse ℓ → [(n, ℓ′, w)]: the top-m kept weights over all images and positions
        flat = kept.reshape(L, -1)
        order = np.argsort(-flat, axis=1, kind="stable")[:, :m]
        want_w = np.take_along_axis(flat, order, axis=1)
        np.testing.assert_allclose(s.sparse_w, want_w, rtol=1e-10, atol=1e-14)
        keys = np.where(s.sparse_n >= 0, s.sparse_n * Lp + s.sparse_pos, -1)
        ok = want_w > 0
        np.testing.assert_array_equal(np.where(ok, keys, -1), np.where(ok, order, -1))
        entries = s.sparse_entries(5)
        assert [e[2] for e in entries] == sorted((e[2] for e in entries), reverse=True)
    # aggregation: γ-weighted mean over timesteps, the same as NDAIndex.attribute
    res = NDAIndex.build(train, cfg).attribute(x[None])
    np.testing.assert_allclose(p.scores(), res.scores[0], rtol=1e-12)
    for i, t in enumerate(cfg.timesteps):
        np.testing.assert_allclose(p.scores(t), res.per_timestep[i, 0], rtol=1e-12)


@pytest.mark.parametrize("patch,down", [(5, None), (4, None), (3, 4)])
def test_heat_maps_sum_to_the_scores(patch, down):
    data = smooth_images(13, 1, 10, 10, seed=7)
    train, x = data[:12], data[12]
    cfg = NDAConfig(timesteps=(100, 300, 500), patch_size=patch, down_patch_size=down, topk=20, engine="conv")
    index = NDAIndex.build(train, cfg)
    res = index.attribute(x[None])
    p = explain(index, x, k=4, m=0)
    assert p.engine == "conv" and p.steps[0].sparse_n is None
    np.testing.assert_array_equal(p.selected, res.topk(4)[0][0])
    np.testing.assert_allclose(p.scores(), res.scores[0], rtol=1e-6)
    for n in range(len(train)):  # Σ_ℓ heat = τ(x, n), for every training image
        assert p.query_heat(n).shape == (10, 10)
        np.testing.assert_allclose(p.query_heat(n).sum(), res.scores[0, n], rtol=1e-6)
    for i, t in enumerate(cfg.timesteps):
        s = [st for st in p.steps if st.t == t][0]
        np.testing.assert_allclose(s.query_heat(3).sum(), s.tau()[3], rtol=1e-12)
        np.testing.assert_allclose(p.query_heat(3, t).sum(), res.per_timestep[i, 0, 3], rtol=1e-6)
    for n in p.selected:  # the training side holds the same kept weights, so the same total
        np.testing.assert_allclose(p.train_heat(int(n)).sum(), res.scores[0, n], rtol=1e-4)
        assert np.all(p.train_heat(int(n)) >= 0)
    np.testing.assert_allclose(p.query_heat_all()[2], p.query_heat(2))
    with pytest.raises(NDAError, match="no training-side detail"):
        p.train_heat(int(np.setdiff1d(np.arange(12), p.selected)[0]))


def test_sparse_certificate_equals_visiting_every_image():
    data = smooth_images(41, 1, 8, 8, seed=11)
    train, x = data[:40], data[40]
    cfg = NDAConfig(timesteps=(100, 500), patch_size=3, topk=4, engine="conv", dtype="float64")
    few = explain(train, x, cfg, images=[0], m=5)
    every = explain(train, x, cfg, images=list(range(40)), m=5)
    assert all(s.images_visited == 40 for s in every.steps)
    for a, b in zip(few.steps, every.steps):
        np.testing.assert_allclose(a.sparse_w, b.sparse_w, rtol=1e-12)
        np.testing.assert_array_equal(a.sparse_n, b.sparse_n)
        np.testing.assert_array_equal(a.sparse_pos, b.sparse_pos)


def test_small_memory_budget_gives_the_same_detail(monkeypatch):
    data = smooth_images(9, 2, 8, 8, seed=5)
    train, x = data[:8], data[8]
    cfg = NDAConfig(timesteps=(200,), patch_size=3, topk=10, engine="conv", dtype="float64")
    ref = explain(train, x, cfg, images=[1, 4, 6], m=4)
    real = prov_mod.make_engine

    def tiny(*a, **kw):
        eng = real(*a, **kw)
        eng.memory_budget = 3000  # a few query positions of one image per chunk
        return eng

    monkeypatch.setattr(prov_mod, "make_engine", tiny)
    small = explain(train, x, cfg, images=[1, 4, 6], m=4)
    a, b = ref.steps[0], small.steps[0]
    np.testing.assert_allclose(a.train_maps, b.train_maps, rtol=1e-10)
    np.testing.assert_allclose(a.match_w, b.match_w, rtol=1e-10)
    np.testing.assert_allclose(a.sparse_w, b.sparse_w, rtol=1e-10)


def test_matches_api_and_geometry():
    data = smooth_images(7, 1, 8, 8, seed=2)
    train, x = data[:6], data[6]
    cfg = NDAConfig(timesteps=(100, 200), patch_size=4, topk=8, engine="conv")
    p = explain(train, torch.as_tensor(x), cfg, k=3, m=6, r=2)
    ms = p.matches(0, 7)
    assert ms and [mt.weight for mt in ms] == sorted((mt.weight for mt in ms), reverse=True)
    assert all(mt.query_pos == (0, 6) and mt.patch == 4 for mt in ms)  # even P: 7×7 positions
    top, left, side = ms[0].train_box
    assert side == 4 and (top, left) == (ms[0].train_pos[0] - 1, ms[0].train_pos[1] - 1)
    sel = p.matches(3, 3, t=100, images=p.selected)
    assert sel and {mt.n for mt in sel} <= set(p.selected.tolist()) and {mt.t for mt in sel} == {100}
    # at one timestep the weights are not divided by the number of timesteps
    single = p.matches(3, 3, t=100)[0].weight
    both = [mt for mt in p.matches(3, 3, m=100) if mt.t == 100][0].weight
    np.testing.assert_allclose(single, 2 * both)
    assert position_of_pixel(7, 7, (7, 7)) == 48 and position_of_pixel(2, 3, (8, 8)) == 19
    g = np.arange(9.0).reshape(3, 3)
    assert to_pixels(g, 4, 4).sum() == g.sum() and to_pixels(g, 3, 3).tolist() == g.tolist()


def test_bad_input():
    data = smooth_images(4, 1, 8, 8)
    cfg = NDAConfig(timesteps=(100,), patch_size=3, engine="conv")
    with pytest.raises(NDAError, match="one query"):
        explain(data[:3], data[:2], cfg)
    with pytest.raises(NDAError, match="shape"):
        explain(data[:3], np.zeros((1, 6, 6)), cfg)
    with pytest.raises(NDAError, match="not training indices"):
        explain(data[:3], data[3], cfg, images=[0, 5])
    p = explain(data[:3], data[3], cfg, k=2)
    with pytest.raises(NDAError, match="not one of the config's timesteps"):
        p.scores(t=300)
    with pytest.raises(NDAError, match="outside"):
        p.matches(8, 0)
