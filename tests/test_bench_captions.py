"""The captioning benchmark's smoke mode: every path answers at every beam and concurrency, and
every path decodes the same captions. Checks that the benchmark works, never how fast anything is
(the benchmark itself measures that, on demand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

MODEL = "show_attend_tell"


@pytest.mark.triton
def test_the_captioning_benchmark_runs_every_path_in_smoke_mode(tmp_path: Path) -> None:
    for needed in (
        REPO_ROOT / "model_repository" / MODEL,
        REPO_ROOT / "checkpoints" / MODEL / "checkpoint.pt",
    ):
        if not needed.exists():
            pytest.skip(f"{needed.relative_to(REPO_ROOT)} is absent: train and export {MODEL} first")
    out, markdown = tmp_path / "captions.json", tmp_path / "captions.md"
    completed = subprocess.run(
        [
            sys.executable,
            "tools/bench_captions.py",
            "--smoke",
            "--json",
            str(out),
            "--markdown",
            str(markdown),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(out.read_text())
    figures = results["figures"]
    assert set(figures) == {"1", "3"}
    assert set(figures["1"]) == {"served", "triton direct", "eager", "eager greedy-only"}
    assert set(figures["3"]) == {"served", "triton direct", "eager"}
    for beam, paths in figures.items():
        for path, points in paths.items():
            assert set(points) == {"1", "8"}, (beam, path)
            for load, point in points.items():
                assert point["ok"] > 0 and point["errors"] == {}, (beam, path, load, point)
                assert 0 < point["p50_ms"] <= point["p99_ms"], (beam, path, load)
                assert set(point["cpu_ms_per_answer"]) == {"this process", "gateway", "triton"}
    for load in ("1", "8"):  # the served answer carries the caption and its word maps
        assert figures["1"]["served"][load]["bytes_per_answer"] > 0
    checks = results["checks"]
    scenes = len(checks["captions"]["1"])
    assert checks["greedy_only_equals_beam_1"] == f"{scenes}/{scenes}"
    assert all(row["served"] for rows in checks["captions"].values() for row in rows)
    assert set(results["ratios"]["served_over_eager"]) == {f"beam {b}, c={c}" for b in (1, 3) for c in (1, 8)}
    assert "| served / eager captions/s |" in markdown.read_text()
