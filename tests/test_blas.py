"""The serving commands keep numpy's BLAS to one thread (server/blas.py), in time to matter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from attnserve.server import blas


def test_sets_one_thread_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "numpy")
    monkeypatch.delenv(blas.BLAS_THREADS_VARIABLE, raising=False)
    assert blas.single_threaded_blas() and os.environ[blas.BLAS_THREADS_VARIABLE] == "1"
    monkeypatch.setenv(blas.BLAS_THREADS_VARIABLE, "4")
    assert blas.single_threaded_blas() and os.environ[blas.BLAS_THREADS_VARIABLE] == "4"


def test_too_late_once_numpy_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy  # noqa: F401

    monkeypatch.delenv(blas.BLAS_THREADS_VARIABLE, raising=False)
    assert not blas.single_threaded_blas()
    assert blas.BLAS_THREADS_VARIABLE not in os.environ


def test_the_cli_reaches_the_serving_commands_without_loading_numpy() -> None:
    """`attnserve serve` and `attnserve gateway` call `single_threaded_blas` first: that only
    works if parsing the command line and the settings has not loaded numpy yet."""
    code = (
        "import sys\n"
        "from attnserve.cli import build_parser, settings_from_args\n"
        "settings_from_args(build_parser().parse_args(['serve']))\n"
        "assert 'numpy' not in sys.modules, 'numpy loaded before the serving command runs'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != blas.BLAS_THREADS_VARIABLE}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
