"""The LDS metric: a hand-computed example, agreement with scipy, shape errors, and the committed data."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from nda.eval.lds import lds, predictions

SUBSETS = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)
# q0: pred = -(4,2,1)·S = (-6, -3, -5, -7) -> ranks (2, 4, 3, 1); outputs ranks (1, 4, 2, 3)
#     d = (1, 0, 1, -2), Σd² = 6, ρ = 1 - 6·6 / (4·15) = 0.4
# q1: pred = -(1,2,3)·S = (-3, -5, -4, -6) -> ranks (4, 2, 3, 1) = outputs ranks -> ρ = 1
# q2: zero scores -> constant prediction -> undefined (NaN), counted as 0 in the mean
SCORES = np.array([[4.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
OUTPUTS = np.array([[0.1, 0.9, 1.0], [0.4, 0.5, 2.0], [0.2, 0.7, 3.0], [0.3, 0.1, 4.0]])


def test_hand_computed():
    np.testing.assert_array_equal(predictions(SCORES, SUBSETS)[:, 0], [-6, -3, -5, -7])
    r = lds(SCORES, SUBSETS, OUTPUTS, n_boot=200, seed=0)
    assert r.per_query[0] == pytest.approx(0.4)
    assert r.per_query[1] == pytest.approx(1.0)
    assert np.isnan(r.per_query[2])
    assert r.n_undefined == 1
    assert r.mean == pytest.approx(1.4 / 3)
    assert r.n_subsets == 4 and r.n_queries == 3
    assert r.ci[0] <= r.ci[1]
    d = r.to_dict()
    assert set(d) >= {"lds", "ci"} and len(d["ci"]) == 2


def test_sign_proponents_give_positive_lds():
    # loss drops when the single proponent (item 0) is in the subset -> high score on item 0 is good
    rng = np.random.default_rng(1)
    subsets = rng.random((40, 10)) < 0.5
    outputs = (1.0 - 0.5 * subsets[:, [0]] + 0.01 * rng.standard_normal((40, 1)))
    good = np.zeros((1, 10)); good[0, 0] = 1.0
    assert lds(good, subsets, outputs, n_boot=50).mean > 0.8
    assert lds(-good, subsets, outputs, n_boot=50).mean < -0.8


def test_matches_scipy_and_deterministic():
    rng = np.random.default_rng(0)
    m, q, n = 20, 5, 12
    subsets = rng.random((m, n)) < 0.5
    scores = rng.standard_normal((q, n))
    outputs = rng.standard_normal((m, q))
    r = lds(scores, subsets, outputs, n_boot=100, seed=3)
    pred = -(subsets.astype(float) @ scores.T)
    ref = [spearmanr(pred[:, j], outputs[:, j]).statistic for j in range(q)]
    np.testing.assert_allclose(r.per_query, ref, atol=1e-12)
    assert r.mean == pytest.approx(np.mean(ref))
    r2 = lds(scores, subsets, outputs, n_boot=100, seed=3)
    assert r2.ci == r.ci
    # ties (average ranks) also match scipy
    outputs_t = np.round(outputs, 0)
    r3 = lds(scores, subsets, outputs_t, n_boot=0)
    ref3 = [spearmanr(pred[:, j], outputs_t[:, j]).statistic for j in range(q)]
    np.testing.assert_allclose(r3.per_query, ref3, atol=1e-12)


def test_shape_errors():
    with pytest.raises(ValueError, match="scores must be 2-D"):
        lds(np.zeros(3), SUBSETS, OUTPUTS)
    with pytest.raises(ValueError, match="training columns"):
        lds(np.zeros((3, 4)), SUBSETS, OUTPUTS)
    with pytest.raises(ValueError, match="transpose"):
        lds(SCORES, SUBSETS, OUTPUTS.T)
    with pytest.raises(ValueError, match=r"outputs must be \(subsets, queries\)"):
        lds(SCORES, SUBSETS, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="boolean"):
        lds(SCORES, SUBSETS * 0.5, OUTPUTS)
    with pytest.raises(ValueError, match="at least 3 subsets"):
        lds(SCORES, SUBSETS[:2], OUTPUTS[:2])
    with pytest.raises(ValueError, match="NaN"):
        lds(SCORES * np.nan, SUBSETS, OUTPUTS)
    # 0/1 integer masks are accepted
    assert lds(SCORES, SUBSETS.astype(int), OUTPUTS, n_boot=10).mean == pytest.approx(1.4 / 3)


def test_committed_fmnist2_loads():
    from nda.benchmarks import load

    b = load("fmnist2")
    assert b.train.shape == (1000, 1, 16, 16) and b.train.dtype == np.float32
    assert b.train.min() >= -1 and b.train.max() <= 1
    assert np.bincount(b.labels).tolist() == [500, 500]
    assert b.queries["val"].shape == (100, 1, 16, 16)
    assert b.queries["gen"].shape == (100, 1, 16, 16)
    assert b.queries["calib"].shape == (100, 1, 16, 16)  # 50 real + 50 generated
    assert (b.query_labels["calib"][50:] == -1).all() and np.bincount(b.query_labels["calib"][:50]).tolist() == [25, 25]
    for q in b.queries.values():
        assert np.isfinite(q).all() and q.min() >= -1 and q.max() <= 1
    assert b.all_subsets.shape == (64, 1000) and (b.all_subsets.sum(1) == 500).all()
    assert (b.all_subsets[:, b.labels == 0].sum(1) == 250).all()
    m = b.n_models
    assert b.subsets.shape == (m, 1000) and len(b.n_seeds) == m
    for split, q in b.queries.items():
        assert b.outputs[split].shape == (m, len(q))
        assert np.isfinite(b.outputs[split]).all()
    assert b.manifest["benchmark"] == "fmnist2" and b.manifest["protocol"]["n_subsets"] == 64
