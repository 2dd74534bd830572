"""`attnserve export`: checkpoint → parity-checked ONNX → Triton model repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from attnserve.errors import InvalidInput

from .accelerate import require_accelerator, verified_record
from .checkpoint import export_spec, load_checkpoint
from .models import ServingGraph, get_entry
from .onnx_export import (
    ExportableGraph,
    ParityError,
    ParityReport,
    check_parity,
    export_onnx,
    option_tensors,
    parity_inputs,
)
from .repository import ServingOptions, apply_accelerator, build_config, write_model
from .scoring import with_measured_quality


@dataclass
class ExportResult:
    model_dir: Path
    name: str
    version: int
    parity: ParityReport


def export_model(
    architecture: str,
    checkpoint_path: Path,
    repository: Path,
    name: str | None = None,
    version: int = 1,
    options: ServingOptions | None = None,
    verify_accelerator: bool = True,
) -> ExportResult:
    get_entry(architecture)  # an unknown architecture fails before the checkpoint is read
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.architecture != architecture:
        raise InvalidInput(
            f"checkpoint {checkpoint_path} holds a {checkpoint.architecture!r} model, not {architecture!r}"
        )
    spec = with_measured_quality(export_spec(checkpoint), checkpoint.metrics)
    graph = ServingGraph(checkpoint.model, spec)
    return export_graph(graph, repository, name or architecture, version, options, verify_accelerator)


def export_graph(
    graph: ExportableGraph,
    repository: Path,
    name: str,
    version: int = 1,
    options: ServingOptions | None = None,
    verify_accelerator: bool = True,
) -> ExportResult:
    """ONNX, parity (refused before anything is written), then an atomic install.

    A GPU target (``options.accelerator``) must run here and match the CPU within its tolerance
    (`accelerate.verified_record`) before the config is written; ``verify_accelerator=False``
    writes it unverified, and the config's parity record says so."""
    options = options or ServingOptions()
    if verify_accelerator:
        require_accelerator(options.accelerator)  # before the export work, not after it
    model_bytes = export_onnx(graph)
    parity = check_parity(graph, model_bytes)
    if not parity.passed:
        raise ParityError("\n".join(["export refused, onnxruntime differs from PyTorch:", *parity.lines()]))
    output_dims = _output_dims(graph)
    try:
        graph.spec.check_output_dims(output_dims)
    except ValueError as exc:
        what = graph.spec.architecture
        raise InvalidInput(f"{what}: the model's outputs do not fit its spec: {exc}") from None
    config = build_config(name, graph.spec, output_dims, options)
    record = verified_record(
        model_bytes,
        config,
        options.accelerator,
        lambda batch_size, seed: parity_inputs(graph, batch_size, seed),
        verify=verify_accelerator,
    )
    apply_accelerator(config, options.accelerator, record)
    model_dir = write_model(repository, name, version, model_bytes, config, graph.spec.labels)
    return ExportResult(model_dir, name, version, parity)


def _output_dims(graph: ExportableGraph) -> dict[str, tuple[int, ...]]:
    """Non-batch dims of every output, from one forward pass (ONNX shape inference leaves
    some, such as a Resize to a computed size, symbolic; Triton's config wants them fixed)."""
    spec = graph.spec
    example = torch.zeros(1, spec.preprocess.channels, *spec.preprocess.input_size)
    with torch.no_grad():
        outputs = graph(example, *option_tensors(spec, 1))
    return {name: tuple(value.shape[1:]) for name, value in zip(spec.output_names, outputs, strict=True)}
