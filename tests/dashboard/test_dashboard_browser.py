"""The dashboard in a real browser (Debian's headless Chromium, driven by
selenium): sign-in, every page without console errors, a created actor shown,
paging; screenshots go to build/test-artifacts/dashboard/.

CI installs Chromium (scripts/setup-system.sh from scripts/test.sh), so there a
missing browser fails; elsewhere these tests skip, saying what to install."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _dashboard_support import PAGE_PATHS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "dashboard"


def _browser_or_skip() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        driver = None
    if chromium and driver:
        return chromium, driver
    why = ("the browser tests need Debian's chromium and chromium-driver and the "
           "'browser' extra (scripts/setup-system.sh; pip install -e '.[browser]')")
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI installs them, so their absence is a setup failure")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _click_and_wait(driver: Any, selector: str, loaded: Any) -> None:
    """Click the element at ``selector`` and wait (up to 30 s) until ``loaded(driver)``
    holds on the page it leads to: reading the old page's elements meanwhile raises
    StaleElementReferenceException."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, selector).click()
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        loaded)


def _shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_without_the_token_the_browser_gets_the_sign_in_form(board, browser):
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(board.url + "/actors")
    assert "Sign in" in browser.title
    assert "needs the cluster token" in browser.page_source
    assert "<table" not in browser.page_source
    _shot(browser, "signin")
    box = browser.find_element(By.NAME, "token")
    box.send_keys("not the token")
    box.submit()
    assert "not this cluster's token" in browser.page_source
    browser.get_log("browser")  # the refusals above log 401/403: not page errors


class Pinger:
    def ping(self) -> int:
        return 1


def test_every_page_loads_without_console_errors_and_shows_the_actor(board, browser):
    from selenium.webdriver.common.by import By

    with board.cluster.connect() as ex:
        actors = [ex.options(name=f"browser_actor_{i}", num_cpus=0).actor(Pinger)
                  for i in range(3)]
        assert ex.get([a.ping.remote() for a in actors], timeout=60) == [1, 1, 1]
        time.sleep(1.1)  # past the dashboard's cache
        browser.delete_all_cookies()
        browser.get(board.url + "/")
        browser.find_element(By.NAME, "token").send_keys(board.token)
        _click_and_wait(browser, "form button",
                        lambda b: b.find_element(By.TAG_NAME, "h1").text == "Cluster")
        browser.get_log("browser")
        for path in PAGE_PATHS:
            browser.get(board.url + path)
            assert browser.find_element(By.TAG_NAME, "h1").text, path
            assert "Sign in" not in browser.title, path
            assert _errors(browser) == [], path
            _shot(browser, path.strip("/") or "cluster")
        browser.get(board.url + "/actors?name=browser_actor_&limit=2")
        cells = [c.text for c in browser.find_elements(By.TAG_NAME, "td")]
        assert len([c for c in cells if c.startswith("browser_actor_")]) == 2
        _click_and_wait(browser, "a[rel=next]", lambda b: "3-3 of 3" in b.page_source)
        cells = [c.text for c in browser.find_elements(By.TAG_NAME, "td")]
        assert len([c for c in cells if c.startswith("browser_actor_")]) == 1
        assert "3-3 of 3" in browser.page_source
        _shot(browser, "actors-page-2")
        assert _errors(browser) == []
        for a in actors:
            ex.kill(a)
