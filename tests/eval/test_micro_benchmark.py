"""End-to-end micro benchmark: data -> subset models -> outputs -> NDA scores -> LDS (~1-2 min on CPU)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("diffusers")

from nda.eval import benchmarks as B  # noqa: E402
from nda.eval.cli_bench import bench  # noqa: E402
from nda.eval.lds import lds  # noqa: E402


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    torch_threads = torch.get_num_threads()
    try:
        # a partial build first (as if killed), then resume to completion
        man = B.build("micro", root=root / "res", work=root / "work", max_models=3, threads=1, progress=False)
        assert man["progress"]["n_done"] == 3 and not man["progress"]["complete"]
        first = {p.name: p.stat().st_mtime_ns for p in (root / "res" / "outputs").glob("*.npz")}
        # another live worker holds the last job: this worker leaves it alone
        claims = root / "work" / "claims"
        claims.mkdir(parents=True, exist_ok=True)
        (claims / "sub015_s0").write_text(str(os.getppid()))
        man = B.build("micro", root=root / "res", work=root / "work", threads=1, progress=False)
        assert man["progress"]["n_done"] == 16 and "sub015_s0" not in man["progress"]["models_done"]
        # ...until that worker is dead: its claim is taken over and the build completes
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (claims / "sub015_s0").write_text(str(dead.pid))
        man = B.build("micro", root=root / "res", work=root / "work", threads=1, progress=False)
    finally:
        torch.set_num_threads(torch_threads)
    assert man["progress"]["complete"] and man["progress"]["n_done"] == 17
    assert not any(claims.iterdir())  # finished jobs release their claims
    assert set(man["timings"]["per_model"]) == set(man["progress"]["models_done"])
    cost = B.build_summary(man)
    assert cost["models_done"] == 17 and cost["complete"] and cost["train_s_total"] > 0
    # finished models were skipped, not retrained
    assert {p.name: p.stat().st_mtime_ns for p in (root / "res" / "outputs").glob("*.npz") if p.name in first} == first
    return root / "res"


@pytest.mark.slow
def test_nda_beats_random(micro):
    import nda

    b = B.load("micro", root=micro)
    assert b.n_models == 16 and b.subsets.shape == (16, 64) and b.outputs["val"].shape == (16, 16)
    assert (b.subsets.sum(1) == 32).all() and (b.subsets[:, b.labels == 0].sum(1) == 16).all()
    scores = nda.score(b.train, b.queries["val"], nda.NDAConfig(patch_size=5))
    r = lds(scores, b.subsets, b.outputs["val"], n_boot=300)
    rand = [
        lds(np.random.default_rng(s).standard_normal(scores.shape), b.subsets, b.outputs["val"], n_boot=0).mean
        for s in range(8)
    ]
    assert abs(np.mean(rand)) < 0.1
    assert r.mean > np.mean(rand) + 0.25, (r.mean, rand)
    assert r.ci[0] > max(rand), (r.ci, rand)


@pytest.mark.slow
def test_cli_lds_json_and_table(micro):
    runner = CliRunner()
    res = runner.invoke(bench, ["lds", "--benchmark", "micro", "--root", str(micro), "--method", "random", "--json", "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["benchmark"] == "micro" and d["method"] == "random"
    for split in ("val", "calib"):
        assert -1 <= d[split]["lds"] <= 1 and len(d[split]["ci"]) == 2
    res = runner.invoke(bench, ["lds", "--benchmark", "micro", "--root", str(micro), "--method", "random", "--n-boot", "20"])
    assert res.exit_code == 0 and "LDS %" in res.output and "val" in res.output
    res = runner.invoke(bench, ["lds", "--benchmark", "micro", "--root", str(micro), "--method", "nope"])
    assert res.exit_code == 2 and "unknown method" in res.output
    res = runner.invoke(bench, ["lds", "--benchmark", "micro", "--root", str(micro / "missing"), "--method", "random"])
    assert res.exit_code == 2 and "error:" in res.output


def test_protocol_mismatch_refused(micro, tmp_path):
    import dataclasses
    import shutil

    shutil.copytree(micro, tmp_path / "res")
    spec = dataclasses.replace(B.SPECS["micro"], n_measure_timesteps=7)
    with pytest.raises(RuntimeError, match="fresh"):
        B.build("micro", root=tmp_path / "res", work=tmp_path / "w", spec=spec, progress=False)


def test_make_subsets_stratified_and_seeded():
    labels = np.array([0] * 10 + [1] * 6)
    s = B.make_subsets(labels, 5, seed=3)
    assert s.shape == (5, 16) and s.dtype == bool
    assert (s[:, :10].sum(1) == 5).all() and (s[:, 10:].sum(1) == 3).all()
    np.testing.assert_array_equal(s, B.make_subsets(labels, 5, seed=3))
    assert not np.array_equal(s, B.make_subsets(labels, 5, seed=4))
