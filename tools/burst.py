"""Burst: ten times the gateway's capacity at once, cheap predictions mixed with 12-megapixel
overlays, against `attnserve serve`. Is anything INTERNAL, are refusals immediate and counted
exactly, and how do the admitted cheap requests fare against an unloaded gateway?

    .venv/bin/python tools/burst.py                    # default limits
    .venv/bin/python tools/burst.py --max-in-flight 8  # a tighter cap: shorter queues
    .venv/bin/python tools/burst.py --json

Capacity is ``max_in_flight``; the burst sends 10× that many calls at once over one channel
(a quarter of them overlays of every map of a 4000×3000 JPEG).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from attnserve.demo import serving
from attnserve.settings import Settings
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = (ROOT / "docs" / "samples" / "digit.png").read_bytes()
DETAILS: dict[str, str] = {}


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(SAMPLE)).convert("RGB").resize((4000, 3000)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1e3, 1) if values else None


def rejected_total(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("attnserve_rejected_total{") and 'reason="too_large"' not in line
    )


async def call(stub: Any, request: pb.PredictRequest) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        await stub.Predict(request, timeout=120)
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        if code not in ("RESOURCE_EXHAUSTED", "OK"):
            DETAILS[code] = exc.details() or ""
    return code, time.perf_counter() - started


async def measure(address: str, calls: int, metrics_url: str) -> dict[str, Any]:
    cheap = pb.PredictRequest(image=SAMPLE, attention=pb.AttentionOptions(maps=["primary"]))
    heavy = pb.PredictRequest(
        image=photo(),
        attention=pb.AttentionOptions(formats=[pb.MAP_FORMAT_OVERLAY_PNG]),
    )
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 2**26)]
    ) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)
        for _ in range(20):
            await call(stub, cheap)
        unloaded = [seconds for _, seconds in [await call(stub, cheap) for _ in range(200)]]
        before = rejected_total(metrics_url)
        kinds = ["heavy" if i % 4 == 0 else "cheap" for i in range(calls)]
        started = time.perf_counter()
        results = await asyncio.gather(*(call(stub, heavy if k == "heavy" else cheap) for k in kinds))
        wall = time.perf_counter() - started
        counted = rejected_total(metrics_url) - before
    by_kind: dict[str, Any] = {}
    for kind in ("cheap", "heavy"):
        mine = [r for r, k in zip(results, kinds, strict=True) if k == kind]
        ok = [s for c, s in mine if c == "OK"]
        refused = [s for c, s in mine if c == "RESOURCE_EXHAUSTED"]
        by_kind[kind] = {
            "sent": len(mine),
            "codes": dict(Counter(c for c, _ in mine)),
            "admitted_p50_ms": percentile(ok, 50),
            "admitted_p99_ms": percentile(ok, 99),
            "refused_p99_ms": percentile(refused, 99),
        }
    seen = sum(c == "RESOURCE_EXHAUSTED" for c, _ in results)
    return {
        "calls": calls,
        "wall_s": round(wall, 2),
        "unloaded_p50_ms": percentile(unloaded, 50),
        "unloaded_p99_ms": percentile(unloaded, 99),
        "by_kind": by_kind,
        "resource_exhausted_seen": seen,
        "rejections_counted": counted,
        "internal": sum(c == "INTERNAL" for c, _ in results),
        "other_errors": dict(DETAILS),
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args()
    limits = {"ATTNSERVE_GATEWAY__MAX_IN_FLIGHT": str(args.max_in_flight)}
    with serving(Settings(), env=limits, gateway_metrics=True, quiet=True) as served:
        assert served.metrics_url is not None
        summary = asyncio.run(measure(served.address, 10 * args.max_in_flight, served.metrics_url))
    exit_code = served.exit_code
    summary.update(max_in_flight=args.max_in_flight, exit_code=exit_code)
    cheap = summary["by_kind"]["cheap"]
    if cheap["admitted_p99_ms"] and summary["unloaded_p99_ms"]:
        summary["cheap_p99_ratio"] = round(cheap["admitted_p99_ms"] / summary["unloaded_p99_ms"], 1)
    if not args.json:
        print(f"unloaded cheap p50/p99: {summary['unloaded_p50_ms']} / {summary['unloaded_p99_ms']} ms")
        for kind, figures in summary["by_kind"].items():
            print(f"{kind:5}: {figures}")
        print(
            f"RESOURCE_EXHAUSTED seen {summary['resource_exhausted_seen']}, counted "
            f"{summary['rejections_counted']:.0f}; INTERNAL {summary['internal']}; "
            f"admitted cheap p99 {summary.get('cheap_p99_ratio')}× unloaded"
        )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
