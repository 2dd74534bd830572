"""Memory bounded by construction (tools/memory_bombs.py against `attnserve serve`): images tiny on
the wire and huge in memory, alone and 16 at once, while another client keeps predicting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT

pytestmark = [pytest.mark.triton, pytest.mark.slow]

DECLARED = {"OK", "InvalidInput", "TooLarge", "Overloaded"}


def test_memory_bombs_keep_the_gateway_bounded_and_the_others_answered() -> None:
    command = [sys.executable, "tools/memory_bombs.py", "--json", "--models", "cbam"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    alone = {name: run["outcome"] for name, run in summary["alone"].items()}
    together = summary["together"]
    assert set(alone.values()) | set(together["outcomes"]) <= DECLARED, summary  # nothing lost, no INTERNAL
    assert sum(together["outcomes"].values()) == 16, summary
    # each bomb that fits the budget is answered when it comes alone
    assert alone["long_heatmaps"] == alone["deep_overlay"] == alone["photo_every_form"] == "OK", summary
    assert alone["rgb_40mp"] == "OK", summary
    assert alone["photo_full_size"] == "InvalidInput", summary  # 12 MP overlays at full size: over budget
    assert summary["peak_growth_mib"] < 300, summary
    assert set(together["cheap_outcomes"]) == {"OK"} and together["cheap_outcomes"]["OK"] > 20, summary
    assert summary["rss_after_mib"] - summary["idle_mib"] < 50, summary  # freed memory goes back
    assert summary["exit_code"] == 0, summary
