"""The fixed pipeline: validate → preprocess → Triton → postprocess, each stage measured.

CPU-bound stages (decoding, resampling, PNG encoding) run on a small thread pool so the event
loop keeps accepting requests; Triton is awaited.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from attnserve.errors import DeadlineExceeded, InvalidInput, Overloaded
from attnserve.prediction import ImageInfo, MapForm, Prediction, Timings
from attnserve.settings import GatewaySettings
from attnserve.spec import ModelSpec

from .catalog import ModelCatalog, ServedModel
from .geometry import ResizeGeometry
from .metrics import GatewayMetrics
from .postprocess import AttentionRequest, postprocess
from .preprocess import ImageLimits, PreparedInput, preprocess_image, preprocess_tensor
from .triton_client import TritonClient

PRIMARY = "primary"
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class PredictCall:
    """A prediction request, decoded from the wire but not yet checked against a model."""

    image: bytes | None = None
    tensor: NDArray[np.float32] | None = None
    model: str | None = None
    model_version: str = ""
    top_k: int | None = None
    maps: tuple[str, ...] = ()
    forms: frozenset[MapForm] = frozenset()
    render: tuple[str, ...] = ()
    target_class: int | None = None
    omit_attention: bool = False
    request_id: str = ""


def resolve_top_k(top_k: int | None, spec: ModelSpec, limit: int) -> int:
    classes = len(spec.labels)
    if top_k is None:
        return min(DEFAULT_TOP_K, classes)
    if top_k <= 0:
        raise InvalidInput(f"top_k must be at least 1, got {top_k}")
    if top_k > classes:
        raise InvalidInput(f"top_k {top_k} is larger than the model's {classes} classes")
    if top_k > limit:
        raise InvalidInput(f"top_k {top_k} is above the gateway's limit of {limit}")
    return top_k


def resolve_attention(call: PredictCall, spec: ModelSpec) -> AttentionRequest:
    """Checks map names, forms and the target class against the model's spec."""
    if call.target_class is not None and not 0 <= call.target_class < len(spec.labels):
        raise InvalidInput(f"target_class {call.target_class} is outside 0..{len(spec.labels) - 1}")
    if call.omit_attention:
        return AttentionRequest((), frozenset(), call.target_class)
    names = _resolve_map_names(call.maps, spec)
    render = _resolve_map_names(call.render, spec) if call.render else None
    if render is not None and (missing := [n for n in render if n not in names]):
        raise InvalidInput(f"render names maps that are not selected: {', '.join(missing)}")
    forms = call.forms or frozenset({MapForm.RAW})
    return AttentionRequest(
        tuple(names), forms, call.target_class, None if render is None else frozenset(render)
    )


def _resolve_map_names(requested: tuple[str, ...], spec: ModelSpec) -> list[str]:
    """Map names (or "primary") → output names, checked, in order, without repeats."""
    known = [a.name for a in spec.attention]
    names: list[str] = []
    for name in requested or known:
        if name == PRIMARY:
            if spec.primary_attention is None:
                raise InvalidInput("this model names no primary attention map; ask for a map by name")
            name = spec.primary_attention
        if name not in known:
            raise InvalidInput(f"unknown attention map {name!r}; this model has: {', '.join(known)}")
        if name not in names:
            names.append(name)
    return names


def check_response_size(
    attention: AttentionRequest, spec: ModelSpec, geometry: ResizeGeometry, limit: int
) -> None:
    """Refuses, before any work, an UPSAMPLED answer that cannot fit in one message.

    UPSAMPLED maps are float32 at the original size (48 MB for one 12-megapixel photo); PNG
    forms compress and are not estimated.
    """
    if MapForm.UPSAMPLED not in attention.forms:
        return
    rendered = [n for n in attention.maps if attention.renders(n) and spec.attention_by_name(n).is_spatial]
    size = len(rendered) * geometry.width * geometry.height * 4
    if size > limit:
        raise InvalidInput(
            f"{len(rendered)} UPSAMPLED maps of a {geometry.width}×{geometry.height} image need "
            f"{size / 2**20:.0f} MiB, above the {limit / 2**20:.0f} MiB message limit: name fewer maps in "
            "`render`, or ask for RAW maps and upsample them yourself"
        )


class Pipeline:
    def __init__(
        self,
        settings: GatewaySettings,
        catalog: ModelCatalog,
        triton: TritonClient,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.triton = triton
        self.metrics = metrics
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="attnserve-cpu")
        self._in_flight = 0

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def predict(self, call: PredictCall, deadline_s: float | None = None) -> Prediction:
        """One image through the pipeline; ``deadline_s`` is the caller's remaining time."""
        if self._in_flight >= self.settings.max_in_flight:
            limit = self.settings.max_in_flight
            raise Overloaded(f"{self._in_flight} predictions are in flight (limit {limit}); retry shortly")
        self._in_flight += 1
        try:
            return await self._predict(call, deadline_s)
        finally:
            self._in_flight -= 1

    async def _predict(self, call: PredictCall, deadline_s: float | None) -> Prediction:
        started = time.perf_counter()
        model = self.catalog.get(call.model)
        spec = model.spec
        top = resolve_top_k(call.top_k, spec, self.settings.max_top_k)
        attention = resolve_attention(call, spec)
        keep_image = MapForm.OVERLAY_PNG in attention.forms and bool(attention.maps)
        loop = asyncio.get_running_loop()

        prepared = await loop.run_in_executor(self.executor, self._prepare, call, spec, keep_image)
        check_response_size(attention, spec, prepared.geometry, self.settings.max_message_bytes)
        preprocessed = time.perf_counter()

        timeout = self.settings.triton_timeout_s
        if deadline_s is not None:
            remaining = deadline_s - (preprocessed - started)
            if remaining <= 0:
                raise DeadlineExceeded("the deadline passed during preprocessing")
            timeout = min(timeout, remaining)
        outputs = await self.triton.infer(
            model.name,
            call.model_version,
            spec.input_name,
            prepared.tensor[None],
            [spec.logits_name, *attention.maps],
            timeout,
            call.request_id,
        )
        inferred = time.perf_counter()

        first = {name: value[0] for name, value in outputs.items()}
        predictions, maps = await loop.run_in_executor(
            self.executor,
            postprocess,
            first,
            spec,
            prepared.geometry,
            top,
            attention,
            prepared.image,
        )
        finished = time.perf_counter()

        self._observe(model, preprocessed - started, inferred - preprocessed, finished - inferred)
        return Prediction(
            model=model.name,
            model_version=call.model_version or model.version,
            predictions=predictions,
            attention=maps,
            image=ImageInfo(prepared.geometry.width, prepared.geometry.height, prepared.format),
            timings=Timings(
                preprocess_ms=(preprocessed - started) * 1e3,
                inference_ms=(inferred - preprocessed) * 1e3,
                postprocess_ms=(finished - inferred) * 1e3,
                total_ms=(finished - started) * 1e3,
            ),
            request_id=call.request_id,
        )

    def _prepare(self, call: PredictCall, spec: ModelSpec, keep_image: bool) -> PreparedInput:
        if call.image is not None:
            return preprocess_image(call.image, spec.preprocess, self.limits, keep_image)
        if call.tensor is not None:
            return preprocess_tensor(call.tensor, spec.preprocess, keep_image)
        raise InvalidInput("the request has no input: set `image` (encoded bytes) or `tensor`")

    def _observe(
        self, model: ServedModel, preprocess_s: float, inference_s: float, postprocess_s: float
    ) -> None:
        stage = self.metrics.stage_seconds
        stage.labels(model.name, "preprocess").observe(preprocess_s)
        stage.labels(model.name, "inference").observe(inference_s)
        stage.labels(model.name, "postprocess").observe(postprocess_s)
        self.metrics.predictions.labels(model.name).inc()
