"""Sustained overload: closed-loop clients, each sending its next cheap prediction as soon as
the last one is answered (a refused call waits its retry hint), for a while, against
`attnserve serve` — once with the adaptive concurrency limit and once with ``max_in_flight``
alone, in the same run. Where does the limit settle, and what do admitted calls pay?

    .venv/bin/python tools/overload.py                  # 16 closed-loop clients, 3 × 10 s each way
    .venv/bin/python tools/overload.py --rate 250       # open loop: 250 calls a second
    .venv/bin/python tools/overload.py --rate 250 --timeout-s 0.9   # deadlines sent to the ms
    .venv/bin/python tools/overload.py --tolerance 4 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from burst import DETAILS, SAMPLE, TIMEOUT_S, call, gauge, gc_paused, percentile  # noqa: E402

from attnserve.clients.retry import REFUSED_STREAM  # noqa: E402
from attnserve.demo import add_models_option, serving  # noqa: E402
from attnserve.settings import Settings  # noqa: E402
from attnserve.v1 import attnserve_pb2 as pb  # noqa: E402
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc  # noqa: E402


async def measure(
    address: str, metrics_url: str, clients: int, seconds: float, rate: float, timeout_s: float
) -> dict[str, Any]:
    cheap = pb.PredictRequest(image=SAMPLE, attention=pb.AttentionOptions(maps=["primary"]))
    results: list[tuple[str, float, float | None]] = []
    limits: list[float] = []
    DETAILS.clear()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)
        unloaded = [await call(stub, cheap, timeout_s) for _ in range(100)]
        stop = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < stop:
                result = await call(stub, cheap, timeout_s)
                results.append(result)
                if result[0] == "RESOURCE_EXHAUSTED":
                    await asyncio.sleep(0.05)  # the retry hint's floor

        async def open_loop() -> None:  # a call every 1/rate s, answered or not
            pending = set()
            interval = 1.0 / rate
            next_at = time.perf_counter()
            while (now := time.perf_counter()) < stop:
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                next_at += interval
                task = asyncio.ensure_future(call(stub, cheap, timeout_s))
                task.add_done_callback(lambda t: results.append(t.result()))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)

        async def watch() -> None:
            while time.perf_counter() < stop:
                await asyncio.sleep(0.5)
                limits.append(gauge(metrics_url, "attnserve_concurrency_limit"))

        if rate:
            await asyncio.gather(watch(), open_loop())
        else:
            await asyncio.gather(watch(), *(client() for _ in range(clients)))
    ok = [s for c, s, _, _ in results if c == "OK"]
    late = limits[len(limits) // 2 :]
    codes = Counter(c for c, _, _, _ in results)
    return {
        "clients": None if rate else clients,
        "offered_per_s": rate or None,
        "seconds": seconds,
        "unloaded_p99_ms": percentile([s for _, s, _, _ in unloaded], 99),
        "answered_per_s": round(len(ok) / seconds, 1),
        "codes": dict(codes),
        # grpc-core's REFUSED_STREAM (UNAVAILABLE, nothing processed): more streams open on the
        # one connection than the gateway's limit while the loop is behind (server/grpc/server.py)
        "refused_streams": codes["UNAVAILABLE"] if REFUSED_STREAM in DETAILS.get("UNAVAILABLE", "") else 0,
        "other_errors": dict(DETAILS),
        "admitted_p50_ms": percentile(ok, 50),
        "admitted_p99_ms": percentile(ok, 99),
        "admitted_gateway_p99_ms": percentile([t for _, _, t, _ in results], 99),
        "limit_second_half": [min(late), max(late)] if late else None,
    }


def run(adaptive: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One server, adaptive or not, under the load ``args`` describe."""
    env = {
        "ATTNSERVE_GATEWAY__ADAPTIVE_CONCURRENCY": str(adaptive).lower(),
        "ATTNSERVE_GATEWAY__LATENCY_TOLERANCE": str(args.tolerance),
    }
    with serving(Settings(), env=env, gateway_metrics=True, quiet=True, models=args.models) as served:
        assert served.metrics_url is not None
        with gc_paused():  # the load generator's own pauses are not the server's latency
            load = (args.clients, args.seconds, args.rate, args.timeout_s)
            summary = asyncio.run(measure(served.address, served.metrics_url, *load))
    tolerance = args.tolerance if adaptive else None
    summary.update(
        adaptive=adaptive, tolerance=tolerance, timeout_s=args.timeout_s, exit_code=served.exit_code
    )
    return summary


FIGURES = ("answered_per_s", "admitted_p50_ms", "admitted_p99_ms", "admitted_gateway_p99_ms")


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' medians of each figure (the machine is shared: single runs vary by ±30 %)."""
    summary = dict(rounds[-1])
    for figure in FIGURES:
        summary[figure] = statistics.median(r[figure] for r in rounds)
    summary["rounds"] = len(rounds)

    # refused: by the gateway's admission (RESOURCE_EXHAUSTED, with a retry hint) or, before it
    # saw the call, by grpc-core's stream limit; either way nothing was processed
    def share(count: Callable[[dict[str, Any]], int]) -> float:
        return round(statistics.median(count(r) / sum(r["codes"].values()) for r in rounds), 3)

    summary["refused_share"] = share(lambda r: r["codes"].get("RESOURCE_EXHAUSTED", 0) + r["refused_streams"])
    summary["refused_streams_share"] = share(lambda r: r["refused_streams"])
    return summary


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each mode")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: calls a second (0: closed loop)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="the adaptive limit's latency_tolerance")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=TIMEOUT_S,
        help="each call's deadline; under 1 s gRPC sends it to the millisecond, and the gateway sees how "
        "long a call waited before it was taken up (default %(default)s s: it sees waits of 1 s or more)",
    )
    add_models_option(parser)
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args()
    rounds: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for adaptive in (True, False):
            rounds[adaptive].append(run(adaptive, args))
    adaptive, fixed = median_of(rounds[True]), median_of(rounds[False])
    ratios = {figure: round(adaptive[figure] / fixed[figure], 2) for figure in FIGURES}
    result = {"adaptive": adaptive, "fixed": fixed, "adaptive_over_fixed": ratios}
    if not args.json:
        for mode in ("adaptive", "fixed"):
            print(f"[{mode}] " + ", ".join(f"{f} {result[mode][f]}" for f in FIGURES), end="")
            figures = result[mode]
            print(
                f", refused {figures['refused_share']:.0%} (streams {figures['refused_streams_share']:.0%})",
                end="",
            )
            print(f", limit {figures['limit_second_half']}")
        print("adaptive / fixed: " + ", ".join(f"{f} {r}×" for f, r in ratios.items()))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
