"""Baselines (issue 5): pixel / embedding similarity, TRAK / D-TRAK pieces, registry, end to end."""
import dataclasses
import math

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from nda.eval import baselines as BL  # noqa: E402
from nda.eval.baselines import trak as TR  # noqa: E402
from nda.eval.cli_bench import METHODS, evaluate  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_unet(seed=0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    m = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=2, attention_head_dim=4,
    )
    return m.eval()


# ----------------------------------------------------------------------------------- pixel
def test_pixel_scores_by_hand():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [-1.0, -1.0]]).reshape(4, 1, 1, 2)
    q = np.array([[1.0, 1.0], [0.5, 0.0]]).reshape(2, 1, 1, 2)
    np.testing.assert_allclose(BL.pixel_scores(train, q, "dot"), [[1, 1, 0, -2], [0.5, 0, 0, -0.5]])
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(BL.pixel_scores(train, q, "cos"), [[r, r, 0, -1], [1, 0, 0, -r]], atol=1e-12)


def test_pixel_bad_input():
    with pytest.raises(ValueError, match="must match"):
        BL.pixel_scores(np.zeros((3, 1, 4, 4)), np.zeros((2, 1, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        BL.pixel_scores(np.full((3, 1, 4, 4), np.nan), np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="metric"):
        BL.pixel_scores(np.zeros((3, 1, 4, 4)), np.zeros((2, 1, 4, 4)), "l2")


def test_embedding_pluggable_encoders():
    rng = np.random.default_rng(0)
    train, q = rng.uniform(-1, 1, (7, 1, 8, 8)), rng.uniform(-1, 1, (3, 1, 8, 8))
    np.testing.assert_allclose(BL.embedding_scores(BL.PixelEncoder(), train, q, "cos"), BL.pixel_scores(train, q, "cos"), rtol=1e-6)
    enc = BL.FunctionEncoder(lambda x: np.asarray(x).reshape(len(x), -1)[:, :5], "first5")
    flat_t, flat_q = train.reshape(7, -1)[:, :5], q.reshape(3, -1)[:, :5]
    np.testing.assert_allclose(BL.embedding_scores(enc, train, q, "dot"), flat_q @ flat_t.T, rtol=1e-5)
    unet = BL.UNetFeatureEncoder(tiny_unet(), timesteps=(10, 300), pool=2)
    f = unet(train)
    assert f.shape == (7, 2 * 8 * 4) and np.isfinite(f).all()
    np.testing.assert_array_equal(f, unet(train))  # fixed noise: deterministic
    s = BL.embedding_scores(unet, train, q, "cos")
    assert s.shape == (3, 7) and np.abs(s).max() <= 1 + 1e-9


# ------------------------------------------------------------------------------- projector
def test_projector_equals_materialised_matrix():
    g = torch.randn(5, 1000)
    p = TR.ChunkedProjector(1000, 70, seed=3, row_chunk=128, col_block=32)
    r = p.matrix()
    assert r.shape == (1000, 70)
    torch.testing.assert_close(p.project(g), g @ r, rtol=1e-5, atol=1e-5)
    # prefix property: a smaller k is the first columns (unscaled) of a larger one
    p40 = TR.ChunkedProjector(1000, 40, seed=3, row_chunk=128, col_block=32)
    torch.testing.assert_close(p40.project(g, scale=False), p.project(g, scale=False)[:, :40])
    # another seed gives another matrix; entries look standard normal
    assert not torch.allclose(TR.ChunkedProjector(1000, 70, seed=4, row_chunk=128, col_block=32).matrix(), r)
    z = r * math.sqrt(70)
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


# ---------------------------------------------------------------------------------- scores
@pytest.mark.parametrize("n,k", [(12, 5), (6, 10)])
def test_trak_scores_equal_brute_force(n, k):
    rng = np.random.default_rng(n)
    a, q = rng.standard_normal((n, k)), rng.standard_normal((4, k))
    for lam in (1e-3, 0.1, 2.0):
        lam_abs = lam * np.trace(a.T @ a) / k
        want = q @ np.linalg.inv(a.T @ a + lam_abs * np.eye(k)) @ a.T
        np.testing.assert_allclose(TR.trak_scores_from_features(a, q, lam), want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        TR.trak_scores_from_features(a, q, 0.5, relative=False), q @ np.linalg.inv(a.T @ a + 0.5 * np.eye(k)) @ a.T, rtol=1e-8, atol=1e-10
    )


# ----------------------------------------------------------------------- per-sample gradients
def _single_backward(model, x, t, eps, output):
    from nda.eval.diffusion import alphas_cumprod

    a = float(alphas_cumprod()[t])
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    pred = model(math.sqrt(a) * x[None] + math.sqrt(1 - a) * eps[None], torch.tensor([t])).sample[0]
    val = ((pred - eps) ** 2).mean() if output == "loss" else (pred**2).mean()
    val.backward()
    g = torch.cat([p.grad.reshape(-1) for _, p in model.named_parameters()])
    model.zero_grad(set_to_none=True)
    return g


def test_per_sample_grads_match_single_backward():
    m = tiny_unet()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    eps = TR.noise_for(250, (1, 8, 8))
    gv = TR.per_sample_grads(m, x, 250, eps, mode="vmap")
    gl = TR.per_sample_grads(m, x, 250, eps, mode="loop")
    d = sum(p.numel() for p in m.parameters())
    assert gv.shape == (3, 2, d)
    for i in range(3):
        for j, o in enumerate(TR.OUTPUTS):
            ref = _single_backward(m, x[i], 250, eps, o)
            torch.testing.assert_close(gv[i, j], ref, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(gl[i, j], ref, rtol=1e-5, atol=1e-7)


def test_featurize_is_projected_timestep_mean():
    m = tiny_unet(1)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    sets = {"ab": [5, 405], "b": [405]}
    feats = TR.featurize(m, x.numpy(), sets, k=24, proj_seed=2, batch_size=2, proj_batch=3)
    d = sum(p.numel() for p in m.parameters())
    proj = TR.ChunkedProjector(d, 24, seed=2)
    g = {t: TR.per_sample_grads(m, x, t, TR.noise_for(t, (1, 8, 8)), mode="loop") for t in (5, 405)}
    for j, o in enumerate(TR.OUTPUTS):
        want_ab = proj.project((g[5][:, j] + g[405][:, j]) / 2, scale=False).numpy()
        want_b = proj.project(g[405][:, j], scale=False).numpy()
        np.testing.assert_allclose(feats[("ab", o)], want_ab, rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(feats[("b", o)], want_b, rtol=2e-3, atol=1e-5)


def test_timestep_sets():
    assert len(TR.T100) == 100 and len(TR.T10) == 10 and set(TR.T10) <= set(TR.T100)
    assert TR.T100[0] == 5 and TR.T100[-1] == 995 and TR.T10 == tuple(range(55, 1000, 100))


def test_registry_has_every_method():
    for name in BL.BASELINES:
        assert name in METHODS, name


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """A smaller-than-micro benchmark: 8×8 images, 6 subsets, 40-step models (seconds)."""
    from nda.eval import benchmarks as B

    root = tmp_path_factory.mktemp("tinybench")
    spec = dataclasses.replace(
        B.SPECS["micro"],
        train_config=dataclasses.replace(B.MICRO_TRAIN_CONFIG, steps=40, block_out_channels=(8, 16), norm_num_groups=4),
        n_subsets=6,
        n_measure_timesteps=5,
        noise_seeds=(0,),
    )
    n = torch.get_num_threads()
    try:
        B.build("micro", root=root / "res", work=root / "work", spec=spec, threads=1, progress=False)
    finally:
        torch.set_num_threads(n)
    b = B.load("micro", root=root / "res")
    assert b.n_models == 6
    return b, root


@pytest.mark.slow
def test_end_to_end_all_methods(tiny_bench):
    b, root = tiny_bench
    cfg = {"cache_dir": str(root / "cache"), "k_max": 64}
    # 8×8 images: the variants' fmnist2 patch sizes (11, 15) do not fit, so they are overridden
    light = {"nda": {"patch_size": 3, "timesteps": [100, 300]}, "nda-single": {"timesteps": [100, 300], "patch_size": 5},
             "nda-two": {"timesteps": [100, 300], "patch_size": 5, "down_patch_size": 4}}
    results = {}
    for name in BL.BASELINES:
        if name.endswith("-100"):
            continue  # same code path as -10 with 10x the timesteps; covered by the unit tests
        r = evaluate(b, name, light[name] if name.startswith("nda") else cfg, n_boot=20)
        for split in ("val", "calib"):
            assert -1 <= r[split]["lds"] <= 1 and r[split]["n_queries"] == len(b.queries[split])
        results[name] = r
    # the TRAK features were cached and the (k, λ) choice was made on calib and recorded
    assert list((root / "cache" / "micro").glob("trak_*.npz"))
    import json

    choices = json.loads((root / "cache" / "micro" / "trak_choices.json").read_text())
    assert choices["trak-10"]["source"].startswith("calib") and choices["trak-10"]["k"] <= 64
    # scores are deterministic (second call hits the cache and gives identical scores)
    s1 = METHODS["dtrak-10"](b, b.queries["val"], cfg)
    s2 = METHODS["dtrak-10"](b, b.queries["val"], cfg)
    np.testing.assert_array_equal(s1, s2)
    e1 = METHODS["embed-cos"](b, b.queries["val"], {})
    assert e1.shape == (len(b.queries["val"]), len(b.train))


def load_benchmark_script(name: str):
    """Import benchmarks/<name>.py (the scripts are not part of the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_lds_table_script(tiny_bench, tmp_path, capsys):
    import json

    b, root = tiny_bench
    mod = load_benchmark_script("lds_table")
    out = tmp_path / "t.json"
    rc = mod.main(["--benchmark", "micro", "--root", str(b.root), "--methods", "random,pixel-cos,nda-single",
                   "--n-boot", "10", "--jobs", "2", "--json", str(out), "--config", json.dumps({"timesteps": [100, 300], "patch_size": 5})])
    assert rc == 0
    text = capsys.readouterr().out
    assert "6 of 6" in text and "| pixel-cos |" in text and "× NDA time" in text
    res = json.loads(out.read_text())
    assert res["n_models"] == 6 and [r["method"] for r in res["results"]] == ["random", "pixel-cos", "nda-single"]
    assert all("error" not in r and "val" in r["splits"] for r in res["results"])
    assert mod.main(["--benchmark", "micro", "--root", str(b.root), "--methods", "nope"]) == 2


@pytest.mark.slow
def test_ablation_script(tiny_bench, tmp_path, capsys):
    import json

    import nda

    b, root = tiny_bench
    mod = load_benchmark_script("ablate_nda")
    out = mod.main(["--benchmark", "micro", "--root", str(b.root), "--quick", "--splits", "calib,val", "--full-grid",
                    "--cache", str(tmp_path / "cache"), "--n-boot", "10", "--json", str(tmp_path / "a.json"),
                    "--plot", str(tmp_path / "a.png")])
    assert "| two scales" in capsys.readouterr().out
    assert (tmp_path / "a.png").stat().st_size > 0 and json.loads((tmp_path / "a.json").read_text())["n_models"] == 6
    # a schedule's scores from cached per-timestep slices equal a fresh nda.score run
    assert out["combination_check_max_rel_diff"] < 1e-5
    assert np.asarray(out["heatmap"]["val"]["single"]).shape == (len(out["t_grid"]), len(out["single_sizes"]))
    cands = {r["name"]: r for r in out["candidates"]}
    calib = {k: r["splits"]["calib"]["lds"] for k, r in cands.items()}
    # each choice step starts from the previous one, so calib LDS never goes down along the chain
    chain = ["per-timestep P_t", "per-timestep P_t, timesteps chosen", "two scales (P_t, P′_t, γ_t)"]
    assert all(calib[a] <= calib[c] + 1e-12 for a, c in zip(chain, chain[1:]))
    for r in out["candidates"]:
        nda.NDAConfig.from_dict(r["config"])  # every reported config is a valid NDAConfig


@pytest.mark.slow
def test_trak_features_resume_by_parts(tiny_bench, tmp_path, monkeypatch):
    from nda.eval.baselines import trak as TR

    b, _ = tiny_bench
    x = b.train[:7]
    whole, _ = TR.bench_features(b, x, 10, "loss", {"cache_dir": str(tmp_path / "a"), "k_max": 16, "part_images": 100})
    real, calls = TR.featurize, []

    def dies_on_second_part(*args, **kw):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the session ends mid-pass
        return real(*args, **kw)

    cfg = {"cache_dir": str(tmp_path / "b"), "k_max": 16, "part_images": 3}
    monkeypatch.setattr(TR, "featurize", dies_on_second_part)
    with pytest.raises(KeyboardInterrupt):
        TR.bench_features(b, x, 10, "loss", cfg)
    calls.clear()
    monkeypatch.setattr(TR, "featurize", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    parts, meta = TR.bench_features(b, x, 10, "loss", cfg)
    assert calls == [3, 1]  # the finished first part was reused
    # features do not depend on the partition (up to float32 GEMM rounding of other batch sizes)
    np.testing.assert_allclose(parts, whole, rtol=1e-4, atol=1e-5)
    assert meta["n_images"] == 7 and not list((tmp_path / "b").rglob("*.part*"))
    assert meta["cpu_seconds"] > 0 and meta["seconds"] > 0  # summed over the parts, the reused one included
