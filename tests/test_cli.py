"""The CLI through the installed `nda` entry point (a subprocess, as a user runs it)."""

import json

import numpy as np
import pytest
from PIL import Image

from cli_runner import image_folders, run_nda


def run(*args, check=True):
    return run_nda(*args, check=check)


@pytest.fixture
def folders(tmp_path):
    return image_folders(tmp_path, 4)


def test_score_and_top(folders, tmp_path):
    train, queries = folders
    out = tmp_path / "res" / "scores.npz"
    p = run("score", "--train", str(train), "--queries", str(queries), "--out", str(out),
            "--patch-size", "3", "--timesteps", "100,200", "--topk", "5", "--no-progress")
    assert "2 queries × 4 training images" in p.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["config"]["patch_size"] == 3 and meta["config"]["timesteps"] == [100, 200]
    assert meta["train"]["names"] == [f"img{i}.png" for i in range(4)]
    top = run("top", "--scores", str(out), "-k", "2")
    lines = top.stdout.splitlines()
    assert lines[0] == "copy_of_img2.png:" and "img2.png" in lines[1]
    js = json.loads(run("top", "--scores", str(out), "-k", "3", "--json").stdout)
    assert js["top"][0]["proponents"][0]["name"] == "img2.png" and len(js["top"][1]["proponents"]) == 3


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(run("config", "--patch-size", "100:3,200:5", "--timesteps", "100,200").stdout)
    d = json.loads(run("config", "--config", str(cfg), "--down-patch-size", "4").stdout)
    assert d["patch_size"] == {"100": 3, "200": 5} and d["down_patch_size"] == 4 and d["gamma"] == 0.5
    assert json.loads(run("config").stdout)["patch_size"] == "auto"  # the default, resolved per image size
    assert json.loads(run("config", "--config", str(cfg), "--patch-size", "auto").stdout)["patch_size"] == "auto"


@pytest.mark.parametrize("args,needle", [
    (["--patch-size", "99"], "larger than the images"),
    (["--timesteps", "100,5000"], "unknown timesteps"),
    (["--down-patch-size", "3"], "even"),
    (["--topk", "zero"], "--topk"),
])
def test_bad_input_is_one_line_and_writes_nothing(folders, tmp_path, args, needle):
    train, queries = folders
    out = tmp_path / "never.npz"
    p = run("score", "--train", str(train), "--queries", str(queries), "--out", str(out), *args, check=False)
    assert p.returncode == 2
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_missing_and_mismatched_inputs(folders, tmp_path):
    train, queries = folders
    p = run("score", "--train", str(tmp_path / "nope"), "--queries", str(queries), "--out", str(tmp_path / "x.npz"), check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr
    big = tmp_path / "big"
    big.mkdir()
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(big / "q.png")
    p = run("score", "--train", str(train), "--queries", str(big), "--out", str(tmp_path / "x.npz"), check=False)
    assert p.returncode == 2 and "resize the queries" in p.stderr
    (tmp_path / "junk.npz").write_bytes(b"junk")
    p = run("top", "--scores", str(tmp_path / "junk.npz"), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_help_has_examples():
    for cmd in (["--help"], ["score", "--help"], ["top", "--help"], ["demo", "--help"], ["config", "--help"]):
        p = run(*cmd)
        assert "Usage:" in p.stdout
    assert "Example" in run("score", "--help").stdout


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    p = run("demo", "--out", str(tmp_path / "demo"), "--no-progress")
    assert "top proponent #123 — found" in p.stdout
    assert (tmp_path / "demo" / "scores.npz").exists()
