"""A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven by selenium.

Each test gets its own browser with the console log captured, so a test can assert
that the page logged no error.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


AXE = Path(os.environ.get("FLEETWAVE_AXE")
           or Path(__file__).resolve().parents[2] / ".tools" / "axe" / "axe.min.js")
"""axe-core, installed by scripts/test (`fw_install_axe` in scripts/lib/tools.sh)."""


def accessibility_violations(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """What axe-core finds wrong on the page as shown (WCAG A/AA rules, contrast too)."""
    if not AXE.is_file():
        pytest.fail(f"axe-core is missing at {AXE}: run ./scripts/test once, or "
                    "`ROOT=$PWD; source scripts/lib/tools.sh; fw_install_axe`")
    driver.set_script_timeout(60)
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
        "v => ({id: v.id, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))));")
    return found
