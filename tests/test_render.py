import io

import numpy as np
import pytest
from PIL import Image

from attnserve.prediction import ImageEncoding
from attnserve.server.gateway.render import (
    OVERLAY_ALPHA,
    TURBO,
    ImageEncoder,
    colorize,
    display_levels,
    overlay,
)


def test_turbo_runs_from_dark_blue_to_dark_red() -> None:
    assert TURBO.shape == (256, 3) and TURBO.dtype == np.uint8
    assert TURBO[20, 2] > TURBO[20, 0] and TURBO[240, 0] > TURBO[240, 2]
    assert TURBO[128, 1] > TURBO[128, 2]  # green-yellow in the middle


def test_overlay_leaves_the_image_where_the_map_is_zero_and_colours_where_it_is_high() -> None:
    image = Image.new("RGB", (4, 2), (100, 100, 100))
    display = np.zeros((2, 4), dtype=np.float32)
    display[1, 3] = 1.0
    blended = overlay(image, display)
    assert (blended[0] == 100).all()
    assert not (blended[1, 3] == 100).all()


def reference_overlay(image: Image.Image, display: np.ndarray, alpha: float) -> np.ndarray:
    """The blend as documented, written plainly: (image × (256 − w) + colour × w + 128) >> 8."""
    base = np.asarray(image.convert("RGB"), dtype=np.uint32)
    clipped = np.clip(display, 0.0, 1.0)
    weight = np.rint(clipped * (alpha * 256.0)).astype(np.uint32)[:, :, None]
    colour = TURBO[np.clip(clipped * 255.0 + 0.5, 0, 255).astype(np.uint8)].astype(np.uint32)
    return ((base * (256 - weight) + colour * weight + 128) >> 8).astype(np.uint8)


@pytest.mark.parametrize("alpha", [OVERLAY_ALPHA, 0.0, 0.37, 1.0])
def test_the_table_driven_blend_is_the_documented_integer_blend_pixel_for_pixel(alpha: float) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (150, 130, 3), dtype=np.uint8)  # more rows than one strip
    display = (rng.random((150, 130)) * 1.4 - 0.2).astype(np.float32)  # out of range too
    display[::7] = 0.5
    for image in (Image.fromarray(pixels), Image.fromarray(pixels).convert("L")):
        assert np.array_equal(overlay(image, display, alpha), reference_overlay(image, display, alpha))
    every_level = np.linspace(0.0, 1.0, 100_001, dtype=np.float32)[None]
    strip = Image.fromarray(rng.integers(0, 256, (1, every_level.shape[1], 3), dtype=np.uint8))
    assert np.array_equal(overlay(strip, every_level, alpha), reference_overlay(strip, every_level, alpha))


def test_display_levels_are_the_heatmaps_colour_index() -> None:
    values = np.array([0.0, 0.5 / 255, 0.2, 0.999, 1.0, 1.5, -1.0], dtype=np.float32)
    levels = display_levels(values)
    assert levels.dtype == np.uint8 and levels.tolist() == [0, 1, 51, 255, 255, 255, 0]
    assert np.array_equal(colorize(values), TURBO[levels])


@pytest.mark.parametrize("photographic", [True, False])
def test_png_round_trips_pixel_for_pixel(photographic: bool) -> None:
    pixels = colorize(np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6))
    encoded = ImageEncoder().encode(pixels, photographic=photographic)
    assert encoded[:4] == b"\x89PNG"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), pixels)


@pytest.mark.parametrize(
    ("encoding", "magic", "pillow_format"),
    [(ImageEncoding.JPEG, b"\xff\xd8", "JPEG"), (ImageEncoding.WEBP, b"RIFF", "WEBP")],
)
def test_lossy_encodings_decode_to_the_size_and_follow_the_quality(
    encoding: ImageEncoding, magic: bytes, pillow_format: str
) -> None:
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 96)[None, :, None] + rng.normal(0, 20, (64, 96, 3))
    pixels = np.clip(gradient, 0, 255).astype(np.uint8)
    low, default, high = (ImageEncoder(encoding, q).encode(pixels) for q in (20, None, 100))
    decoded = Image.open(io.BytesIO(default))
    assert default[:4].startswith(magic) and decoded.format == pillow_format
    assert decoded.size == (96, 64) and decoded.mode == "RGB"
    assert len(low) < len(default) < len(high)
    assert ImageEncoder(encoding).effective_quality == encoding.default_quality


def test_size_shares_for_admission_are_conservative() -> None:
    assert ImageEncoder().size_share == 1.0 and ImageEncoder().effective_quality is None
    assert ImageEncoder(ImageEncoding.JPEG).size_share == 0.5
    assert ImageEncoder(ImageEncoding.WEBP, 95).size_share == 1.0  # high qualities: as PNG
    assert ImageEncoder(ImageEncoding.WEBP).working_bytes_per_pixel > ImageEncoder().working_bytes_per_pixel
    # uniform noise, the worst case: a lossy image at quality ≤ 90 is within its share of PNG's
    noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    png = len(ImageEncoder().encode(noise))
    for encoding in (ImageEncoding.JPEG, ImageEncoding.WEBP):
        encoder = ImageEncoder(encoding, 90)
        assert len(encoder.encode(noise)) <= encoder.size_share * png
