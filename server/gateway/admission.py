"""Admission: what a request may cost, decided before any work is done on it.

Six limits, each checked on the event loop before decoding, each refused at once with
RESOURCE_EXHAUSTED and a retry hint — nothing waits in a hidden queue:

- requests in flight (``max_in_flight``), a hard cap checked before anything is looked at
  (calls waiting for a model's new release are not in flight: they have a cap of their own,
  `Admission.waiting`);
- cheap requests in flight: as many as keep their latency within ``latency_tolerance`` × their
  no-load latency (`AdaptiveLimit`, learnt from their completions; ``adaptive_concurrency``);
- one model's share of each of the two (``model_share`` of the cheap limit and of
  ``max_heavy_in_flight``): a flood on one model leaves room for the others;
- heavy requests in flight (``max_heavy_in_flight``): those that render image forms or decode a
  large image. They also run on their own threads (`Pipeline`), so cheap predictions are never
  queued behind a 12-megapixel overlay;
- the wait before the gateway took a call up, when its client stated its timeout
  (`check_wait`, `attnserve.queueing`): what the model's latency allows, checked first of all
  for predictions that draw nothing;
- memory: every request's decode and render memory is estimated from its image header
  (`estimate_cost`) and reserved from ``memory_budget_bytes``; what does not fit is refused (and
  a request that could never fit is `TooLarge`, with what to change).

The retry hint is the category's recent service time (an exponential average), clamped to
50 ms – 10 s: by then about one request of that kind has finished.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from attnserve.errors import Overloaded, TooLarge
from attnserve.prediction import ENCODED_FORMS, MapForm
from attnserve.settings import GatewaySettings
from attnserve.spec import AttentionKind, ColorMode, ModelSpec
from attnserve.transform import HIGH_DEPTH_MODES, ImageHeader, draft_reduction, fit_within, jpeg_draft_scale

from .concurrency import MIN_EXCESS_S, AdaptiveLimit, machine_cores
from .metrics import GatewayMetrics
from .postprocess import AttentionRequest, TaskOptions, answer_draws, task_draws

MIB = 2**20
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La", "P"})
_DRAWN_KINDS = frozenset({AttentionKind.BOXES, AttentionKind.PATH})
_RETRY_MIN_S, _RETRY_MAX_S = 0.05, 10.0
PAUSED_RETRY_S = 1.0
"""The retry hint of a call refused while too many wait for a model's new release: a release
loads in seconds."""


@dataclass(frozen=True)
class Cost:
    memory_bytes: int
    """Decode + render memory at its peak, an upper estimate."""
    heavy: bool
    render_size: tuple[int, int] | None = None
    """(width, height) of the image forms; None when none is drawn."""


def answer_bytes(
    spec: ModelSpec, attention: AttentionRequest, size: tuple[int, int], png_bytes: float
) -> int:
    """The image forms' share of the answer at ``size``: UPSAMPLED maps in their data type, and
    PNGs counted at ``png_bytes`` a pixel (an overlay of a photo takes about 2, a heatmap less),
    JPEG and WebP at the encoder's upper share of that."""
    pixels = size[0] * size[1]
    forms = attention.forms
    spatial = [n for n in attention.maps if attention.renders(n) and spec.attention_by_name(n).is_spatial]
    pngs = len(forms & ENCODED_FORMS)
    drawn_on = 0  # boxes and paths: drawn on the overlay only
    if MapForm.OVERLAY_PNG in forms:
        drawn_on = sum(
            1
            for n in attention.maps
            if attention.renders(n) and spec.attention_by_name(n).kind in _DRAWN_KINDS
        )
    drawn = sum(attention.tiles.get(n, 1) for n in spatial)  # a stack: a tile per index
    upsampled = attention.map_dtype.itemsize * drawn * pixels if MapForm.UPSAMPLED in forms else 0
    encoded_per_pixel = png_bytes * attention.encoder.size_share
    return upsampled + math.ceil(encoded_per_pixel * (drawn * pngs + drawn_on) * pixels)


def render_bytes(spec: ModelSpec, attention: AttentionRequest, size: tuple[int, int]) -> int:
    """Rendering the requested image forms at ``size``: the image drawn on, one map's
    temporaries at a time (float map, colours, the encoder's input and its own working memory),
    and the answer held three times at its peak (the arrays, the message's fields, the
    serialised message)."""
    answer = answer_bytes(spec, attention, size, png_bytes=2.0)
    if not answer:
        return 0
    pixels = size[0] * size[1] * max(attention.tiles.values(), default=1)  # a stack: its tiles at once
    kept_image = 4 * size[0] * size[1] if MapForm.OVERLAY_PNG in attention.forms else 0
    encoder = attention.encoder.working_bytes_per_pixel * pixels if attention.forms & ENCODED_FORMS else 0
    return kept_image + 15 * pixels + encoder + 3 * answer


def task_answer_bytes(spec: ModelSpec, task: TaskOptions, size: tuple[int, int], png_bytes: float) -> int:
    """A drawn task answer's images at the render ``size``: a segmentation's label PNG (at most
    a byte a pixel) and the overlay, when asked (counted as an attention overlay is). Instance
    masks are small PNGs of their boxes, counted with the label image's byte a pixel."""
    pixels = size[0] * size[1]
    labels = pixels if task_draws(spec.task) else 0
    return labels + (math.ceil(png_bytes * pixels) if task.overlay else 0)


def task_render_bytes(
    spec: ModelSpec, task: TaskOptions, original: tuple[int, int], size: tuple[int, int]
) -> int:
    """Drawing a task's answer: instance masks are pasted in original pixels (a float sample, the
    mask, its PNG: 6 bytes a pixel at most, one instance at a time); a segmentation's labels and
    their PNG at the render size (its scores go in 64-row strips); the overlay keeps the image
    and draws a copy (7 bytes a rendered pixel); the answer held three times at its peak."""
    if not task_draws(spec.task) and not task.overlay:
        return 0
    rendered = size[0] * size[1]
    drawing = 6 * original[0] * original[1] + 3 * rendered + (7 * rendered if task.overlay else 0)
    return drawing + 3 * task_answer_bytes(spec, task, size, png_bytes=2.0)


def estimate_cost(
    header: ImageHeader | None,
    spec: ModelSpec,
    attention: AttentionRequest,
    render_max_side: int,
    settings: GatewaySettings,
    task: TaskOptions | None = None,
) -> Cost:
    """The memory a request needs from its header (``None``: a tensor input, small)."""
    task = task or TaskOptions()
    draws = answer_draws(spec, attention, task)
    if header is None:
        size = (spec.preprocess.input_size[1], spec.preprocess.input_size[0])
        render = render_bytes(spec, attention, size) if attention.draws else 0
        render += task_render_bytes(spec, task, size, size)
        return Cost(render, draws, size if draws else None)
    reduction = 1  # a JPEG is decoded at the DCT scale the model needs
    if header.format == "JPEG":
        reduction = draft_reduction(jpeg_draft_scale(header.width, header.height, spec.preprocess))
    pixels = math.ceil(header.pixels / reduction**2)
    decoded = math.ceil(header.decoded_bytes / reduction**2)
    # colour conversion for the model: an 8-bit copy (strips for 16-bit), RGBA compositing
    channels = 3 if spec.preprocess.color_mode is ColorMode.RGB else 1
    converted = pixels * channels + (12 * pixels if header.mode in _ALPHA_MODES else 0)
    if header.mode in HIGH_DEPTH_MODES:
        converted += pixels
    memory = decoded + converted
    if not draws:
        return Cost(memory, memory >= settings.heavy_request_bytes)
    size = fit_within(header.width, header.height, render_max_side)
    shown = draft_reduction(jpeg_draft_scale(header.width, header.height, size))
    if shown < reduction and (attention.needs_image or task.overlay):  # decoded again, to be shown
        memory += math.ceil(header.decoded_bytes / shown**2)
    render = render_bytes(spec, attention, size) if attention.draws else 0
    render += task_render_bytes(spec, task, (header.width, header.height), size)
    return Cost(memory + render, True, size)


class Ticket:
    """An admitted request's share of the limits; `release` once, when it is answered — or use
    it as a context manager, which releases it with the time since admission."""

    def __init__(self, admission: Admission, model: str, cost: Cost, others: int) -> None:
        self.admission, self.model, self.cost = admission, model, cost
        self.others = others
        """Requests of its kind (cheap or heavy) in flight when it was admitted."""
        self.admitted = time.perf_counter()
        self.released = False

    def release(self, service_s: float | None = None) -> None:
        if not self.released:
            self.released = True
            self.admission._release(self, service_s)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release(time.perf_counter() - self.admitted)


class Admission:
    """The limits' counters; used from the event loop only (no locks)."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.limit: AdaptiveLimit | None = None
        if settings.adaptive_concurrency:
            floor = min(settings.min_in_flight or max(2, machine_cores()), settings.max_in_flight)
            self.limit = AdaptiveLimit(2 * floor, floor, settings.max_in_flight, settings.latency_tolerance)
        metrics.concurrency_limit.set(self.cheap_limit)
        self.in_flight = 0
        self.paused_waiting = 0
        """Calls waiting for a model's new release (`waiting`), not in flight."""
        self.cheap = 0
        self.heavy = 0
        self.memory = 0
        self.by_model: Counter[tuple[str, bool]] = Counter()
        """Requests in flight by model and heaviness."""
        self._service_s = {False: 0.02, True: 0.2}

    @property
    def cheap_limit(self) -> int:
        """How many cheap requests may be in flight now."""
        return self.limit.value if self.limit is not None else self.settings.max_in_flight

    def per_model(self, heavy: bool = False) -> int:
        """How many cheap (or heavy) requests one model may have in flight now."""
        limit = self.settings.max_heavy_in_flight if heavy else self.cheap_limit
        return max(1, math.ceil(limit * self.settings.model_share))

    def in_flight_on(self, model: str) -> int:
        """Admitted requests on ``model`` not yet answered, cheap and heavy."""
        return self.by_model[model, False] + self.by_model[model, True]

    def retry_after(self, heavy: bool) -> float:
        return min(_RETRY_MAX_S, max(_RETRY_MIN_S, self._service_s[heavy]))

    def enter(self) -> None:
        """The global cap, checked first (before the model or the image is looked at)."""
        if self.in_flight >= self.settings.max_in_flight:
            self._refuse(
                "in_flight",
                f"{self.in_flight} predictions are in flight (limit {self.settings.max_in_flight})",
                heavy=False,
            )
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1

    @contextlib.contextmanager
    def waiting(self, model: str) -> Iterator[None]:
        """A call waiting for ``model``'s new release (``watch_repository``): not in flight, so
        that the other models' calls keep their room meanwhile, but at most ``max_in_flight``
        such calls wait at once (each holds its request)."""
        limit = self.settings.max_in_flight
        if self.paused_waiting >= limit:
            self._refuse(
                "paused",
                f"{self.paused_waiting} calls are waiting for a new release of {model!r} to load "
                f"(limit {limit})",
                heavy=False,
                retry_s=PAUSED_RETRY_S,
            )
        self.paused_waiting += 1
        try:
            yield
        finally:
            self.paused_waiting -= 1

    def queue_budget(self, model: str) -> float | None:
        """How long a cheap prediction on ``model`` may have waited before the gateway took it
        up (s), or None: no bound. See `attnserve.queueing`.

        With the adaptive limit: what is left of ``latency_tolerance`` × the model's no-load
        latency once the call is served, so that waiting and serving together stay within the
        tolerance. How slowly it will be served is the model's recent latency, and at least
        no-load plus the wait itself: a call that waited W was taken up by an event loop W
        behind, and the calls behind it keep the loop that far behind while the call is served
        (at a burst's onset the recent latency is still the quiet one). Unloaded that allows
        (tolerance − 1) × no-load / 2; while a burst slows the admitted calls it shrinks, to no
        less than timer noise (`MIN_EXCESS_S`): a call taken up at once is always admitted, so
        the recent latency keeps being measured and recovers.
        """
        if self.settings.max_queued_ms is not None:
            return self.settings.max_queued_ms / 1e3
        if self.limit is None:
            return None
        no_load = self.limit.no_load_s.get(model)
        if no_load is None:
            return None
        allowed = self.settings.latency_tolerance * no_load
        serving = max(no_load, self.limit.recent_s.get(model, no_load))
        # wait W + service max(serving, no_load + W) within the tolerance
        return max(MIN_EXCESS_S, min(allowed - serving, (allowed - no_load) / 2))

    def check_wait(self, model: str, queued_s: float | None) -> None:
        """Refuses a prediction on ``model`` that waited longer before the gateway took it up
        than its latency allows (`queue_budget`; ``queued_s`` None: its client did not say).

        The pipeline checks it for every prediction that draws nothing, as soon as the model is
        known: before the request is checked or its image read, so that a burst's late calls
        cost the event loop little more than an unknown model's. So a large image asked for
        without drawing is refused too (it is not read to find out that it is heavy); a render
        is never checked, its latency is its own queue.
        """
        if queued_s is None:
            return
        budget = self.queue_budget(model)
        if budget is not None and queued_s > budget:
            self._refuse(
                "queued",
                f"this call waited {queued_s * 1e3:.0f} ms before the gateway could take it up, "
                f"more than the {budget * 1e3:.0f} ms its latency allows",
                False,
            )

    def admit(self, model: str, cost: Cost) -> Ticket:
        """Reserves ``cost`` for one request on ``model`` or refuses it."""
        if not cost.heavy and self.cheap >= self.cheap_limit:
            self._refuse(
                "concurrency",
                f"{self.cheap} predictions are in flight, as many as keep their latency within "
                f"{self.settings.latency_tolerance:g}× unloaded now (limit {self.cheap_limit})",
                False,
            )
        held, share = self.by_model[model, cost.heavy], self.per_model(cost.heavy)
        if held >= share:
            kind = "heavy requests" if cost.heavy else "predictions"
            self._refuse(
                "model_share", f"{held} {kind} on {model!r} are in flight (its share {share})", cost.heavy
            )
        if cost.heavy and self.heavy >= self.settings.max_heavy_in_flight:
            limit = self.settings.max_heavy_in_flight
            self._refuse(
                "heavy",
                f"{self.heavy} heavy requests (renders, large images) are in flight (limit {limit})",
                True,
            )
        budget = self.settings.memory_budget_bytes
        if cost.memory_bytes > budget:
            self.metrics.rejected.labels("too_large").inc()
            raise TooLarge(
                f"this request needs about {cost.memory_bytes / MIB:.0f} MiB to decode and render, more "
                f"than the gateway's budget of {budget / MIB:.0f} MiB: send a smaller image, or ask for "
                "fewer image forms or a smaller render_max_side"
            )
        if self.memory + cost.memory_bytes > budget:
            self._refuse(
                "memory",
                f"{self.memory / MIB:.0f} of {budget / MIB:.0f} MiB of decode/render memory are in use "
                f"and this request needs about {cost.memory_bytes / MIB:.0f} MiB",
                cost.heavy,
            )
        others = self.heavy if cost.heavy else self.cheap
        self.by_model[model, cost.heavy] += 1
        self.heavy += cost.heavy
        self.cheap += not cost.heavy
        self.memory += cost.memory_bytes
        self.metrics.memory_reserved.set(self.memory)
        return Ticket(self, model, cost, others)

    def _release(self, ticket: Ticket, service_s: float | None) -> None:
        key = (ticket.model, ticket.cost.heavy)
        self.by_model[key] -= 1
        if not self.by_model[key]:
            del self.by_model[key]
        self.heavy -= ticket.cost.heavy
        self.cheap -= not ticket.cost.heavy
        self.memory -= ticket.cost.memory_bytes
        self.metrics.memory_reserved.set(self.memory)
        if service_s is not None:
            if self.limit is not None and not ticket.cost.heavy:
                self.limit.observe(ticket.model, service_s, max(ticket.others, self.cheap))
                self.metrics.concurrency_limit.set(self.limit.value)
            previous = self._service_s[ticket.cost.heavy]
            self._service_s[ticket.cost.heavy] = 0.8 * previous + 0.2 * service_s

    def _refuse(self, reason: str, what: str, heavy: bool, retry_s: float | None = None) -> None:
        self.metrics.rejected.labels(reason).inc()
        retry = self.retry_after(heavy) if retry_s is None else retry_s
        raise Overloaded(f"{what}; retry in {retry * 1e3:.0f} ms", retry_after_s=retry)
