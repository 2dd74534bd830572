"""`attnserve serve` and `attnserve triton` as a user runs them: foreground, stopped by signals."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from attnserve._net import free_port
from attnserve.clients import Client

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def processes_mentioning(text: str) -> list[str]:
    result = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return [pid for pid in result.stdout.split() if int(pid) != os.getpid()]


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "attnserve", *args], stdout=out, stderr=subprocess.STDOUT
        )


def wait_for(condition: object, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def start_serving(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, str, Path]:
    """`attnserve serve` on free ports, once SERVING: (process, Triton gRPC port, gateway address, log)."""
    grpc_port, gateway_port = free_port(), free_port()
    args = [
        "serve",
        f"--http-port={free_port()}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={free_port()}",
        "--gateway-metrics-port=0",
        f"--port={gateway_port}",
    ]
    log = tmp_path / "serve.log"
    process = start(args, log)
    address = f"127.0.0.1:{gateway_port}"
    with Client(address) as client:
        wait_for(lambda: client.health() == "SERVING", process, log)
    return process, grpc_port, address, log


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_triton_and_the_gateway_on_a_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    process, grpc_port, address, log = start_serving(tmp_path)
    with Client(address) as client:
        assert client.predict(Path("docs/samples/digit.png").resolve()).predictions
    process.send_signal(stop_signal)
    assert process.wait(timeout=60) == 0, log.read_text()
    assert processes_mentioning(f"grpc-port={grpc_port}") == []  # tritonserver and its stubs are gone
    assert "Traceback" not in log.read_text()


def test_serve_exits_non_zero_when_triton_dies(tmp_path: Path) -> None:
    process, grpc_port, _, log = start_serving(tmp_path)
    (triton_pid,) = subprocess.run(
        ["pgrep", "-f", f"tritonserver.*grpc-port={grpc_port}"], capture_output=True, text=True
    ).stdout.split()
    os.kill(int(triton_pid), signal.SIGKILL)
    assert process.wait(timeout=60) == 1
    assert "tritonserver exited unexpectedly" in log.read_text()
    time.sleep(1)
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
