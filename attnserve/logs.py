"""Logs that never hold up serving: written by a thread of their own, and refusals summarised.

- `configure_logging`: every record is formatted where it is logged (with its request ID) and
  put on a bounded queue; a thread writes it. A reader of stderr that falls behind (Docker's
  default log delivery blocks the writer; a full pipe does) then slows no call: before, the event
  loop itself waited in ``write``. Records beyond the queue are dropped, counted, and said in one
  line when there is room again.
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
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

from .request_ids import LOG_FORMAT, RequestIdFilter

QUEUED_RECORDS = 10_000
"""Log records waiting for the writer thread at most (each a formatted line, ~200 bytes)."""


_listener: QueueListener | None = None


class DroppingQueueHandler(QueueHandler):
    """Puts records on a bounded queue without ever waiting; a record that does not fit is
    dropped and counted, and the next one that fits is preceded by a line that says how many."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(self._dropped_notice())
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

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


def configure_logging(level: str, stream: TextIO, force: bool = False) -> QueueListener | None:
    """The root logger: lines with the request ID, written to ``stream`` by a thread of their
    own (stopped, and what is queued written, at exit). Returns that thread's listener, or None
    where the root logger has handlers already (an embedding program's, a test runner's) and
    ``force`` is not set: those are left as they are, as `logging.basicConfig` does."""
    if logging.getLogger().handlers and not force:
        return None
    records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUED_RECORDS)
    intake = DroppingQueueHandler(records)
    intake.addFilter(RequestIdFilter())  # on the caller's thread: the ID is a context variable
    intake.setFormatter(logging.Formatter("%(message)s"))  # the message (and any traceback) only
    writer = logging.StreamHandler(stream)
    writer.setFormatter(logging.Formatter(LOG_FORMAT))
    listener = QueueListener(records, writer)
    global _listener
    stop_writing()  # configured again (a test calling the CLI twice): one writer thread
    logging.basicConfig(level=level.upper(), handlers=[intake], force=True)
    listener.start()
    _listener = listener
    return listener


@atexit.register
def stop_writing() -> None:
    """Writes what is queued and stops the writer thread (at exit, or before configuring again)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


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
