"""`attnserve serve` and `attnserve triton` as a user runs them: foreground, stopped by signals."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from attnserve import errors
from attnserve._net import free_port
from attnserve.bench.processes import cmdline, descendants, multiprocessing_descendants
from attnserve.clients import Client
from attnserve.demo import repository_of
from attnserve.errors import AttnserveError, Unavailable
from attnserve.settings import DEFAULT_MODEL_REPOSITORY
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def processes_mentioning(text: str) -> list[str]:
    result = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return [pid for pid in result.stdout.split() if int(pid) != os.getpid()]


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(scope="module", autouse=True)
def _one_model() -> Iterator[None]:
    """What serve does on a signal, a Triton death or a log nobody reads does not depend on how
    many models it serves: the servers here serve cbam alone (ready in ~6 s rather than ~16 s)."""
    with (
        repository_of(DEFAULT_MODEL_REPOSITORY, ["cbam"]) as repository,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv("ATTNSERVE_TRITON__MODEL_REPOSITORY", str(repository))
        yield


@pytest.fixture(autouse=True)
def _stop_what_a_failed_test_left() -> Iterator[None]:
    """A test that fails half-way leaves no server (nor its Triton) running into the next one:
    SIGTERM lets ``serve`` stop Triton and its stubs before it exits."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # stuck: its group, and Triton's (a group of its own)
                found = (group_of(pid) for pid in descendants(process.pid))
                groups = {group for group in found if group is not None}
                for group in groups | {process.pid}:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                process.wait(timeout=10)


def group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:  # gone meanwhile
        return None


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """As a shell starts a job: the leader of its own process group, in this session."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "attnserve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
            env=env,
        )
    _started.append(process)
    return process


def wait_for(condition: object, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def start_serving(
    tmp_path: Path,
    http_port: int | None = None,
    metrics_port: int | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int, str, Path]:
    """`attnserve serve` on free ports (Triton's HTTP and metrics ports as given), once SERVING:
    (process, Triton gRPC port, gateway address, log)."""
    grpc_port, gateway_port = free_port(), free_port()
    args = [
        "serve",
        f"--http-port={http_port or free_port()}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port or free_port()}",
        "--gateway-metrics-port=0",
        f"--port={gateway_port}",
        f"--gateway-http-port={free_port()}",
    ]
    log = tmp_path / "serve.log"
    process = start(args, log, None if env is None else {**os.environ, **env})
    address = f"127.0.0.1:{gateway_port}"
    with Client(address) as client:
        wait_for(lambda: client.health() == "SERVING", process, log)
    return process, grpc_port, address, log


def autogroup(pid: int) -> str | None:
    """The scheduler's group of ``pid``'s session (``CONFIG_SCHED_AUTOGROUP``): None where the
    kernel has no autogroups, "root" where the file is empty (they are switched off,
    ``kernel.sched_autogroup_enabled=0``, or the session never had one: all share the root group)."""
    try:
        fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    return fields[0] if fields else "root"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_triton_and_the_gateway_on_a_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    process, grpc_port, address, log = start_serving(tmp_path)
    with Client(address) as client:
        assert client.predict(Path("docs/samples/digit.png").resolve()).predictions
    triton = triton_pid(grpc_port)
    # Triton leads a process group of its own, so a terminal's Ctrl-C reaches only the gateway,
    # but it stays in serve's session: the kernel shares a core between sessions, not threads
    assert os.getpgid(triton) == triton != os.getpgid(process.pid)
    assert os.getsid(triton) == os.getsid(process.pid)
    assert autogroup(triton) == autogroup(process.pid)
    if stop_signal == signal.SIGINT:
        os.killpg(process.pid, stop_signal)  # as a terminal's Ctrl-C: the whole foreground group
    else:
        process.send_signal(stop_signal)  # as a supervisor
    assert process.wait(timeout=60) == 0, log.read_text()
    assert processes_mentioning(f"grpc-port={grpc_port}") == []  # tritonserver and its stubs are gone
    text = log.read_text()
    assert "Traceback" not in text
    assert "event loop: uvloop.Loop" in text  # the default, whose signal handling this test covers


def test_render_worker_processes_draw_overlays_and_stop_with_serve(tmp_path: Path) -> None:
    """``render_processes``: overlays drawn in a worker process of the gateway's, a worker killed
    is replaced, and a terminal's Ctrl-C (the whole group) stops serve, Triton and the workers
    cleanly."""
    process, grpc_port, address, log = start_serving(
        tmp_path, env={"ATTNSERVE_GATEWAY__RENDER_PROCESSES": "1"}
    )
    photo = Path("docs/samples/photo_digit.png").resolve()
    with Client(address) as client:
        drawn = client.predict(photo, maps=["primary"], forms=["overlay_png"])
        assert drawn.attention[0].overlay_png.startswith(b"\x89PNG")
        (worker,) = [pid for pid in multiprocessing_descendants(process.pid) if b"spawn_main" in cmdline(pid)]
        os.kill(worker, signal.SIGKILL)
        outcomes = []
        for _ in range(3):  # the call that finds the pool broken may fail; the next ones are drawn
            try:
                outcomes.append(
                    bool(
                        client.predict(photo, maps=["primary"], forms=["overlay_png"])
                        .attention[0]
                        .overlay_png
                    )
                )
            except AttnserveError as error:
                outcomes.append(type(error).__name__)
        assert outcomes[-2:] == [True, True] and outcomes.count(True) >= 2, outcomes
        assert client.predict(Path("docs/samples/digit.png").resolve()).predictions
    assert multiprocessing_descendants(process.pid)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0, log.read_text()
    assert multiprocessing_descendants(process.pid) == [] and processes_mentioning("spawn_main") == []
    assert processes_mentioning(f"grpc-port={grpc_port}") == []
    text = log.read_text()  # a call the dead worker held was INTERNAL and logged with its cause
    assert text.count("Traceback") <= text.count("render worker process stopped during this call")


def triton_pid(grpc_port: int) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"tritonserver.*grpc-port={grpc_port}"], capture_output=True, text=True
    )
    (pid,) = found.stdout.split()
    return int(pid)


def shared_memory_of(grpc_port: int) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"attnserve_triton_{grpc_port}_*")]


def triton_is_ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=0.5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def triton_inferences(metrics_port: int) -> int:
    """Inference requests Triton has answered, over all models (reset when Triton restarts)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    counters = ("nv_inference_request_success{", "nv_inference_request_failure{")
    return round(
        sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(counters))
    )


@dataclass(frozen=True)
class Call:
    started: float
    seconds: float
    outcome: str
    """"ok", or the error's type."""
    detail: str = ""


class SteadyLoad:
    """One client sending predictions back to back, at most ``rate`` a second, each one recorded."""

    def __init__(self, address: str, image: Path, rate: float = 40.0) -> None:
        self.address, self.image, self.period = address, image, 1 / rate
        self.calls: list[Call] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def _run(self) -> None:
        with Client(self.address, timeout_s=5) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    client.predict(self.image, omit_attention=True)
                    call = Call(started, time.monotonic() - started, "ok")
                except AttnserveError as exc:
                    call = Call(started, time.monotonic() - started, type(exc).__name__, str(exc))
                self.calls.append(call)
                self.stop.wait(max(0.0, started + self.period - time.monotonic()))

    def between(self, start: float, end: float = float("inf")) -> list[Call]:
        return [c for c in self.calls if start <= c.started < end]

    def __enter__(self) -> SteadyLoad:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_serve_restarts_triton_when_it_dies_and_keeps_the_gateway_up(tmp_path: Path) -> None:
    """Triton SIGKILLed under a steady load: calls fail fast with UNAVAILABLE, health turns
    NOT_SERVING, Triton is restarted, and the gateway serves again, calling Triton once per call."""
    http_port, metrics_port = free_port(), free_port()
    process, grpc_port, address, log = start_serving(tmp_path, http_port, metrics_port)
    recovery_under_load(process, grpc_port, address, log, http_port, metrics_port)  # and stops it
    assert processes_mentioning(f"grpc-port={grpc_port}") == []
    assert shared_memory_of(grpc_port) == []


def recovery_under_load(
    process: subprocess.Popen[bytes],
    grpc_port: int,
    address: str,
    log: Path,
    http_port: int,
    metrics_port: int,
) -> None:
    sample = Path("docs/samples/digit.png").resolve()
    assert shared_memory_of(grpc_port), "the Python backend's regions carry this Triton's prefix"
    first = triton_pid(grpc_port)
    with Client(address, timeout_s=10) as client, SteadyLoad(address, sample) as load:
        time.sleep(1.0)
        killed = time.monotonic()
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: client.health() == "NOT_SERVING", process, log, timeout_s=5)
        not_serving_after = time.monotonic() - killed
        wait_for(lambda: triton_is_ready(http_port), process, log)  # the restarted one: the first is dead
        ready = time.monotonic()
        wait_for(lambda: client.health() == "SERVING", process, log, timeout_s=30)
        serving = time.monotonic()
        time.sleep(max(0.0, ready + 5.0 - time.monotonic(), serving + 1.0 - time.monotonic()))
        window = (time.monotonic(), triton_inferences(metrics_port))
        time.sleep(5.0)
        window_end = time.monotonic()
        triton_calls = triton_inferences(metrics_port) - window[1]
        assert client.predict(sample).predictions[0].label == "6"

    outage = [c for c in load.between(killed, serving) if c.outcome != "ok"]
    latencies = sorted(c.seconds for c in outage)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    after_triton = load.between(ready + 5.0)  # the target: 5 s after Triton is ready
    triton_success = sum(c.outcome == "ok" for c in after_triton) / max(1, len(after_triton))
    recovered = load.between(serving)
    success = sum(c.outcome == "ok" for c in recovered) / max(1, len(recovered))
    client_calls = len(load.between(window[0], window_end))
    figures = (
        f"outage: {len(outage)} failed calls, p99 {p99 * 1e3:.1f} ms, "
        f"max {max(latencies, default=0.0) * 1e3:.1f} ms, outcomes {sorted({c.outcome for c in outage})}; "
        f"NOT_SERVING {not_serving_after:.2f} s after the kill; "
        f"SERVING {serving - ready:.2f} s after Triton was ready; calls started 5 s after Triton "
        f"was ready: {triton_success:.1%} of {len(after_triton)} succeeded; started after SERVING: "
        f"{success:.1%} of {len(recovered)}; "
        f"Triton saw {triton_calls} inferences for {client_calls} client calls"
    )
    print(figures)
    assert outage, figures
    assert {c.outcome for c in outage} <= {"Unavailable", "ModelNotReady"}, [c.detail for c in outage]
    assert not [c for c in outage if "127.0.0.1" in c.detail], "outage errors do not reveal Triton's address"
    assert p99 < 0.1, figures
    assert not_serving_after <= 2.0, figures
    assert len(after_triton) >= 50 and triton_success >= 0.99, figures
    assert serving - ready < 3.0, figures  # reconnect backoff ≤ 1 s plus the health interval
    assert triton_calls <= 1.1 * client_calls + 1, figures  # +1: a call in flight at a counter's read

    assert triton_pid(grpc_port) != first
    text = log.read_text()
    assert "restarting it in" in text and "tritonserver restarted" in text
    assert "removed" in text and "shared-memory regions" in text
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, text


def test_serve_gives_up_when_triton_keeps_dying(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(Path("model_repository/cbam"), repository / "cbam")
    grpc_port, gateway_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    args = ["serve", f"--repository={repository}", f"--http-port={free_port()}",
            f"--grpc-port={grpc_port}", f"--metrics-port={free_port()}", "--gateway-metrics-port=0",
            f"--port={gateway_port}"]  # fmt: skip
    process = start(args, log, env={**os.environ, "ATTNSERVE_TRITON__RESTART_BACKOFF_S": "[0.2, 0.2]"})
    with Client(f"127.0.0.1:{gateway_port}") as client:
        wait_for(lambda: client.health() == "SERVING", process, log)
    shutil.rmtree(repository)  # every restart now fails
    os.kill(triton_pid(grpc_port), signal.SIGKILL)
    assert process.wait(timeout=60) == 1
    assert "after 2 restarts in a row; giving up" in log.read_text()
    assert processes_mentioning(f"grpc-port={grpc_port}") == []


def test_triton_command_serves_until_interrupted(tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "triton.log"
    process = start(
        ["triton", f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={free_port()}"],
        log,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{http_port}/v2/models/cbam/ready", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(ready, process, log)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, log.read_text()
    assert processes_mentioning(f"grpc-port={grpc_port}") == []


def test_a_gateway_whose_output_nobody_reads_keeps_answering(tmp_path: Path) -> None:
    """A log reader that falls behind blocks the writer (Docker's default log delivery does; so
    does a full pipe), and every invalid call is a log line. The lines are written by a thread of
    their own: 3,000 invalid calls (~500 KB of log, a pipe holds 64 KB) are all answered, a
    prediction after them too, and once the output is read again every line is in it. A burst's
    admission refusals (one call in flight at most here) are one whole line and a count."""
    grpc_port, gateway_port = free_port(), free_port()
    args = ["serve", f"--http-port={free_port()}", f"--grpc-port={grpc_port}",
            f"--metrics-port={free_port()}", "--gateway-metrics-port=0", f"--port={gateway_port}",
            f"--gateway-http-port={free_port()}"]  # fmt: skip
    command = [sys.executable, "-m", "attnserve", *args]
    # stdout and stderr into a pipe that is not read for now
    env = dict(os.environ, ATTNSERVE_GATEWAY__MAX_IN_FLIGHT="1")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0, env=env
    )
    _started.append(process)
    assert process.stdout is not None
    with process.stdout:
        outcomes: Counter[str] = Counter()
        with Client(f"127.0.0.1:{gateway_port}", timeout_s=10) as client:
            deadline = time.monotonic() + 120
            while client.health() != "SERVING":
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            for _ in range(3_000):
                try:
                    client.predict(b"not an image")
                    outcomes["answered"] += 1
                except AttnserveError as exc:
                    outcomes[type(exc).__name__] += 1
                if len(outcomes) > 1:  # a call not answered INVALID_ARGUMENT: the gateway stalled
                    break
            assert client.predict(Path("docs/samples/digit.png").read_bytes()).predictions
        with grpc.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:  # 40 at once
            stub = pb_grpc.AttentionServiceStub(channel)
            request = pb.PredictRequest(image=Path("docs/samples/digit.png").read_bytes())
            calls = [stub.Predict.future(request, timeout=30) for _ in range(40)]
            codes = Counter(call.code() for call in calls)
        refused = codes[grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert refused > 1 and set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        (kind,) = outcomes
        assert issubclass(getattr(errors, kind), errors.InvalidInput) and outcomes[kind] == 3_000, outcomes
        output: list[bytes] = []
        reader = threading.Thread(target=lambda: output.append(process.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        reader.join(timeout=60)
        text = output[0].decode()
        assert text.count("Predict: UnsupportedMedia: the bytes are not an image") == 3_000, text[-2000:]
        assert "log lines dropped" not in text and "Traceback" not in text
        assert text.count("Predict: Overloaded: ") == 1, text[-2000:]  # the first, whole
        assert f"{refused - 1} more calls refused in the" in text, text[-2000:]  # the others, counted


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "serve.log"
        process = start(
            [
                "serve",
                f"--grpc-port={port}",
                f"--http-port={free_port()}",
                f"--metrics-port={free_port()}",
                f"--port={free_port()}",
            ],
            log,
        )
        assert process.wait(timeout=60) == 1
    output = log.read_text().strip().splitlines()
    expected = (
        f"attnserve serve: Triton gRPC port {port} on 127.0.0.1 is not available (Address already in use): "
        "stop what uses it or choose another port"
    )
    assert output[-1] == expected


def test_sigterm_under_load_drains_in_flight_work_and_refuses_the_rest(tmp_path: Path) -> None:
    import threading

    from attnserve.clients import HttpClient
    from attnserve.errors import AttnserveError

    http_port = free_port()
    grpc_port, gateway_port = free_port(), free_port()
    args = ["serve", f"--http-port={free_port()}", f"--grpc-port={grpc_port}",
            f"--metrics-port={free_port()}", "--gateway-metrics-port=0", f"--port={gateway_port}",
            f"--gateway-http-port={http_port}"]  # fmt: skip
    log = tmp_path / "serve.log"
    process = start(args, log)
    address = f"127.0.0.1:{gateway_port}"
    with Client(address) as client:
        wait_for(lambda: client.health() == "SERVING", process, log)
    sample = Path("docs/samples/digit.png").read_bytes()
    stop = threading.Event()
    outcomes: list[str] = []
    details: list[str] = []

    def load(make_client: object) -> None:
        with make_client() as client:  # type: ignore[operator]
            while not stop.is_set():
                try:
                    client.predict(sample, maps=["primary"], forms=["overlay_png"])
                    outcomes.append("ok")
                except AttnserveError as exc:
                    outcomes.append(type(exc).__name__)
                    if not isinstance(exc, Unavailable):
                        details.append(f"{type(client).__name__}: {exc}")
                    time.sleep(0.05)

    workers = [threading.Thread(target=load, args=(lambda: Client(address, timeout_s=10),)) for _ in range(3)]
    workers.append(threading.Thread(target=load, args=(lambda: HttpClient(f"http://127.0.0.1:{http_port}"),)))
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    served_before = outcomes.count("ok")
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    exited_after = time.monotonic() - signalled
    time.sleep(0.5)
    stop.set()
    for worker in workers:
        worker.join(30)
    text = log.read_text()
    assert code == 0, text
    assert served_before > 0
    # the gateway's own code never failed: no unexpected exception, no INTERNAL of ours
    assert "Traceback" not in text and "failed unexpectedly" not in text, text
    assert not [d for d in details if "the gateway log has the details" in d], details
    # refusals after SIGTERM are UNAVAILABLE; a call racing the socket's close may instead see the
    # transport's own reset (seen once in CI, as UpstreamError): tolerated, and shown
    failures = {o for o in outcomes if o != "ok"}
    assert failures <= {"Unavailable", "UpstreamError"}, details
    assert outcomes.count("UpstreamError") <= 2, details
    assert processes_mentioning(f"grpc-port={grpc_port}") == []
    assert shared_memory_of(grpc_port) == []
    print(
        f"{served_before} answers before SIGTERM; exit {exited_after:.1f} s after; {set(outcomes)} {details}"
    )
    assert exited_after < 5.0 + 10.0, "the drain (5 s) and Triton's exit timeout bound the stop"
