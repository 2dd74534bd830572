"""Foreground processes: Triton alone, the gateway alone, or both (``attnserve serve``).

SIGINT and SIGTERM stop them cleanly: the gateway drains (health NOT_SERVING, in-flight
requests get their grace period), then Triton and its stubs stop. If Triton dies while
serving, ``serve`` stops too and exits non-zero, so a supervisor can restart the pair.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from attnserve.errors import SetupError
from attnserve.settings import Settings

from .app import Gateway
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
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    failure: SetupError | None = None
    try:
        await gateway.start()
        host = settings.gateway.host
        print(f"attnserve gateway listening on {host}:{gateway.port} (gRPC)", flush=True)
        if gateway.http_port is not None:
            print(f"HTTP API and web page: http://{host}:{gateway.http_port}/", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
            if triton is not None and (triton.process is None or triton.process.poll() is not None):
                failure = SetupError("tritonserver exited unexpectedly:\n" + triton.log_tail())
                break
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await gateway.stop()
    if failure is not None:
        raise failure


def run_gateway(settings: Settings) -> None:
    """The gateway alone, against the Triton at ``settings.triton.grpc_target``."""
    asyncio.run(_serve_gateway(settings, None))


def run_serve(settings: Settings) -> None:
    """Triton and the gateway together, in the foreground."""
    # A SIGTERM while Triton starts (before the event loop) still unwinds through `finally`.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with TritonProcess(settings.triton) as triton:
            signal.signal(signal.SIGTERM, previous)
            asyncio.run(_serve_gateway(settings, triton))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
