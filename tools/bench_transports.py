"""HTTP beside gRPC for the same request, measured in one run: what does the HTTP front add?

    .venv/bin/python tools/bench_transports.py [--requests 300] [--concurrency 1 4]

Starts `attnserve serve` on free ports (as `make run` does), then sends the same prediction
(the sample digit, the default model, its primary map RAW) over gRPC (`Client`), over HTTP
with the raw image as the body and options in the query, and over HTTP with the JSON body
(`HttpClient`: the image base64). Rounds alternate between transports (the machine is shared
and noisy); the table gives medians over rounds and ratios to gRPC measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from attnserve.clients import Client, HttpClient
from attnserve.demo import serving
from attnserve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = (ROOT / "docs" / "samples" / "digit.png").read_bytes()


def run_round(call: Callable[[], object], requests: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, p50 latency in ms)."""
    latencies: list[float] = []

    def one() -> None:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(one) for _ in range(requests)]:
            future.result()
    elapsed = time.perf_counter() - started
    return requests / elapsed, statistics.median(latencies) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    with serving(Settings()) as served:
        grpc_client = Client(served.address)
        json_client = HttpClient(served.http_url)
        raw_http = httpx.Client(base_url=served.http_url, timeout=30)
        calls: dict[str, Callable[[], object]] = {
            "gRPC (Client)": lambda: grpc_client.predict(SAMPLE, maps=["primary"]),
            "HTTP raw body": lambda: raw_http.post(
                "/v1/predict?maps=primary", content=SAMPLE, headers={"Content-Type": "image/png"}
            ).raise_for_status(),
            "HTTP JSON (HttpClient)": lambda: json_client.predict(SAMPLE, maps=["primary"]),
        }
        for call in calls.values():  # warm-up
            for _ in range(20):
                call()
        print(f"{len(SAMPLE):,}-byte PNG, default model, primary map RAW; medians of {args.rounds} rounds")
        print(f"{'transport':<24} {'c':>2} {'req/s':>8} {'p50 ms':>8} {'vs gRPC':>8}")
        for concurrency in args.concurrency:
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    results[name].append(run_round(call, args.requests, concurrency))
            base = statistics.median(r[0] for r in results["gRPC (Client)"])
            for name, rounds in results.items():
                rate = statistics.median(r[0] for r in rounds)
                p50 = statistics.median(r[1] for r in rounds)
                print(f"{name:<24} {concurrency:>2} {rate:>8.0f} {p50:>8.2f} {rate / base:>7.2f}×")


if __name__ == "__main__":
    main()
