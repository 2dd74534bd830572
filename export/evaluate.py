"""`attnserve evaluate`: every attention output a model serves, against Grad-CAM and chance, on
the test split of every data variant (standard, small digits, mixed sizes and aspect ratios).

For each source — the model's own maps, boxes or glimpse paths (all from one forward pass), and
Grad-CAM on the same PyTorch model (at its last convolution, the conventional layer, and for a
global-average-pooling head at the pooled features, the in-graph CAM's layer) — the quality
figures of `attnserve.export.scoring` and the time per image. Also the correlation between the
in-graph CAM and Grad-CAM at the same layer, which theory says is 1 (`models._cam`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnserve._io import atomic_write_text
from attnserve.errors import InvalidInput
from attnserve.spec import AttentionKind

from .attention_quality import map_quality
from .checkpoint import export_spec, load_checkpoint
from .data import ModelBatch
from .gradcam import grad_cam, grad_cam_at_pooled_features, mean_correlation
from .models import CAM_OUTPUT, ServingGraph, has_gap_linear_head
from .scoring import run_graph, score, with_measured_quality
from .train import EVALUATION_VARIANTS, build_batch

TIMING_IMAGES = 64
POOLED = "Grad-CAM, pooled features"
LAST_CONV = "Grad-CAM, last conv"


@dataclass
class SourceRow:
    source: str
    kind: str
    figures: dict[str, dict[str, float]]
    """Variant → quality figures (pointing, energy; iou, coverage; visited)."""
    ms_per_image_batch1: float | None = None
    ms_per_image_batched: float | None = None
    note: str = ""


@dataclass
class QualityReport:
    architecture: str
    samples: int
    variants: tuple[str, ...]
    accuracy: dict[str, float] = field(default_factory=dict)
    auxiliary_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: list[SourceRow] = field(default_factory=list)
    cam_gradcam_correlation: float | None = None
    written_to: Path | None = None

    def table(self) -> str:
        accuracy = "; ".join(f"{v} {self.accuracy[v]:.1%}" for v in self.variants)
        lines = [
            f"{self.architecture}: test splits of {self.samples} images each (load_digits scans "
            f"1497-1796); accuracy {accuracy}",
        ]
        for variant, auxiliary in self.auxiliary_accuracy.items():
            lines.append(f"  {variant}: " + ", ".join(f"{k} {v:.1%}" for k, v in auxiliary.items()))
        header = " | ".join(self.variants)
        lines += [
            "",
            f"| source | kind | {header} | ms/image (batch 1) | ms/image (batch {TIMING_IMAGES}) | note |",
            "|---|---|" + "---|" * len(self.variants) + "---|---|---|",
        ]
        for r in self.rows:
            cells = " | ".join(_cell(r.figures.get(v, {})) for v in self.variants)
            timing = " | ".join(
                "" if t is None else f"{t:.2f}" for t in (r.ms_per_image_batch1, r.ms_per_image_batched)
            )
            lines.append(f"| {r.source} | {r.kind} | {cells} | {timing} | {r.note} |")
        if self.cam_gradcam_correlation is not None:
            correlation = self.cam_gradcam_correlation
            lines += ["", f"in-graph CAM vs Grad-CAM at the same layer: mean Pearson r = {correlation:.4f}"]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "variants": list(self.variants),
            "accuracy": self.accuracy,
            "auxiliary_accuracy": self.auxiliary_accuracy,
            "sources": {
                r.source: {
                    "kind": r.kind,
                    "figures": r.figures,
                    "ms_per_image_batch1": None
                    if r.ms_per_image_batch1 is None
                    else round(r.ms_per_image_batch1, 3),
                    "ms_per_image_batched": None
                    if r.ms_per_image_batched is None
                    else round(r.ms_per_image_batched, 3),
                    "note": r.note,
                }
                for r in self.rows
            },
            "cam_gradcam_correlation": None
            if self.cam_gradcam_correlation is None
            else round(self.cam_gradcam_correlation, 5),
        }


def _cell(figures: dict[str, float]) -> str:
    if not figures:
        return "–"
    if "energy" in figures:
        return f"{figures['pointing']:.1%} / {figures['energy']:.3f}"
    if "iou" in figures:
        return f"{figures['pointing']:.1%} / IoU {figures['iou']:.3f}"
    if "visited" in figures:
        return f"{figures['pointing']:.1%} / visited {figures['visited']:.1%}"
    return f"{figures['pointing']:.1%}"


def _ms_per_image(run: Callable[[Tensor], object], inputs: Tensor, batch_size: int) -> float:
    images = inputs[:TIMING_IMAGES]
    run(images[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        run(images[start : start + batch_size])
    return (time.perf_counter() - started) * 1e3 / len(images)


def evaluate_checkpoint(
    checkpoint_path: Path,
    architecture: str,
    samples: int = 1000,
    seed: int = 0,
    write: bool = True,
    variants: tuple[str, ...] = EVALUATION_VARIANTS,
) -> QualityReport:
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.architecture != architecture:
        raise InvalidInput(
            f"checkpoint {checkpoint_path} holds {checkpoint.architecture!r}, not {architecture!r}"
        )
    model = checkpoint.model.eval()
    graph = ServingGraph(model, with_measured_quality(export_spec(checkpoint), checkpoint.metrics))
    spec = graph.spec
    report = QualityReport(architecture, samples, variants)
    data = {v: build_batch(v, "test", samples, spec.preprocess, seed) for v in variants}

    def forward(images: Tensor) -> object:
        with torch.no_grad():
            return graph(images)

    timing_inputs = data[variants[0]].inputs(slice(0, TIMING_IMAGES))
    forward_ms = (
        _ms_per_image(forward, timing_inputs, 1),
        _ms_per_image(forward, timing_inputs, TIMING_IMAGES),
    )
    own: dict[str, dict[str, dict[str, float]]] = {}
    chance: dict[str, dict[str, float]] = {}
    outputs_by_variant = {}
    for variant, batch in data.items():
        outputs = outputs_by_variant[variant] = run_graph(graph, batch)
        scores = score(outputs, batch, spec)
        report.accuracy[variant] = scores["accuracy"]
        if "auxiliary_accuracy" in scores:
            report.auxiliary_accuracy[variant] = scores["auxiliary_accuracy"]
        for name, quality in scores["attention"].items():
            own.setdefault(name, {})[variant] = quality
        chance[variant] = {"pointing": scores["chance_energy"], "energy": scores["chance_energy"]}
    for name, figures in own.items():
        kind = spec.attention_by_name(name).kind
        note = "in-graph; predicted class" if kind is AttentionKind.CLASS_ACTIVATION else "in-graph"
        if name == spec.primary_attention:
            note += "; primary"
        report.rows.append(SourceRow(name, kind.value, figures, *forward_ms, note))

    gradcam_maps = _grad_cam_rows(model, data, report)
    report.rows.append(
        SourceRow("chance (uniform map)", "", chance, note="the digit box's share of the input")
    )
    first = variants[0]
    if CAM_OUTPUT in outputs_by_variant[first] and POOLED in gradcam_maps:
        outputs = outputs_by_variant[first]
        predicted = outputs[spec.logits_name].argmax(dim=1)
        ours = torch.relu(outputs[CAM_OUTPUT][torch.arange(len(predicted)), predicted])
        report.cam_gradcam_correlation = mean_correlation(ours, gradcam_maps[POOLED])
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
    model: torch.nn.Module, data: dict[str, ModelBatch], report: QualityReport
) -> dict[str, Tensor]:
    """Grad-CAM at the last convolution (its conventional layer) and, for GAP + linear heads, at
    the pooled features (the in-graph CAM's layer): their rows, and their maps on the first
    variant. A model without convolutions over the whole input (RAM) gets a row saying so."""
    sources: list[tuple[str, Callable[[Tensor], Tensor], str]] = []
    last_conv = getattr(model, "last_conv", None)
    if isinstance(last_conv, torch.nn.Module):
        sources.append((LAST_CONV, lambda x: grad_cam(model, last_conv, x), "forward + backward; offline"))
    else:
        report.rows.append(
            SourceRow(LAST_CONV, "", {}, note="not applicable: no convolution sees the whole input")
        )
    if has_gap_linear_head(model):
        sources.append((POOLED, lambda x: grad_cam_at_pooled_features(model, x), "the CAM's layer; offline"))
    maps: dict[str, Tensor] = {}
    first = next(iter(data))
    for name, fn, note in sources:
        figures = {}
        for variant, batch in data.items():
            inputs = batch.inputs()
            computed = _batched(fn, inputs)
            if variant == first:
                maps[name] = computed
            figures[variant] = map_quality(computed, batch.boxes, batch.input_size).as_dict()
        inputs = data[first].inputs(slice(0, TIMING_IMAGES))
        timing = (_ms_per_image(fn, inputs, 1), _ms_per_image(fn, inputs, TIMING_IMAGES))
        report.rows.append(SourceRow(name, "spatial", figures, *timing, note))
    return maps
