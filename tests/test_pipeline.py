import pytest

from attnserve.errors import InvalidInput
from attnserve.export.models import create_model, get_spec, serving_spec
from attnserve.prediction import MapForm
from attnserve.server.gateway.pipeline import PredictCall, resolve_attention, resolve_top_k

from .conftest import CBAM_OUTPUT_DIMS

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
    everything = resolve_attention(PredictCall(), SPEC)
    assert (
        everything.maps == SPEC.output_names[1:]
        and everything.forms == {MapForm.RAW}
        and everything.render is None
    )
    primary = resolve_attention(PredictCall(maps=("primary", "cam", "spatial_stage3")), SPEC)
    assert primary.maps == ("spatial_stage3", "cam")
    rendered = resolve_attention(
        PredictCall(render=("primary",), forms=frozenset({MapForm.OVERLAY_PNG})), SPEC
    )
    assert rendered.render == {"spatial_stage3"} and rendered.forms == {MapForm.OVERLAY_PNG}
    assert resolve_attention(PredictCall(omit_attention=True), SPEC).maps == ()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (PredictCall(maps=("nope",)), "unknown attention map 'nope'"),
        (PredictCall(maps=("cam",), render=("spatial_stage1",)), "not selected"),
        (PredictCall(target_class=10), "target_class 10"),
        (PredictCall(target_class=-1), "target_class -1"),
    ],
)
def test_bad_selections_are_invalid_input(call: PredictCall, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        resolve_attention(call, SPEC)


def test_primary_needs_a_primary() -> None:
    with pytest.raises(InvalidInput, match="no primary"):
        resolve_attention(PredictCall(maps=("primary",)), SPEC.model_copy(update={"primary_attention": None}))


def test_requests_beyond_the_in_flight_limit_are_refused_not_queued() -> None:
    """A fake Triton that blocks lets two predictions overlap; the second one is Overloaded."""
    import asyncio
    import io

    import numpy as np
    from PIL import Image

    from attnserve.errors import Overloaded
    from attnserve.export.repository import ServingOptions, build_config
    from attnserve.server.gateway.catalog import ModelCatalog, served_model_from_config
    from attnserve.server.gateway.metrics import GatewayMetrics
    from attnserve.server.gateway.pipeline import Pipeline
    from attnserve.settings import GatewaySettings

    dims = CBAM_OUTPUT_DIMS
    served = served_model_from_config(build_config("cbam", SPEC, dims, ServingOptions()), "1")
    catalog = ModelCatalog(models={"cbam": served})

    class BlockingTriton:
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def infer(
            self,
            model: str,
            version: str,
            input_name: str,
            batch: np.ndarray,
            outputs: list[str],
            timeout_s: float,
            request_id: str = "",
        ) -> dict[str, np.ndarray]:
            await self.release.wait()
            return {name: np.zeros((1, *dims[name]), np.float32) for name in outputs}

    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, format="PNG")
    call = PredictCall(image=buffer.getvalue(), maps=("spatial_stage3",))

    async def run() -> None:
        triton = BlockingTriton()
        pipeline = Pipeline(GatewaySettings(max_in_flight=1), catalog, triton, GatewayMetrics())  # type: ignore[arg-type]
        first = asyncio.create_task(pipeline.predict(call))
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded, match="limit 1"):
            await pipeline.predict(call)
        triton.release.set()
        assert (await first).predictions
        assert (await pipeline.predict(call)).predictions  # the slot is free again
        pipeline.close()

    asyncio.run(run())


def test_upsampled_answers_that_cannot_fit_a_message_are_refused_up_front() -> None:
    from attnserve.server.gateway.geometry import ResizeGeometry
    from attnserve.server.gateway.pipeline import check_response_size

    photo = ResizeGeometry.for_spec(4000, 3000, SPEC.preprocess)
    everything = resolve_attention(PredictCall(forms=frozenset({MapForm.UPSAMPLED})), SPEC)
    with pytest.raises(InvalidInput, match="5 UPSAMPLED maps of a 4000×3000 image need 229 MiB"):
        check_response_size(everything, SPEC, photo, 64 * 2**20)
    one = resolve_attention(PredictCall(forms=frozenset({MapForm.UPSAMPLED}), render=("cam",)), SPEC)
    check_response_size(one, SPEC, photo, 64 * 2**20)  # 46 MiB fits
    overlays = resolve_attention(PredictCall(forms=frozenset({MapForm.OVERLAY_PNG})), SPEC)
    check_response_size(overlays, SPEC, photo, 64 * 2**20)  # PNGs are not estimated
