"""Regenerate docs/report-screenshot.png from the demo's report (not a test).

    nda demo --out nda-demo
    python tests/report/make_screenshot.py nda-demo/report/index.html docs/report-screenshot.png
"""

import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main(page: str, out: str, fy: float = -1, fx: float = -1) -> None:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1280,900", "--force-device-scale-factor=1", "--hide-scrollbars",
              f"--user-data-dir={tempfile.mkdtemp(prefix='nda-shot-')}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        drv.get(Path(page).resolve().as_uri())
        WebDriverWait(drv, 20).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        section = drv.find_elements(By.CSS_SELECTOR, "section.query")[0]
        stack = section.find_element(By.CSS_SELECTOR, ".q-stack")
        w, h = stack.size["width"], stack.size["height"]

        def at(fy, fx):
            return ActionChains(drv).move_to_element_with_offset(stack, int((fx - 0.5) * w), int((fy - 0.5) * h))

        if fy < 0:  # pick the location where most proponents show matched patches
            best = (-1, 0.5, 0.5)  # interior only: border patches match every image's border
            for gy in [0.25 + i / 16 for i in range(9)]:
                for gx in [0.25 + i / 16 for i in range(9)]:
                    at(gy, gx).perform()
                    n = drv.execute_script(
                        "return Array.from(arguments[0].querySelectorAll('.proponent')).filter("
                        "p => Number(p.dataset.matches) > 0).length", section)
                    best = max(best, (n, gy, gx))
            fy, fx = best[1], best[2]
        at(fy, fx).click().perform()
        drv.save_screenshot(out)
    finally:
        drv.quit()


if __name__ == "__main__":
    main(*sys.argv[1:3], *map(float, sys.argv[3:5]))
