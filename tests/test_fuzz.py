"""Fuzzing with hypothesis: whatever bytes or requests arrive, only declared errors come out, and
any accepted image's attention lies inside it.

The decode/preprocess path gets random bytes, damaged real images and random valid images of
every mode and shape; the whole gateway core (over the fake backend) gets random requests.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from attnserve.errors import AttnserveError, InvalidInput
from attnserve.prediction import ImageEncoding, MapDType, MapForm, PredictionRequest
from attnserve.server.gateway.preprocess import preprocess_image
from attnserve.spec import ColorMode, PreprocessSpec, ResizeMode
from attnserve.transform import ImageLimits

from .conftest import FakeBackend, GatewayThread, gateway_settings, triton_settings

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000)
SPECS = [
    PreprocessSpec(input_size=(64, 64), color_mode=ColorMode.GRAY, mean=(0.2,), std=(0.3,), resize_mode=mode)
    for mode in ResizeMode
]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [
    encode(Image.linear_gradient("L").resize((60, 40)), "PNG"),
    encode(Image.linear_gradient("L").resize((60, 40)).convert("RGB"), "JPEG"),
    encode(Image.linear_gradient("L").resize((30, 50)), "WEBP"),
    encode(Image.linear_gradient("L").resize((30, 20)), "BMP"),
    encode(Image.linear_gradient("L").resize((30, 20)), "TIFF"),
]


def only_declared_errors(data: bytes, spec: PreprocessSpec) -> None:
    try:
        prepared = preprocess_image(data, spec, LIMITS)
    except InvalidInput:
        return
    assert prepared.tensor.shape == (1, 64, 64) and np.isfinite(prepared.tensor).all()


@FAST
@given(data=st.binary(max_size=4096), spec=st.sampled_from(SPECS))
def test_random_bytes_give_an_answer_or_invalid_input(data: bytes, spec: PreprocessSpec) -> None:
    only_declared_errors(data, spec)


@FAST
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.integers(0, 4096),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    spec=st.sampled_from(SPECS),
)
def test_damaged_real_images_give_an_answer_or_invalid_input(
    seed: bytes, cut: int, flips: list[tuple[int, int]], spec: PreprocessSpec
) -> None:
    data = bytearray(seed[: max(len(seed) - cut, 0)])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    only_declared_errors(bytes(data), spec)


MODES = ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = {
    "PNG": {"1", "L", "P", "LA", "RGB", "RGBA", "I;16"},
    "TIFF": set(MODES),
    "BMP": {"1", "L", "P", "RGB"},
}


@FAST
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    mode=st.sampled_from(MODES),
    fmt=st.sampled_from(sorted(FORMATS)),
    spec=st.sampled_from(SPECS),
)
def test_any_valid_image_of_any_mode_and_shape_is_read(
    width: int, height: int, mode: str, fmt: str, spec: PreprocessSpec
) -> None:
    if mode not in FORMATS[fmt]:
        return
    pixels = Image.linear_gradient("L").resize((width, height)).convert(mode if mode != "I;16" else "I")
    image = pixels if mode != "I;16" else Image.new("I;16", (width, height))
    prepared = preprocess_image(encode(image, fmt), spec, LIMITS)
    assert prepared.tensor.shape == (1, 64, 64) and np.isfinite(prepared.tensor).all()
    assert (prepared.geometry.width, prepared.geometry.height) == (width, height)


# --- the whole core, random requests ----------------------------------------------------------


@pytest.fixture(scope="module")
def core() -> Iterator[GatewayThread]:
    thread = GatewayThread(gateway_settings(triton_settings(), default_model="cbam"), FakeBackend()).start()
    thread.call(thread.gateway.core.check())
    yield thread
    thread.stop()


NAMES = ["primary", "cam", "spatial_stage1", "spatial_stage3", "channel_stage2", "nope", ""]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    model=st.sampled_from([None, "cbam", "other", "x" * 300]),
    version=st.sampled_from(["", "1", "2"]),
    top_k=st.one_of(st.none(), st.integers(-3, 15)),
    maps=st.lists(st.sampled_from(NAMES), max_size=3),
    render=st.lists(st.sampled_from(NAMES), max_size=2),
    forms=st.frozensets(st.sampled_from(list(MapForm)), max_size=3),
    target=st.one_of(st.none(), st.integers(-2, 12)),
    omit=st.booleans(),
    encoding=st.sampled_from(list(ImageEncoding)),
    quality=st.one_of(st.none(), st.integers(-2, 102)),
    dtype=st.sampled_from(list(MapDType)),
)
def test_random_requests_get_an_answer_or_a_declared_error(
    core: GatewayThread,
    width: int,
    height: int,
    model: str | None,
    version: str,
    top_k: int | None,
    maps: list[str],
    render: list[str],
    forms: frozenset[MapForm],
    target: int | None,
    omit: bool,
    encoding: ImageEncoding,
    quality: int | None,
    dtype: MapDType,
) -> None:
    image = encode(Image.linear_gradient("L").resize((width, height)), "PNG")
    request = PredictionRequest(
        image=image, model=model, model_version=version, top_k=top_k, maps=tuple(maps), forms=forms,
        render=tuple(render), target_class=target, omit_attention=omit, image_encoding=encoding,
        image_quality=quality, map_dtype=dtype,
    )  # fmt: skip
    try:
        answer = core.call(core.gateway.core.predict(request, 10.0, 64 * 2**20))
    except AttnserveError:
        return
    assert answer.image.width == width and answer.image.height == height  # type: ignore[attr-defined]
    for attention in answer.attention:  # type: ignore[attr-defined]
        if attention.peak is not None:
            x, y = attention.peak
            assert 0 <= x <= width and 0 <= y <= height, (attention.name, attention.peak)
        if attention.upsampled is not None:
            assert attention.upsampled.shape == (height, width) and attention.upsampled.dtype == dtype.value
        if attention.overlay_png or attention.heatmap_png:
            assert attention.image_encoding is encoding
