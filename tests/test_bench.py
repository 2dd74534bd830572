"""`attnserve bench`: statistics on fake latency sources with known percentiles, the load shapes'
bookkeeping, the report, and the command against the real gateway (a smoke run, nothing timed)."""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from attnserve.bench import (
    OK,
    Bound,
    LoadPlan,
    Recorder,
    closed_loop,
    open_loop,
    percentile,
    plot_png,
    sweep,
    table,
)
from attnserve.bench.load import DROPPED

from .conftest import REPO_ROOT, GatewayThread


class FakeClock:
    """Virtual time: advanced by the fake sends and sleeps, never by the machine."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [500, 900, 990, 1000]
    assert percentile([7.0], 50) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_recorder_counts_failures_apart_from_latencies() -> None:
    recorder = Recorder()
    for ms in (10, 20, 30, 40):
        recorder.record(ms / 1e3, OK, 1000)
    recorder.record(0.001, "RESOURCE_EXHAUSTED")
    recorder.record(0.002, "RESOURCE_EXHAUSTED")
    recorder.record(5.0, "DEADLINE_EXCEEDED")
    summary = recorder.summary(2.0, label="c=1", offered=1)
    assert (summary.requests, summary.ok) == (7, 4)
    assert summary.errors == {"DEADLINE_EXCEEDED": 1, "RESOURCE_EXHAUSTED": 2}
    assert summary.throughput == 2.0  # successful answers per second only
    assert (summary.p50_ms, summary.max_ms) == pytest.approx((20, 40))  # refusals are not fast answers
    assert summary.bytes_per_answer == 1000
    assert json.dumps(Recorder().summary(1.0).to_json())  # NaN percentiles become null


def test_closed_loop_measures_a_known_latency_distribution() -> None:
    """1..1000 ms in a random order, one at a time on a virtual clock: exact percentiles and rate."""
    clock = FakeClock()
    latencies = [ms / 1e3 for ms in range(1, 1001)]
    random.Random(3).shuffle(latencies)
    pending = iter(latencies)

    async def send() -> tuple[str, int]:
        clock.now += next(pending)
        return OK, 10

    summary = asyncio.run(closed_loop(send, 1, Bound(requests=1000), clock=clock))
    assert summary.requests == summary.ok == 1000
    assert (summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.max_ms) == pytest.approx(
        (500, 900, 990, 1000)
    )
    assert summary.mean_ms == pytest.approx(500.5)
    assert summary.throughput == pytest.approx(1000 / 500.5)


def test_closed_loop_keeps_exactly_the_concurrency_and_the_count() -> None:
    in_flight = most = 0

    async def send() -> tuple[str, int]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return OK, 1

    summary = asyncio.run(closed_loop(send, 8, Bound(requests=200), warmup_s=0.02))
    assert (summary.requests, most) == (200, 8)


def test_closed_loop_stops_at_the_duration() -> None:
    clock = FakeClock()

    async def send() -> tuple[str, int]:
        clock.now += 0.25
        await asyncio.sleep(0)
        return OK, 1

    summary = asyncio.run(closed_loop(send, 2, Bound(duration_s=10.0), clock=clock))
    assert summary.requests == 40  # 2 workers × 10 s / 0.25 s, on virtual time


def test_open_loop_sends_on_schedule_and_charges_the_queue() -> None:
    """At 100/s for 1 s, a server that takes 30 ms each but one at a time is charged for the
    queue it builds: latency from the intended send time, not from when it got round to it."""
    clock = FakeClock()
    lock = asyncio.Lock()

    async def send() -> tuple[str, int]:
        async with lock:  # one at a time, 30 ms each, on virtual time
            clock.now += 0.030
            await asyncio.sleep(0)
        return OK, 1

    summary = asyncio.run(open_loop(send, 100.0, Bound(duration_s=1.0), clock=clock, sleep=clock.sleep))
    assert summary.requests == summary.ok == 100
    # the hundredth request was meant for t = 0.99 s and answered after at least 100 × 30 ms = 3 s
    assert summary.max_ms >= 3000 - 990
    assert summary.p50_ms > 500  # a closed loop would report 30 ms


def test_open_loop_drops_beyond_max_outstanding() -> None:
    release = asyncio.Event()

    async def send() -> tuple[str, int]:
        await release.wait()
        return OK, 1

    async def run() -> object:
        clock = FakeClock()
        task = asyncio.create_task(
            open_loop(send, 50.0, Bound(requests=20), max_outstanding=5, clock=clock, sleep=clock.sleep)
        )
        for _ in range(100):
            await asyncio.sleep(0)
        release.set()
        return await task

    summary = asyncio.run(run())
    assert summary.errors == {DROPPED: 15}  # type: ignore[attr-defined]
    assert summary.ok == 5  # type: ignore[attr-defined]


def test_poisson_arrivals_are_seeded() -> None:
    def arrivals(seed: int) -> list[float]:
        clock = FakeClock()
        times: list[float] = []

        async def send() -> tuple[str, int]:
            times.append(clock.now)
            return OK, 1

        asyncio.run(
            open_loop(
                send, 200.0, Bound(requests=50), poisson=True, seed=seed, clock=clock, sleep=clock.sleep
            )
        )
        return times

    first = arrivals(1)
    assert first == arrivals(1) and first != arrivals(2)
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert len(set(round(g, 9) for g in gaps)) > 40  # not evenly spaced


def test_a_run_without_a_bound_lasts_the_default_duration() -> None:
    assert Bound.of(None, None) == Bound(duration_s=10.0)
    assert Bound.of(None, 50) == Bound(requests=50)
    assert Bound.of(2.0, 50) == Bound(duration_s=2.0, requests=50)


def test_bounds_and_plans_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Bound()
    with pytest.raises(ValueError):
        Bound(duration_s=-1)
    with pytest.raises(ValueError):
        LoadPlan(Bound(requests=1), concurrency=(1,), rates=(5.0,))
    with pytest.raises(ValueError):
        asyncio.run(closed_loop(_never, 0, Bound(requests=1)))


def test_a_closed_loop_gets_a_grpc_connection_per_96_calls_in_flight() -> None:
    """A connection with close to 128 calls open has some refused by the gateway's transport
    (UNAVAILABLE, not the server's answer), so the load generator spreads them as the clients do."""
    bound = Bound(requests=1)
    assert LoadPlan(bound, concurrency=(1, 4, 16)).grpc_connections == 1
    assert LoadPlan(bound, concurrency=(96,)).grpc_connections == 1
    assert LoadPlan(bound, concurrency=(4, 97)).grpc_connections == 2
    assert LoadPlan(bound, concurrency=(640,)).grpc_connections == 7
    assert LoadPlan(bound, rates=(500.0,)).grpc_connections == 1


async def _never() -> tuple[str, int]:
    raise AssertionError("not called")


def test_sweep_table_and_plot() -> None:
    calls = 0

    class Target:
        name = "fake"

        async def send(self) -> tuple[str, int]:
            nonlocal calls
            calls += 1
            mine = calls
            await asyncio.sleep(0.0005 * (mine % 4))
            return (OK, 2048) if mine % 10 else ("UNAVAILABLE", 0)

        async def close(self) -> None:
            pass

    plan = LoadPlan(Bound(requests=50), concurrency=(1, 4, 16), warmup_s=0)
    summaries = asyncio.run(sweep(Target(), plan))
    assert [s.offered for s in summaries] == [1, 4, 16]
    assert all(s.requests == 50 and s.errors == {"UNAVAILABLE": 5} for s in summaries)
    text = table(summaries, title="fake")
    assert "c=16" in text and "UNAVAILABLE 5" in text and "2.0" in text  # KB per answer
    image = Image.open(io.BytesIO(plot_png({"a": summaries, "b": summaries[:2]}, title="t", x_label="c")))
    assert image.size == (960, 600)
    assert len(image.getcolors(1 << 16) or ()) > 5  # lines, not a blank canvas


def _bench(*args: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-m", "attnserve", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_bench_command_against_the_real_gateway(
    gateway: GatewayThread, transport: str, tmp_path: Path
) -> None:
    server = gateway.address if transport == "grpc" else gateway.http_url
    plot = tmp_path / "latency.png"
    out = tmp_path / "bench.json"
    document = _bench(
        "--server", server, "--requests", "30", "--concurrency", "1", "3", "--warmup", "0.2",
        "--maps", "primary", "--json", "--plot", str(plot), "--out", str(out),
    )  # fmt: skip
    assert json.loads(out.read_text()) == document
    points = document["series"]["gateway"]  # type: ignore[index]
    assert [p["offered"] for p in points] == [1, 3]
    for point in points:
        assert point["requests"] == point["ok"] == 30 and point["errors"] == {}
        assert point["p50_ms"] <= point["p99_ms"] <= point["max_ms"]
        assert point["bytes_per_answer"] > 100  # the answer, with its map
    with Image.open(plot) as image:
        assert image.format == "PNG"


def test_bench_command_asks_for_compact_answers(gateway: GatewayThread) -> None:
    """The request's encodings reach the gateway: a JPEG overlay answer is far smaller than the
    PNG one, float16 raw maps smaller than float32."""

    def bytes_per_answer(*flags: str) -> float:
        document = _bench(
            "--server", gateway.address, "--requests", "4", "--concurrency", "1", "--warmup", "0",
            "--maps", "primary", "--json", *flags,
        )  # fmt: skip
        (point,) = document["series"]["gateway"]  # type: ignore[index]
        assert point["ok"] == 4
        return float(point["bytes_per_answer"])

    png = bytes_per_answer("--forms", "overlay_png")
    assert (
        bytes_per_answer("--forms", "overlay_png", "--image-encoding", "jpeg", "--image-quality", "60")
        < png / 3
    )
    all_raw = ("--maps", "spatial_stage1", "spatial_product")
    assert bytes_per_answer(*all_raw, "--map-dtype", "float16") < bytes_per_answer(*all_raw)


def test_bench_command_counts_errors_by_code(gateway: GatewayThread) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "attnserve", "bench", "--server", gateway.address, "--model", "no-such-model",
         "--requests", "5", "--concurrency", "1", "--warmup", "0", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert completed.returncode == 1  # nothing succeeded
    point = json.loads(completed.stdout)["series"]["gateway"][0]
    assert point["errors"] == {"NOT_FOUND": 5} and point["ok"] == 0 and point["p50_ms"] is None
