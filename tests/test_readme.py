"""The README's promises, executed: two quick-start commands, and the client example."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, GatewayThread

README = (REPO_ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the quick start has a sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    assert quick_start_commands() == ["make run", "make test"]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == [
        "make test"
    ]


@pytest.mark.triton
@pytest.mark.slow
def test_the_run_command_predicts_and_writes_an_overlay(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.png"
    result = subprocess.run(
        ["make", "--no-print-directory", "run", f"OVERLAY={overlay}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "→ model cbam v1" in result.stdout and f"wrote {overlay}" in result.stdout
    assert "HTTP and web page http://127.0.0.1:" in result.stdout
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.triton
def test_the_python_client_example_runs(
    gateway: GatewayThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "Client(" in b)
    code = example.replace("127.0.0.1:8500", gateway.address).replace(
        '"docs/samples/digit.png"', repr(str(REPO_ROOT / "docs" / "samples" / "digit.png"))
    )
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "primary_overlay.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.triton
def test_the_curl_example_runs(gateway: GatewayThread) -> None:
    example = next(b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if "curl" in b)
    command = example.replace("http://127.0.0.1:8501", gateway.http_url)
    result = subprocess.run(["sh", "-c", command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["predictions"][0]["label"] == "6" and len(answer["predictions"]) == 3
    (cam,) = answer["attention"]
    assert cam["name"] == "cam" and cam["heatmap_png"] and cam["raw"]["dtype"] == "DATA_TYPE_FLOAT32"
