"""The benchmark suite's peers (tools/peers/): Grad-CAM in plain PyTorch on the default model,
and TorchServe, which answers "skipped" without its own environment (CI never installs it)."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from attnserve.export.gradcam import grad_cam
from attnserve.transform import peak_in_original

from .conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "docs" / "samples" / "digit.png"
DIGIT_BOX = (76, 88, 188, 240)
"""Where the "6" of docs/samples/digit.png has its ink, x0 y0 x1 y1 in its pixels (README)."""


def _import_peers() -> ModuleType:
    """tools/peers is imported the way the suite in tools/ imports it: with tools/ on the path."""
    tools = str(REPO_ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module("peers")


peers = _import_peers()


@pytest.fixture(scope="module")
def torch_peer() -> Any:
    return peers.gradcam.TorchPeer.load()


def test_grad_cam_of_the_sample_peaks_on_the_digit(torch_peer: Any) -> None:
    cells, heatmap, prepared = torch_peer.explain(SAMPLE.read_bytes())
    assert cells.shape == (8, 8)  # the last conv of stage 3: 64×64 input, strides 2·2·2
    assert heatmap.shape == (64, 64) and float(heatmap.min()) == 0.0 and float(heatmap.max()) == 1.0
    values = cells.numpy()
    assert values.min() >= 0 and values.max() > 10 * max(float(np.median(values)), 1e-6)  # a peak, not flat
    x, y, _ = peak_in_original(values, prepared.geometry)
    x0, y0, x1, y1 = DIGIT_BOX
    assert x0 <= x <= x1 and y0 <= y <= y1, (x, y)


def test_hooks_and_a_full_backward_give_attnserves_grad_cam_and_leave_the_forward_alone(
    torch_peer: Any,
) -> None:
    peer = torch_peer
    images, _ = peer.prepare(SAMPLE.read_bytes())
    hooked = peer.hooked(images)
    assert torch.allclose(hooked, grad_cam(peer.model, peer.layer, images), atol=1e-5)
    assert torch.allclose(peer.explain(SAMPLE.read_bytes(), "autograd")[0], hooked[0], atol=1e-5)
    assert next(peer.model.parameters()).grad is not None  # a full backward
    logits = peer.predict(SAMPLE.read_bytes())["logits"]  # hook passes by
    assert int(logits.argmax()) == 6


def test_gradcam_bench_gives_figures_the_map_and_its_agreement_with_our_maps() -> None:
    figures = peers.gradcam_bench(SAMPLE.read_bytes(), seconds=0.05, threads=1)
    assert figures["class"] == 6 and figures["threads"] == 1 and figures["layer"] == "stages.2.conv2"
    assert figures["method"] == "hooks"
    assert figures["requests"] >= 1 and figures["throughput"] > 0 and figures["p50_ms"] > 0
    assert figures["map_shape"] == [8, 8] and np.asarray(figures["map"]).shape == (8, 8)
    agreement = figures["agreement"]
    # Grad-CAM at the pooled features is ReLU(CAM) exactly (models._cam): a check of both
    assert agreement["pooled-features Grad-CAM vs ReLU(cam)"]["pearson"] > 0.999
    for name in ("vs cam (ReLU, class 6)", "vs spatial_stage3"):
        assert -1 <= agreement[name]["pearson"] <= 1 and -1 <= agreement[name]["spearman"] <= 1


def test_torch_predict_bench_predicts_the_sample_with_the_thread_count_restored() -> None:
    before = torch.get_num_threads()
    figures = peers.torch_predict_bench(SAMPLE.read_bytes(), seconds=0.05, threads=1)
    assert torch.get_num_threads() == before
    assert figures["class"] == 6 and 0.5 < figures["probability"] <= 1 and len(figures["logits"]) == 10
    assert figures["ok"] >= 1 and figures["p50_ms"] > 0 and figures["preprocess_p50_ms"] > 0


def test_average_ranks_share_ties() -> None:
    ranks = peers.gradcam._average_ranks(np.array([0.0, 2.0, 0.0, 1.0, 0.0]))
    assert ranks.tolist() == [1.0, 4.0, 1.0, 3.0, 1.0]


def test_time_concurrent_runs_each_client_until_the_deadline_and_counts_failures() -> None:
    def make_call() -> Callable[[], str | None]:
        count = iter(range(10**6))

        def call() -> str | None:
            time.sleep(0.01)
            return "HTTP 503" if next(count) % 4 == 3 else None

        return call

    timing = peers._timing.time_concurrent(make_call, seconds=0.2, concurrency=3)
    figures = timing.figures()
    assert 3 * 10 <= figures["requests"] <= 3 * 25, figures
    assert figures["errors"]["HTTP 503"] == figures["requests"] - figures["ok"] >= 3 * 2, figures
    assert 75 < figures["throughput"] < 300 and figures["p50_ms"] >= 10, figures


def test_torchserve_bench_is_skipped_without_its_environment(tmp_path: Path) -> None:
    figures = peers.torchserve_bench(SAMPLE.read_bytes(), seconds=0.1, venv=tmp_path / ".venv-torchserve")
    assert set(figures) == {"skipped"}
    assert "torchserve_setup.sh" in figures["skipped"] and str(tmp_path) in figures["skipped"]


def _processes_running_from(folder: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if str(folder) in command:
            found.append(command)
    return found


@pytest.mark.slow
def test_torchserve_answers_our_logits_and_leaves_no_process_behind() -> None:
    """Only where tools/peers/torchserve_setup.sh was run (not in CI): ~30 s."""
    reason = peers.torchserve.torchserve_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    figures = peers.torchserve_bench(SAMPLE.read_bytes(), seconds=1.0, concurrency=2)
    assert figures["logits_max_abs_diff"] < 1e-5, figures
    for endpoint in ("predictions", "explanations"):
        assert figures[endpoint]["ok"] > 0 and figures[endpoint]["errors"] == {}, figures
    assert figures["predictions"]["bytes"] < 1_000 < 100_000 < figures["explanations"]["bytes"]
    assert _processes_running_from(peers.TORCHSERVE_VENV) == []
