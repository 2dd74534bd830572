"""Draws docs/images/attention.png: the sample digit and every spatial map the default model
serves, as the gateway renders them (overlay PNGs from a real Predict). Run with the venv's
python after training/exporting a new default model."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from attnserve.clients import Client
from attnserve.demo import serving
from attnserve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_IMAGE = ROOT / "docs" / "samples" / "digit.png"
OUT = ROOT / "docs" / "images" / "attention.png"
MAPS = ["spatial_stage1", "spatial_stage2", "spatial_stage3", "spatial_product", "cam"]


def main() -> int:
    with serving(Settings()) as address, Client(address) as client:
        prediction = client.predict(SAMPLE_IMAGE, maps=MAPS, forms=["overlay_png"])
        primary = client.get_model().primary_attention
    original = Image.open(SAMPLE_IMAGE).convert("RGB")
    tiles = [(f"input: {prediction.predictions[0].label} ({prediction.predictions[0].score:.2f})", original)]
    for attention in prediction.attention:
        label = attention.name + (" (primary)" if attention.name == primary else "")
        tiles.append((label, Image.open(io.BytesIO(attention.overlay_png)).convert("RGB")))
    width, height = original.size
    caption = 22
    figure = Image.new("RGB", (width * len(tiles), height + caption), "white")
    draw = ImageDraw.Draw(figure)
    for index, (label, tile) in enumerate(tiles):
        figure.paste(tile, (index * width, caption))
        draw.text((index * width + 6, 5), label, fill="black")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    figure.save(OUT, optimize=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
