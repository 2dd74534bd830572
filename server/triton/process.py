"""Runs `tritonserver` as a child process: checked before start, ready when Triton says so,
stopped with its whole process group (the Python backend's stubs included).

That group is Triton's own, so a terminal's Ctrl-C reaches only the gateway, which drains and then
stops Triton; but it lives in the starter's session. With ``CONFIG_SCHED_AUTOGROUP`` (on in
Debian's and Ubuntu's kernels; it does not apply inside a container's own CPU cgroup) the scheduler
groups each session and shares a core between the groups, not between their threads. A Triton in a
session of its own, on one core with the gateway, spent 30–39 ms in ``session.run`` for 3.8 ms of
CPU on the one call admitted from a burst while the gateway refused the other 39: a tenth of the
core. Nice values do not cross the groups (Triton's threads at nice −10 changed nothing). In the
gateway's session the same call took 7 ms (docs/overload.md, "Triton in the gateway's session").

Ports bind to loopback by default and the model-control API stays off (``--model-control-mode
none``): the repository is what was there at start-up, unless it is watched
(``watch_repository``: explicit model control, every model loaded at start, the gateway loads
the changes). If the parent dies without stopping it, the kernel sends Triton SIGTERM
(``PR_SET_PDEATHSIG``), so no orphan keeps the ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from attnserve.errors import SetupError
from attnserve.settings import TritonSettings

from .runtime import TritonRuntime, ensure_runtime

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SetupError(
                f"{what} port {port} on {host} is not available ({exc.strerror}): "
                "stop what uses it or choose another port"
            ) from None


def check_shared_memory(path: Path = Path("/dev/shm")) -> None:
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise SetupError(
            f"{path} is missing or not writable: Triton's Python backend exchanges tensors "
            "through shared memory (in a container: --shm-size=256m or a tmpfs on /dev/shm)"
        )


def check_repository(repository: Path) -> None:
    if not repository.is_dir():
        raise SetupError(
            f"model repository {repository} does not exist: pass --repository PATH "
            "or set ATTNSERVE_TRITON__MODEL_REPOSITORY"
        )
    if not any((child / "config.pbtxt").is_file() for child in repository.iterdir()):
        raise SetupError(f"model repository {repository} holds no model (no */config.pbtxt)")


class TritonProcess:
    """``with TritonProcess(settings) as triton:`` starts Triton and waits until it is ready."""

    def __init__(
        self,
        settings: TritonSettings,
        log_path: Path | None = None,
        server_args: Sequence[str] | None = None,
    ) -> None:
        """``server_args``: Triton's flags as a deployment gives them (the compose file's, say)
        instead of attnserve's own; the local backend directory, addresses and ports follow."""
        self.settings = settings
        self.log_path = log_path or settings.runtime_dir / "logs" / f"tritonserver-{settings.grpc_port}.log"
        self.shm_prefix = f"attnserve_triton_{settings.grpc_port}_"
        self.server_args = list(server_args) if server_args is not None else self.default_server_args()
        self.process: subprocess.Popen[bytes] | None = None

    def default_server_args(self) -> list[str]:
        s = self.settings
        return [
            f"--model-repository={s.model_repository.resolve()}",
            *self.model_control_args(),
            # our own prefix for the Python backend's shared-memory regions, so that what a
            # crashed Triton leaves in /dev/shm can be found and removed (`stop`)
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            f"--log-verbose={s.log_verbose}",
        ]

    def model_control_args(self) -> list[str]:
        """Model control stays off unless the repository is watched; then Triton loads every
        model at start, as without it, and the gateway loads, reloads and unloads the rest
        (`attnserve.server.gateway.reloader`) through the API on loopback."""
        if not self.settings.watch_repository:
            return ["--model-control-mode=none", "--strict-readiness=true"]
        # strict readiness would make the whole server not ready while any model (re)loads; the
        # gateway reads each model's readiness from the index instead
        return ["--model-control-mode=explicit", "--load-model=*", "--strict-readiness=false"]

    @property
    def ready_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.http_port}/v2/health/ready"

    def command(self, runtime: TritonRuntime) -> list[str]:
        s = self.settings
        return [
            str(runtime.tritonserver),
            *self.server_args,
            f"--backend-directory={runtime.backends_dir}",
            f"--http-address={s.host}",
            f"--http-port={s.http_port}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.metrics_port}",
        ]

    def start(self) -> None:
        s = self.settings
        check_shared_memory()
        check_repository(s.model_repository)
        for what, port in (
            ("Triton HTTP", s.http_port),
            ("Triton gRPC", s.grpc_port),
            ("Triton metrics", s.metrics_port),
        ):
            check_port_free(s.host, port, what)
        runtime = ensure_runtime(s)
        env = {
            **os.environ,
            # The stub takes its Python environment from the first python3 on PATH.
            "PATH": f"{runtime.python_bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "LD_LIBRARY_PATH": os.pathsep.join(
                p for p in (str(runtime.library_dir), os.environ.get("LD_LIBRARY_PATH", "")) if p
            ),
        }
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                self.command(runtime),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,  # not a session of its own: the module's docstring
                preexec_fn=_die_with_parent,
            )
        log.info("tritonserver pid %d, log %s", self.process.pid, self.log_path)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SetupError(
                    f"tritonserver exited with code {self.process.returncode} while starting:\n"
                    + self.log_tail()
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        raise SetupError(
            f"tritonserver was not ready within {self.settings.startup_timeout_s:.0f} s:\n" + self.log_tail()
        )

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        relevant = [line for line in text.splitlines() if "NVML" not in line and "DCGM" not in line]
        return "\n".join(relevant[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to Triton and its stubs; SIGKILL whatever is left after ``timeout_s``."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop in %.0f s; killing it", timeout_s)
        # Stubs share Triton's process group: nothing of it may outlive the stop.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self.remove_shared_memory()

    def remove_shared_memory(self, folder: Path = Path("/dev/shm")) -> int:
        """Removes the shared-memory regions this Triton left (after a crash); returns how many."""
        removed = 0
        for region in folder.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(FileNotFoundError):
                region.unlink()
                removed += 1
        if removed:
            log.warning("removed %d shared-memory regions tritonserver left in %s", removed, folder)
        return removed

    def __enter__(self) -> TritonProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
