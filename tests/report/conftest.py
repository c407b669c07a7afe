"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by selenium.

Browser tests skip only when no Chromium is installed *and* we are not under CI (CI=true): in CI
a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_CANDIDATES = ("chromedriver", "chromium-driver")


def _which(names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    for p in ("/usr/lib/chromium/chromedriver", "/usr/lib/chromium/chromium"):
        if Path(p).exists() and any(Path(p).name.startswith(n.split("-")[0]) for n in names):
            return p
    return None


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium session with the browser console log enabled."""
    chrome, driver_bin = _which(CHROMIUM_CANDIDATES), _which(DRIVER_CANDIDATES)
    if chrome is None or driver_bin is None:
        msg = f"headless Chromium not found (browser: {chrome}, driver: {driver_bin}); apt-get install chromium chromium-driver"
        if _under_ci():
            pytest.fail(msg + " — required under CI")
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nda-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1280,900",
                "--force-device-scale-factor=1", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


HOSTILE_TRAIN = "<img src=x onerror=\"window.__pwned=1\">.png"
HOSTILE_QUERY = "q</script><script>window.__pwned=2</script>\u2028.png"
K = 5


@pytest.fixture(scope="session")
def report_case(tmp_path_factory):
    """A small real report (demo images, two scales, 2 timesteps) with hostile file names."""
    from nda.attribution import NDAIndex
    from nda.config import NDAConfig
    from nda.demo import load_demo
    from nda.images import ImageSet
    from nda.report import write_report

    d = load_demo()
    names = list(d.train.names[:30])
    names[3] = HOSTILE_TRAIN
    train = ImageSet(d.train.images[:30], tuple(names))
    # query 0: a near copy of training image 3 (the hostile one), so it is a top proponent
    q0 = np.clip(d.train.images[3] + 0.05 * np.random.default_rng(0).normal(size=d.train.images[3].shape), -1, 1)
    queries = ImageSet(np.stack([q0, d.queries.images[1]]), (HOSTILE_QUERY, "second & query.png"))
    cfg = NDAConfig(timesteps=(100, 300), patch_size=5, down_patch_size=4, gamma=0.6, topk=20, engine="conv")
    result = NDAIndex.build(train, cfg).attribute(queries)
    out = tmp_path_factory.mktemp("report")
    page = write_report(result, train, queries, out, k=K, png=True)
    return {"page": page, "result": result, "train": train, "queries": queries, "k": K,
            "hostile_train": HOSTILE_TRAIN, "hostile_query": HOSTILE_QUERY}
