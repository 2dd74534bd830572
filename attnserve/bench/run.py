"""A sweep: one target measured at several loads in a row (closed loop: concurrencies; open
loop: rates), with a progress line on a terminal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from attnserve.clients._common import NO_CREDENTIALS, Credentials
from attnserve.clients.slots import DEFAULT_MAX_CONCURRENT_CALLS
from attnserve.v1 import attnserve_pb2 as pb

from .load import Bound, Progress, closed_loop, open_loop
from .stats import Summary
from .targets import GrpcTarget, HttpTarget, Target


@dataclass(frozen=True)
class LoadPlan:
    """What to run: ``concurrency`` levels (closed loop) or ``rates`` (open loop), each bounded
    by ``bound`` after ``warmup_s`` of unrecorded load."""

    bound: Bound
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    warmup_s: float = 2.0
    poisson: bool = False

    def __post_init__(self) -> None:
        if bool(self.concurrency) == bool(self.rates):
            raise ValueError("give concurrency levels (closed loop) or rates (open loop), not both")

    @property
    def open(self) -> bool:
        return bool(self.rates)

    @property
    def x_label(self) -> str:
        return "offered load (requests/s)" if self.open else "concurrency (requests in flight)"

    @property
    def grpc_connections(self) -> int:
        """Enough gRPC connections that none carries more calls at once than attnserve's own
        clients do (`attnserve.clients.slots`: the gateway's transport refuses some streams of a
        connection with close to 128 open); one for an open loop, whose calls in flight are the
        server's to decide."""
        if self.open:
            return 1
        return max(1, math.ceil(max(self.concurrency) / DEFAULT_MAX_CONCURRENT_CALLS))


async def sweep(target: Target, plan: LoadPlan, *, progress: TextIO | None = None) -> list[Summary]:
    """Each load of the plan in turn, on the same target (connections stay warm between them)."""
    summaries: list[Summary] = []
    loads: Sequence[float] = plan.rates if plan.open else plan.concurrency
    for load in loads:
        label = f"{load:g}/s" if plan.open else f"c={load:g}"
        report = _progress_line(progress, label, plan.bound)
        if plan.open:
            summary = await open_loop(
                target.send, load, plan.bound, warmup_s=plan.warmup_s, poisson=plan.poisson, progress=report
            )
        else:
            summary = await closed_loop(
                target.send, int(load), plan.bound, warmup_s=plan.warmup_s, progress=report
            )
        if progress is not None and progress.isatty():
            progress.write("\r\033[K")
        summaries.append(summary)
    return summaries


def _progress_line(stream: TextIO | None, label: str, bound: Bound) -> Progress | None:
    """A progress line rewritten at most ten times a second, on a terminal only."""
    if stream is None or not stream.isatty():
        return None
    shown = -1.0

    def report(done: int, elapsed: float) -> None:
        nonlocal shown
        if elapsed - shown < 0.1:
            return
        shown = elapsed
        fractions = []
        if bound.duration_s:
            fractions.append(elapsed / bound.duration_s)
        if bound.requests:
            fractions.append(done / bound.requests)
        share = min(1.0, max(fractions))
        bar = "#" * int(share * 30)
        stream.write(
            f"\r{label:>9} [{bar:<30}] {done} requests, {elapsed:.1f} s, {done / max(elapsed, 1e-9):.0f}/s"
        )
        stream.flush()

    return report


def make_target(
    server: str,
    request: pb.PredictRequest,
    *,
    credentials: Credentials = NO_CREDENTIALS,
    connections: int = 1,
    timeout_s: float = 30.0,
) -> Target:
    """HTTP for http(s):// URLs, gRPC for HOST:PORT (as `attnserve.clients.connect`)."""
    if server.startswith(("http://", "https://")):
        return HttpTarget(
            server, request, credentials=credentials, connections=max(connections, 64), timeout_s=timeout_s
        )
    return GrpcTarget(server, request, credentials=credentials, connections=connections, timeout_s=timeout_s)
