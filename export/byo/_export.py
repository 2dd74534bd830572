"""`export_module`: any classifier ``nn.Module`` → parity-checked ONNX → Triton repository."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnserve.errors import InvalidInput
from attnserve.spec import ModelSpec, PreprocessSpec

from ..accelerate import require_accelerator
from ..exporter import ExportResult, export_graph
from ..onnx_export import parity_inputs
from ..repository import ServingOptions
from ._agreement import CamAgreement, cam_agreement
from ._capture import CapturedGraph, capture_attention

AGREEMENT_IMAGES = 8


@dataclass
class ModuleExportResult(ExportResult):
    """An `ExportResult` with what was captured and how the CAM agrees with Grad-CAM."""

    spec: ModelSpec | None = None
    notes: tuple[str, ...] = ()
    cam_agreement: CamAgreement | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def report_lines(self) -> list[str]:
        lines = [f"note: {note}" for note in self.notes]
        if self.spec is not None:
            lines.append(f"outputs ({len(self.spec.output_names)}): {', '.join(self.spec.output_names)}")
            lines.append(f"primary map: {self.spec.primary_attention or 'none'} ({self.spec.primary_reason})")
        if self.cam_agreement is not None:
            lines.extend(self.cam_agreement.lines())
        lines.extend(self.parity.lines())
        timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.seconds.items())
        lines.append(f"time: {timing}")
        return lines


def export_module(
    model: nn.Module,
    *,
    name: str,
    preprocess: PreprocessSpec,
    labels: Sequence[str],
    repository: Path,
    description: str = "",
    version: int = 1,
    options: ServingOptions | None = None,
    cam: bool | None = None,
    primary_attention: str | None = None,
    quality: Mapping[str, Mapping[str, float]] | None = None,
    architecture: str | None = None,
    notes: Sequence[str] = (),
    verify_accelerator: bool = True,
    primary_reason: str = "",
) -> ModuleExportResult:
    """Exports a classifier with its attention modules' tensors (and the CAM) as named outputs.

    Parity is checked (`check_parity`, tolerance 1e-4) before anything is written; the model
    directory is installed atomically. ``primary_attention`` overrides the default map (the
    deepest spatial one, else the CAM); ``quality`` sets measured figures by output name.
    ``notes`` (e.g. where the weights came from) are carried into the result's report. A GPU
    target in ``options`` is checked first and verified as in `export_graph`.
    """
    if verify_accelerator and options is not None:
        require_accelerator(options.accelerator)  # before the capture and the CAM comparison
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    graph = capture_attention(
        model, preprocess, labels, name=name, description=description, cam=cam, architecture=architecture
    )
    graph.spec = _with_choices(graph.spec, primary_attention, quality, primary_reason)
    seconds["capture"] = time.perf_counter() - started
    agreement = None
    if graph.head is not None:
        started = time.perf_counter()
        agreement = measure_cam_agreement(graph)
        seconds["CAM vs Grad-CAM"] = time.perf_counter() - started
    started = time.perf_counter()
    result = export_graph(graph, repository, name, version, options, verify_accelerator)
    seconds["ONNX, parity and install"] = time.perf_counter() - started
    return ModuleExportResult(
        result.model_dir,
        result.name,
        result.version,
        result.parity,
        spec=graph.spec,
        notes=(*notes, *graph.notes),
        cam_agreement=agreement,
        seconds=seconds,
    )


def measure_cam_agreement(graph: CapturedGraph, images: int = AGREEMENT_IMAGES) -> CamAgreement:
    """CAM vs Grad-CAM on the parity check's inputs (digit canvases where the input is square
    and ≥ 40 px, plus one noise image)."""
    inputs = parity_inputs(graph, images, seed=0)
    return cam_agreement(graph, torch.from_numpy(np.ascontiguousarray(inputs)))


def _with_choices(
    spec: ModelSpec,
    primary_attention: str | None,
    quality: Mapping[str, Mapping[str, float]] | None,
    primary_reason: str = "",
) -> ModelSpec:
    names = [a.name for a in spec.attention]
    update: dict[str, object] = {}
    if primary_attention is not None:
        if primary_attention not in names:
            raise InvalidInput(f"primary attention {primary_attention!r} is not one of the outputs {names}")
        update["primary_attention"] = primary_attention
        update["primary_reason"] = primary_reason or "chosen by whoever exported the model"
    if quality:
        if unknown := sorted(set(quality) - set(names)):
            raise InvalidInput(f"quality figures for outputs the model lacks: {unknown}; it has {names}")
        update["attention"] = tuple(
            a.model_copy(update={"quality": dict(quality[a.name])}) if a.name in quality else a
            for a in spec.attention
        )
    if not update:
        return spec
    return ModelSpec.model_validate({**dict(spec), **update})
