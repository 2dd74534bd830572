"""Burst: ten times the gateway's capacity at once, cheap predictions mixed with 12-megapixel
overlays, against `attnserve serve`. Is anything INTERNAL, are refusals immediate and counted
exactly, and how do the admitted cheap requests fare against an unloaded gateway?

    .venv/bin/python tools/burst.py                 # default settings: 640 calls
    .venv/bin/python tools/burst.py --adaptive --compare   # adaptive concurrency, then without
    .venv/bin/python tools/burst.py --max-in-flight 8
    .venv/bin/python tools/burst.py --adaptive --pin     # the load generator on its own core
    .venv/bin/python tools/burst.py --adaptive --server-cores 2  # the server on 2 cores, clients on the rest
    .venv/bin/python tools/burst.py --adaptive --server-cores 3 --triton-cores 1 --clients 8
    .venv/bin/python tools/burst.py --adaptive --clients 8 --timeout-s 0.9  # deadlines sent to the ms
    .venv/bin/python tools/burst.py --json
    .venv/bin/python tools/burst.py --adaptive --heavy-share 0 --bursts 10 --against inline_preprocess_bytes=0

Capacity is what the gateway admits at once after warm-up (`attnserve_concurrency_limit`: the
adaptive limit, or ``max_in_flight``); the burst sends 10× that many calls at once over one
channel (or ``--clients``), a quarter of them overlays of every map of a 4000×3000 JPEG. Each
latency is reported three ways: as the client saw it, inside the gateway (the answer's
``timings.total_ms``), and the floor — the same burst refused on arrival — which is what the
transport and a load generator on the same cores cost before any work is done. ``--pin`` keeps
the load generator on the first core and the gateway and Triton on the others, so that what the
server pays is not what the load generator took from it. ``--server-cores N`` gives the server
the last N cores and the load generator all the others: on a machine with more cores than the
server needs, what clients see is then the server's doing alone; ``--triton-cores K`` gives
Triton K of those and the gateway the rest. ``--clients N`` sends each burst from N processes at
once, each its share on its own connection, as a burst from many clients arrives; one client
process answers its calls one after another on its own event loop, which holds an answer back
behind the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import multiprocessing
import os
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from PIL import Image

from attnserve.bench import stats
from attnserve.bench.processes import descendants
from attnserve.clients.retry import REFUSED_STREAM
from attnserve.demo import add_models_option, serving
from attnserve.queueing import encodable_timeout, timeout_metadata
from attnserve.settings import Settings
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = (ROOT / "docs" / "samples" / "digit.png").read_bytes()
DETAILS: dict[str, str] = {}
TIMEOUT_S = 120.0
"""Each call's deadline by default (``--timeout-s``): whole seconds, which gRPC sends exactly
(`attnserve.queueing`). grpc-core writes a deadline of 100–1000 s to the second, so a delay of
under a second in the load generator, before grpc-core writes the call, is not seen by the
gateway; under 1 s it writes milliseconds, and every such delay is seen (and counted as waiting)."""
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 2**26)]
"""The load generator's channels: overlays of a 12 MP photo are answers of tens of MB."""
PAUSE_S = 1.5
"""Between repeated bursts (a fifth of it when there are no overlays to finish)."""


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(SAMPLE)).convert("RGB").resize((4000, 3000)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@contextmanager
def gc_paused() -> Iterator[None]:
    """The load generator's cyclic garbage collector off while it times calls, collected before
    and after. A full collection in a process holding thousands of results stopped its event loop
    for 58 ms in the middle of a burst (the fourth server of a sequence, every time), and clients'
    latencies counted that as the server's."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


def percentile(seconds: Iterable[float | None], q: float) -> float | None:
    """A nearest-rank percentile in ms; None (a call with no such figure) is left out."""
    kept = sorted(s for s in seconds if s is not None)
    return round(stats.percentile(kept, q) * 1e3, 1) if kept else None


def scrape(metrics_url: str) -> list[tuple[str, float]]:
    """The gateway's /metrics: (series with its labels, value) for every sample."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return [
        (line.rsplit(" ", 1)[0], float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line[:1] != "#"
    ]


def rejected(metrics_url: str) -> Counter[str]:
    """The gateway's refusals so far by reason, but too_large (a client's error, not overload)."""
    by_reason: Counter[str] = Counter()
    for series, value in scrape(metrics_url):
        if series.startswith("attnserve_rejected_total{"):
            reason = series.split('reason="', 1)[1].split('"', 1)[0]
            if reason != "too_large":
                by_reason[reason] += int(value)
    return by_reason


def gauge(metrics_url: str, name: str) -> float:
    return next(value for series, value in scrape(metrics_url) if series == name)


def triton_compute(triton_port: int) -> tuple[int, int]:
    """Triton's own count of successful inferences and the nanoseconds its backends spent computing
    them (``compute_infer``), over every model so far."""
    import tritonclient.grpc as triton_client

    client = triton_client.InferenceServerClient(f"127.0.0.1:{triton_port}")
    try:
        answer = client.get_inference_statistics(as_json=True)
    finally:
        client.close()
    figures = [model["inference_stats"] for model in answer.get("model_stats", [])]
    count = sum(int(f["success"].get("count", 0)) for f in figures)
    return count, sum(int(f["compute_infer"].get("ns", 0)) for f in figures)


def compute_mean_ms(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The mean of Triton's compute per inference between two `triton_compute` readings (ms)."""
    count = after[0] - before[0]
    return round((after[1] - before[1]) / count / 1e6, 2) if count else None


STAGES = ("preprocess", "inference", "postprocess")
WAITED = re.compile(r"this call waited (\d+) ms before the gateway could take it up")
"""A `queued` refusal's message (`Admission.check_wait`): the wait the gateway read."""
PARTS = ("queued", "outside", *STAGES)
Result = tuple[str, float, float | None, dict[str, float]]


async def call(stub: Any, request: pb.PredictRequest, timeout_s: float = TIMEOUT_S) -> Result:
    """One call: its code, its latency as the client saw it, the gateway's own total (s), and
    for an answer where the time went: how long it waited to be taken up as the gateway read it
    (``queued``), the gateway's stages, and what lay outside all of them (the transport, both
    ends' encoding, and any wait the gateway could not see). A call refused for its wait has
    ``queued`` alone, read from the refusal's message."""
    started = time.perf_counter()
    in_gateway, stages = None, {}
    try:
        # as attnserve's clients send it: with a deadline and the timeout behind it, so that the
        # gateway can tell how long the call waited before it was taken up (attnserve.queueing)
        timeout_s = encodable_timeout(timeout_s)
        answer = await stub.Predict(request, timeout=timeout_s, metadata=timeout_metadata(timeout_s))
        code, in_gateway = "OK", answer.timings.total_ms / 1e3
        stages = {stage: getattr(answer.timings, f"{stage}_ms") / 1e3 for stage in STAGES}
        if answer.timings.HasField("queued_ms"):
            stages["queued"] = answer.timings.queued_ms / 1e3
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        if code not in ("RESOURCE_EXHAUSTED", "OK", "NOT_FOUND"):
            # one message a code, and never a refused stream's in place of another error's
            if REFUSED_STREAM in DETAILS.get(code, REFUSED_STREAM):
                DETAILS[code] = exc.details() or ""
        elif waited := WAITED.search(exc.details() or ""):
            stages["queued"] = int(waited.group(1)) / 1e3
    seconds = time.perf_counter() - started
    if in_gateway is not None:
        stages["outside"] = seconds - in_gateway - stages.get("queued", 0.0)
    return code, seconds, in_gateway, stages


def deadline(kind: str, timeout_s: float) -> float:
    """A call's deadline: ``timeout_s`` for a cheap one; an overlay of a 12 MP photo may take
    seconds to render under a burst, and keeps `TIMEOUT_S`."""
    return timeout_s if kind == "cheap" else max(timeout_s, TIMEOUT_S)


def stages_p99(answers: Iterable[dict[str, float]]) -> dict[str, float | None]:
    """Each part of the answered calls' latency at its own p99 (ms): where the time went."""
    answers = list(answers)
    return {part: percentile([a.get(part) for a in answers], 99) for part in PARTS}


def requests(photo: bytes) -> dict[str, pb.PredictRequest]:
    """Each kind's request: cheap, the digit and its primary map; heavy, every map of a photo as
    an overlay."""
    return {
        "cheap": pb.PredictRequest(image=SAMPLE, attention=pb.AttentionOptions(maps=["primary"])),
        "heavy": pb.PredictRequest(
            image=photo, attention=pb.AttentionOptions(formats=[pb.MAP_FORMAT_OVERLAY_PNG])
        ),
    }


async def send_bursts(
    stub: Any,
    request: dict[str, pb.PredictRequest],
    kinds: list[str],
    bursts: int,
    pause_s: float,
    barrier: Any = None,
    timeout_s: float = TIMEOUT_S,
) -> tuple[list[Result], list[str], list[float]]:
    """``bursts`` times, every call of ``kinds`` at once (after ``barrier``, when other processes
    send their share of each burst): (the results, their kinds, each burst's wall time)."""
    results: list[Result] = []
    walls = []
    for index in range(bursts):
        if index:  # the previous burst's overlays finish first
            await asyncio.sleep(pause_s)
        if barrier is not None:
            barrier.wait()  # nothing else runs on this loop meanwhile
        started = time.perf_counter()
        results += await asyncio.gather(*(call(stub, request[k], deadline(k, timeout_s)) for k in kinds))
        walls.append(time.perf_counter() - started)
    return results, kinds * bursts, walls


def client_process(
    address: str, photo: bytes, kinds: list[str], bursts: int, pause_s: float, barrier: Any, timeout_s: float
) -> Any:
    """One of ``--clients`` processes: its own channel, its share of every burst."""

    async def main() -> tuple[list[Result], list[str], list[float], dict[str, str]]:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.AttentionServiceStub(channel)
            # connected before the first burst, with no call: the parent counts refusals from now on
            await asyncio.wait_for(channel.channel_ready(), TIMEOUT_S)
            sent = await send_bursts(stub, requests(photo), kinds, bursts, pause_s, barrier, timeout_s)
        return (*sent, dict(DETAILS))

    with gc_paused():  # the load generator's own pauses are not the server's latency
        return asyncio.run(main())


def from_processes(
    address: str,
    photo: bytes,
    kinds: list[str],
    bursts: int,
    pause_s: float,
    clients: int,
    timeout_s: float = TIMEOUT_S,
) -> tuple[list[Result], list[str], list[float]]:
    """Each burst sent by ``clients`` processes at once, each its share on its own connection,
    as a burst from many clients arrives: no one client's event loop holds the answers back."""
    context = multiprocessing.get_context("spawn")  # grpc does not survive a fork
    with context.Manager() as manager, context.Pool(clients) as pool:
        barrier = manager.Barrier(clients)
        shares = [
            pool.apply_async(
                client_process, (address, photo, kinds[i::clients], bursts, pause_s, barrier, timeout_s)
            )
            for i in range(clients)
        ]
        done = [share.get(timeout=max(TIMEOUT_S, timeout_s) * bursts) for share in shares]
    results = [r for share in done for r in share[0]]
    sent = [k for share in done for k in share[1]]
    walls = [max(share[2][index] for share in done) for index in range(bursts)]
    for share in done:
        DETAILS.update(share[3])
    return results, sent, walls


async def measure(
    address: str,
    metrics_url: str,
    burst_factor: int,
    heavy_share: float,
    calls: int | None = None,
    bursts: int = 1,
    clients: int = 1,
    timeout_s: float = TIMEOUT_S,
    triton_port: int | None = None,
) -> dict[str, Any]:
    request = requests(photo())
    computed = {}  # Triton's own compute figures: where an admitted call's inference stage went
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)
        for _ in range(20):
            await call(stub, request["cheap"], timeout_s)
        if triton_port is not None:
            computed["start"] = triton_compute(triton_port)
        unloaded = [await call(stub, request["cheap"], timeout_s) for _ in range(200)]
        if triton_port is not None:
            computed["unloaded"] = triton_compute(triton_port)
        capacity = int(gauge(metrics_url, "attnserve_concurrency_limit"))
        calls = calls or burst_factor * capacity
        every = round(1 / heavy_share) if heavy_share else 0
        kinds = ["heavy" if every and i % every == 0 else "cheap" for i in range(calls)]

        # the floor: the same burst, every call refused on arrival (an unknown model: nothing is
        # decoded), so all it measures is the transport, the client and the gateway's front
        unknown = {kind: pb.PredictRequest() for kind in request}
        for kind, copy in unknown.items():
            copy.CopyFrom(request[kind])
            copy.model = "no-such-model"
        floor = await asyncio.gather(*(call(stub, unknown[k], deadline(k, timeout_s)) for k in kinds))

        before = rejected(metrics_url)
        pause = PAUSE_S if heavy_share else PAUSE_S / 5
        if clients == 1:
            results, kinds, walls = await send_bursts(stub, request, kinds, bursts, pause, None, timeout_s)
        else:
            photo_bytes = request["heavy"].image
            results, kinds, walls = from_processes(
                address, photo_bytes, kinds, bursts, pause, clients, timeout_s
            )
        wall = sum(walls)
        if triton_port is not None:
            computed["bursts"] = triton_compute(triton_port)
        by_reason = rejected(metrics_url) - before
        counted = sum(by_reason.values())
        limit_after = gauge(metrics_url, "attnserve_concurrency_limit")
    by_kind: dict[str, Any] = {}
    for kind in ("cheap", "heavy"):
        mine = [r for r, k in zip(results, kinds, strict=True) if k == kind]
        ok = [s for c, s, _, _ in mine if c == "OK"]
        refused = [s for c, s, _, _ in mine if c == "RESOURCE_EXHAUSTED"]
        by_kind[kind] = {
            "sent": len(mine),
            "codes": dict(Counter(c for c, _, _, _ in mine)),
            "admitted_p50_ms": percentile(ok, 50),
            "admitted_p99_ms": percentile(ok, 99),
            "admitted_gateway_p99_ms": percentile([t for _, _, t, _ in mine], 99),
            "admitted_stages_p99_ms": stages_p99(st for c, _, _, st in mine if c == "OK"),
            "refused_p99_ms": percentile(refused, 99),
            # every call's wait before it was taken up, as far as the gateway could read it: with a
            # deadline under 1 s, the load generator's own delay before the call was written too
            "waited_p50_p99_ms": [percentile([st.get("queued") for *_, st in mine], q) for q in (50, 99)],
        }
    seen = sum(c == "RESOURCE_EXHAUSTED" for c, _, _, _ in results)
    return {
        "capacity": capacity,
        "calls": calls,
        "bursts": bursts,
        "wall_s": round(wall, 2),
        "unloaded_p50_ms": percentile([s for _, s, _, _ in unloaded], 50),
        "unloaded_p99_ms": percentile([s for _, s, _, _ in unloaded], 99),
        "unloaded_gateway_p99_ms": percentile([t for _, _, t, _ in unloaded], 99),
        "unloaded_stages_p99_ms": stages_p99(st for _, _, _, st in unloaded),
        # the mean of Triton's compute per inference (its backend's ``compute_infer``): unloaded,
        # and in the bursts (the floor reaches no model); None without a Triton port or inferences
        "triton_compute_mean_ms": {
            "unloaded": compute_mean_ms(computed["start"], computed["unloaded"]) if computed else None,
            "bursts": compute_mean_ms(computed["unloaded"], computed["bursts"]) if computed else None,
        },
        "floor_p99_ms": percentile([s for _, s, _, _ in floor], 99),
        "floor_codes": dict(Counter(c for c, _, _, _ in floor)),
        "by_kind": by_kind,
        "resource_exhausted_seen": seen,
        "rejections_counted": counted,
        "rejections_by_reason": dict(sorted(by_reason.items())),
        "limit_after": limit_after,
        "internal": sum(c == "INTERNAL" for c, _, _, _ in results),
        "other_errors": dict(DETAILS),
    }


Split = tuple[list[int], list[int]]


def split_last(cores: list[int], last: int | None, taker: str, whose: str, other: str) -> Split:
    """(the rest of ``cores``, their last ``last``), disjoint; None: both get them all. The names
    say who needs what when ``last`` leaves either side without a core."""
    if last is None:
        return cores, cores
    if not 1 <= last < len(cores):
        needs = f"1 to {len(cores) - 1} of {whose} {len(cores)} cores"
        raise SystemExit(f"{taker} needs {needs}, and {other} one")
    return cores[:-last], cores[-last:]


def split_cores(cores: list[int], server_cores: int | None) -> Split:
    """(load generator's cores, server's cores), disjoint: the server gets the last
    ``server_cores`` of ``cores``, the load generator the rest."""
    return split_last(cores, server_cores, "the server", "the", "the load generator")


def split_server(server: list[int], triton_cores: int | None) -> Split:
    """(the gateway's cores, Triton's cores) among the server's: Triton gets the last
    ``triton_cores``, the gateway the rest (None: both share them all)."""
    return split_last(server, triton_cores, "Triton", "the server's", "the gateway")


def pin_process(pid: int, cores: list[int]) -> None:
    """Every thread of ``pid`` on ``cores`` (a process's affinity is its threads'; the threads
    it starts later inherit their creator's)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cores)


@contextmanager
def pinned(server_cores: int | None) -> Iterator[Split]:
    """With ``server_cores``, this process (and so what it starts) on the server's cores; yields
    (the load generator's cores, the server's) (`split_cores`), and the caller moves itself to
    the first once the server is up. Restored when the block ends."""
    cores = sorted(os.sched_getaffinity(0))
    load_generator, server = split_cores(cores, server_cores)
    os.sched_setaffinity(0, server)
    try:
        yield load_generator, server
    finally:
        os.sched_setaffinity(0, cores)


def run(
    max_in_flight: int,
    adaptive: bool,
    burst_factor: int,
    heavy_share: float,
    calls: int | None = None,
    server_cores: int | None = None,
    bursts: int = 1,
    setting: tuple[str, str] | None = None,
    triton_cores: int | None = None,
    clients: int = 1,
    timeout_s: float = TIMEOUT_S,
    models: list[str] | None = None,
) -> dict[str, Any]:
    """One `attnserve serve` and its bursts. ``server_cores``: the server on that many cores and
    the load generator on the others (None: all share every core); ``triton_cores``: of those,
    Triton's own, the gateway on the rest; ``clients``: the processes that send each burst.
    ``setting``: a gateway setting (name, value) that differs from the defaults in this run;
    ``timeout_s``: each cheap call's deadline (`deadline`); ``models``: those served (None: all)."""
    env = {
        "ATTNSERVE_GATEWAY__MAX_IN_FLIGHT": str(max_in_flight),
        "ATTNSERVE_GATEWAY__ADAPTIVE_CONCURRENCY": str(adaptive).lower(),
    }
    if setting is not None:
        env[f"ATTNSERVE_GATEWAY__{setting[0].upper()}"] = setting[1]
    DETAILS.clear()
    with (
        pinned(server_cores) as (load_generator, server),
        serving(Settings(), env=env, gateway_metrics=True, quiet=True, models=models) as served,
    ):
        assert served.metrics_url is not None
        os.sched_setaffinity(0, load_generator)  # the server keeps its cores
        if triton_cores is not None:
            gateway, triton = split_server(server, triton_cores)
            pin_process(served.pid, gateway)
            for pid in descendants(served.pid):
                pin_process(pid, triton)
        with gc_paused():  # the load generator's own pauses are not the server's latency
            summary = asyncio.run(
                measure(
                    served.address,
                    served.metrics_url,
                    burst_factor,
                    heavy_share,
                    calls,
                    bursts,
                    clients,
                    timeout_s,
                    served.triton_grpc_port,
                )
            )
        summary["cores"] = {
            "load_generator": sorted(os.sched_getaffinity(0)),
            "server": sorted(os.sched_getaffinity(served.pid)),
            "triton": sorted({c for pid in descendants(served.pid) for c in os.sched_getaffinity(pid)}),
        }
    pin = server_cores is not None
    summary.update(max_in_flight=max_in_flight, adaptive=adaptive, pinned=pin, exit_code=served.exit_code)
    summary["clients"] = clients
    summary["timeout_s"] = encodable_timeout(timeout_s)
    summary["setting"] = None if setting is None else "=".join(setting)
    cheap = summary["by_kind"]["cheap"]
    if cheap["admitted_p99_ms"] and summary["unloaded_p99_ms"]:
        summary["cheap_p99_ratio"] = round(cheap["admitted_p99_ms"] / summary["unloaded_p99_ms"], 1)
    if cheap["admitted_gateway_p99_ms"] and summary["unloaded_gateway_p99_ms"]:
        ratio = cheap["admitted_gateway_p99_ms"] / summary["unloaded_gateway_p99_ms"]
        summary["cheap_gateway_p99_ratio"] = round(ratio, 1)
    return summary


def report(summary: dict[str, Any]) -> None:
    mode = ("adaptive" if summary["adaptive"] else "fixed") + (", pinned" if summary["pinned"] else "")
    if summary.get("setting"):
        mode += f", {summary['setting']}"
    print(
        f"[{mode}] capacity {summary['capacity']} (max_in_flight {summary['max_in_flight']}), "
        f"{summary['calls']} calls at once × {summary['bursts']} from {summary['clients']} process(es), "
        f"deadline {summary['timeout_s']:g} s; limit after: {summary['limit_after']:g}"
    )
    print(
        f"  unloaded cheap p50/p99: {summary['unloaded_p50_ms']} / {summary['unloaded_p99_ms']} ms "
        f"(in the gateway p99 {summary['unloaded_gateway_p99_ms']} ms); the same burst refused on "
        f"arrival: p99 {summary['floor_p99_ms']} ms"
    )
    print(f"  unloaded cheap, each part at its p99 (ms): {summary['unloaded_stages_p99_ms']}")
    print(f"  Triton's own compute per inference, mean (ms): {summary['triton_compute_mean_ms']}")
    for kind, figures in summary["by_kind"].items():
        print(f"  {kind:5}: {figures}")
    print(
        f"  RESOURCE_EXHAUSTED seen {summary['resource_exhausted_seen']}, counted "
        f"{summary['rejections_counted']:.0f} {summary['rejections_by_reason']}; INTERNAL "
        f"{summary['internal']}; admitted cheap p99 "
        f"{summary.get('cheap_p99_ratio')}× unloaded as clients saw it, "
        f"{summary.get('cheap_gateway_p99_ratio')}× inside the gateway"
    )


def main() -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-in-flight", type=int, default=64, help="the hard cap")
    parser.add_argument("--adaptive", action="store_true", help="adaptive_concurrency on")
    parser.add_argument(
        "--compare", action="store_true", help="then the same burst with adaptive_concurrency the other way"
    )
    parser.add_argument("--factor", type=int, default=10, help="the burst, in multiples of capacity")
    parser.add_argument("--heavy-share", type=float, default=0.25, help="the share of overlays (0–1)")
    parser.add_argument(
        "--pin", action="store_true", help="the load generator on the first core, the server on the others"
    )
    parser.add_argument(
        "--server-cores",
        type=int,
        metavar="N",
        help="the server (gateway and Triton) on the last N cores, the load generator on the others",
    )
    parser.add_argument(
        "--triton-cores",
        type=int,
        metavar="K",
        help="with --server-cores (or --pin): Triton on K of the server's cores, the gateway on the rest",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        metavar="N",
        help="each burst sent by N processes at once, each its share on its own connection",
    )
    parser.add_argument("--bursts", type=int, default=1, help="bursts per server (their figures pooled)")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=TIMEOUT_S,
        help="each cheap call's deadline (overlays keep the default); under 1 s gRPC sends it to the "
        "millisecond, so the gateway sees any delay before the call was written (default %(default)s: "
        "it sees delays of 1 s or more)",
    )
    parser.add_argument(
        "--against",
        metavar="SETTING=VALUE",
        help="A/B: rounds alternating between the defaults and this gateway setting (e.g. "
        "inline_preprocess_bytes=0), the same number of calls in each",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--against: rounds of each")
    add_models_option(parser)
    parser.add_argument("--json", action="store_true", help="print only the JSON summaries")
    args = parser.parse_args()
    if args.pin and args.server_cores is None:
        args.server_cores = len(os.sched_getaffinity(0)) - 1
    if args.clients < 1:
        raise SystemExit("--clients: at least 1")
    if args.triton_cores is not None and args.server_cores is None:
        raise SystemExit("--triton-cores divides the server's cores: give --server-cores (or --pin)")
    if args.against:
        return against(args)
    shape = (args.max_in_flight, args.adaptive, args.factor, args.heavy_share)
    summaries = [
        run(
            *shape,
            server_cores=args.server_cores,
            bursts=args.bursts,
            triton_cores=args.triton_cores,
            clients=args.clients,
            timeout_s=args.timeout_s,
            models=args.models,
        )
    ]
    if args.compare:
        calls = summaries[0]["calls"]
        other = not args.adaptive
        summaries.append(
            run(
                args.max_in_flight,
                other,
                args.factor,
                args.heavy_share,
                calls,
                args.server_cores,
                args.bursts,
                triton_cores=args.triton_cores,
                clients=args.clients,
                timeout_s=args.timeout_s,
                models=args.models,
            )
        )
    for summary in summaries:
        if not args.json:
            report(summary)
        print(json.dumps(summary))
    return summaries


def against(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rounds alternating between the defaults and ``--against`` (ABBA…), the calls of the first."""
    name, _, value = args.against.partition("=")
    if not value:
        raise SystemExit("--against takes SETTING=VALUE, e.g. inline_preprocess_bytes=0")
    summaries: list[dict[str, Any]] = []
    calls = None
    for index in range(2 * args.rounds):
        other = index % 4 in (1, 2)
        summary = run(
            args.max_in_flight,
            args.adaptive,
            args.factor,
            args.heavy_share,
            calls,
            args.server_cores,
            args.bursts,
            (name, value) if other else None,
            args.triton_cores,
            args.clients,
            args.timeout_s,
            args.models,
        )
        calls = calls or summary["calls"]
        summaries.append(summary)
        if not args.json:
            report(summary)
    for mode in (None, f"{name}={value}"):
        mine = [s for s in summaries if s["setting"] == mode]
        ratios = [s.get("cheap_gateway_p99_ratio") for s in mine]
        answered = [s["by_kind"]["cheap"]["codes"].get("OK", 0) for s in mine]
        if not args.json:
            print(f"{mode or 'defaults'}: cheap answered {answered}; in-gateway p99 / unloaded {ratios}")
    for summary in summaries:
        print(json.dumps(summary))
    return summaries


if __name__ == "__main__":
    main()
