"""Logs that never hold up serving: written by a thread of their own, and refusals summarised.

- `configure_logging`: every record is formatted where it is logged (with its request ID) and
  queued; a thread of its own writes the lines, many a write (`LineWriter`). A reader of stderr
  that falls behind (Docker's default log delivery blocks the writer; a full pipe does) then
  slows no call: before, the event loop itself waited in ``write``. Lines beyond the queue are
  dropped, counted, and said in one line when there is room again.
- `RefusalLog`: admission refusals (RESOURCE_EXHAUSTED, HTTP 429) come by the thousand under
  overload, when a line each costs the event loop most (about a tenth of a refusal's CPU,
  docs/overload.md). The first refusal after a quiet ``interval_s`` is logged whole, with its
  request ID; the others are counted and summed up in one line per interval. The metrics still
  count each one (``attnserve_rejected_total``).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from .request_ids import LOG_FORMAT, RequestIdFilter

QUEUED_LINES = 10_000
"""Log lines waiting for the writer thread at most (~200 bytes each)."""
PAUSE_S = 0.01
"""The writer's pause after each write. A line logged while the writer waits wakes it, and a
thread woken per line costs the event loop more than the line itself (a thread switch and the
GIL's hand-over): waking at most this often keeps a line's cost below a write of its own."""


class LineWriter(logging.Handler):
    """Formats each record on the thread that logs it (where its request ID is) and queues the
    line without ever waiting; a thread of its own writes what is queued, many lines a write. A
    line beyond ``limit`` queued is dropped and counted, and the next one that fits is preceded
    by a line that says how many. `stop` writes what is queued and ends the thread; from then on
    each line is written where it is logged. Closing the handler does not stop the thread: a
    library that reconfigures logging closes every handler (uvicorn's `dictConfig` does), and
    the root logger keeps this one."""

    def __init__(self, stream: TextIO, limit: int = QUEUED_LINES) -> None:
        super().__init__()
        self.stream, self.limit = stream, limit
        self.dropped = 0
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._write, name="attnserve-log-writer", daemon=True
        )
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._thread is None:  # stopped (at exit): written here and now
            self._write_lines([line])
            return
        if self._lines.qsize() >= self.limit:
            self.dropped += 1
            return
        if self.dropped:
            self._lines.put(self.format(self._dropped_notice()))
            self.dropped = 0
        self._lines.put(line)

    def _dropped_notice(self) -> logging.LogRecord:
        notice = logging.LogRecord(
            __name__,
            logging.WARNING,
            __file__,
            0,
            f"{self.dropped:,} log lines dropped: the log stream was not read as fast as they came",
            None,
            None,
        )
        notice.request_id = "-"
        return notice

    def _write(self) -> None:
        while True:
            batch: list[str] = []
            line = self._lines.get()  # waits for a line; then takes all that are queued
            while line is not None:
                batch.append(line)
                if self._lines.empty():  # the only reader: nothing is taken meanwhile
                    break
                line = self._lines.get_nowait()
            self._write_lines(batch)
            if line is None:  # stopped
                return
            time.sleep(PAUSE_S)  # lines gather meanwhile: at most 1 / PAUSE_S wake-ups a second

    def _write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception:  # a closed stream: nothing to write to any more
            pass

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._lines.put(None)
            thread.join()


_writer: LineWriter | None = None


def configure_logging(level: str, stream: TextIO, force: bool = False) -> LineWriter | None:
    """The root logger: lines with the request ID, written to ``stream`` by a thread of their
    own (`LineWriter`, stopped at exit). Returns it, or None where the root logger has handlers
    already (an embedding program's, a test runner's) and ``force`` is not set: those are left
    as they are, as `logging.basicConfig` does."""
    if logging.getLogger().handlers and not force:
        return None
    global _writer
    stop_writing()  # configured again (a test calling the CLI twice): one writer thread
    _writer = LineWriter(stream)
    _writer.setFormatter(logging.Formatter(LOG_FORMAT))
    _writer.addFilter(RequestIdFilter())  # on the caller's thread: the ID is a context variable
    logging.basicConfig(level=level.upper(), handlers=[_writer], force=True)
    return _writer


@atexit.register
def stop_writing() -> None:
    """Writes what is queued and stops the writer thread (at exit, before logging shuts down)."""
    if _writer is not None:
        _writer.stop()


class RefusalLog:
    """Admission refusals, logged at most one whole line and one summary per ``interval_s``."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._since = -float("inf")
        self._counts: Counter[str] = Counter()

    def refused(self, log: logging.Logger, where: str, error: BaseException) -> None:
        now = self.clock()
        with self._lock:
            if now - self._since < self.interval_s:
                self._counts[where] += 1
                return
            summary = self._take(now)
            self._since = now
        if summary:
            log.info("%s", summary)
        log.info("%s: %s: %s", where, type(error).__name__, error)

    def flush(self, log: logging.Logger, final: bool = False) -> None:
        """Writes the summary of the interval that is over, if any (call it now and then: the
        gateway does once a second, so that a burst's count appears when the burst ends);
        ``final``: of the interval under way too (the gateway is stopping)."""
        now = self.clock()
        with self._lock:
            if now - self._since < self.interval_s and not final:
                return
            summary = self._take(now)
        if summary:
            log.info("%s", summary)

    def _take(self, now: float) -> str | None:
        if not self._counts:
            return None
        total = sum(self._counts.values())
        each = ", ".join(f"{where} {count:,}" for where, count in self._counts.most_common())
        self._counts.clear()
        since = now - self._since
        return f"{total:,} more calls refused in the {since:.1f} s since the last one logged: {each}"


REFUSALS = RefusalLog()
"""The process's refusal log (`attnserve.errors.log_failure` writes to it)."""
