"""The soak script in short (tools/soak.py; its 10-minute run's figures are in the README):
steady load with junk mixed in, a Triton killed mid-run — nothing lost, nothing leaking."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_short_soak_loses_nothing_and_stays_flat() -> None:
    options = ["--duration", "24", "--rate", "20", "--kill-triton-every", "12", "--json", "--models", "cbam"]
    command = [sys.executable, "tools/soak.py", *options]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    outcomes = summary["outcomes"]
    assert summary["lost"] == 0 and summary["exit_code"] == 0, summary
    assert summary["triton_kills"] == 1 and outcomes.get("answered", 0) > 100, summary
    assert set(outcomes) <= {"answered", "InvalidInput", "Unavailable", "ModelNotReady"}, summary
    assert outcomes.get("InvalidInput", 0) > 0, "junk was sent and refused"
    assert summary["rss_growth_mib"] < 50, summary
    assert summary["fds_range"][1] - summary["fds_range"][0] <= 8, summary
    assert summary["threads_range"][1] - summary["threads_range"][0] <= 8, summary
    # startup's objects are out of the full collections' reach, and the pauses are measured
    assert summary["gc_frozen_objects"] > 10_000, summary
    assert summary["gc_pauses"]["0"]["count"] > 0, summary
