"""The fixed pipeline: validate → preprocess → inference → postprocess, each stage measured.

Transport-neutral: a front (gRPC, HTTP) decodes its wire format into a `PredictionRequest`,
calls `Pipeline.predict` with the caller's deadline and its own response-size limit, and
encodes the `Prediction`. CPU-bound stages (decoding, resampling, drawing and encoding images)
run on a small thread pool so the event loop keeps accepting requests, a heavy call's on render
workers (`heavy`: threads or processes); inference is awaited.
Small work runs on the loop itself, because a thread hand-off costs more in a process whose
throughput is bounded by the GIL, and under a burst each hand-off waits behind every refusal
queued on the loop: postprocessing that draws nothing (scores, raw maps, coordinates: ~0.4 ms
for cbam's 8 maps), and preprocessing a small image that is not kept
(``inline_preprocess_bytes``: the sample digit, 1.7 ms).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from attnserve import request_ids
from attnserve.errors import DeadlineExceeded, InvalidInput, ModelNotFound, TooLarge, shorten
from attnserve.model_info import ModelInfo
from attnserve.prediction import (
    IMAGE_FORMS,
    QUALITY_RANGE,
    ImageInfo,
    MapDType,
    MapForm,
    Prediction,
    PredictionRequest,
    Timings,
)
from attnserve.settings import GatewaySettings
from attnserve.spec import ModelSpec, Task
from attnserve.transform import ImageLimits, fit_within, probe_image

from .admission import Admission, answer_bytes, estimate_cost, task_answer_bytes
from .backend import InferenceBackend
from .catalog import ModelCatalog
from .heavy import HeavyWork
from .metrics import GatewayMetrics
from .outputs import check_output_shapes
from .postprocess import AttentionRequest, TaskOptions, answer_draws, postprocess, task_draws, task_inputs
from .postprocess.tasks import DEFAULT_SCORE_THRESHOLD, MAX_INSTANCES
from .preprocess import PreparedInput, preprocess_image, preprocess_tensor
from .render import ImageEncoder

log = logging.getLogger(__name__)

T = TypeVar("T")

PRIMARY = "primary"
DEFAULT_TOP_K = 5


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


def resolve_task_options(request: PredictionRequest, spec: ModelSpec, top_k_limit: int) -> TaskOptions:
    """Checks the task's options against the model's spec: top_k and the class to explain
    (classification), the score threshold and the number of instances (instance segmentation),
    a drawn answer (segmentation, instances). Another task's options are refused, by name."""
    task = spec.task
    classifies = task is Task.CLASSIFICATION
    foreign = [
        name
        for name, given, applies in (
            ("top_k", request.top_k is not None, classifies),
            ("score_threshold", request.score_threshold is not None, task is Task.INSTANCE_SEGMENTATION),
            ("max_instances", request.max_instances != 0, task is Task.INSTANCE_SEGMENTATION),
            ("overlay (task options)", request.task_overlay, not classifies),
        )
        if given and not applies
    ]
    if foreign:
        hint = " (a classifier's explanation is drawn by attention formats OVERLAY_PNG)" if classifies else ""
        article = "an" if task.value[0] in "aeiou" else "a"
        raise InvalidInput(f"{', '.join(foreign)} does not apply to {article} {task.value} model{hint}")
    target = request.target_class
    if target is not None and not 0 <= target < len(spec.labels):
        raise InvalidInput(f"target_class {target} is outside 0..{len(spec.labels) - 1}")
    threshold = DEFAULT_SCORE_THRESHOLD if request.score_threshold is None else request.score_threshold
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInput(f"score_threshold must be in [0, 1], got {threshold}")
    if not 0 <= request.max_instances <= MAX_INSTANCES:
        raise InvalidInput(
            f"max_instances must be 0–{MAX_INSTANCES} (0: {MAX_INSTANCES}), got {request.max_instances}"
        )
    return TaskOptions(
        top_k=resolve_top_k(request.top_k, spec, top_k_limit) if classifies else 0,
        target_class=target,
        score_threshold=threshold,
        max_instances=request.max_instances or MAX_INSTANCES,
        overlay=request.task_overlay,
        model_options=resolve_model_options(request.model_options, spec),
    )


def resolve_model_options(given: tuple[tuple[str, int], ...], spec: ModelSpec) -> dict[str, int]:
    """The model's own options (`attnserve.spec.InputOption`): each one given checked against its
    bounds, every other one at its default; an option the model lacks is refused by name."""
    known = {option.name: option for option in spec.options}
    values = {name: option.default for name, option in known.items()}
    for name, value in given:
        option = known.get(name)
        if option is None:
            offered = (
                "its options: " + ", ".join(f"{o.name} ({o.minimum}–{o.maximum})" for o in spec.options)
                if spec.options
                else "it takes none"
            )
            raise InvalidInput(f"this model has no option {shorten(name)}; {offered}")
        if not option.minimum <= value <= option.maximum:
            raise InvalidInput(
                f"option {name} must be {option.minimum}–{option.maximum} ({option.description}), got {value}"
            )
        values[name] = value
    return values


def resolve_attention(request: PredictionRequest, spec: ModelSpec) -> AttentionRequest:
    """Checks map names, forms and their encodings against the model's spec."""
    encoder = resolve_image_encoder(request)
    if request.omit_attention:
        return AttentionRequest((), frozenset(), encoder=encoder, map_dtype=request.map_dtype)
    names = _resolve_map_names(request.maps, spec)
    render = _resolve_map_names(request.render, spec) if request.render else None
    if render is not None and (missing := [n for n in render if n not in names]):
        raise InvalidInput(f"render names maps that are not selected: {', '.join(missing)}")
    forms = request.forms or frozenset({MapForm.RAW})
    if request.map_dtype is MapDType.UINT8 and MapForm.RAW in forms:
        raise InvalidInput(
            "map_dtype UINT8 applies to UPSAMPLED maps only (display values in [0, 1] as levels "
            "0–255); RAW values have no fixed range: ask FLOAT16 for half the bytes, or only "
            "UPSAMPLED in formats (RAW is the default when formats is empty)"
        )
    return AttentionRequest(
        tuple(names),
        forms,
        None if render is None else frozenset(render),
        encoder=encoder,
        map_dtype=request.map_dtype,
    )


def may_draw(request: PredictionRequest, spec: ModelSpec) -> bool:
    """Whether the answer may hold images, told from the request's fields before they are
    checked: a map asked for in an image form, a task that always draws, or the task's overlay.
    (`answer_draws` tells for sure, once the request is resolved.)"""
    asked = not request.omit_attention and bool(request.forms & IMAGE_FORMS)
    return asked or request.task_overlay or task_draws(spec.task)


def with_tiles(attention: AttentionRequest, model: ModelInfo) -> AttentionRequest:
    """The request with the number of tiles each drawn stack will have: the product of its
    leading axes but the class (which classification selects), from the model's output shapes."""
    tiles: dict[str, int] = {}
    spec = model.spec
    for name in attention.maps:
        described = spec.attention_by_name(name)
        if not described.is_spatial or not described.leading_axes:
            continue
        shape = model.item_shape(name)
        count = math.prod(
            size
            for axis, size in zip(described.leading_axes, shape, strict=False)
            if axis != "class" and size > 0
        )
        if count > 1:
            tiles[name] = count
    return dataclasses.replace(attention, tiles=tiles) if tiles else attention


def resolve_image_encoder(request: PredictionRequest) -> ImageEncoder:
    """Checks the image forms' encoding options: a quality only for a lossy encoding, in range."""
    encoding, quality = request.image_encoding, request.image_quality
    if quality is None:
        return ImageEncoder(encoding)
    if encoding.default_quality is None:
        raise InvalidInput(
            f"image_quality applies to the lossy encodings (JPEG, WEBP); {encoding.name} is "
            "lossless: leave image_quality unset, or ask image_encoding JPEG or WEBP"
        )
    low, high = QUALITY_RANGE
    if not low <= quality <= high:
        raise InvalidInput(
            f"image_quality must be {low}–{high}, got {quality} (unset: "
            f"{encoding.default_quality} for {encoding.name})"
        )
    return ImageEncoder(encoding, quality)


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
    attention: AttentionRequest,
    spec: ModelSpec,
    render_size: tuple[int, int],
    limit: int,
    task: TaskOptions | None = None,
) -> None:
    """Refuses, once the image's size is known and before postprocessing, image forms that
    cannot fit in ``limit`` bytes (a front's message limit): UPSAMPLED maps at the render size
    in their data type, PNGs counted at one byte a pixel and JPEG/WebP at a share of that
    (most compress better than that; the front checks the real answer again).
    """
    size = answer_bytes(spec, attention, render_size, png_bytes=1.0)
    size += task_answer_bytes(spec, task or TaskOptions(), render_size, png_bytes=1.0)
    if size > limit:
        width, height = render_size
        raise TooLarge(
            f"the image forms asked for, at {width}×{height}, need about {size / 2**20:.0f} MiB, above the "
            f"{limit / 2**20:.0f} MiB message limit: name fewer maps in `render`, fewer forms, a smaller "
            "render_max_side, compact encodings (image_encoding JPEG or WEBP, map_dtype FLOAT16 or "
            "UINT8), or ask for RAW maps and upsample them yourself"
        )


def prepare(
    request: PredictionRequest, spec: ModelSpec, limits: ImageLimits, keep_image: bool, render_side: int
) -> PreparedInput:
    """The request's input → the model's tensor (and the image at the render size when kept). A
    module-level function: heavy calls run it in a render worker, which may be a process."""
    if request.image is not None:
        return preprocess_image(request.image, spec.preprocess, limits, keep_image, render_side)
    if request.tensor is not None:
        return preprocess_tensor(request.tensor, spec.preprocess, keep_image, render_side)
    raise InvalidInput("the request has no input: set `image` (encoded bytes) or `tensor`")


MIN_DEADLINE_S = 0.002
"""A call with less time left is refused at once: no decoding, nothing sent to Triton."""


class Pipeline:
    def __init__(
        self,
        settings: GatewaySettings,
        catalog: ModelCatalog,
        backend: InferenceBackend,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.backend = backend
        self.metrics = metrics
        self.limits = settings.image_limits
        self.executor = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="attnserve-cpu")
        self.heavy = HeavyWork(settings.render_threads, settings.render_processes, settings.render_nice)
        self.admission = Admission(settings, metrics)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.heavy.close()

    async def predict(
        self,
        request: PredictionRequest,
        deadline_s: float | None = None,
        response_limit_bytes: int | None = None,
        queued_s: float | None = None,
    ) -> Prediction:
        """One image through the pipeline.

        ``deadline_s`` is the caller's remaining time; ``response_limit_bytes`` the largest
        answer the calling front can send; ``queued_s`` how long the call waited before the
        front took it up, when the caller said (`attnserve.queueing`).
        """
        started = time.perf_counter()
        if deadline_s is not None and deadline_s < MIN_DEADLINE_S:
            raise DeadlineExceeded(
                f"the deadline leaves {max(deadline_s, 0) * 1e3:.1f} ms, too little to predict; "
                "nothing was decoded"
            )
        request_id = request_ids.bind(request.request_id)
        if request_id != request.request_id:
            request = dataclasses.replace(request, request_id=request_id)
        if (paused := self.catalog.paused_as(request.model)) is not None:
            await self._wait_resumed(paused, deadline_s)
        self.admission.enter()
        try:
            return await self._predict(request, started, deadline_s, response_limit_bytes, queued_s)
        finally:
            self.admission.leave()

    async def _wait_resumed(self, model: str, deadline_s: float | None) -> None:
        """``model`` is being replaced (watch_repository): its calls wait for the new release
        within their deadline, outside the in-flight cap, so that they do not crowd out the other
        models' calls meanwhile (they have a cap of their own, `Admission.waiting`)."""
        wait_s, bound = self.settings.triton_timeout_s, False
        if deadline_s is not None and deadline_s <= wait_s:
            wait_s, bound = deadline_s, True
        with self.admission.waiting(model):
            await self.catalog.wait_resumed(model, wait_s, bound)

    async def _predict(
        self,
        request: PredictionRequest,
        started: float,
        deadline_s: float | None,
        response_limit_bytes: int | None,
        queued_s: float | None,
    ) -> Prediction:
        model = self._model_for(request, queued_s)
        spec = model.spec
        options = resolve_task_options(request, spec, self.settings.max_top_k)
        attention = with_tiles(resolve_attention(request, spec), model)
        render_side = request.render_max_side or self.settings.render_max_side
        header = probe_image(request.image, self.limits) if request.image is not None else None
        cost = estimate_cost(header, spec, attention, render_side, self.settings, options)
        with self.admission.admit(model.name, cost):
            keep_image = attention.needs_image or options.overlay
            inline = self.settings.inline_preprocess_bytes
            encoded = len(request.image) if request.image is not None else 0
            if not keep_image and cost.memory_bytes <= inline and encoded <= inline:
                # a small image (the sample digit: 1.7 ms): no thread hand-off, which costs more,
                # and which under a burst waits behind every refusal before the call goes on;
                # small to decode and small on the wire (a tiny raster in megabytes of chunks or
                # scans would take the loop for as long as they take to read)
                prepared = prepare(request, spec, self.limits, keep_image, render_side)
            else:
                prepared = await self._off_loop(
                    cost.heavy, prepare, request, spec, self.limits, keep_image, render_side
                )
            geometry = prepared.geometry
            render_size = fit_within(geometry.width, geometry.height, render_side)
            if response_limit_bytes is not None:
                check_response_size(attention, spec, render_size, response_limit_bytes, options)
            preprocessed = time.perf_counter()

            timeout = self.settings.triton_timeout_s
            if deadline_s is not None:
                remaining = deadline_s - (preprocessed - started)
                if remaining <= 0:
                    raise DeadlineExceeded("the deadline passed during preprocessing")
                timeout = min(timeout, remaining)
            wanted = list(dict.fromkeys([*task_inputs(spec), *attention.maps]))
            inputs = {spec.input_name: prepared.tensor[None]}
            for name, value in options.model_options.items():
                inputs[name] = np.array([[value]], dtype=np.int64)
            outputs = await self.backend.infer(
                model.name,
                request.model_version,
                inputs,
                wanted,
                timeout,
                request.request_id,
            )
            inferred = time.perf_counter()
            check_output_shapes(outputs, model, wanted)

            first = {name: value[0] for name, value in outputs.items()}
            if not all(np.isfinite(first[name]).all() for name in spec.task_outputs):
                raise InvalidInput(
                    "the model's scores are not finite for this input: a tensor's values must be "
                    "normalised pixels (see the model's preprocessing mean and std)"
                )
            work = (first, spec, geometry, options, attention, prepared.image, render_size)
            if answer_draws(spec, attention, options):
                answer = await self._off_loop(cost.heavy, postprocess, *work)
            else:  # numbers only (cbam's 8 maps raw: ~0.4 ms): cheaper here than a thread hand-off
                answer = postprocess(*work)
            finished = time.perf_counter()

            self._observe(model, preprocessed - started, inferred - preprocessed, finished - inferred)
            return Prediction(
                model=model.name,
                model_version=request.model_version or model.version,
                predictions=answer.task.predictions,
                attention=answer.attention,
                image=ImageInfo(geometry.width, geometry.height, prepared.format),
                timings=Timings(
                    preprocess_ms=(preprocessed - started) * 1e3,
                    inference_ms=(inferred - preprocessed) * 1e3,
                    postprocess_ms=(finished - inferred) * 1e3,
                    total_ms=(finished - started) * 1e3,
                    queued_ms=None if queued_s is None else queued_s * 1e3,
                ),
                request_id=request.request_id,
                task=spec.task.value,
                segmentation=answer.task.segmentation,
                instances=answer.task.instances,
                caption=answer.task.caption,
                task_overlay=answer.task.overlay,
                task_overlay_encoding=answer.task.overlay_encoding,
            )

    def _model_for(self, request: PredictionRequest, queued_s: float | None) -> ModelInfo:
        """The request's model. A call that waited longer than its model's latency allows is
        refused here when it draws nothing: before its request is checked or its image read
        (`Admission.check_wait`)."""
        model = self.catalog.get(request.model)
        if queued_s is not None:
            self.metrics.queued_seconds.labels(model.name).observe(queued_s)
        if request.model_version and request.model_version != model.version:
            raise ModelNotFound(
                f"model {model.name!r} has no version {shorten(request.model_version)}; "
                f"served: {model.version} (or leave model_version empty)"
            )
        if queued_s is not None and not may_draw(request, model.spec):
            self.admission.check_wait(model.name, queued_s)
        return model

    async def _off_loop(self, heavy: bool, function: Callable[..., T], *args: object) -> T:
        """``function`` off the event loop: a heavy call's on the render workers, others' on the
        worker threads."""
        if heavy:
            return await self.heavy.run(function, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def _observe(
        self, model: ModelInfo, preprocess_s: float, inference_s: float, postprocess_s: float
    ) -> None:
        stage = self.metrics.stage_seconds
        stage.labels(model.name, "preprocess").observe(preprocess_s)
        stage.labels(model.name, "inference").observe(inference_s)
        stage.labels(model.name, "postprocess").observe(postprocess_s)
        self.metrics.predictions.labels(model.name).inc()
