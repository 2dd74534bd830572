"""Foreground processes: Triton alone, the gateway alone, or both (``attnserve serve``).

SIGINT and SIGTERM stop them cleanly: the gateway drains (health NOT_SERVING, in-flight
requests get their grace period), then Triton and its stubs stop. If Triton dies while
serving, ``serve`` restarts it with backoff (the gateway stays up, NOT_SERVING meanwhile) and
removes the shared memory it left; when the restarts in a row are used up it exits non-zero,
so a supervisor can take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable

from attnserve.errors import SetupError
from attnserve.logs import REFUSALS
from attnserve.settings import Settings

from .app import Gateway
from .gateway.allocator import return_large_blocks
from .gateway.collector import PauseRecorder, freeze_startup
from .triton import TritonProcess

log = logging.getLogger(__name__)


def run_triton(settings: Settings) -> None:
    """Starts Triton and blocks until SIGINT/SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with TritonProcess(settings.triton) as triton:
            t = settings.triton
            print(
                f"Triton is ready: HTTP {t.host}:{t.http_port}, gRPC {t.host}:{t.grpc_port}, "
                f"metrics {t.host}:{t.metrics_port}; repository {t.model_repository}",
                flush=True,
            )
            while not stop.wait(0.5):
                if triton.process is None or triton.process.poll() is not None:
                    raise SetupError("tritonserver exited unexpectedly:\n" + triton.log_tail())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _serve_gateway(settings: Settings, triton: TritonProcess | None) -> None:
    return_large_blocks()
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failure: SetupError | None = None
    try:
        await gateway.start()
        host = settings.gateway.host
        print(f"attnserve gateway listening on {host}:{gateway.port} (gRPC)", flush=True)
        if gateway.http_port is not None:
            print(f"HTTP API and web page: http://{host}:{gateway.http_port}/", flush=True)
        if settings.triton.watch_repository:
            gateway.core.watch_repository(settings.triton.model_repository, settings.triton.watch_interval_s)
            print(
                f"watching {settings.triton.model_repository}: models added, changed or removed "
                "there are loaded, reloaded or unloaded while serving",
                flush=True,
            )
        metrics = gateway.core.metrics
        if settings.gateway.freeze_startup_objects:
            metrics.gc_frozen_objects.set(freeze_startup())
        supervisor = None if triton is None else TritonSupervisor(triton, settings, gateway)
        with PauseRecorder(metrics.gc_pause_seconds):
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                REFUSALS.flush(log)  # a burst's refusals, counted, once it is over
                if supervisor is not None and not stop.is_set():
                    failure = await supervisor.check(stop)
                    if failure is not None:
                        break
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await gateway.stop()
        REFUSALS.flush(log, final=True)
    if failure is not None:
        raise failure


class TritonSupervisor:
    """Restarts the local Triton when it dies, with backoff; the gateway stays up meanwhile
    (health NOT_SERVING, calls UNAVAILABLE at once) and serves again once Triton is ready."""

    STABLE_S = 60.0
    """Up this long, a Triton's earlier crashes are forgiven."""

    def __init__(self, triton: TritonProcess, settings: Settings, gateway: Gateway) -> None:
        self.triton = triton
        self.backoff_s = settings.triton.restart_backoff_s
        self.metrics = gateway.core.metrics
        self.failures = 0
        self.up_since = time.monotonic()

    async def check(self, stop: asyncio.Event) -> SetupError | None:
        """One look at Triton; restarts it if it died. A `SetupError` when restarts are used up."""
        process = self.triton.process
        if process is not None and process.poll() is None:
            if self.failures and time.monotonic() - self.up_since > self.STABLE_S:
                self.failures = 0
            return None
        code = None if process is None else process.returncode
        tail = self.triton.log_tail()
        self.triton.stop()  # whatever is left of it, and its shared memory
        if self.failures >= len(self.backoff_s):
            return SetupError(
                f"tritonserver exited unexpectedly (code {code}) after {self.failures} restarts in a row; "
                f"giving up:\n{tail}"
            )
        delay = self.backoff_s[self.failures]
        self.failures += 1
        log.error(
            "tritonserver exited unexpectedly (code %s); restarting it in %.1f s (attempt %d of %d)\n%s",
            code, delay, self.failures, len(self.backoff_s), tail,
        )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return None
        self.metrics.triton_restarts.inc()
        try:
            await asyncio.to_thread(self.triton.start)
        except SetupError as exc:
            log.error("restarting tritonserver failed: %s", exc)
            return None
        self.up_since = time.monotonic()
        log.warning(
            "tritonserver restarted (pid %s)",
            None if self.triton.process is None else self.triton.process.pid,
        )
        return None


def run_gateway(settings: Settings) -> None:
    """The gateway alone, against the Triton at ``settings.triton.grpc_target``."""
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        runner.run(_serve_gateway(settings, None))


def run_serve(settings: Settings) -> None:
    """Triton and the gateway together, in the foreground."""
    # A SIGTERM while Triton starts (before the event loop) still unwinds through `finally`.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with TritonProcess(settings.triton) as triton:
            signal.signal(signal.SIGTERM, previous)
            with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
                runner.run(_serve_gateway(settings, triton))
    finally:
        signal.signal(signal.SIGTERM, previous)


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the gateway's event loop (``event_loop``); None: asyncio's own."""
    if settings.gateway.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:  # a platform without its wheels (Windows): asyncio's own loop
        raise SetupError(
            f"event_loop=uvloop, but uvloop does not import here ({exc}): install it "
            "(pip install uvloop) or set ATTNSERVE_GATEWAY__EVENT_LOOP=asyncio"
        ) from exc
    return uvloop.new_event_loop


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
