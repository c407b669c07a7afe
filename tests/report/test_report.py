"""The HTML report and figures without a browser: content, escaping, self-containment, checks."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from cli_runner import image_folders, run_nda

from nda.attribution import NDAIndex
from nda.config import NDAConfig
from nda.errors import NDAError
from nda.images import ImageSet
from nda.report import script_json, write_report



def _data(html):
    m = re.search(r'<script type="application/json" id="nda-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_script_json_is_inert_in_html():
    s = script_json({"a": "</script><!-- \u2028\u2029 & <b>", "é": 1})
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s and "\u2029" not in s
    assert json.loads(s) == {"a": "</script><!-- \u2028\u2029 & <b>", "é": 1}


def test_report_content_and_escaping(report_case):
    html = report_case["page"].read_text(encoding="utf-8")
    k, HOSTILE_TRAIN = report_case["k"], report_case["hostile_train"]
    # hostile names appear only escaped
    assert HOSTILE_TRAIN not in html and "<img src=x" not in html and "window.__pwned=2</script>" not in html
    assert "&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;.png" in html
    assert html.count("<script") == 2 and html.count("</script>") == 2
    # self-contained: no external resources
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', html)
    assert "Content-Security-Policy" in html and "script-src 'sha256-" in html
    data = _data(html)
    assert len(data["queries"]) == 2 and len(data["views"]) == 3
    assert html.count('<li class="proponent') == 2 * k
    res = report_case["result"]
    for qi, q in enumerate(data["queries"]):
        assert q["sel"] == res.topk(k)[0][qi].tolist()
        np.testing.assert_allclose(q["views"][0]["scores"], res.scores[qi, q["sel"]])
        np.testing.assert_allclose(q["views"][2]["scores"], res.per_timestep[1, qi, q["sel"]])
        assert len(q["steps"]) == 4 and {s["P"] for s in q["steps"]} == {4, 5}
        assert all(v["qheat"][0].startswith("data:image/png;base64,") for v in q["views"])
    assert data["queries"][0]["sel"][0] == 3  # the near copy's source ranks first
    # the CSP hash matches the inline script
    import base64
    import hashlib
    js = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in html


def test_png_figures(report_case):
    figs = sorted((report_case["page"].parent / "figures").glob("*.png"))
    assert [f.name for f in figs] == ["query-000.png", "query-001.png"]
    with Image.open(figs[0]) as im:
        assert im.size[0] > 3 * im.size[1] / 2  # a wide strip: query | k proponents


def test_report_refuses_other_images(report_case, tmp_path):
    res, train, queries = report_case["result"], report_case["train"], report_case["queries"]
    other = ImageSet(train.images[::-1].copy(), train.names)
    with pytest.raises(NDAError, match="not the ones the scores were computed on"):
        write_report(res, other, queries, tmp_path / "r")
    with pytest.raises(NDAError, match="2 queries × 30 training images"):
        write_report(res, train, ImageSet(queries.images[:1]), tmp_path / "r")
    assert not (tmp_path / "r" / "index.html").exists()


def _cli(*args, check=True):
    return run_nda(*args, check=check, timeout=300)


@pytest.fixture
def folders(tmp_path):
    return image_folders(tmp_path, 5, ["<img src=x onerror=alert(1)>.png"])


def test_cli_explain_and_report(folders, tmp_path):
    train, queries = folders
    flags = ["--patch-size", "3", "--timesteps", "100,200", "--topk", "5", "--engine", "conv"]
    p = _cli("explain", "--train", str(train), "--query", str(queries / "copy_of_img2.png"),
             "--out", str(tmp_path / "ex"), "-k", "6", "--no-progress", *flags)
    assert "report:" in p.stdout and (tmp_path / "ex" / "index.html").exists()
    html = (tmp_path / "ex" / "index.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html and "<img src=x" not in html
    assert _data(html)["queries"][0]["sel"][0] == 3  # sorted names: "<img…>.png", img0, img1, img2, …

    _cli("score", "--train", str(train), "--queries", str(queries), "--out", str(tmp_path / "s.npz"), "--no-progress", *flags)
    p = _cli("report", "--scores", str(tmp_path / "s.npz"), "--train", str(train), "--queries", str(queries),
             "--out", str(tmp_path / "rep"), "-k", "2", "--png", "--no-progress")
    assert (tmp_path / "rep" / "index.html").exists() and len(list((tmp_path / "rep" / "figures").glob("*.png"))) == 2
    # wrong query set → one readable line, exit 2, nothing written
    p = _cli("report", "--scores", str(tmp_path / "s.npz"), "--train", str(train), "--queries", str(train),
             "--out", str(tmp_path / "bad"), "--no-progress", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "index.html").exists()


def test_cli_help_has_examples():
    for cmd in ("explain", "report"):
        out = _cli(cmd, "--help").stdout
        assert "Examples:" in out and f"nda {cmd} --" in out
