"""The explorer in a real browser: Voilà serves notebook 05, headless Chromium clicks it.

Skipped, with the command that enables them, where Debian's ``chromium`` and
``chromium-driver`` are not installed (``.ci/run`` installs them).
"""

from __future__ import annotations

import re
import time

import pytest

from alignnb.run import dashboard
from alignnb.measure import metrics
from alignnb.run.stages import load_study

pytestmark = pytest.mark.slow

if dashboard.find_chromium() is None:
    pytest.skip(dashboard.CHROMIUM_MISSING, allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


@pytest.fixture(scope="module")
def page(quick_run, data_root, tmp_path_factory):
    """The quick study's explorer, served by Voilà on a free port and opened in headless Chromium."""
    cfg = dashboard.cached_study(quick=True, data_dir=data_root)
    folder = tmp_path_factory.mktemp("dashboard")
    with dashboard.serving(cfg, data_dir=data_root, folder=folder) as url:
        driver = dashboard.open_browser()
        try:
            driver.get(url)
            dashboard.wait_for_score(driver)
            yield driver, cfg, folder
        finally:
            driver.quit()


def element(driver, name: str):
    return driver.find_element(By.CSS_SELECTOR, f".alignnb-{name}")


def shown_value(text: str) -> float:
    """The number after '=' in the score line ('A vs B: precision@5 = 0.273 (...)')."""
    return float(re.search(r"=\s*(-?\d+\.\d+)", text).group(1))


def shown_neighbours(driver) -> tuple[list[str], list[str]]:
    rows = element(driver, "neighbours").find_elements(By.CSS_SELECTOR, "table tr")[1:]
    cells = [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows]
    return [c[1] for c in cells], [c[2] for c in cells]


def change(driver, action) -> str:
    """Do ``action`` on the page and return the score line once it has changed."""
    before = element(driver, "score").text.strip()
    action()
    return dashboard.wait_for_score(driver, timeout=180, changed_from=before)


def set_k(driver, k: int) -> None:
    box = element(driver, "k").find_element(By.TAG_NAME, "input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(k), Keys.ENTER)


def test_explorer_in_chromium_matches_the_api(page, data_root, tmp_path):
    driver, cfg, folder = page
    study = load_study(cfg, data_root)
    spaces = {name: e.vectors for name, e in study.spaces.items()}
    sentences = study.sentences.sentences
    n = len(sentences)

    first = element(driver, "score").text
    a = Select(element(driver, "space-a").find_element(By.TAG_NAME, "select"))
    b = Select(element(driver, "space-b").find_element(By.TAG_NAME, "select"))
    assert a.first_selected_option.text == "agent" and "agent" in first
    # the default view is what the API computes for the notebook's defaults
    assert shown_value(first) == pytest.approx(
        metrics.get_metric("precision").score(spaces["agent"], spaces[b.first_selected_option.text], cfg.k), abs=5e-4)

    # the two spaces, k, the instruction: numbers and neighbour lists equal the API's
    change(driver, lambda: a.select_by_visible_text("bag-of-words"))
    change(driver, lambda: b.select_by_visible_text("agent-replicate"))
    text = change(driver, lambda: set_k(driver, 7))
    assert "bag-of-words" in text and "agent-replicate" in text and "precision@7" in text
    assert shown_value(text) == pytest.approx(
        metrics.get_metric("precision").score(spaces["bag-of-words"], spaces["agent-replicate"], 7), abs=5e-4)
    assert f"chance {metrics.chance_precision(n, 7):.3f}" in text
    instruction = sentences[min(5, n - 1)]
    header = f"Nearest neighbours of {instruction}: "  # the table's first line names its instruction
    Select(element(driver, "instruction").find_element(By.TAG_NAME, "select")).select_by_visible_text(instruction)
    deadline = time.monotonic() + 60
    while not element(driver, "neighbours").text.startswith(header) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert element(driver, "neighbours").text.startswith(header) and " of 7 shared" in element(driver, "neighbours").text
    i = sentences.index(instruction)
    expected_a = [sentences[j] for j in metrics.knn_indices(spaces["bag-of-words"], 7)[i]]
    expected_b = [sentences[j] for j in metrics.knn_indices(spaces["agent-replicate"], 7)[i]]
    assert shown_neighbours(driver) == (expected_a, expected_b)

    # the metric: linear CKA of the same pair
    buttons = element(driver, "metric").find_elements(By.TAG_NAME, "button")
    cka = next(btn for btn in buttons if btn.text.strip() == metrics.get_metric("cka").display(7))
    text = change(driver, cka.click)
    assert "CKA" in text
    assert shown_value(text) == pytest.approx(
        metrics.get_metric("cka").score(spaces["bag-of-words"], spaces["agent-replicate"], 7), abs=5e-4)

    # an impossible k: a message on the page, no traceback
    text = change(driver, lambda: set_k(driver, n))
    assert f"k = {n} is not possible" in text
    # Voila hides tracebacks from the page: a callback that raised would show only in its log
    assert "Traceback" not in (folder / "voila.log").read_text()
    assert element(driver, "neighbours").text.strip() == ""

    # back to a valid k: numbers again
    text = change(driver, lambda: set_k(driver, 3))
    assert "is not possible" not in text
    shot = tmp_path / "explorer.png"
    assert element(driver, "explorer").screenshot(str(shot)) and shot.stat().st_size > 10_000
    # the dashboard shows widgets only: no code cell's source on the page
    assert "load_study(" not in driver.page_source and "from alignnb" not in driver.page_source
    # its figure went to the dashboard's own folder, not the committed figures/
    assert (folder / "figures" / "explorer_default_selection.png").exists()

