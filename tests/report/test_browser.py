"""The report in a real browser (headless Chromium via selenium): loads cleanly, interacts, stays inert."""

import json
import re

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser, report_case):
    browser.get(report_case["page"].resolve().as_uri())
    browser.get_log("browser")  # drop anything logged before this test
    browser.get(report_case["page"].resolve().as_uri())
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1")
    return browser


def _errors(drv):
    return [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def _hover(drv, section, fy, fx):
    """Move the mouse to the fraction (fy, fx) of the query image of `section`."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    stack = section.find_element(By.CSS_SELECTOR, ".q-stack")
    w, h = stack.size["width"], stack.size["height"]
    ActionChains(drv).move_to_element_with_offset(stack, int((fx - 0.5) * w), int((fy - 0.5) * h)).perform()


def _highlights(section):
    return section.parent.execute_script(
        "return Array.from(arguments[0].querySelectorAll('.proponent svg rect')).map("
        "r => [r.closest('.proponent').dataset.rank, r.getAttribute('x'), r.getAttribute('y'),"
        " r.getAttribute('width'), r.getAttribute('stroke-opacity')].join(','))", section)


def test_loads_without_console_errors_or_requests(page):
    assert _errors(page) == []
    # every resource is inline: images are data: URIs, nothing was fetched over a network
    srcs = page.execute_script("return Array.from(document.images).map(i => i.src)")
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert page.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    entries = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(not re.match(r"https?:", e) for e in entries)


def test_shows_the_proponents(page, report_case):
    from selenium.webdriver.common.by import By

    k, res = report_case["k"], report_case["result"]
    sections = page.find_elements(By.CSS_SELECTOR, "section.query")
    assert len(sections) == 2
    for qi, s in enumerate(sections):
        props = s.find_elements(By.CSS_SELECTOR, "li.proponent")
        assert len(props) == k
        assert [int(p.get_attribute("data-n")) for p in props] == res.topk(k)[0][qi].tolist()
        shown = [float(p.find_element(By.CSS_SELECTOR, ".score").text) for p in props]
        assert shown == sorted(shown, reverse=True)
        assert abs(shown[0] - res.scores[qi, res.topk(1)[0][qi, 0]]) <= 1e-3 * abs(shown[0])


def test_hover_highlights_the_matched_patches(page):
    from selenium.webdriver.common.by import By

    section = page.find_elements(By.CSS_SELECTOR, "section.query")[0]
    assert _highlights(section) == []
    _hover(page, section, 0.3, 0.3)
    first, where1 = _highlights(section), section.get_attribute("data-hover")
    here1 = section.find_element(By.CSS_SELECTOR, ".here").text
    _hover(page, section, 0.8, 0.6)
    second, where2 = _highlights(section), section.get_attribute("data-hover")
    assert where1 != where2 and first and second and first != second
    assert "is explained by" in here1 and here1 != section.find_element(By.CSS_SELECTOR, ".here").text
    # the query shows the hovered patch
    assert section.find_elements(By.CSS_SELECTOR, ".q-stack svg rect.qbox")
    # per-timestep view: the highlighted patches and the scores change with the view
    page.find_element(By.XPATH, "//label[contains(., 't = 100')]").click()
    _hover(page, section, 0.8, 0.61)
    assert _highlights(section) != second
    scores = [e.text for e in section.find_elements(By.CSS_SELECTOR, ".proponent .score")]
    page.find_element(By.XPATH, "//label[contains(., 'all timesteps')]").click()
    assert scores != [e.text for e in section.find_elements(By.CSS_SELECTOR, ".proponent .score")]
    assert _errors(page) == []


def test_clicking_a_proponent_shows_where_it_explains_the_query(page):
    from selenium.webdriver.common.by import By

    section = page.find_elements(By.CSS_SELECTOR, "section.query")[1]
    heat = section.find_element(By.CSS_SELECTOR, ".q-stack img.heat")
    before = heat.get_attribute("src")
    props = section.find_elements(By.CSS_SELECTOR, "li.proponent")
    props[2].click()
    assert "selected" in props[2].get_attribute("class") and "selected" not in props[0].get_attribute("class")
    assert heat.get_attribute("src") != before
    assert "#3" in section.find_element(By.CSS_SELECTOR, ".qcaption").text


def test_hostile_names_are_text_and_execute_nothing(page, report_case, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    HOSTILE_TRAIN, HOSTILE_QUERY = report_case["hostile_train"], report_case["hostile_query"]
    section = page.find_elements(By.CSS_SELECTOR, "section.query")[0]
    assert section.find_element(By.CSS_SELECTOR, ".qname").get_attribute("textContent") == HOSTILE_QUERY
    names = [e.get_attribute("textContent") for e in section.find_elements(By.CSS_SELECTOR, ".proponent .pname")]
    assert HOSTILE_TRAIN in names  # the near copy's source: shown, as text
    _hover(page, section, 0.5, 0.5)  # the hover panel inserts names too
    assert page.execute_script("return window.__pwned === undefined")
    assert page.execute_script("return document.querySelectorAll('img[src=\"x\"], img:not([src^=\"data:\"])').length") == 0
    assert page.execute_script("return document.scripts.length") == 2
    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text
    assert _errors(page) == []
    page.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
