"""PyTorch → ONNX with every attention map a named output, and proof of parity.

Export proves itself before anything reaches a model repository: ``onnx.checker`` passes, and
onnxruntime reproduces PyTorch's logits *and* every attention map within `PARITY_TOLERANCE`
(max absolute difference) at several batch sizes, on real canvases and on noise.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from attnserve.errors import AttnserveError
from attnserve.spec import ModelSpec

from .data import ClutteredDigits
from .scoring import canvases_to_input

OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_BATCH_SIZES = (1, 3, 8)


class ExportableGraph(Protocol):
    """What export and the parity check need: an ``nn.Module`` mapping images to its outputs in
    ``spec.output_names`` order, around ``model`` (`ServingGraph` for registered architectures,
    `attnserve.export.byo.CapturedGraph` for any other classifier)."""

    spec: ModelSpec
    model: nn.Module

    def __call__(self, images: Tensor, *options: Tensor) -> tuple[Tensor, ...]: ...

    def eval(self) -> Any: ...


class ParityError(AttnserveError):
    """onnxruntime does not reproduce PyTorch within the tolerance."""


@dataclass
class ParityReport:
    tolerance: float
    batch_sizes: tuple[int, ...]
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(diff <= self.tolerance for diff in self.max_abs_diff.values())

    def lines(self) -> list[str]:
        width = max(len(name) for name in self.max_abs_diff)
        rows = [
            f"  {name:<{width}}  max |torch - onnxruntime| = {diff:.2e}"
            f"  {'ok' if diff <= self.tolerance else 'FAIL'}"
            for name, diff in self.max_abs_diff.items()
        ]
        batches = ", ".join(str(b) for b in self.batch_sizes)
        return [f"parity (batch sizes {batches}; tolerance {self.tolerance:.0e}):", *rows]


def export_onnx(graph: ExportableGraph) -> bytes:
    """The serving graph as ONNX bytes: dynamic batch, inputs (the image, then the spec's
    options) and outputs named as in the spec."""
    spec = graph.spec
    channels = spec.preprocess.channels
    height, width = spec.preprocess.input_size
    example = (torch.zeros(2, channels, height, width), *option_tensors(spec, 2))
    buffer = io.BytesIO()
    assert isinstance(graph, nn.Module)
    graph.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            graph,
            example,
            buffer,  # type: ignore[arg-type]  # file-like objects are accepted
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_axes=dynamic_axes(spec),
            opset_version=OPSET,
            dynamo=False,
        )
    model_bytes = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(model_bytes), full_check=True)
    return model_bytes


def dynamic_axes(spec: ModelSpec) -> dict[str, dict[int, str]]:
    """The batch axis of every input and output, and the axes whose length varies per image
    (detections), by name as ONNX wants them."""
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in spec.input_names}
    for name in spec.output_names:
        axes[name] = {0: "batch", **{1 + i: f"{name}_detections" for i in spec.dynamic_axes(name)}}
    return axes


def option_tensors(spec: ModelSpec, batch_size: int) -> tuple[Tensor, ...]:
    """Each input option at its default, (N, 1) int64, in the spec's order."""
    return tuple(torch.full((batch_size, 1), option.default, dtype=torch.int64) for option in spec.options)


def option_inputs(spec: ModelSpec, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """Each input option for a parity batch, (N, 1) int64: the first image at the default, the
    others drawn over the option's whole range (so a beam size of 1 and the largest are both
    checked at batch 8)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for option in spec.options:
        values = rng.integers(option.minimum, option.maximum + 1, size=(batch_size, 1))
        values[0] = option.default
        feed[option.name] = values.astype(np.int64)
    return feed


def parity_inputs(graph: ExportableGraph, batch_size: int, seed: int) -> np.ndarray:
    """Real validation canvases (the attention maps then have structure) plus one noise image;
    noise only, for inputs no digit canvas fits (not square, or under 40 px). A model may bring
    its own (``model.parity_inputs(batch_size, seed)``: e.g. a detector, whose number of
    detections on noise is arbitrary)."""
    own = getattr(graph.model, "parity_inputs", None)
    if callable(own):
        inputs: np.ndarray = own(batch_size, seed)
        return inputs
    spec = graph.spec.preprocess
    height, width = spec.input_size
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(batch_size, spec.channels, height, width)).astype(np.float32)
    if height == width >= 40 and batch_size > 1:
        canvases = ClutteredDigits("val", batch_size - 1, canvas_size=height, seed=seed).batch().images
        inputs[:-1] = canvases_to_input(canvases, spec).numpy()
    return inputs


def check_parity(
    graph: ExportableGraph,
    model_bytes: bytes,
    tolerance: float = PARITY_TOLERANCE,
    batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES,
) -> ParityReport:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    spec = graph.spec
    report = ParityReport(tolerance, batch_sizes, {name: 0.0 for name in spec.output_names})
    graph.eval()
    for seed, batch_size in enumerate(batch_sizes):
        inputs = parity_inputs(graph, batch_size, seed)
        options = option_inputs(spec, batch_size, seed)
        with torch.no_grad():
            expected = graph(torch.from_numpy(inputs), *(torch.from_numpy(v) for v in options.values()))
        actual = session.run(list(spec.output_names), {spec.input_name: inputs, **options})
        for name, want, got in zip(spec.output_names, expected, actual, strict=True):
            if tuple(want.shape) != got.shape:
                raise ParityError(f"{name}: torch shape {tuple(want.shape)} vs onnxruntime {got.shape}")
            diff = float(np.max(np.abs(want.numpy() - got))) if got.size else 0.0
            report.max_abs_diff[name] = max(report.max_abs_diff[name], diff)
    return report
