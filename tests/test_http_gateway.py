"""The HTTP front against the real Triton: every served model answers over HTTP exactly as over
gRPC; schemathesis fuzzes every endpoint of /openapi.json (no 5xx, every answer in the schema);
the web page works in a real headless Chromium.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from attnserve.clients import Client, HttpClient
from attnserve.codec import prediction_to_json
from attnserve.server.http.openapi import openapi_document
from attnserve.settings import SAMPLES_DIR

from .conftest import FakeBackend, GatewayThread, HeldCap, held_gateway

pytestmark = pytest.mark.triton

SERVED = sorted(p.parent.name for p in Path("model_repository").glob("*/config.pbtxt"))
SAMPLE = (SAMPLES_DIR or Path("docs/samples")) / "digit.png"


@pytest.mark.parametrize("model", SERVED)
def test_every_model_answers_over_http_as_over_grpc(gateway: GatewayThread, model: str) -> None:
    image = SAMPLE.read_bytes()
    with Client(gateway.address) as grpc_client, HttpClient(gateway.http_url) as http_client:
        classifies = grpc_client.get_model(model).task == "classification"
        options = {
            "model": model,
            "forms": ["raw", "heatmap_png", "overlay_png"],
            "maps": ["primary"],
            **({"top_k": 3} if classifies else {"task_overlay": True}),
        }
        over_grpc = prediction_to_json(grpc_client.predict(image, **options))  # type: ignore[arg-type]
        over_http = prediction_to_json(http_client.predict(image, **options))  # type: ignore[arg-type]
    over_grpc.pop("timings"), over_http.pop("timings")
    over_grpc.pop("request_id"), over_http.pop("request_id")  # fresh, so different, IDs
    assert over_http == over_grpc
    (primary,) = over_http["attention"]
    overlay = Image.open(io.BytesIO(base64.b64decode(primary["overlay_png"])))
    if over_http.get("caption"):  # the answer drawn: a tile per word, the sample's shape each
        drawn = Image.open(io.BytesIO(base64.b64decode(over_http["task_overlay"])))
        assert drawn.width >= 224 and drawn.height > 224 * 256 / 320
        return
    if not classifies:  # the answer drawn, in the sample's pixels
        assert Image.open(io.BytesIO(base64.b64decode(over_http["task_overlay"]))).size == (320, 256)
        return
    # RAM misreads this sample; photo_cbam reads digits on photographs (docs/photos.md), not this
    # white digit on black
    assert over_http["predictions"][0]["label"] == "6" or model in ("ram", "photo_cbam")
    assert overlay.size == (320, 256)


# --- schemathesis: the document is generated from the code, the server is the real one ------

schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_matches_its_openapi_document(case: schemathesis.Case, gateway: GatewayThread) -> None:
    checks = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    case.call_and_validate(base_url=gateway.http_url, checks=checks)


def no_server_error(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """No 5xx — but a deadline of 1e-300 s rightly ends in 504 (test_http_front tests it)."""
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    try:
        deadline = float(headers.get("x-request-timeout", "inf"))
    except ValueError:
        deadline = float("inf")
    if response.status_code == 504 and deadline < 1.0:
        return None
    return not_a_server_error(ctx, response, case)


# --- the page in a real browser ---------------------------------------------------------------


def _chromium() -> str | None:
    return (
        os.environ.get("ATTNSERVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (`make test` installs Debian's chromium; or set ATTNSERVE_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _open_page(browser: object, gateway: GatewayThread) -> tuple[Any, list[str]]:
    """The page in a desktop-sized tab, and the script errors and console errors it raises."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(gateway.http_url + "/")
    return page, errors


def _status(page: object, prefix: str) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "p => document.getElementById('status').textContent.startsWith(p)", arg=prefix, timeout=30_000
    )


@pytest.mark.browser
def test_page_predicts_draws_and_switches_maps(
    gateway: GatewayThread, browser: object, tmp_path: Path
) -> None:
    page, errors = _open_page(browser, gateway)
    page.wait_for_selector("#model option", state="attached")
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == SERVED
    assert page.input_value("#model") == "cbam"

    # upload a photo unlike the bundled sample: another size and aspect ratio
    photo = tmp_path / "wide.png"
    Image.open(SAMPLE).convert("L").resize((480, 256)).save(photo)
    page.set_input_files("#file", str(photo))
    _status(page, "cbam: 6")
    assert page.inner_text("#predictions li:first-child .label") == "6"
    assert page.eval_on_selector("#overlay", "c => [c.width, c.height]") == [480, 256]
    maps = page.eval_on_selector_all("#map option", "os => os.map(o => o.value)")
    assert page.input_value("#map") == "cam" and "spatial_stage1" in maps and "channel_stage2" in maps
    before = page.eval_on_selector("#overlay", "c => c.toDataURL()")
    page.select_option("#map", "spatial_stage1")
    assert page.eval_on_selector("#overlay", "c => c.toDataURL()") != before
    assert "spatial_stage1 on a 480×256 image" in page.inner_text("#caption")
    page.select_option("#map", "channel_stage2")
    assert page.is_visible("#bars")
    page.fill("#opacity", "20")
    page.dispatch_event("#opacity", "input")
    assert page.inner_text("#opacity-value") == "20%"

    # a zooming model: its box is drawn from coordinates; keyboard only
    page.focus("#model")
    page.select_option("#model", "racnn")
    _status(page, "racnn: 6")
    assert page.input_value("#map") == "zoom_boxes"
    page.wait_for_function("document.getElementById('download').href.startsWith('blob:')")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000

    # a sample button, and accessibility basics
    page.click("#samples button >> nth=1")
    _status(page, "racnn: ")
    assert all(page.eval_on_selector_all("img", "is => is.map(i => i.alt.length > 0)"))
    assert page.get_attribute("#overlay", "aria-label").startswith("The image with zoom_boxes")
    assert errors == []


@pytest.mark.browser
def test_page_shows_a_segmentation_and_instances(gateway: GatewayThread, browser: object) -> None:
    page, errors = _open_page(browser, gateway)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "mask_rcnn")
    page.set_input_files("#file", str(SAMPLE))
    page.wait_for_function(
        "document.getElementById('status').textContent.match(/^mask_rcnn: [0-9]+ instances?$/)",
        timeout=30_000,
    )
    page.wait_for_selector("#task-overlay:not([hidden])")
    drawn = page.eval_on_selector("#task-overlay", "i => [i.naturalWidth, i.naturalHeight]")
    assert drawn == [320, 256]  # the answer drawn in the sample's own pixels
    found = page.eval_on_selector_all("#predictions li .label", "ls => ls.map(l => l.textContent)")
    assert "6" in found  # the sample's digit, found as an instance
    page.select_option("#model", "attention_to_scale")
    _status(page, "attention_to_scale: ")
    assert page.input_value("#map") == "scale_weights"
    assert page.inner_text("#stack-label") == "Scale" and page.is_visible("#stack")  # a tile at a time
    assert (
        page.is_visible("#task-overlay")
        and page.eval_on_selector_all("#predictions li", "ls => ls.length") > 0
    )
    assert errors == []


@pytest.mark.browser
def test_page_shows_a_caption_word_by_word(gateway: GatewayThread, browser: object) -> None:
    if "show_attend_tell" not in SERVED:
        pytest.skip("show_attend_tell is not in the model repository")
    page, errors = _open_page(browser, gateway)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", "show_attend_tell")
    page.set_input_files("#file", str(SAMPLE.with_name("digit_scene.png")))
    _status(page, "show_attend_tell: “three digits : ")
    page.wait_for_selector("#task-overlay:not([hidden])")
    width, height = page.eval_on_selector("#task-overlay", "i => [i.naturalWidth, i.naturalHeight]")
    assert width >= 5 * 224 and height > 2 * 224  # a tile per word, five a row
    words = page.eval_on_selector_all("#predictions li .label", "ls => ls.map(l => l.textContent)")
    assert words[:3] == ["three", "digits", ":"] and "seven" in words  # every word, in order
    assert page.input_value("#map") == "word_attention"
    # the map a word at a time: one tile of the stack over the image, the word named
    names = page.eval_on_selector_all("#stack option", "os => os.map(o => o.textContent)")
    assert page.is_visible("#stack") and names[4] == "5: seven" and len(names) == len(words)
    assert page.input_value("#stack") == "0" and "1: three of 11" in page.inner_text("#caption")
    first = page.eval_on_selector("#overlay", "c => c.toDataURL()")
    page.select_option("#stack", "7")
    assert page.eval_on_selector("#overlay", "c => c.toDataURL()") != first
    assert "8: eight of 11" in page.inner_text("#caption")
    assert page.eval_on_selector("#overlay", "c => [c.width, c.height]") == [224, 224]
    assert errors == []


@pytest.mark.browser
def test_page_shows_errors_and_fits_a_phone(gateway: GatewayThread, browser: object, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
    page.goto(gateway.http_url + "/")
    page.wait_for_selector("#model option", state="attached")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    page.set_input_files("#file", str(junk))
    _status(page, "415")
    assert "not an image" in page.inner_text("#status")
    page.set_input_files("#file", str(SAMPLE))
    _status(page, "cbam: 6")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
    assert httpx.get(gateway.http_url + "/ready").status_code == 200


@pytest.fixture(name="held_gateway")
def held_gateway_fixture() -> Iterator[tuple[GatewayThread, FakeBackend]]:
    yield from held_gateway()


@pytest.mark.browser
def test_page_sends_a_refused_prediction_again_after_the_gateways_hint(
    held_gateway: tuple[GatewayThread, FakeBackend], browser: object
) -> None:
    """The gateway is full: the page's prediction is refused (429 with the hint), sent again
    after it and answered once a slot frees; with the gateway full throughout, the page gives up
    after three retries and says why. The gateway counts every refusal the page met."""
    thread, backend = held_gateway
    rejected = thread.gateway.core.metrics.rejected.labels("in_flight")
    page, _ = _open_page(browser, thread)
    page.wait_for_selector("#model option", state="attached")
    page.evaluate(  # every status the page shows, however briefly
        """() => { window.statuses = []; const status = document.getElementById('status');
        new MutationObserver(() => statuses.push(status.textContent))
          .observe(status, {childList: true, characterData: true, subtree: true}); }"""
    )
    with grpc.insecure_channel(thread.address) as channel:
        with HeldCap(thread, backend, channel) as cap:
            before = rejected._value.get()
            page.set_input_files("#file", str(SAMPLE))
            deadline = time.monotonic() + 10
            while rejected._value.get() == before and time.monotonic() < deadline:
                time.sleep(0.002)  # refused once: free the slots, so that a retry is answered
            cap.release()
            _status(page, "cbam: ")
            answered_after = rejected._value.get() - before

        with HeldCap(thread, backend, channel):
            before = rejected._value.get()
            page.evaluate("() => { window.statuses = []; }")
            page.click("#samples button >> nth=0")
            _status(page, "429: ")
            refused_throughout = rejected._value.get() - before
    statuses = page.evaluate("() => window.statuses")
    assert 1 <= answered_after <= 3
    assert refused_throughout == 4, statuses  # the first call and three retries, each counted
    assert [s for s in statuses if s.startswith("The server is busy")][-1].endswith("(3 of 3)…"), statuses
    assert "in flight" in page.inner_text("#status") and "retry in" in page.inner_text("#status")


@pytest.mark.browser
def test_a_newer_prediction_on_the_page_supersedes_one_still_being_retried(
    held_gateway: tuple[GatewayThread, FakeBackend], browser: object
) -> None:
    """A user who picks another image while the page is still sending the last one again (the
    gateway full) gets the newer one's answer: the older one's retries stop at once, so one page
    sends one prediction at a time, and an older answer never replaces a newer one on screen."""
    thread, backend = held_gateway
    page, errors = _open_page(browser, thread)
    page.wait_for_selector("#samples button >> nth=1", state="attached")
    page.evaluate(  # each prediction's image size, in the order the page sends them
        """() => { window.sent = []; const send = window.fetch;
        window.fetch = (url, options = {}) => {
          if (String(url).includes(':predict')) sent.push(options.body.size);
          return send(url, options);
        }; }"""
    )

    def sent() -> list[int]:
        return list(page.evaluate("() => window.sent"))

    with grpc.insecure_channel(thread.address) as channel:
        with HeldCap(thread, backend, channel) as cap:
            # in the page, so that the second click lands within the first's pause (50–100 ms)
            page.evaluate(
                """() => new Promise((resolve) => {
                  const status = document.getElementById('status');
                  const buttons = document.querySelectorAll('#samples button');
                  const observer = new MutationObserver(() => {
                    if (!status.textContent.startsWith('The server is busy')) return;
                    observer.disconnect();
                    buttons[1].click();
                    resolve();
                  });
                  observer.observe(status, {childList: true, characterData: true, subtree: true});
                  buttons[0].click();
                })"""
            )
            deadline = time.monotonic() + 10
            while len(set(sent())) < 2 and time.monotonic() < deadline:
                time.sleep(0.002)
            cap.release()  # the second's retry is answered
            _status(page, "cbam: ")
        time.sleep(0.5)  # what the first would still send: its pauses are at most 2 × the hint
    sizes = sent()
    first = sizes[0]
    switched = next(index for index, size in enumerate(sizes) if size != first)
    assert len(set(sizes)) == 2 and first not in sizes[switched:], sizes
    assert page.evaluate("() => state.blob.size") == sizes[-1]
    assert [e for e in errors if "status of 429" not in e] == []  # an abort is no script error
