"""Triton's own load generator, `perf_analyzer`, against the Triton the suite starts: Triton
alone measured by NVIDIA's tool beside our tritonclient loop.

The PyPI `perf-analyzer` package is a placeholder; the binary ships inside the
``tritonclient==2.51.0`` wheel (newer ones need glibc 2.38) and links ``libcudart.so.12`` and
``libb64.so.0d``, both in the Triton runtime's ``nvidia_pytriton.libs``. `provision` downloads
that wheel once (no dependencies installed: it pins numpy<2 and protobuf<5), extracts the
binary into ``runs/perf_analyzer/`` and links the two libraries beside it; every failure is a
``{"skipped": reason}``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "runs" / "perf_analyzer"
WHEEL = "tritonclient==2.51.0"
BINARY = "tritonclient-2.51.0.data/data/bin/perf_analyzer"
LIBRARIES = {"libb64.so.0d": "libb64", "libcudart.so.12": "libcudart"}


def provision(library_dir: Path, cache: Path = CACHE) -> Path | str:
    """The binary, ready to run; or why it is not."""
    binary = cache / "perf_analyzer"
    if not binary.exists():
        with tempfile.TemporaryDirectory() as folder:
            download = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", folder, WHEEL],
                capture_output=True,
                text=True,
                check=False,
            )
            wheels = list(Path(folder).glob("*.whl"))
            if download.returncode != 0 or not wheels:
                return f"cannot download {WHEEL}: {download.stderr.strip()[-300:]}"
            cache.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheels[0]) as wheel:
                partial = cache / "perf_analyzer.partial"
                partial.write_bytes(wheel.read(BINARY))
            partial.chmod(0o755)
            partial.replace(binary)
    for name, prefix in LIBRARIES.items():
        found = sorted(library_dir.glob(f"{prefix}*"))
        if not found:
            return f"{prefix} is not in {library_dir} (run `attnserve setup`)"
        link = cache / name
        if not link.exists():
            link.symlink_to(found[0])
    return binary


def perf_analyzer_bench(
    triton_url: str,
    model: str,
    input_shape: tuple[int, ...],
    concurrency: int,
    seconds: float,
    library_dir: Path,
    input_name: str = "image",
) -> dict[str, Any]:
    """One concurrency level over gRPC, every output, batch 1, random data: figures named like
    the suite's (`attnserve.bench.Summary`), or ``{"skipped": reason}``."""
    binary = provision(library_dir)
    if isinstance(binary, str):
        return {"skipped": binary}
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.csv"
        command = [
            str(binary), "-m", model, "-u", triton_url, "-i", "grpc",
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(int(seconds * 1000)),
            "--shape", f"{input_name}:{','.join(map(str, input_shape))}",
            "-f", str(report),
        ]  # fmt: skip
        env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent)}
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30 + 20 * seconds)
        if run.returncode != 0 or not report.exists():
            return {
                "skipped": f"perf_analyzer failed ({run.returncode}): {run.stdout[-300:]}{run.stderr[-300:]}"
            }
        (row,) = list(csv.DictReader(report.open()))
    throughput = float(row["Inferences/Second"])
    return {
        "label": f"c={concurrency}",
        "offered": float(concurrency),
        "throughput": throughput,
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p90_ms": float(row["p90 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
        "errors": {},
        "server_queue_ms": float(row["Server Queue"]) / 1e3,
        "server_compute_ms": float(row["Server Compute Infer"]) / 1e3,
    }
