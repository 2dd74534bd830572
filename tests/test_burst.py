"""A burst of 10× capacity (tools/burst.py against `attnserve serve`, max_in_flight 8): cheap
predictions and 12-megapixel overlays mixed — nothing INTERNAL, and the refusals counted in the
metrics are exactly those the clients saw. Latency figures are printed, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO_ROOT

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_a_burst_of_ten_times_capacity_is_refused_cleanly_and_counted_exactly() -> None:
    command = [sys.executable, "tools/burst.py", "--max-in-flight", "8", "--json"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(summary)
    codes = {code for kind in summary["by_kind"].values() for code in kind["codes"]}
    # UNAVAILABLE only as the transport's REFUSED_STREAM (retryable), never from the gateway's code
    assert codes <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"} and summary["internal"] == 0, summary
    assert all("RST_STREAM" in d for d in summary["other_errors"].values()), summary
    assert summary["resource_exhausted_seen"] == summary["rejections_counted"] > 0, summary
    assert summary["by_kind"]["cheap"]["codes"].get("OK", 0) > 0, summary
    assert summary["by_kind"]["heavy"]["codes"].get("OK", 0) > 0, summary
    assert summary["exit_code"] == 0, summary
