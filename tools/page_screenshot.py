"""Regenerates docs/images/page.png: the web page in headless Chromium, predicting the sample.

    .venv/bin/python tools/page_screenshot.py

Starts `attnserve serve` on free ports, opens the page, uploads docs/samples/digit.png, and
saves a screenshot of CBAM's answer with its class activation map.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from attnserve._net import free_port
from attnserve.clients import HttpClient

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ports = [free_port() for _ in range(5)]
    command = [
        sys.executable, "-m", "attnserve", "serve", f"--http-port={ports[0]}", f"--grpc-port={ports[1]}",
        f"--metrics-port={ports[2]}", f"--port={ports[3]}", f"--gateway-http-port={ports[4]}",
        "--gateway-metrics-port=0",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{ports[4]}"
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with HttpClient(url) as client:
            client.wait_until_serving(180)
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.goto(url + "/")
            page.wait_for_selector("#model option", state="attached")
            page.set_input_files("#file", str(ROOT / "docs" / "samples" / "digit.png"))
            page.wait_for_function("document.getElementById('status').textContent.startsWith('cbam: ')")
            # steady-state timings, not the first request's warm-up
            page.click("#predictions li:first-child button")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ROOT / "docs" / "images" / "page.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print("wrote docs/images/page.png")


if __name__ == "__main__":
    main()
