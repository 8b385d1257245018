"""The search page in a real browser: Debian's chromium, headless, driven by selenium through chromedriver.

It types a query and checks the expected thumbnail comes first, drops an image on the drop zone, uses
"More like this", provokes an error, and keeps a screenshot under build/test-artifacts/http/ (git-ignored).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossmodal.client import Client
from crossmodal.cluster import LocalCluster
from tests.support import ROOT

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

Gallery = tuple[Path, list[dict[str, str]]]
WAIT_SECONDS = 30
ARTEFACTS = ROOT / "build" / "test-artifacts" / "http"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium (from Debian: `make test` installs it with scripts/install_chromium.sh)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (scripts/install_chromium.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_SECONDS)
    driver.set_script_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(
        condition, message=f"timed out waiting for {what}"
    )


def _result_ids(driver: Any) -> list[str]:
    return [card.get_attribute("data-id") for card in driver.find_elements(By.CSS_SELECTOR, "#results .result")]


def _first_thumbnail_loaded(driver: Any) -> bool:
    return bool(
        driver.execute_script(
            "const img = document.querySelector('#results .result img.thumb');"
            "return img !== null && img.complete && img.naturalWidth > 0;"
        )
    )


def _searches(driver: Any) -> int:
    """How many searches the page finished (it counts them in #status's data-searches)."""
    return int(driver.find_element(By.ID, "status").get_attribute("data-searches") or 0)


def _search_and_wait(driver: Any, action: Any) -> list[str]:
    """Run `action`, then wait until the page finished one more search; the result ids shown."""
    before = _searches(driver)
    action()
    _wait(driver, lambda d: _searches(d) > before, "the search to finish")
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    return _result_ids(driver)


def test_search_page_in_chromium(browser: Any, http_cluster: LocalCluster, http_gallery: Gallery) -> None:
    """Text query, dropped image, "More like this" and an error, as a user does them; a screenshot is kept."""
    driver = browser
    records = http_gallery[1]
    driver.get(http_cluster.http_url + "/")
    _wait(driver, lambda d: "items" in d.find_element(By.ID, "stats").text, "the collection's counts")
    k_box = driver.find_element(By.ID, "k")
    k_box.clear()
    k_box.send_keys("6")

    # 1. Type a query: the first card is the gateway's best answer, and its thumbnail loaded.
    query = records[5]["caption"]
    with Client(http_cluster.address) as client:
        expected = [h.id for h in client.search(query, k=6, target="image").hits]
    driver.find_element(By.ID, "query").send_keys(query)
    ids = _search_and_wait(driver, lambda: driver.find_element(By.ID, "search-button").click())
    assert ids == expected
    _wait(driver, _first_thumbnail_loaded, "the first thumbnail to load")

    # 2. Drop an image on the drop zone (a real drop event with a File in its DataTransfer).
    dropped = records[9]
    data = base64.b64encode(Path(dropped["path"]).read_bytes()).decode()
    script = """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        const zone = document.getElementById("drop");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    """
    ids = _search_and_wait(driver, lambda: driver.execute_script(script, data))
    assert ids[0] == dropped["id"]
    _wait(driver, _first_thumbnail_loaded, "the dropped image's thumbnail")

    # 3. "More like this" on the second result: the results are the gateway's like_id answer, without the item.
    target = ids[1]
    with Client(http_cluster.address) as client:
        expected = [h.id for h in client.search(like_id=target, k=6, target="image").hits]
    card = driver.find_element(By.CSS_SELECTOR, f'#results .result[data-id="{target}"]')
    ids = _search_and_wait(driver, lambda: card.find_element(By.CSS_SELECTOR, "button.more").click())
    assert ids == expected and target not in ids
    _wait(driver, _first_thumbnail_loaded, "the thumbnails of similar items")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTEFACTS / "search-page.png"
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 1000
    print(f"\nscreenshot of the search page: {screenshot}")

    # 4. An error is shown in the user's words: the gateway's message, not a stack trace.
    k_box = driver.find_element(By.ID, "k")
    k_box.clear()
    k_box.send_keys("100000")
    driver.find_element(By.ID, "query").send_keys("a red circle")
    driver.find_element(By.ID, "search-button").click()
    error = _wait(
        driver, lambda d: d.find_element(By.ID, "error").is_displayed() and d.find_element(By.ID, "error"), "the error"
    )
    assert "k=100000 is above the limit" in error.text and "Traceback" not in error.text
