import json

import numpy as np
import pytest

from nda import NDAConfig, NDAError
from nda.config import alphas_cumprod


def test_defaults_and_resolution():
    c = NDAConfig()
    assert c.timesteps == (100, 200, 300, 400, 500)
    assert c.topk == 100 and c.border == "match" and c.noise_seed == 0 and c.dtype == "float32"
    assert c.gamma == 1.0 and c.down_patch_size is None
    assert NDAConfig(down_patch_size=6).gamma == 0.5  # the authors' constant when a second scale is on


def test_auto_patch_schedule():
    from nda.config import AUTO_PATCH_FRACTION, auto_patch_size

    c = NDAConfig()
    assert c.patch_size == "auto" and NDAConfig.from_json(c.to_json()) == c
    with pytest.raises(NDAError, match="resolve"):
        c.patch_at(100)
    r = c.resolve(16, 16)  # the benchmark the table was chosen on: P_t = 16 × fraction exactly
    assert [r.patch_at(t) for t in c.timesteps] == [round(16 * AUTO_PATCH_FRACTION[t]) for t in c.timesteps]
    assert r.score_fingerprint() != c.score_fingerprint() and r.resolve(16, 16) is r
    assert c.resolve(16, 40) == r  # the shorter side counts
    for side in range(1, 65):
        for t in (0, 100, 250, 500, 999):
            p = auto_patch_size(t, side)
            assert p % 2 == 1 and 1 <= p <= side  # odd (centred patches) and never larger than the image
    # a timestep off the table takes its nearest tabulated neighbour's fraction
    assert auto_patch_size(20, 16) == auto_patch_size(100, 16) and auto_patch_size(900, 16) == auto_patch_size(500, 16)
    with pytest.raises(NDAError, match="auto"):
        NDAConfig(patch_size="big")


def test_results_carry_the_resolved_config():
    import nda
    from nda.config import auto_patch_size

    x = np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    res = nda.NDAIndex.build(x, NDAConfig(timesteps=(100, 300))).attribute(x[:1])
    assert res.config.patch_size != "auto"
    assert [res.config.patch_at(t) for t in (100, 300)] == [auto_patch_size(100, 8), auto_patch_size(300, 8)]


def test_per_timestep_tables():
    c = NDAConfig(timesteps=(100, 300), patch_size={100: 5, 300: 9}, down_patch_size={100: None, 300: 10},
                  gamma={100: 1.0, 300: 0.25})
    assert (c.patch_at(100), c.patch_at(300)) == (5, 9)
    assert (c.down_at(100), c.down_at(300)) == (None, 10)
    assert (c.gamma_at(100), c.gamma_at(300)) == (1.0, 0.25)
    assert NDAConfig(timesteps=(1, 2), patch_size={1: 3, 2: 3}).patch_size == 3  # equal table collapses


def test_json_round_trip(tmp_path):
    c = NDAConfig(timesteps=(50, 150), patch_size={50: 3, 150: 7}, down_patch_size=4, gamma=0.7, topk=None,
                  noise_seed=3, border="zero", beta_schedule="cosine", dtype="float64")
    path = tmp_path / "cfg.json"
    c.to_json(path)
    d = NDAConfig.from_json(path)
    assert d == c and d.to_dict() == c.to_dict()
    assert d.score_fingerprint() == c.score_fingerprint()
    assert json.loads(c.to_json())["patch_size"] == {"50": 3, "150": 7}


def test_fingerprint_ignores_run_fields_only():
    a = NDAConfig()
    assert a.score_fingerprint() == a.replace(engine="conv", device="cpu", memory_budget_mb=64).score_fingerprint()
    assert a.score_fingerprint() != a.replace(topk=50).score_fingerprint()
    assert a.score_fingerprint() != a.replace(noise_seed=1).score_fingerprint()


@pytest.mark.parametrize("kwargs,match", [
    ({"timesteps": ()}, "empty"),
    ({"timesteps": (100, 1000)}, "unknown timesteps"),
    ({"timesteps": (-1,)}, "unknown timesteps"),
    ({"timesteps": (5, 5)}, "duplicates"),
    ({"patch_size": 0}, "positive integer"),
    ({"patch_size": 2.5}, "positive integer"),
    ({"patch_size": {100: 5}}, "missing"),
    ({"down_patch_size": 5}, "even"),
    ({"gamma": 0.5}, "not configured"),
    ({"down_patch_size": 4, "gamma": 1.5}, r"\[0, 1\]"),
    ({"topk": 0}, "topk"),
    ({"border": "reflect"}, "border must be one of"),
    ({"dtype": "float16"}, "dtype"),
    ({"engine": "magic"}, "engine"),
    ({"beta_schedule": "sigmoid"}, "beta_schedule"),
    ({"alphas_cumprod": [0.5] * 10}, "num_train_timesteps"),
    ({"noise_seed": -1}, "noise_seed"),
])
def test_bad_configs_name_the_problem(kwargs, match):
    with pytest.raises(NDAError, match=match):
        NDAConfig(**kwargs)


def test_unknown_json_keys(tmp_path):
    with pytest.raises(NDAError, match="unknown config keys"):
        NDAConfig.from_dict({"patchsize": 5})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(NDAError, match="not valid JSON"):
        NDAConfig.from_json(tmp_path / "bad.json")


@pytest.mark.parametrize("ours,theirs", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                         ("cosine", "squaredcos_cap_v2")])
def test_schedule_matches_diffusers(ours, theirs):
    diffusers = pytest.importorskip("diffusers")
    s = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=theirs)
    np.testing.assert_array_equal(alphas_cumprod(1000, 1e-4, 0.02, ours), s.alphas_cumprod.double().numpy())


def test_user_alphas_cumprod():
    ac = np.linspace(0.99, 0.01, 10)
    c = NDAConfig(timesteps=(3,), patch_size=3, num_train_timesteps=10, alphas_cumprod=ac)
    np.testing.assert_allclose(c.alpha_bar(), ac)
