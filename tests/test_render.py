import io

import numpy as np
from PIL import Image

from attnserve.server.gateway.render import TURBO, colorize, encode_png, overlay


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


def test_png_round_trips() -> None:
    pixels = colorize(np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6))
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(pixels))))
    assert np.array_equal(decoded, pixels)
