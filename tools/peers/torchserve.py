"""Peer 2: TorchServe serving the same checkpoint, ``/predictions`` and ``/explanations``.

TorchServe lives in its own environment (`tools/peers/torchserve_setup.sh` → .venv-torchserve),
never in attnserve's install; without it `torchserve_bench` answers ``{"skipped": reason}``.
With it, one call archives the checkpoint with `tools/peers/torchserve_handler.py`
(torch-model-archiver, into a temporary model store), starts TorchServe on free loopback ports
(its logs, pid file and store in that temporary folder), checks that its logits equal ours on
the image, measures both endpoints in closed loops at the asked concurrency and stops it: the
whole process group, so no Java frontend or Python worker outlives the call.

    bash tools/peers/torchserve_setup.sh                        # once: ~1.5 min, ~1.2 GB
    PYTHONPATH=tools .venv/bin/python -m peers torchserve       # c=1 and c=4, 10 s each
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from attnserve._net import free_port

from ._timing import Call, time_concurrent
from .gradcam import DEFAULT_MODEL_DIR, REPO_ROOT, TorchPeer

TORCHSERVE_VENV = REPO_ROOT / ".venv-torchserve"
HANDLER = Path(__file__).resolve().parent / "torchserve_handler.py"
MODEL_NAME = "attnserve"
LOGITS_HEADER = "x-attnserve-logits"
STARTUP_TIMEOUT_S = 180.0
WARMUP_CALLS = 10


def torchserve_skip_reason(venv: Path = TORCHSERVE_VENV) -> str | None:
    """Why TorchServe cannot run here, or None when it can."""
    missing = [name for name in ("torchserve", "torch-model-archiver") if not (venv / "bin" / name).is_file()]
    if missing:
        return f"{' and '.join(missing)} not in {venv}: run bash tools/peers/torchserve_setup.sh"
    java = shutil.which("java")
    if java is None:
        return "no java on PATH: TorchServe's frontend needs Java 17+ (tools/peers/torchserve_setup.sh)"
    version = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    major = version.split('"')[1].split(".")[0] if '"' in version else ""
    if not major.isdigit() or int(major) < 17:
        return f"{java} is Java {major or '?'}: TorchServe needs 17+"
    return None


def torchserve_bench(
    image_bytes: bytes,
    seconds: float = 10.0,
    concurrency: int = 1,
    workers: int = 2,
    threads_per_worker: int = 1,
    model_dir: Path = DEFAULT_MODEL_DIR,
    venv: Path = TORCHSERVE_VENV,
) -> dict[str, Any]:
    """TorchServe's ``/predictions`` and ``/explanations`` on ``image_bytes`` for ``seconds``
    each, ``concurrency`` clients in closed loops (one HTTP/1.1 connection each), ``workers``
    model workers of ``threads_per_worker`` torch threads (TorchServe's default is one worker a
    core). ``{"skipped": reason}`` when .venv-torchserve or Java is missing."""
    reason = torchserve_skip_reason(venv)
    if reason is not None:
        return {"skipped": reason}
    load = os.getloadavg()[0]  # others' work on the same cores skews every figure
    reference = TorchPeer.load(model_dir).predict(image_bytes)["logits"][0]
    with tempfile.TemporaryDirectory(prefix="attnserve-torchserve-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        archive_model(venv, Path(model_dir) / "checkpoint.pt", work, workers, threads_per_worker)
        archived = time.perf_counter()
        with running_torchserve(venv, work) as server, ExitStack() as clients:
            ready = time.perf_counter()
            served_logits = server.logits(image_bytes)
            for _ in range(WARMUP_CALLS):
                server.predict(image_bytes)
                server.explain(image_bytes)
            predictions = time_concurrent(
                lambda: server.client_call("predictions", image_bytes, clients), seconds, concurrency
            )
            explanations = time_concurrent(
                lambda: server.client_call("explanations", image_bytes, clients), seconds, concurrency
            )
            prediction_bytes = len(server.predict(image_bytes).content)
            explanation_bytes = len(server.explain(image_bytes).content)
    difference = float((torch.tensor(served_logits) - reference).abs().max())
    return {
        "peer": "TorchServe (custom handler, Captum IntegratedGradients n_steps=15 for explanations)",
        "torchserve": server.version,
        "concurrency": concurrency,
        "workers": workers,
        "threads_per_worker": threads_per_worker,
        "archive_s": round(archived - started, 2),
        "startup_s": round(ready - archived, 2),
        "logits_max_abs_diff": difference,
        "host_load_1m": round(load, 2),
        "predictions": {**predictions.figures(), "bytes": prediction_bytes},
        "explanations": {**explanations.figures(), "bytes": explanation_bytes},
    }


def archive_model(venv: Path, checkpoint: Path, work: Path, workers: int, threads_per_worker: int) -> Path:
    """A .mar of the checkpoint and the handler in ``work/store``, and TorchServe's config."""
    store = work / "store"
    store.mkdir()
    model_config = work / "model-config.yaml"
    model_config.write_text(
        f"minWorkers: {workers}\nmaxWorkers: {workers}\nbatchSize: 1\nresponseTimeout: 120\n"
        f"handler:\n  torch_threads: {threads_per_worker}\n"
    )
    command = [
        str(venv / "bin" / "torch-model-archiver"),
        *("--model-name", MODEL_NAME, "--version", "1.0"),
        *("--serialized-file", str(checkpoint), "--handler", str(HANDLER)),
        *("--config-file", str(model_config), "--export-path", str(store)),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=work)
    return store / f"{MODEL_NAME}.mar"


@dataclass
class TorchServe:
    inference_url: str
    management_url: str
    version: str

    def client_call(self, endpoint: str, image_bytes: bytes, clients: ExitStack) -> Call:
        """A call for one closed-loop client: its own connection (closed with ``clients``), one
        POST per call; a failure is its HTTP status."""
        client = clients.enter_context(httpx.Client(timeout=120.0))
        url = f"{self.inference_url}/{endpoint}/{MODEL_NAME}"

        def call() -> str | None:
            response = client.post(url, content=image_bytes)
            return None if response.status_code == 200 else f"HTTP {response.status_code}"

        return call

    def predict(self, image_bytes: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        url = f"{self.inference_url}/predictions/{MODEL_NAME}"
        response = httpx.post(url, content=image_bytes, headers=headers, timeout=120.0)
        response.raise_for_status()
        return response

    def explain(self, image_bytes: bytes) -> httpx.Response:
        response = httpx.post(
            f"{self.inference_url}/explanations/{MODEL_NAME}", content=image_bytes, timeout=120.0
        )
        response.raise_for_status()
        return response

    def logits(self, image_bytes: bytes) -> list[float]:
        answer = self.predict(image_bytes, headers={LOGITS_HEADER: "1"}).json()
        return [float(v) for v in answer["logits"]]


@contextmanager
def running_torchserve(venv: Path, work: Path) -> Iterator[TorchServe]:
    """TorchServe in the foreground, in its own process group, on free loopback ports, with its
    logs, metrics and pid file under ``work``; stopped (the whole group) on exit."""
    inference_port, management_port, metrics_port = free_port(), free_port(), free_port()
    config = work / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{inference_port}\n"
        f"management_address=http://127.0.0.1:{management_port}\n"
        f"metrics_address=http://127.0.0.1:{metrics_port}\n"
        f"model_store={work / 'store'}\n"
        "disable_token_authorization=true\n"
        "disable_system_metrics=true\n"
        "install_py_dep_per_model=false\n"
    )
    environment = {
        **os.environ,
        # the CLI keeps its pid file in TMPDIR, the frontend its worker sockets in TEMP: per run
        "TMPDIR": str(work),
        "TEMP": str(work),
        "LOG_LOCATION": str(work / "logs"),
        "METRICS_LOCATION": str(work / "logs"),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
    }
    environment.pop("PYTHONPATH", None)
    command = [
        str(venv / "bin" / "torchserve"),
        *("--start", "--foreground", "--ncs"),
        *("--ts-config", str(config), "--model-store", str(work / "store")),
        *("--models", f"{MODEL_NAME}={MODEL_NAME}.mar"),
    ]
    log = (work / "torchserve.out").open("wb")
    # a process group of its own (stopped as one), in this session as `attnserve serve` is in the
    # benchmark's: the kernel shares a core between sessions (autogroups, docs/overload.md), so a
    # peer in a session of its own would get a share of the CPU that attnserve does not
    process = subprocess.Popen(
        command, cwd=work, env=environment, stdout=log, stderr=subprocess.STDOUT, process_group=0
    )
    try:
        server = TorchServe(
            f"http://127.0.0.1:{inference_port}",
            f"http://127.0.0.1:{management_port}",
            _package_version(venv, "torchserve"),
        )
        _wait_until_ready(server, process, work)
        yield server
    finally:
        _stop_group(process)
        log.close()


def _wait_until_ready(server: TorchServe, process: subprocess.Popen[bytes], work: Path) -> None:
    """Until a worker answers the model's readiness (TorchServe's /ping says Healthy before)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = f"{server.management_url}/models/{MODEL_NAME}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"torchserve exited with {process.returncode}: {_log_tail(work)}")
        try:
            description = httpx.get(url, timeout=5.0).json()
            if any(w.get("status") == "READY" for w in description[0].get("workers", [])):
                return
        except (httpx.HTTPError, ValueError, KeyError, IndexError):
            pass  # not listening yet, or the model not registered yet
        time.sleep(0.5)
    raise TimeoutError(f"torchserve not ready after {STARTUP_TIMEOUT_S:.0f} s: {_log_tail(work)}")


def _stop_group(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM to the process group we started (the CLI, the Java frontend, its Python workers),
    then SIGKILL to whatever is left of it after ``grace_s``."""
    group = process.pid  # process_group=0: the group's id is the leader's pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()
        if not _group_alive(group):
            return
        time.sleep(0.2)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _package_version(venv: Path, package: str) -> str:
    python = venv / "bin" / "python"
    command = [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def _log_tail(work: Path, lines: int = 30) -> str:
    log = work / "torchserve.out"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""
