"""Where heavy calls' CPU work runs: decoding large images, drawing and encoding overlays,
heatmaps and upsampled maps.

Two kinds of workers, one interface (`HeavyWork.run`):

- **threads** of the gateway's process (``render_processes`` 0, the default; ``render_threads``
  of them). No copies: the decoded image stays where it was decoded. But they share the
  gateway's interpreter, so while one runs Python between its C calls the event loop waits for
  the GIL, however nice the thread is.
- **processes** of their own (``render_processes`` N): the same functions in N spawned
  interpreters. The event loop never waits on their GIL; the price is a copy of each heavy
  call's inputs and answer through a pipe (the encoded upload, the image at the render size,
  the encoded images back: a few MB, about a millisecond each way) and one interpreter's
  memory per worker. A worker that dies (killed, out of memory) fails the calls it held
  (INTERNAL); the next heavy call gets a fresh pool.

Either kind runs ``render_nice`` steps nicer than the gateway, so that the event loop, cheap
calls' threads and a Triton in the same session are served first.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def lower_priority(nice: int) -> None:
    """This thread ``nice`` steps nicer than it was (Linux sets niceness per thread; elsewhere it
    is the process's, so nothing is done). Where a sandbox forbids it, the thread keeps its
    priority and says so: a thread pool whose initializer raises refuses all its work."""
    if nice and sys.platform == "linux":
        thread = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
        except OSError as error:
            log.warning("render thread left at the gateway's priority (render_nice %d): %s", nice, error)


def start_worker(nice: int) -> None:
    """A worker process's first step. A terminal's Ctrl-C reaches the whole process group: the
    gateway drains its calls, then stops its workers, so a worker does not stop on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority(nice)


def worker_pid() -> int:
    return os.getpid()


class HeavyWork:
    """Runs heavy calls' functions on render threads or in worker processes (module docstring).
    In processes, the function and its arguments must pickle: module-level functions, data."""

    def __init__(self, threads: int, processes: int, nice: int) -> None:
        self.threads = threads
        self.processes = processes
        self.nice = nice
        self._executor = self._new()

    def _new(self) -> Executor:
        if self.processes:
            pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),  # never fork grpc's threads
                initializer=start_worker,
                initargs=(self.nice,),
            )
            pool.submit(worker_pid)  # spawned now, in the background: not on the first heavy call
            return pool
        return ThreadPoolExecutor(
            self.threads,
            thread_name_prefix="attnserve-render",
            initializer=lower_priority,
            initargs=(self.nice,),
        )

    async def run(self, function: Callable[..., T], *args: object) -> T:
        executor = self._executor
        try:
            future = executor.submit(function, *args)
        except BrokenProcessPool:  # broken before this call: it never ran, and a new pool takes it
            executor = self._replace(executor)
            future = executor.submit(function, *args)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as error:  # a worker died while this call was in the pool
            self._replace(executor)
            raise RuntimeError("a render worker process stopped during this call") from error

    def _replace(self, broken: Executor) -> Executor:
        """A new pool for a broken one (once, whichever call sees it first)."""
        if self._executor is broken:
            log.error("a render worker process stopped; starting a new one")
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new()
        return self._executor

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
