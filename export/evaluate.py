"""`attnserve evaluate`: every map the model serves against Grad-CAM, on the test split.

For each map source — the CBAM stages, their product, the in-graph CAM, and Grad-CAM on the
same PyTorch model (at the last convolution, its conventional layer, and at the pooled
features, the CAM's layer) — the pointing game, the energy in the digit box, and the time per
image. Also the correlation between the in-graph CAM and Grad-CAM at the same layer, which
theory says is 1 (see `attnserve.export.models._cam`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from attnserve._io import atomic_write_text
from attnserve.errors import InvalidInput
from attnserve.spec import AttentionKind

from .attention_quality import map_quality
from .checkpoint import export_spec, load_checkpoint
from .data import ClutteredDigits
from .gradcam import grad_cam, grad_cam_at_pooled_features
from .models import CAM_OUTPUT, ServingGraph, has_gap_linear_head
from .scoring import canvases_to_input, run_graph, score, with_measured_quality

TIMING_IMAGES = 64
POOLED = "Grad-CAM, pooled features"


@dataclass
class SourceRow:
    source: str
    pointing: float
    energy: float
    ms_per_image_batch1: float
    ms_per_image_batched: float
    note: str = ""


@dataclass
class QualityReport:
    samples: int
    accuracy: float
    chance_energy: float
    rows: list[SourceRow] = field(default_factory=list)
    cam_gradcam_correlation: float | None = None
    written_to: Path | None = None

    def table(self) -> str:
        lines = [
            f"test split: {self.samples} canvases from load_digits scans 1497-1796; "
            f"accuracy {self.accuracy:.1%}; chance energy {self.chance_energy:.3f}",
            "",
            "| map source | pointing game | energy in box | ms/image (batch 1) "
            f"| ms/image (batch {TIMING_IMAGES}) | note |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.source} | {r.pointing:.1%} | {r.energy:.3f} | {r.ms_per_image_batch1:.2f} | "
                f"{r.ms_per_image_batched:.2f} | {r.note} |"
            )
        if self.cam_gradcam_correlation is not None:
            correlation = self.cam_gradcam_correlation
            lines += ["", f"in-graph CAM vs Grad-CAM at the same layer: mean Pearson r = {correlation:.4f}"]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "accuracy": round(self.accuracy, 4),
            "chance_energy": round(self.chance_energy, 4),
            "sources": {
                r.source: {
                    "pointing": round(r.pointing, 4),
                    "energy": round(r.energy, 4),
                    "ms_per_image_batch1": round(r.ms_per_image_batch1, 3),
                    "ms_per_image_batched": round(r.ms_per_image_batched, 3),
                }
                for r in self.rows
            },
            "cam_gradcam_correlation": None
            if self.cam_gradcam_correlation is None
            else round(self.cam_gradcam_correlation, 5),
        }


def _ms_per_image(run: Callable[[Tensor], object], inputs: Tensor, batch_size: int) -> float:
    images = inputs[:TIMING_IMAGES]
    run(images[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        run(images[start : start + batch_size])
    return (time.perf_counter() - started) * 1e3 / len(images)


def mean_correlation(a: Tensor, b: Tensor) -> float:
    """Mean per-image Pearson correlation of two N×h×w map sets (images where either is
    constant are left out: correlation is undefined there)."""
    x = a.reshape(len(a), -1).double()
    y = b.reshape(len(b), -1).double()
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    norms = x.norm(dim=1) * y.norm(dim=1)
    valid = norms > 1e-12
    if not valid.any():
        return float("nan")
    return float(((x * y).sum(dim=1)[valid] / norms[valid]).mean())


def evaluate_checkpoint(
    checkpoint_path: Path, architecture: str, samples: int = 1000, seed: int = 0, write: bool = True
) -> QualityReport:
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.architecture != architecture:
        raise InvalidInput(
            f"checkpoint {checkpoint_path} holds {checkpoint.architecture!r}, not {architecture!r}"
        )
    model = checkpoint.model.eval()
    graph = ServingGraph(model, with_measured_quality(export_spec(checkpoint), checkpoint.metrics))
    spec = graph.spec
    data = ClutteredDigits("test", samples, seed=seed).batch()
    size = (int(data.images.shape[1]), int(data.images.shape[2]))
    inputs = canvases_to_input(data.images, spec.preprocess)
    outputs = run_graph(graph, data.images)
    predicted = outputs[spec.logits_name].argmax(dim=1)
    scores = score(outputs, data, spec)

    def forward(images: Tensor) -> object:
        with torch.no_grad():
            return graph(images)

    forward_ms = (_ms_per_image(forward, inputs, 1), _ms_per_image(forward, inputs, TIMING_IMAGES))
    report = QualityReport(samples, accuracy=scores["accuracy"], chance_energy=scores["chance_energy"])
    for name, quality in scores["attention"].items():
        class_conditioned = spec.attention_by_name(name).kind is AttentionKind.CLASS_ACTIVATION
        note = "in-graph; predicted class" if class_conditioned else "in-graph"
        if name == spec.primary_attention:
            note += "; primary"
        report.rows.append(SourceRow(name, quality["pointing"], quality["energy"], *forward_ms, note))

    rows, grad_cam_maps = _grad_cam_rows(model, inputs, data.boxes, size)
    report.rows += rows
    if CAM_OUTPUT in outputs and POOLED in grad_cam_maps:
        ours = torch.relu(outputs[CAM_OUTPUT][torch.arange(len(predicted)), predicted])
        report.cam_gradcam_correlation = mean_correlation(ours, grad_cam_maps[POOLED])
    if write:
        metrics_path = checkpoint_path.parent / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        metrics["evaluation"] = report.as_dict()
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
        report.written_to = metrics_path
    return report


def _batched(fn: Callable[[Tensor], Tensor], inputs: Tensor, size: int = 250) -> Tensor:
    return torch.cat([fn(inputs[start : start + size]) for start in range(0, len(inputs), size)])


def _grad_cam_rows(
    model: torch.nn.Module, inputs: Tensor, boxes: NDArray[np.int64], size: tuple[int, int]
) -> tuple[list[SourceRow], dict[str, Tensor]]:
    """Grad-CAM at the last convolution (its conventional layer) and, for GAP + linear heads,
    at the pooled features (the in-graph CAM's layer): their rows, and their maps by source."""
    sources: list[tuple[str, Callable[[Tensor], Tensor], str]] = []
    last_conv = getattr(model, "last_conv", None)
    if isinstance(last_conv, torch.nn.Module):
        sources.append(
            ("Grad-CAM, last conv", lambda x: grad_cam(model, last_conv, x), "forward + backward; offline")
        )
    if has_gap_linear_head(model):
        sources.append(
            (
                POOLED,
                lambda x: grad_cam_at_pooled_features(model, x),
                "the CAM's layer; offline",
            )
        )
    rows, maps = [], {}
    for name, fn, note in sources:
        maps[name] = _batched(fn, inputs)
        quality = map_quality(maps[name], boxes, size)
        timing = (_ms_per_image(fn, inputs, 1), _ms_per_image(fn, inputs, TIMING_IMAGES))
        rows.append(SourceRow(name, quality.pointing, quality.energy, *timing, note))
    return rows, maps
