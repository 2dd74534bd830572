"""The benchmark suite's smoke mode: every path answers, every figure is there. Checks that the
suite works, never how fast anything is (the suite itself measures that, on demand)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT


@pytest.mark.triton
def test_the_suite_runs_every_path_in_smoke_mode(tmp_path: Path) -> None:
    out, markdown = tmp_path / "suite.json", tmp_path / "benchmarks.md"
    completed = subprocess.run(
        [sys.executable, "tools/bench_suite.py", "--smoke", "--json", str(out), "--markdown", str(markdown)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(out.read_text())
    paths = {mode: set(figures["paths"]) for mode, figures in results["modes"].items()}
    assert paths["maps raw"] == {
        "in-process pipeline", "hand loop", "triton (tritonclient)", "triton (perf_analyzer)", "gateway gRPC",
        "gateway HTTP",
    }  # fmt: skip
    assert paths["overlay jpeg"] == {"in-process pipeline", "gateway gRPC", "gateway HTTP"}
    # Triton's perf_analyzer, from the tritonclient 2.51 wheel (PyPI): its figures when it runs
    for point in results["modes"]["maps raw"]["paths"].pop("triton (perf_analyzer)").values():
        assert point["throughput"] > 0 and point["p50_ms"] <= point["p99_ms"]
    for mode, figures in results["modes"].items():
        for name, points in figures["paths"].items():
            for point in points.values():
                assert point["ok"] > 0 and point["errors"] == {}, (mode, name, point)
                assert point["p50_ms"] <= point["p99_ms"]
                assert set(point["cpu_ms_per_answer"]) == {"this process", "gateway", "triton"}
        assert figures["postprocess_ms_c1"] > 0
    gateway = results["modes"]["overlay jpeg"]["paths"]["gateway gRPC"]["2"]
    png = results["modes"]["overlay png"]["paths"]["gateway gRPC"]["2"]
    assert gateway["bytes_per_answer"] < png["bytes_per_answer"] / 2  # the JPEG answer is the smaller
    assert not math.isnan(results["sizes"]["0.3 MP"]["maps raw"]["gateway_rss_peak_mb"])
    assert results["peers"]["gradcam"]["1"]["ok"] > 0
    text = markdown.read_text()
    assert "## Targets (issue 15)" in text and "| gateway gRPC |" in text
