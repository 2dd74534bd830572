"""Memory bombs: images small on the wire and huge in memory, sent to `attnserve serve` alone
and 16 at once while another client keeps asking cheap predictions. Does the gateway's memory
stay bounded, does every bomb get an answer or a declared error, are the others answered?

    .venv/bin/python tools/memory_bombs.py            # figures for the docs
    .venv/bin/python tools/memory_bombs.py --json     # only the JSON summary

The gateway's peak resident memory is its kernel high-water mark (VmHWM), read against its
resident memory when idle after a warm-up.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attnserve.bench.processes import multiprocessing_descendants, status_kib
from attnserve.clients import Client
from attnserve.demo import add_models_option, serving
from attnserve.errors import AttnserveError
from attnserve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = (ROOT / "docs" / "samples" / "digit.png").read_bytes()
EVERY_FORM = ["upsampled", "heatmap_png", "overlay_png"]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def bombs() -> dict[str, tuple[bytes, dict[str, Any]]]:
    """name → (image bytes, predict options)."""
    digit = Image.open(io.BytesIO(SAMPLE)).convert("RGB")
    photo = _jpeg(digit.resize((4000, 3000), Image.Resampling.BILINEAR))
    return {
        # 16384×2441 = 40 M pixels, every map as heatmap and upsampled (the side limit's worst case)
        "long_heatmaps": (_png(Image.new("L", (16384, 2441))), {"forms": ["upsampled", "heatmap_png"]}),
        # 16-bit grey 6000×6600 (79 MiB decoded), every map overlaid
        "deep_overlay": (
            _png(Image.fromarray(np.zeros((6600, 6000), dtype=np.uint16))),
            {"forms": ["overlay_png"]},
        ),
        # a 12-megapixel photo, every map in every image form
        "photo_every_form": (photo, {"forms": EVERY_FORM}),
        # the same photo rendered at full size (the request asks for it): refused or bounded
        "photo_full_size": (photo, {"forms": ["overlay_png"], "render_max_side": 4000}),
        # 40 megapixels of RGB, prediction only
        "rgb_40mp": (_png(Image.new("RGB", (8000, 5000), (40, 40, 40))), {"omit_attention": True}),
    }


def memory_of(pid: int) -> tuple[float, float]:
    """(resident MiB, peak resident MiB) of the gateway's process and of its render worker
    processes, if any (``render_processes``; not Triton's): the peaks' sum bounds the peak."""
    pids = [pid, *multiprocessing_descendants(pid)]
    return (
        sum(status_kib(p, "VmRSS") for p in pids) / 1024,
        sum(status_kib(p, "VmHWM") for p in pids) / 1024,
    )


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--together", type=int, default=16, help="bombs sent at once")
    add_models_option(parser)
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args()
    say = (lambda *a: None) if args.json else print

    payloads = bombs()
    say("bombs: " + ", ".join(f"{name} {len(data) / 1024:.0f} KiB" for name, (data, _) in payloads.items()))
    results: dict[str, Any] = {"alone": {}, "together": {}}
    with (
        serving(Settings(), quiet=True, models=args.models) as served,
        Client(
            served.address,
            timeout_s=120,
            overload_retries=0,  # each bomb's own outcome: no retries
        ) as client,
    ):
        for _ in range(20):  # warm-up: every path once
            client.predict(SAMPLE, forms=EVERY_FORM)
        idle_mib, _ = memory_of(served.pid)
        say(f"gateway idle after warm-up: {idle_mib:.0f} MiB")

        def bomb(name: str) -> tuple[str, float]:
            data, options = payloads[name]
            started = time.perf_counter()
            try:
                client.predict(data, **options)
                outcome = "OK"
            except AttnserveError as exc:
                outcome = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - anything undeclared is lost
                outcome = f"lost:{type(exc).__name__}"
            return outcome, time.perf_counter() - started

        for name in payloads:
            outcome, seconds = bomb(name)
            rss, peak = memory_of(served.pid)
            results["alone"][name] = {"outcome": outcome, "seconds": round(seconds, 2)}
            say(f"{name:18} alone: {outcome:12} {seconds:6.2f} s   peak +{peak - idle_mib:.0f} MiB")
        alone_peak = memory_of(served.pid)[1] - idle_mib

        # together, while a cheap client keeps predicting
        cheap: Counter[str] = Counter()
        cheap_latency: list[float] = []
        stop = threading.Event()

        def steady() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    client.predict(SAMPLE, maps=["primary"])
                    cheap["OK"] += 1
                    cheap_latency.append(time.perf_counter() - started)
                except AttnserveError as exc:
                    cheap[type(exc).__name__] += 1

        names = [list(payloads)[i % len(payloads)] for i in range(args.together)]
        steady_thread = threading.Thread(target=steady)
        steady_thread.start()
        with ThreadPoolExecutor(args.together) as pool:
            outcomes = list(pool.map(bomb, names))
        stop.set()
        steady_thread.join()
        together: Counter[str] = Counter(outcome for outcome, _ in outcomes)
        rss, peak = memory_of(served.pid)
        results["together"] = {
            "sent": args.together,
            "outcomes": dict(together),
            "slowest_s": round(max(seconds for _, seconds in outcomes), 2),
            "cheap_outcomes": dict(cheap),
            "cheap_p99_ms": round(float(np.percentile(cheap_latency, 99)) * 1e3, 1)
            if cheap_latency
            else None,
        }
        say(f"{args.together} at once: {dict(together)}; cheap client meanwhile: {dict(cheap)}")
        results.update(
            idle_mib=round(idle_mib, 1),
            peak_growth_alone_mib=round(alone_peak, 1),
            peak_growth_mib=round(peak - idle_mib, 1),
            rss_after_mib=round(rss, 1),
        )
    results["exit_code"] = served.exit_code
    say(f"gateway peak +{results['peak_growth_mib']} MiB over idle ({results['idle_mib']} MiB)")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
