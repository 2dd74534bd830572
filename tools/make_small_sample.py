"""Writes docs/samples/small_digit.png: a test-split canvas of the small-digit variant (one digit
of 10–20 px among clutter), enlarged ×2.5 as a photo would be. Deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from attnserve.export.data import make_dataset
from attnserve.transform import image_from_pixels

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "samples" / "small_digit.png"


def main(index: int = 4) -> int:
    sample = make_dataset("small", "test", index + 1, seed=0)[index]
    canvas = image_from_pixels(sample.image)
    photo = canvas.resize((round(canvas.width * 2.5), round(canvas.height * 2.5)), Image.Resampling.BILINEAR)
    photo.save(OUT, optimize=True)
    x0, y0, x1, y1 = (round(v * 2.5) for v in sample.box)
    print(f"wrote {OUT}: {photo.size[0]}×{photo.size[1]}, a {sample.label} at x {x0}–{x1}, y {y0}–{y1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
