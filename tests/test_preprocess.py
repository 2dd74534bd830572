import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.server.gateway.preprocess import preprocess_image, preprocess_tensor, shown_at
from attnserve.spec import ColorMode, PreprocessSpec, ResizeMode
from attnserve.transform import ImageLimits, decode_image, fit_within, to_color_mode

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000)
GRAY = PreprocessSpec(
    input_size=(64, 64), color_mode=ColorMode.GRAY, mean=(0.2,), std=(0.3,), resize_mode=ResizeMode.LETTERBOX
)
RGB = PreprocessSpec(
    input_size=(32, 32),
    color_mode=ColorMode.RGB,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    resize_mode=ResizeMode.STRETCH,
)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def spot_image(width: int, height: int, x: int, y: int, mode: str = "L") -> Image.Image:
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[max(0, y - 4) : y + 4, max(0, x - 4) : x + 4] = 255
    image = Image.fromarray(pixels, "L")
    return image.convert(mode)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_every_supported_format_decodes(fmt: str) -> None:
    prepared = preprocess_image(encode(spot_image(80, 40, 20, 20), fmt), GRAY, LIMITS)
    assert prepared.tensor.shape == (1, 64, 64) and prepared.tensor.dtype == np.float32
    assert prepared.format == fmt and (prepared.geometry.width, prepared.geometry.height) == (80, 40)


def test_normalisation_uses_the_spec() -> None:
    prepared = preprocess_image(encode(Image.new("L", (64, 64), 255), "PNG"), GRAY, LIMITS)
    np.testing.assert_allclose(prepared.tensor, (1.0 - 0.2) / 0.3, rtol=1e-6)


def test_letterbox_pads_with_the_spec_value_and_places_the_content() -> None:
    prepared = preprocess_image(encode(Image.new("L", (128, 64), 255), "PNG"), GRAY, LIMITS)
    pixels = prepared.tensor[0] * 0.3 + 0.2
    assert np.allclose(pixels[:16], 0.0) and np.allclose(pixels[48:], 0.0) and np.allclose(pixels[16:48], 1.0)


def test_exif_orientation_is_applied_before_anything_else() -> None:
    # Stored 60×40 with a spot at (10, 30); orientation 6 means "rotate 90° clockwise to view".
    stored = spot_image(60, 40, 10, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data, LIMITS)
    assert decoded.image.size == (40, 60) and decoded.size == (40, 60)
    viewed = np.asarray(decoded.image, dtype=np.float32)
    y, x = np.unravel_index(np.argmax(viewed), viewed.shape)
    # clockwise rotation maps (x, y) of a W×H image to (H - 1 - y, x)
    assert abs(x - (40 - 1 - 30)) <= 4 and abs(y - 10) <= 4


def test_draft_decoding_of_large_jpegs_keeps_full_size_coordinates() -> None:
    big = spot_image(1600, 1200, 1200, 300)
    data = encode(big, "JPEG", quality=90)
    decoded = decode_image(data, LIMITS, draft_for=GRAY)
    assert decoded.size == (1600, 1200) and decoded.image.size[0] < 1600  # decoded at reduced scale
    full = preprocess_image(data, GRAY, LIMITS, keep_image=True)  # shown at full resolution
    fast = preprocess_image(data, GRAY, LIMITS)
    assert full.geometry == fast.geometry and full.image is not None and full.image.size == (1600, 1200)
    assert np.array_equal(full.tensor, fast.tensor)  # the model sees the same pixels either way


@pytest.mark.parametrize("render_max_side", [None, 1024, 400, 150])
def test_an_image_kept_to_draw_on_changes_nothing_the_model_sees(render_max_side: int | None) -> None:
    """A large JPEG is decoded at the scale the model needs (1/8 here) and, when an image is kept
    that this is too small to show, again at the scale it is shown at (1/1, 1/1, 1/4; at 150 px
    the model's 200×150 decode serves). The tensor is the one a request without an overlay
    gets, bit for bit; the image shown is the full decode's, resized, within a level or two."""
    rng = np.random.default_rng(3)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((1600, 1200))
    data = encode(smooth, "JPEG", quality=90)
    plain = preprocess_image(data, RGB, LIMITS)
    kept = preprocess_image(data, RGB, LIMITS, keep_image=True, render_max_side=render_max_side)
    assert np.array_equal(kept.tensor, plain.tensor) and kept.geometry == plain.geometry
    size = (1600, 1200) if render_max_side is None else fit_within(1600, 1200, render_max_side)
    assert kept.image is not None and kept.image.size == size and kept.image.mode == "RGB"
    reference = shown_at(Image.open(io.BytesIO(data)), size, RGB.pad_value)
    error = np.abs(np.asarray(kept.image, dtype=np.float32) - np.asarray(reference, dtype=np.float32))
    assert error.mean() < 2.0, error.mean()


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"])
def test_every_pixel_mode_becomes_the_models_color_mode(mode: str) -> None:
    base = spot_image(40, 30, 20, 15)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base, dtype=np.uint16) * 257)
        assert image.mode == "I;16"
    elif mode == "F":
        image = Image.fromarray(np.asarray(base, dtype=np.float32) / 255.0, "F")
    else:
        image = base.convert(mode)
    for target in (ColorMode.GRAY, ColorMode.RGB):
        converted = to_color_mode(image, target, background=0.0)
        assert converted.mode == target.value
        pixels = np.asarray(converted.convert("L"), dtype=np.float32)
        assert pixels[15, 20] > 200 and pixels[0, 0] < 60, (
            mode
        )  # the spot survives, the background stays dark


def test_transparency_is_composited_over_the_padding_grey() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    assert np.asarray(to_color_mode(rgba, ColorMode.GRAY, background=0.0)).max() == 0
    assert np.asarray(to_color_mode(rgba, ColorMode.GRAY, background=1.0)).min() == 255


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def _frames(fmt: str) -> bytes:
    """A 3-frame file: a multi-page TIFF or an animated PNG."""
    frames = [Image.new("L", (20, 16), v) for v in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def test_float_images_with_nan_decode_without_warnings() -> None:
    pixels = np.full((16, 20), np.nan, np.float32)
    pixels[4:8, 4:8] = 1.0
    prepared = preprocess_image(encode(Image.fromarray(pixels, "F"), "TIFF"), GRAY, LIMITS)
    assert np.isfinite(prepared.tensor).all()


def _tiff_frame_without_width() -> bytes:
    """Two frames, the second one's ImageWidth tag renamed: Pillow raises TypeError counting frames
    (found by the fuzz test)."""
    data = bytearray(_frames("TIFF"))
    width_tags = [
        i for i in range(len(data) - 4) if data[i : i + 4] in (b"\x00\x01\x03\x00", b"\x00\x01\x04\x00")
    ]
    data[width_tags[1] : width_tags[1] + 2] = b"\x99\x99"
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (encode(spot_image(64, 64, 5, 5), "JPEG")[:300], "corrupt or truncated"),
        (b"\x00" * 5_000_001, "limit"),
        (_png_declaring(30_000, 30_000), "900,000,000 pixels"),
        (encode(spot_image(8, 8, 2, 2), "GIF"), "GIF images are not supported"),
        (_png_declaring(40_000, 1), "at most 16,384 pixels"),
        (_frames("TIFF"), "3 frames"),
        (_frames("PNG"), "3 frames"),
        (encode(Image.new("LAB", (20, 16), (50, 0, 0)), "TIFF"), "LAB images cannot be read"),
        (_tiff_frame_without_width(), "corrupt or truncated"),
    ],
    ids=[
        "empty",
        "text",
        "truncated-jpeg",
        "too-many-bytes",
        "decompression-bomb",
        "gif",
        "one-long-side",
        "multi-page-tiff",
        "apng",
        "lab-tiff",
        "tiff-frame-without-width",
    ],
)
def test_bad_images_are_invalid_input_with_an_actionable_message(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        preprocess_image(data, GRAY, LIMITS)


def test_tensors_are_checked_against_the_spec() -> None:
    good = np.zeros((1, 64, 64), dtype=np.float32)
    prepared = preprocess_tensor(good[None], GRAY, keep_image=True)
    assert prepared.tensor.shape == (1, 64, 64) and prepared.geometry.width == 64
    assert prepared.image is not None and prepared.image.size == (64, 64)
    with pytest.raises(InvalidInput, match=r"shape \(3, 64, 64\)"):
        preprocess_tensor(np.zeros((3, 64, 64), dtype=np.float32), GRAY)
    with pytest.raises(InvalidInput, match="float32"):
        preprocess_tensor(np.zeros((1, 64, 64), dtype=np.float16), GRAY)
    with pytest.raises(InvalidInput, match="NaN"):
        preprocess_tensor(np.full((1, 64, 64), np.nan, dtype=np.float32), GRAY)


def test_rgb_models_get_three_normalised_channels() -> None:
    image = Image.new("RGB", (50, 20), (255, 0, 128))
    prepared = preprocess_image(encode(image, "PNG"), RGB, LIMITS)
    assert prepared.tensor.shape == (3, 32, 32)
    np.testing.assert_allclose(
        prepared.tensor[:, 10, 10], [(1 - 0.5) / 0.25, -0.5 / 0.25, (128 / 255 - 0.5) / 0.25], atol=1e-5
    )


def test_decoded_size_is_bounded_from_the_header() -> None:
    limits = ImageLimits(max_bytes=50_000_000, max_pixels=40_000_000, max_decoded_bytes=1_000_000)
    wide = encode(Image.new("I;16", (1000, 600)), "PNG")
    with pytest.raises(InvalidInput, match="decodes to 1 MiB"):
        preprocess_image(wide, GRAY, limits)
    assert preprocess_image(encode(Image.new("L", (1000, 600)), "PNG"), GRAY, limits).tensor.shape[0] == 1
