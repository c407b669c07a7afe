import json

import numpy as np
import pytest
from conftest import smooth_images
from hypothesis import given, settings
from hypothesis import strategies as st

import nda
import oracle
from nda import AttributionResult, NDAConfig, NDAError, NDAIndex
from nda.engines import ENGINES

ENGINE_NAMES = list(ENGINES)


def _data(seed=0, n=3, q=2, c=1, h=6, w=6):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, c, h, w)), rng.uniform(-1, 1, (q, c, h, w))


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_full_score_matches_independent_oracle(engine):
    train, queries = _data(c=2)
    cfg = NDAConfig(timesteps=(100, 400), patch_size={100: 3, 400: 5}, down_patch_size={100: None, 400: 4},
                    gamma={100: 1.0, 400: 0.4}, topk=4, noise_seed=1, dtype="float64", engine=engine)
    got = nda.score(train, queries, cfg)
    want = oracle.scores(train, queries, cfg.timesteps, cfg.alpha_bar(), cfg._patch, cfg._down, cfg._gamma,
                         cfg.topk, cfg.border, noise_seed=1)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-8


def test_per_timestep_and_gamma_combination():
    train, queries = _data(seed=1)
    base = dict(timesteps=(200, 300), topk=5, dtype="float64", engine="conv")
    two = NDAIndex.build(train, NDAConfig(patch_size=3, down_patch_size=4, gamma=0.3, **base)).attribute(queries)
    single = nda.score(train, queries, NDAConfig(patch_size=3, **base))
    down_only = nda.score(train, queries, NDAConfig(patch_size=3, down_patch_size=4, gamma=0.0, **base))
    np.testing.assert_allclose(two.scores, 0.3 * single + 0.7 * down_only, rtol=1e-12)
    np.testing.assert_allclose(two.per_timestep.mean(0), two.scores)
    assert two.per_timestep.shape == (2, 2, 3) and two.timesteps == (200, 300)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), P=st.sampled_from([1, 2, 3, 4]), topk=st.sampled_from([None, 1, 3]),
       border=st.sampled_from(["match", "zero"]))
def test_mass_invariant(seed, P, topk, border):
    """Σ_n τ_t ≤ #query positions, with equality when every weight is kept (topk None, γ = 1)."""
    train, queries = _data(seed, n=3, q=2, h=5, w=5)
    cfg = NDAConfig(timesteps=(150, 450), patch_size=P, topk=topk, border=border, dtype="float64", engine="conv")
    res = NDAIndex.build(train, cfg).attribute(queries)
    L = (5 if P % 2 else 4) ** 2
    mass = res.per_timestep.sum(-1)
    assert np.all(mass <= L * (1 + 1e-12))
    if topk is None:
        np.testing.assert_allclose(mass, L, rtol=1e-10)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_permuting_train_permutes_scores(engine):
    train = smooth_images(5, 1, 7, 7, seed=2, flat=True)
    queries = smooth_images(2, 1, 7, 7, seed=3)
    perm = np.random.default_rng(0).permutation(5)
    cfg = NDAConfig(timesteps=(100, 300), patch_size=3, topk=6, engine=engine, dtype="float64")
    np.testing.assert_allclose(nda.score(train[perm], queries, cfg), nda.score(train, queries, cfg)[:, perm], rtol=1e-10)


def test_deterministic_and_seeded():
    train, queries = _data(seed=4)
    cfg = NDAConfig(timesteps=(100,), patch_size=3, engine="conv")
    a, b = nda.score(train, queries, cfg), nda.score(train, queries, cfg)
    assert np.array_equal(a, b)
    assert not np.allclose(a, nda.score(train, queries, cfg.replace(noise_seed=1)))


def test_result_save_load_and_metadata(tmp_path):
    train, queries = _data(seed=5)
    res = NDAIndex.build(train, NDAConfig(timesteps=(100, 200), patch_size=3), names=["a", "b", "c"]).attribute(queries)
    path = res.save(tmp_path / "s.npz")
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["orientation"] == "queries x train" and "higher" in meta["sign"]
    assert meta["shape"] == [2, 3] and meta["train"]["names"] == ["a", "b", "c"]
    assert meta["config"]["patch_size"] == 3 and meta["score_fingerprint"] == res.config.score_fingerprint()
    back = AttributionResult.load(path)
    assert np.array_equal(back.scores, res.scores) and np.array_equal(back.per_timestep, res.per_timestep)
    assert back.config == res.config and back.train_names == ["a", "b", "c"]
    idx, val = back.topk(2)
    assert idx.shape == (2, 2) and np.all(val[:, 0] >= val[:, 1])
    assert np.array_equal(idx[:, 0], res.scores.argmax(1))


def test_refuses_to_mix_configs(tmp_path):
    train, queries = _data(seed=6)
    a = NDAIndex.build(train, NDAConfig(timesteps=(100,), patch_size=3)).attribute(queries)
    b = NDAIndex.build(train, NDAConfig(timesteps=(100,), patch_size=5)).attribute(queries)
    with pytest.raises(NDAError, match="different configs"):
        a.concat(b)
    c = NDAIndex.build(train[::-1].copy(), NDAConfig(timesteps=(100,), patch_size=3)).attribute(queries)
    with pytest.raises(NDAError, match="different training sets"):
        a.concat(c)
    both = a.concat(a)
    assert both.scores.shape == (4, 3)


def test_input_errors():
    train, queries = _data()
    with pytest.raises(NDAError, match="larger than the images"):
        NDAIndex.build(train, NDAConfig(patch_size=7))
    with pytest.raises(NDAError, match="resize the queries"):
        NDAIndex.build(train, NDAConfig(patch_size=3)).attribute(np.zeros((1, 1, 5, 5)))
    with pytest.raises(NDAError, match="resize the queries"):
        NDAIndex.build(train, NDAConfig(patch_size=3)).attribute(np.zeros((1, 3, 6, 6)))
    with pytest.raises(NDAError, match="NaN"):
        nda.score(train, np.full((1, 1, 6, 6), np.nan), NDAConfig(patch_size=3))
    with pytest.raises(NDAError, match="empty"):
        nda.score(train[:0], queries, NDAConfig(patch_size=3))
    with pytest.raises(NDAError, match="unknown timesteps"):
        nda.score(train, queries, NDAConfig(patch_size=3), timesteps=(1000,))
