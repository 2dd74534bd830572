"""Provisions a local Triton Inference Server from the PyPI wheel `nvidia-pytriton`.

The wheel carries the real Triton 2.51 binary with its Python backend, but no ONNX Runtime
backend, no stub beside the Python backend, and a metadata pin of numpy < 2. So a *runtime
directory* is assembled once (``attnserve setup``; every launch checks it):

    <runtime_dir>/env/          a venv: the wheel (no deps) + numpy 1.26 + onnxruntime; the
                                Python backend's stub runs in it (it corrupts tensors under
                                numpy 2), while the gateway's own environment may use numpy 2
    <runtime_dir>/backends/python/       libtriton_python.so (a copy: Triton refuses a
                                         symlink that escapes the folder), the 3.11 stub and
                                         triton_python_backend_utils.py (symlinks)
    <runtime_dir>/backends/onnxruntime/  model.py: attnserve's Python-based ONNX Runtime backend

A marker file written last makes provisioning all-or-nothing: an interrupted setup is redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from attnserve._io import atomic_write_text
from attnserve.errors import SetupError
from attnserve.settings import TritonSettings

log = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).resolve().parent / "backends" / "onnxruntime" / "model.py"
PYTHON_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonRuntime:
    """Paths of a provisioned runtime."""

    root: Path
    env_dir: Path
    tritonserver: Path
    backends_dir: Path
    library_dir: Path

    @property
    def python_bin_dir(self) -> Path:
        return self.env_dir / "bin"


def _requirements_key(settings: TritonSettings) -> str:
    text = "\n".join(
        [
            PYTHON_TAG,
            f"nvidia-pytriton=={settings.pytriton_version}",
            *settings.backend_requirements,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _site_packages(env_dir: Path) -> Path:
    return env_dir / "lib" / f"python{PYTHON_TAG}" / "site-packages"


def _layout(settings: TritonSettings) -> TritonRuntime:
    root = settings.runtime_dir
    env_dir = root / "env"
    site = _site_packages(env_dir)
    return TritonRuntime(
        root=root,
        env_dir=env_dir,
        tritonserver=site / "pytriton" / "tritonserver" / "bin" / "tritonserver",
        backends_dir=root / "backends",
        library_dir=site / "nvidia_pytriton.libs",
    )


def _pip(env_dir: Path, *args: str) -> None:
    command = [
        str(env_dir / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise SetupError(f"installing the Triton runtime failed ({' '.join(args)}):\n{tail}")


def _create_env(runtime: TritonRuntime, settings: TritonSettings) -> None:
    log.info("creating the Triton runtime environment in %s (once; about a minute)", runtime.env_dir)
    shutil.rmtree(runtime.env_dir, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(runtime.env_dir)], check=True, capture_output=True)
    _pip(runtime.env_dir, "--no-deps", f"nvidia-pytriton=={settings.pytriton_version}")
    _pip(runtime.env_dir, *settings.backend_requirements)


def _backends_current(runtime: TritonRuntime) -> bool:
    python_dir = runtime.backends_dir / "python"
    model_py = runtime.backends_dir / "onnxruntime" / "model.py"
    return (
        (python_dir / "libtriton_python.so").is_file()
        and (python_dir / "triton_python_backend_stub").exists()
        and (python_dir / "triton_python_backend_utils.py").exists()
        and model_py.is_file()
        and model_py.read_bytes() == BACKEND_SOURCE.read_bytes()
    )


def _assemble_backends(runtime: TritonRuntime) -> bool:
    """Builds the backend folder, unless it is complete and holds the current backend code
    (a running Triton may be reading it: it is replaced only when it must be). True if built."""
    if _backends_current(runtime):
        return False
    wheel_backend = runtime.tritonserver.parent.parent / "backends" / "python"
    stub = (
        runtime.tritonserver.parent.parent
        / "python_backend_stubs"
        / PYTHON_TAG
        / "triton_python_backend_stub"
    )
    if not stub.is_file():
        raise SetupError(f"the Triton wheel has no Python backend stub for Python {PYTHON_TAG} ({stub})")
    staging = runtime.root / "backends.new"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "python").mkdir(parents=True)
    shutil.copy2(wheel_backend / "libtriton_python.so", staging / "python" / "libtriton_python.so")
    os.symlink(
        wheel_backend / "triton_python_backend_utils.py",
        staging / "python" / "triton_python_backend_utils.py",
    )
    os.symlink(stub, staging / "python" / "triton_python_backend_stub")
    (staging / "onnxruntime").mkdir()
    shutil.copy2(BACKEND_SOURCE, staging / "onnxruntime" / "model.py")
    shutil.rmtree(runtime.backends_dir, ignore_errors=True)
    os.rename(staging, runtime.backends_dir)
    return True


def _check_shared_libraries(runtime: TritonRuntime) -> None:
    """The stub links the system's libpython; say so plainly when it is missing."""
    stub = runtime.backends_dir / "python" / "triton_python_backend_stub"
    env = {**os.environ, "LD_LIBRARY_PATH": str(runtime.library_dir)}
    for binary in (runtime.tritonserver, stub):
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=False)
        missing = [line.split()[0] for line in result.stdout.splitlines() if "not found" in line]
        if missing:
            hint = (
                " (Debian/Ubuntu: apt-get install libpython3.11)"
                if any("python" in m for m in missing)
                else ""
            )
            raise SetupError(
                f"{binary.name} cannot start, missing shared libraries: {', '.join(missing)}{hint}"
            )


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One provisioner at a time per runtime directory (serve, tests, setup may overlap)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_runtime(settings: TritonSettings) -> TritonRuntime:
    """Returns a ready runtime, provisioning what is missing or outdated."""
    runtime = _layout(settings)
    marker = runtime.root / "env.complete"
    key = _requirements_key(settings)
    with _locked(runtime.root):
        provisioned = (
            marker.is_file() and marker.read_text().strip() == key and runtime.tritonserver.is_file()
        )
        if not provisioned:
            marker.unlink(missing_ok=True)
            _create_env(runtime, settings)
        if _assemble_backends(runtime) or not provisioned:
            _check_shared_libraries(runtime)  # once per new environment or backend folder
        if not provisioned:
            atomic_write_text(marker, key + "\n")
    return runtime
