"""Regenerates docs/images/page.png: the web page in headless Chromium, predicting the sample.

    .venv/bin/python tools/page_screenshot.py

Starts `attnserve serve` on free ports, opens the page, uploads docs/samples/digit.png, and
saves a screenshot of CBAM's answer with its class activation map.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from attnserve.demo import serving
from attnserve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with serving(Settings()) as served, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.goto(served.http_url + "/")
        page.wait_for_selector("#model option", state="attached")
        page.set_input_files("#file", str(ROOT / "docs" / "samples" / "digit.png"))
        page.wait_for_function("document.getElementById('status').textContent.startsWith('cbam: ')")
        # steady-state timings, not the first request's warm-up
        page.click("#predictions li:first-child button")
        page.wait_for_timeout(500)
        page.screenshot(path=str(ROOT / "docs" / "images" / "page.png"), full_page=True)
        browser.close()
    print("wrote docs/images/page.png")


if __name__ == "__main__":
    main()
