import sys

import pytest

from attnserve.errors import InvalidInput
from attnserve.export.models import create_model, get_spec, serving_spec
from attnserve.prediction import MapForm, PredictionRequest
from attnserve.server.gateway.pipeline import Pipeline, resolve_attention, resolve_task_options, resolve_top_k

from .conftest import FakeBackend

SPEC = serving_spec(get_spec("cbam"), create_model("cbam")).model_copy(
    update={"primary_attention": "spatial_stage3"}
)


def test_top_k_defaults_and_bounds() -> None:
    assert resolve_top_k(None, SPEC, 100) == 5
    assert resolve_top_k(10, SPEC, 100) == 10
    for bad, message in ((0, "at least 1"), (-3, "at least 1"), (11, "larger than the model's 10 classes")):
        with pytest.raises(InvalidInput, match=message):
            resolve_top_k(bad, SPEC, 100)
    with pytest.raises(InvalidInput, match="limit of 2"):
        resolve_top_k(3, SPEC, 2)


def test_attention_selection() -> None:
    everything = resolve_attention(PredictionRequest(), SPEC)
    assert (
        everything.maps == SPEC.output_names[1:]
        and everything.forms == {MapForm.RAW}
        and everything.render is None
    )
    primary = resolve_attention(PredictionRequest(maps=("primary", "cam", "spatial_stage3")), SPEC)
    assert primary.maps == ("spatial_stage3", "cam")
    rendered = resolve_attention(
        PredictionRequest(render=("primary",), forms=frozenset({MapForm.OVERLAY_PNG})), SPEC
    )
    assert rendered.render == {"spatial_stage3"} and rendered.forms == {MapForm.OVERLAY_PNG}
    assert resolve_attention(PredictionRequest(omit_attention=True), SPEC).maps == ()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (PredictionRequest(maps=("nope",)), "unknown attention map 'nope'"),
        (PredictionRequest(maps=("cam",), render=("spatial_stage1",)), "not selected"),
        (PredictionRequest(target_class=10), "target_class 10"),
        (PredictionRequest(target_class=-1), "target_class -1"),
    ],
)
def test_bad_selections_are_invalid_input(call: PredictionRequest, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):  # the checks the pipeline makes before any work
        resolve_task_options(call, SPEC, 100)
        resolve_attention(call, SPEC)


def test_task_options_carry_top_k_and_the_class_to_explain() -> None:
    options = resolve_task_options(PredictionRequest(top_k=3, target_class=7), SPEC, 100)
    assert (options.top_k, options.target_class) == (3, 7)
    assert resolve_task_options(PredictionRequest(), SPEC, 100).target_class is None


def test_primary_needs_a_primary() -> None:
    with pytest.raises(InvalidInput, match="no primary"):
        resolve_attention(
            PredictionRequest(maps=("primary",)), SPEC.model_copy(update={"primary_attention": None})
        )


def test_requests_beyond_the_in_flight_limit_are_refused_not_queued() -> None:
    """A backend that blocks lets two predictions overlap; the second one is Overloaded."""
    import asyncio
    import io

    from PIL import Image

    from attnserve.errors import Overloaded
    from attnserve.server.gateway.catalog import ModelCatalog
    from attnserve.server.gateway.metrics import GatewayMetrics
    from attnserve.server.gateway.pipeline import Pipeline
    from attnserve.settings import GatewaySettings

    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, format="PNG")
    call = PredictionRequest(image=buffer.getvalue(), maps=("spatial_stage3",))

    async def run() -> None:
        backend = FakeBackend()
        backend.gate = asyncio.Event()
        catalog = ModelCatalog()
        await catalog.refresh(backend)
        pipeline = Pipeline(GatewaySettings(max_in_flight=1), catalog, backend, GatewayMetrics())
        first = asyncio.create_task(pipeline.predict(call))
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded, match="limit 1"):
            await pipeline.predict(call)
        backend.gate.set()
        assert (await first).predictions
        assert (await pipeline.predict(call)).predictions  # the slot is free again
        assert backend.calls[0][1] == {"image": (1, 1, 64, 64)}
        assert backend.calls[0][2] == ["logits", "spatial_stage3"]  # only what the answer needs
        pipeline.close()

    asyncio.run(run())


def test_calls_waiting_for_a_new_release_leave_the_other_models_their_room() -> None:
    """A model being replaced (watch_repository) holds its calls until the new release loads:
    they wait outside the in-flight cap, under a cap of their own, so that calls on the other
    models are still served meanwhile."""
    import asyncio
    import io

    from PIL import Image

    from attnserve.errors import Overloaded
    from attnserve.server.gateway.catalog import ModelCatalog
    from attnserve.server.gateway.metrics import GatewayMetrics
    from attnserve.server.gateway.pipeline import Pipeline
    from attnserve.settings import GatewaySettings

    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, format="PNG")
    image = buffer.getvalue()

    async def run() -> None:
        backend = FakeBackend(("cbam", "other"))
        catalog = ModelCatalog()
        await catalog.refresh(backend)
        metrics = GatewayMetrics()
        pipeline = Pipeline(GatewaySettings(max_in_flight=1), catalog, backend, metrics)
        catalog.pause("cbam")
        waiting = asyncio.create_task(pipeline.predict(PredictionRequest(image=image, model="cbam"), 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done() and pipeline.admission.in_flight == 0
        # the one slot in flight is free for the other model's call
        assert (await pipeline.predict(PredictionRequest(image=image, model="other"))).model == "other"
        beyond = r"1 calls are waiting for a new release of 'cbam'.*retry in 1000 ms"
        with pytest.raises(Overloaded, match=beyond):
            await pipeline.predict(PredictionRequest(image=image, model="cbam"))
        catalog.resume("cbam")
        assert (await waiting).model == "cbam"
        assert pipeline.admission.paused_waiting == 0 and pipeline.admission.in_flight == 0
        assert metrics.rejected.labels("paused")._value.get() == 1
        pipeline.close()

    asyncio.run(run())


def test_upsampled_answers_that_cannot_fit_a_message_are_refused_up_front() -> None:
    from attnserve.server.gateway.pipeline import check_response_size

    photo = (4000, 3000)  # rendered at full size (a request's render_max_side ≥ 4000)
    everything = resolve_attention(PredictionRequest(forms=frozenset({MapForm.UPSAMPLED})), SPEC)
    with pytest.raises(InvalidInput, match="at 4000×3000, need about 229 MiB"):
        check_response_size(everything, SPEC, photo, 64 * 2**20)
    check_response_size(everything, SPEC, (2048, 1536), 64 * 2**20)  # 60 MiB
    every_form = frozenset({MapForm.UPSAMPLED, MapForm.HEATMAP_PNG, MapForm.OVERLAY_PNG})
    with pytest.raises(InvalidInput, match="at 2048×1536, need about 90 MiB"):  # PNGs at 1 byte a pixel
        check_response_size(
            resolve_attention(PredictionRequest(forms=every_form), SPEC), SPEC, (2048, 1536), 64 * 2**20
        )
    one = resolve_attention(PredictionRequest(forms=frozenset({MapForm.UPSAMPLED}), render=("cam",)), SPEC)
    check_response_size(one, SPEC, photo, 64 * 2**20)  # 46 MiB fits
    overlays = resolve_attention(PredictionRequest(forms=frozenset({MapForm.OVERLAY_PNG})), SPEC)
    check_response_size(overlays, SPEC, photo, 64 * 2**20)  # 5 PNGs at 1 byte a pixel: 57 MiB


def preprocessing_threads(
    monkeypatch: pytest.MonkeyPatch, call: PredictionRequest, settings: object
) -> tuple[list[tuple[str, int]], tuple[str, int]]:
    """``call`` through a real `Pipeline` on a `FakeBackend`: the name and niceness of each thread
    that preprocessed its image, and of the event loop's thread."""
    import asyncio
    import os
    import threading

    from attnserve.server.gateway import pipeline as pipeline_module
    from attnserve.server.gateway.catalog import ModelCatalog
    from attnserve.server.gateway.metrics import GatewayMetrics

    def this_thread() -> tuple[str, int]:
        linux = sys.platform == "linux"
        return threading.current_thread().name, (
            os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if linux else 0
        )

    seen: list[tuple[str, int]] = []
    original = pipeline_module.preprocess_image

    def recorded(*args: object, **kwargs: object) -> object:
        seen.append(this_thread())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "preprocess_image", recorded)

    async def run() -> tuple[str, int]:
        backend = FakeBackend()
        catalog = ModelCatalog()
        await catalog.refresh(backend)
        pipeline = Pipeline(settings, catalog, backend, GatewayMetrics())  # type: ignore[arg-type]
        try:
            answer = await pipeline.predict(call)
            assert answer.predictions and answer.attention
        finally:
            pipeline.close()
        return this_thread()

    loop_thread = asyncio.run(run())
    return seen, loop_thread


@pytest.mark.parametrize(
    ("side", "forms", "inline_bytes", "on_the_loop"),
    [
        (64, frozenset({MapForm.RAW}), 256 * 1024, True),  # the sample digit's kind: no hand-off
        (1024, frozenset({MapForm.RAW}), 256 * 1024, False),  # 1 MiB to decode: a worker thread
        (64, frozenset({MapForm.OVERLAY_PNG}), 256 * 1024, False),  # kept and drawn on
        (64, frozenset({MapForm.RAW}), 0, False),  # turned off
        (-64, frozenset({MapForm.RAW}), 256 * 1024, False),  # a tiny raster in 300 KB of chunks
    ],
)
def test_small_images_are_preprocessed_on_the_event_loop_and_the_rest_on_worker_threads(
    monkeypatch: pytest.MonkeyPatch,
    side: int,
    forms: frozenset[MapForm],
    inline_bytes: int,
    on_the_loop: bool,
) -> None:
    import io
    import os

    from PIL import Image, PngImagePlugin

    from attnserve.settings import GatewaySettings

    buffer = io.BytesIO()
    image = Image.new("L", (abs(side), abs(side)), 40)
    if side > 0:
        image.save(buffer, format="PNG")
    else:  # the same pixels, with 300 KB of text chunks to read
        info = PngImagePlugin.PngInfo()
        info.add_text("padding", os.urandom(150_000).hex(), zip=False)
        image.save(buffer, format="PNG", pnginfo=info)
        assert len(buffer.getvalue()) > 256 * 1024
    call = PredictionRequest(image=buffer.getvalue(), maps=("spatial_stage3",), forms=forms)
    seen, (loop_thread, _) = preprocessing_threads(
        monkeypatch, call, GatewaySettings(inline_preprocess_bytes=inline_bytes)
    )
    threads = [name for name, _ in seen]
    assert (threads == [loop_thread]) is on_the_loop
    assert threads[0].startswith("attnserve-") is not on_the_loop


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per thread is Linux's")
@pytest.mark.parametrize(
    ("render_nice", "form", "thread_prefix"),
    [
        (10, MapForm.OVERLAY_PNG, "attnserve-render"),  # anything drawn is heavy
        (0, MapForm.OVERLAY_PNG, "attnserve-render"),
        (10, MapForm.RAW, "attnserve-cpu"),  # numbers only: a worker thread at the loop's priority
    ],
)
def test_renders_run_on_threads_nicer_than_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, render_nice: int, form: MapForm, thread_prefix: str
) -> None:
    """A render competes for the CPU with the event loop (refusals, cheap calls) and a Triton in
    the same session: its thread yields to them (render_nice); cheap work keeps the loop's."""
    import io

    from PIL import Image

    from attnserve.settings import GatewaySettings

    buffer = io.BytesIO()
    Image.new("L", (96, 64), 40).save(buffer, format="PNG")
    call = PredictionRequest(image=buffer.getvalue(), maps=("spatial_stage3",), forms=frozenset({form}))
    settings = GatewaySettings(render_nice=render_nice, inline_preprocess_bytes=0)
    ((thread, nice),), (_, loop_niceness) = preprocessing_threads(monkeypatch, call, settings)
    assert thread.startswith(thread_prefix)
    drawn = thread_prefix == "attnserve-render"
    assert nice == (min(19, loop_niceness + render_nice) if drawn else loop_niceness)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per thread is Linux's")
def test_a_render_thread_denied_a_lower_priority_still_renders(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sandbox that forbids setpriority must not break the render pool (an initializer that
    raises makes a ThreadPoolExecutor refuse every task)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from attnserve.server.gateway import heavy

    def denied(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", denied)
    with ThreadPoolExecutor(1, initializer=heavy.lower_priority, initargs=(10,)) as pool:
        assert pool.submit(lambda: 6 * 7).result(timeout=10) == 42
    assert "render thread left at the gateway's priority" in caplog.text
