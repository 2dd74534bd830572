"""The gateway's logs: written by a thread of their own, so that a stalled reader holds up no
call, and admission refusals summed up instead of a line each."""

from __future__ import annotations

import contextvars
import logging
import logging.config
import threading
import time
from collections.abc import Iterator

import pytest

from attnserve import logs, request_ids
from attnserve.errors import InvalidInput, Overloaded, log_failure


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Records]]:
    log = logging.getLogger("attnserve.test_logs")
    records = Records()
    log.addHandler(records)
    log.setLevel(logging.INFO)
    try:
        yield log, records
    finally:
        log.removeHandler(records)


def test_refusals_are_one_whole_line_then_a_count_per_interval(
    captured: tuple[logging.Logger, Records],
) -> None:
    log, records = captured
    now = [100.0]
    refusals = logs.RefusalLog(interval_s=1.0, clock=lambda: now[0])
    refusal = Overloaded("4 predictions are in flight; retry in 50 ms", retry_after_s=0.05)
    refusals.refused(log, "Predict", refusal)  # the first after a quiet spell: whole
    for _ in range(39):  # the rest of a burst: counted
        now[0] += 0.001
        refusals.refused(log, "Predict", refusal)
    refusals.refused(log, "http Predict", refusal)
    assert records.lines == ["Predict: Overloaded: 4 predictions are in flight; retry in 50 ms"]
    refusals.flush(log)  # within the interval: nothing yet
    assert len(records.lines) == 1
    now[0] = 101.0
    refusals.flush(log)  # the interval is over: the burst's count
    summary = "40 more calls refused in the 1.0 s since the last one logged: Predict 39, http Predict 1"
    assert records.lines[1] == summary
    refusals.flush(log)  # said once
    now[0] = 101.5
    refusals.refused(log, "Predict", refusal)  # a second after the last whole line: whole again
    now[0] = 101.6
    refusals.refused(log, "Predict", refusal)
    refusals.flush(log, final=True)  # the gateway stops: what is counted is said at once
    assert records.lines[2:] == [
        "Predict: Overloaded: 4 predictions are in flight; retry in 50 ms",
        "1 more calls refused in the 0.1 s since the last one logged: Predict 1",
    ]


def test_only_refusals_are_summarised(
    captured: tuple[logging.Logger, Records], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, records = captured
    monkeypatch.setattr(logs, "REFUSALS", logs.RefusalLog())
    monkeypatch.setattr("attnserve.errors.REFUSALS", logs.REFUSALS)
    for _ in range(3):
        log_failure(log, "Predict", InvalidInput("not an image"))
        log_failure(log, "Predict", Overloaded("busy", retry_after_s=0.05))
    invalid, refused = "Predict: InvalidInput: not an image", "Predict: Overloaded: busy"
    assert records.lines == [invalid, refused, invalid, invalid]  # each invalid call, one refusal


class StalledStream:
    """A stream whose reader has stopped: ``write`` waits until ``resume``."""

    def __init__(self) -> None:
        self.resumed = threading.Event()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.resumed.wait()
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        logs.stop_writing()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("root_restored")
def test_a_stalled_log_stream_holds_up_no_caller_and_what_is_dropped_is_said() -> None:
    stream = StalledStream()
    writer = logs.configure_logging("INFO", stream, force=True)  # type: ignore[arg-type]
    assert writer is not None
    log = logging.getLogger("attnserve.test_logs.stalled")
    lines = logs.QUEUED_LINES + 5_000

    def burst() -> None:
        for i in range(lines):
            log.info("line %d", i)

    caller = threading.Thread(target=burst)
    caller.start()
    caller.join(timeout=60)
    stalled = caller.is_alive()
    stream.resumed.set()  # (so that a failing test does not leave the caller waiting)
    caller.join(timeout=60)
    assert not stalled, "a caller waited for the log stream"
    while writer._lines.qsize():  # the writer catches up
        time.sleep(0.01)
    # in a request's context: the ID is read where the line is logged, not by the writer thread
    contextvars.copy_context().run(lambda: (request_ids.bind("abc123"), log.warning("after the stall")))
    writer.stop()  # writes what is queued
    written = "".join(stream.written).splitlines()
    burst_lines = [line for line in written if ": line " in line]
    (notice,) = [line for line in written if "log lines dropped" in line]
    dropped = int(notice.split(": ")[1].split()[0].replace(",", ""))
    assert dropped > 0 and len(burst_lines) + dropped == lines, (len(burst_lines), dropped)
    assert written.index(notice) == len(written) - 2  # said before the first line that fitted again
    assert written[-1].endswith("WARNING attnserve.test_logs.stalled [abc123]: after the stall")
    assert burst_lines[0].endswith("INFO attnserve.test_logs.stalled [-]: line 0")


@pytest.mark.usefixtures("root_restored")
def test_configuring_again_keeps_one_writer_thread() -> None:
    first = logs.configure_logging("INFO", StalledStream(), force=True)  # type: ignore[arg-type]
    second = logs.configure_logging("INFO", StalledStream(), force=True)  # type: ignore[arg-type]
    assert first is not None and second is not None
    # the first is stopped: one writer thread
    assert first._thread is None and second._thread is not None and second._thread.is_alive()
    # a root logger with handlers of its own (a test runner's, an embedding program's) is kept
    assert logs.configure_logging("INFO", StalledStream()) is None  # type: ignore[arg-type]
    assert logging.getLogger().handlers == [second]


@pytest.mark.usefixtures("root_restored")
def test_a_traceback_is_written_whole_by_the_writer_thread() -> None:
    stream = StalledStream()
    stream.resumed.set()
    writer = logs.configure_logging("INFO", stream, force=True)  # type: ignore[arg-type]
    assert writer is not None
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log_failure(logging.getLogger("attnserve.test_logs"), "Predict", exc)
    writer.stop()
    text = "".join(stream.written)
    logged = "ERROR attnserve.test_logs [-]: Predict failed unexpectedly\nTraceback (most recent call last):"
    assert logged in text
    assert text.rstrip().endswith("ValueError: boom"), text


@pytest.mark.usefixtures("root_restored")
def test_lines_keep_coming_after_a_library_reconfigures_logging_and_after_the_writer_stops() -> None:
    """uvicorn's `dictConfig` closes every handler (the gateway's HTTP front starts it after the
    CLI configured logging): the writer thread must not end with its handler."""
    stream = StalledStream()
    stream.resumed.set()
    writer = logs.configure_logging("INFO", stream, force=True)  # type: ignore[arg-type]
    assert writer is not None
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    log = logging.getLogger("attnserve.test_logs")
    log.info("after dictConfig")
    writer.stop()
    log.info("after the writer stopped")  # at exit, after the writer: written where it is logged
    assert [line.rsplit(": ", 1)[1] for line in "".join(stream.written).splitlines()] == [
        "after dictConfig",
        "after the writer stopped",
    ]
