"""Any classifier ``nn.Module`` → a serving graph whose attention tensors are named outputs.

Forward hooks on the registered attention modules' gate submodules (`_registry`) record their
outputs during the model's own forward pass; `CapturedGraph.forward` returns them beside the
logits, so ``torch.onnx.export`` traces them as graph outputs. The hooks exist only while the
graph runs (export, parity): the user's model is left as it was, and serving runs the ONNX graph.

The in-graph class activation map (`..models._cam`) is added when the head is found *by
structure* (the input of the last global-average-pooling module and the last ``nn.Linear``
producing the logits) and *confirmed numerically* on a probe input: ``linear(mean(features))``
must equal the logits. Any other head (an MLP, a norm after the pooling, max or attention
pooling) gets no CAM, with the reason said, never a wrong map.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnserve.errors import InvalidInput
from attnserve.spec import KIND_AXES, AttentionKind, AttentionSpec, ModelSpec, PreprocessSpec

from ..models._cam import CAM_OUTPUT, CAM_SPEC, class_activation_maps
from ._registry import AttentionSite, find_attention_sites, qualified_name

HEAD_TOLERANCE = 1e-4
"""``linear(mean(features))`` vs the logits, relative to the logits' largest magnitude (≥ 1)."""

_FAST_AVG_POOL = "timm.layers.adaptive_avgmax_pool.FastAdaptiveAvgPool"
_PROBE_BATCH = 2
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class CapturedMap:
    """An attention output: where it is tapped, its graph output name and its description."""

    site: AttentionSite
    name: str
    spec: AttentionSpec


@dataclass(frozen=True)
class GapLinearHead:
    """A head found to be global average pooling + one linear layer (CAM applies)."""

    pool: nn.Module
    pool_path: str
    classifier: nn.Linear
    classifier_path: str
    max_abs_diff: float
    """``|linear(mean(features)) - logits|`` on the probe input."""


class CapturedGraph(nn.Module):
    """What is exported: ``images -> (logits, *attention maps[, cam])`` in ``spec.output_names``
    order. Built by `capture_attention`."""

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        maps: Sequence[CapturedMap],
        head: GapLinearHead | None,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        # plain tuples: the tapped modules stay the model's submodules, not this graph's
        self.maps = tuple(maps)
        self.head = head
        self.notes = tuple(notes)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.named_outputs(images)
        return tuple(outputs[name] for name in self.spec.output_names)

    def named_outputs(self, images: Tensor) -> dict[str, Tensor]:
        with _recording([m.site for m in self.maps], self.head.pool if self.head else None) as record:
            logits = self.model(images)
        outputs = {self.spec.logits_name: _logits_tensor(logits)}
        for captured in self.maps:
            tensors = record.site_outputs[captured.site]
            if len(tensors) != 1:  # the probe saw exactly one call; a forward that differs is a bug
                raise RuntimeError(f"{captured.site.label}: ran {len(tensors)} times in this forward pass")
            outputs[captured.name] = shape_attention(tensors[0], captured.site.tap.kind, captured.site)
        if self.head is not None:
            outputs[CAM_OUTPUT] = class_activation_maps(record.pooled_features(), self.head.classifier)
        return outputs


@dataclass
class _Record:
    site_outputs: dict[AttentionSite, list[Tensor]]
    pool_inputs: list[tuple[int, nn.Module, Tensor]] = field(default_factory=list)
    linear_outputs: list[tuple[int, nn.Module, Tensor]] = field(default_factory=list)
    calls: int = 0

    def tick(self) -> int:
        self.calls += 1
        return self.calls

    def pooled_features(self) -> Tensor:
        if not self.pool_inputs:
            raise RuntimeError("the head's pooling did not run in this forward pass")
        return self.pool_inputs[-1][2]


@contextlib.contextmanager
def _recording(
    sites: Sequence[AttentionSite],
    pool: nn.Module | None,
    candidates: nn.Module | None = None,
) -> Iterator[_Record]:
    """Hooks for one forward pass: each site's output; ``pool``'s input; with ``candidates`` (the
    model), every global-average-pooling module's input and every linear layer's output."""
    record = _Record({site: [] for site in sites})
    handles = []

    def keep_site_output(site: AttentionSite) -> Any:
        def hook(module: nn.Module, inputs: object, output: Tensor | tuple[Tensor, ...]) -> None:
            tensor = output[0] if isinstance(output, tuple) else output
            record.site_outputs[site].append(tensor.clone())  # immune to later in-place edits

        return hook

    def keep_pool_input(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        record.pool_inputs.append((record.tick(), module, inputs[0]))

    def keep_linear_output(module: nn.Module, inputs: object, output: Tensor) -> None:
        record.linear_outputs.append((record.tick(), module, output))

    try:
        for site in sites:
            handles.append(site.target.register_forward_hook(keep_site_output(site)))
        if pool is not None:
            handles.append(pool.register_forward_pre_hook(keep_pool_input))
        if candidates is not None:
            for module in candidates.modules():
                if is_global_average_pool(module):
                    handles.append(module.register_forward_pre_hook(keep_pool_input))
                elif isinstance(module, nn.Linear):
                    handles.append(module.register_forward_hook(keep_linear_output))
        yield record
    finally:
        for handle in handles:
            handle.remove()


def is_global_average_pool(module: nn.Module) -> bool:
    """``nn.AdaptiveAvgPool2d(1)`` or timm's fast average pool (inside ``SelectAdaptivePool2d``)."""
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return module.output_size in (1, (1, 1))
    return qualified_name(type(module)) == _FAST_AVG_POOL


def _logits_tensor(output: object) -> Tensor:
    if not isinstance(output, Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise InvalidInput(f"the model returns {shape}; a classifier returns logits, batch × classes")
    return output


def shape_attention(tensor: Tensor, kind: AttentionKind, site: AttentionSite) -> Tensor:
    """A hooked tensor in its kind's layout: CHANNEL B×C, SPATIAL B×H×W (mean over channels)."""
    if site.tap.transform is not None:
        tensor = site.tap.transform(tensor)
    if kind is AttentionKind.CHANNEL:
        return tensor.flatten(1)
    if tensor.dim() == 3:
        return tensor
    return tensor.flatten(1, -3).mean(dim=1)


def _shape_problem(shape: tuple[int, ...], kind: AttentionKind) -> str | None:
    """Why a tensor of this (probe) shape is not attention of ``kind``; None when it is."""
    dims = shape[1:]
    if kind is AttentionKind.CHANNEL:
        if sum(1 for d in dims if d > 1) > 1:
            return f"its tensor (e.g. {shape}) varies over more than channels"
        return None
    if len(dims) < 2 or dims[-1] * dims[-2] <= 1:
        return f"its tensor (e.g. {shape}) has no spatial extent"
    return None


def output_name(path: str, tap_name: str, taken: set[str]) -> str:
    """``layer1.0.se`` + ``channel`` → ``layer1_0_se_channel``: ONNX/Triton-safe, unique."""
    base = _UNSAFE.sub("_", f"{path}_{tap_name}").strip("_")
    if not base[:1].isalpha():
        base = f"module_{base}"
    name, counter = base, 2
    while name in taken:
        name, counter = f"{base}_{counter}", counter + 1
    taken.add(name)
    return name


def _describe(site: AttentionSite, shape: tuple[int, ...]) -> str:
    what = site.tap.description or f"{site.module_type.rsplit('.', 1)[-1]} {site.tap_name}"
    if site.tap.kind is AttentionKind.CHANNEL:
        return f"{what} at {site.path} ({shape[-1] if len(shape) > 1 else 1} channels)"
    height, width = shape[-2:]
    stacked = f", mean over its {shape[1]} channels" if len(shape) == 4 and shape[1] > 1 else ""
    return f"{what} at {site.path} ({height}×{width}{stacked})"


def _captured_maps(
    sites: Sequence[AttentionSite], record: _Record, reserved: set[str], notes: list[str]
) -> list[CapturedMap]:
    maps: list[CapturedMap] = []
    taken = set(reserved)
    skipped: dict[tuple[str, str, str], list[str]] = {}  # (type, tap, why) → paths: one note each
    for site in sites:
        calls = record.site_outputs[site]
        if len(calls) != 1:
            why = "it does not run in the forward pass" if not calls else "it runs more than once per pass"
            skipped.setdefault((site.module_type, site.tap_name, why), []).append(site.path)
            continue
        transformed = site.tap.transform(calls[0]) if site.tap.transform is not None else calls[0]
        shape = tuple(transformed.shape)
        problem = _shape_problem(shape, site.tap.kind)
        if problem is not None:
            why = f"not {site.tap.kind.value} attention, {problem}"
            skipped.setdefault((site.module_type, site.tap_name, why), []).append(site.path)
            continue
        name = output_name(site.path, site.tap_name, taken)
        spec = AttentionSpec(
            name=name,
            kind=site.tap.kind,
            axes=KIND_AXES[site.tap.kind],
            description=_describe(site, shape),
            value_range=site.tap.value_range,
            normalization=site.tap.normalization,
            block=site.path,
        )
        maps.append(CapturedMap(site, name, spec))
    for (module_type, tap_name, why), paths in skipped.items():
        where = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        notes.append(f"{module_type.rsplit('.', 1)[-1]} {tap_name} skipped at {where}: {why}")
    return maps


def find_gap_linear_head(model: nn.Module, record: _Record, logits: Tensor) -> GapLinearHead | str:
    """The GAP + linear head from a recorded probe pass, confirmed numerically; else why not."""
    paths = {module: path for path, module in model.named_modules()}
    producing = [
        (order, module, output)
        for order, module, output in record.linear_outputs
        if output is logits or (output.shape == logits.shape and torch.equal(output, logits))
    ]
    if not producing:
        return "no nn.Linear produces the logits (the head ends in another layer)"
    order, classifier, _ = producing[-1]
    assert isinstance(classifier, nn.Linear)
    pools = [(o, module, features) for o, module, features in record.pool_inputs if o < order]
    if not pools:
        return (
            f"no global average pooling (nn.AdaptiveAvgPool2d(1), timm's avg pool) runs before "
            f"the linear head {paths[classifier]} (max, attention or token pooling?)"
        )
    _, pool, features = pools[-1]
    where = f"{paths[pool]} → {paths[classifier]}"
    if features.dim() != 4:
        return f"the pooled tensor at {paths[pool]} is {tuple(features.shape)}, not a B×C×h×w feature map"
    if features.shape[1] != classifier.in_features:
        return (
            f"{paths[classifier]} takes {classifier.in_features} features but {paths[pool]} pools "
            f"{features.shape[1]} channels: layers (an MLP?) lie between them"
        )
    with torch.no_grad():
        diff = float((classifier(features.mean(dim=(2, 3))) - logits).abs().max())
    allowed = HEAD_TOLERANCE * max(1.0, float(logits.abs().max()))
    if not diff <= allowed:
        return (
            f"linear(mean(features)) differs from the logits by {diff:.2e} ({where}): the head does "
            f"more than average pooling + one linear layer (a norm, an MLP, a max pool?)"
        )
    return GapLinearHead(pool, paths[pool], classifier, paths[classifier], diff)


def capture_attention(
    model: nn.Module,
    preprocess: PreprocessSpec,
    labels: Sequence[str],
    *,
    name: str,
    description: str = "",
    cam: bool | None = None,
    architecture: str | None = None,
) -> CapturedGraph:
    """``model`` (a classifier: images → logits) as a graph with every registered attention
    module's tensors as named outputs, and the in-graph CAM where its head allows.

    Args:
        model: any ``nn.Module``; put in eval mode. Float32 on the CPU.
        preprocess: what the gateway does to an image before the model sees it.
        labels: one per logit.
        name: the model's name (in the spec's description when none is given).
        description: what the model is, in words.
        cam: True requires the CAM (`InvalidInput` when the head is not GAP + linear), False
            leaves it out, None adds it where it applies (and says why not otherwise).
        architecture: the spec's architecture (default: the model class's qualified name).

    Raises:
        InvalidInput: the model does not return logits for ``labels``, or ``cam=True`` cannot
            be honoured.
    """
    labels = tuple(labels)
    if len(labels) < 2:
        raise InvalidInput(f"a classifier needs at least 2 labels, got {len(labels)}")
    if repeated := sorted({label for label in labels if labels.count(label) > 1}):
        shown = ", ".join(repr(label) for label in repeated[:5])
        raise InvalidInput(f"labels must be distinct: {shown} appear more than once (of {len(labels)})")
    _check_cpu_float(model)
    model.eval()
    notes: list[str] = []
    sites, site_notes = find_attention_sites(model)
    notes.extend(site_notes)
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(_PROBE_BATCH, preprocess.channels, *preprocess.input_size, generator=generator)
    with torch.no_grad(), _recording(sites, None, candidates=model if cam is not False else None) as record:
        logits = _logits_tensor(model(probe))
    if logits.shape[1] != len(labels):
        raise InvalidInput(f"the model has {logits.shape[1]} outputs but {len(labels)} labels were given")
    head: GapLinearHead | None = None
    if cam is not False:
        found = find_gap_linear_head(model, record, logits)
        if isinstance(found, str):
            if cam:
                raise InvalidInput(f"no CAM for this model: {found}")
            notes.append(f"no CAM: {found}")
        else:
            head = found
            notes.append(
                f"CAM: head {found.pool_path} → {found.classifier_path} confirmed as average pooling + "
                f"linear (|linear(mean(features)) - logits| = {found.max_abs_diff:.1e})"
            )
    reserved = {_default("input_name"), _default("logits_name"), CAM_OUTPUT}
    maps = _captured_maps(sites, record, reserved, notes)
    attention = (*(m.spec for m in maps), *((CAM_SPEC,) if head is not None else ()))
    primary, reason = default_primary(attention)
    architecture = architecture or qualified_name(type(model))
    spec = ModelSpec(
        architecture=architecture,
        description=description or f"{name}: {architecture}, exported with attnserve.export.byo",
        preprocess=preprocess,
        labels=labels,
        attention=attention,
        primary_attention=primary,
        primary_reason=reason,
    )
    return CapturedGraph(model, spec, maps, head, notes)


def default_primary(attention: Sequence[AttentionSpec]) -> tuple[str | None, str]:
    """The last spatial attention map, else the CAM; with the reason."""
    spatial = [a for a in attention if a.kind is AttentionKind.SPATIAL]
    if spatial:
        return spatial[-1].name, (
            f"the deepest spatial attention map ({spatial[-1].block}): where the network's last "
            "attention over positions looks"
        )
    if any(a.name == CAM_OUTPUT for a in attention):
        return CAM_OUTPUT, (
            "no attention module gives a map over positions; the in-graph CAM shows where the "
            "predicted class's evidence lies"
        )
    return None, "no attention map over positions and no CAM: channel weights only, nothing to overlay"


def _default(field_name: str) -> str:
    value = ModelSpec.model_fields[field_name].default
    assert isinstance(value, str)
    return value


def _check_cpu_float(model: nn.Module) -> None:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.device.type != "cpu" or (tensor.is_floating_point() and tensor.dtype != torch.float32):
            raise InvalidInput(
                f"export runs on the CPU in float32; the model has a {tensor.dtype} tensor on "
                f"{tensor.device}: call model.float().cpu() first"
            )
