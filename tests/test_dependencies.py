"""One consistent install, at versions free of the known vulnerabilities of what faces the network.

Each floor names the advisory it clears; pyproject.toml's lower bounds say the same, so a
resolver cannot pick an older release.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from packaging.version import Version

from .conftest import REPO_ROOT

FLOORS = {
    "pillow": ("11.3.0", "CVE-2025-48379 (DDS encoder overflow), CVE-2024-28219"),
    "protobuf": ("6.31.1", "CVE-2025-4565 (unbounded recursion on nested messages)"),
    "grpcio": ("1.67.0", "CVE-2024-7246 (HPACK table poisoning), CVE-2023-44487 (rapid reset)"),
    "starlette": ("0.49.1", "CVE-2025-62727 (Range header DoS), CVE-2025-54121, CVE-2024-47874"),
    "python-multipart": ("0.0.18", "CVE-2024-53981 (boundary parsing DoS)"),
    "h11": ("0.16.0", "CVE-2025-43859 (chunked-encoding request smuggling)"),
}


def test_the_install_is_consistent() -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_network_facing_packages_are_past_their_advisories(package: str) -> None:
    floor, advisories = FLOORS[package]
    assert Version(version(package)) >= Version(floor), (
        f"{package} {version(package)} < {floor}: {advisories}"
    )
    requirements = (REPO_ROOT / "pyproject.toml").read_text()
    declared = re.search(rf'"{re.escape(package)}>=([0-9.]+)', requirements)
    assert declared is not None, f"pyproject.toml sets no lower bound for {package}"
    assert Version(declared.group(1)) >= Version(floor), f"pyproject.toml allows {package} < {floor}"
