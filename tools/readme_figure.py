"""Draws docs/images/attention.png and docs/images/zoo.png from real Predict calls (overlay PNGs
as the gateway renders them). Run with the venv's python after training/exporting new models.

- attention.png: the sample digit and every spatial map the default model serves.
- zoo.png: both samples (a standard digit, a small digit in a larger picture) and the primary
  attention of every served model on each.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from attnserve.clients import Client
from attnserve.demo import serving
from attnserve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [ROOT / "docs" / "samples" / "digit.png", ROOT / "docs" / "samples" / "small_digit.png"]
MAPS = ["spatial_stage1", "spatial_stage2", "spatial_stage3", "spatial_product", "cam"]
CAPTION = 22


def grid(rows: list[list[tuple[str, Image.Image]]], height: int) -> Image.Image:
    """Tiles scaled to one height, captioned, in rows."""
    scaled = [
        [(label, tile.resize((round(tile.width * height / tile.height), height))) for label, tile in row]
        for row in rows
    ]
    width = max(sum(t.width + 4 for _, t in row) for row in scaled)
    figure = Image.new("RGB", (width, len(rows) * (height + CAPTION)), "white")
    draw = ImageDraw.Draw(figure)
    for r, row in enumerate(scaled):
        left, top = 0, r * (height + CAPTION)
        for label, tile in row:
            figure.paste(tile, (left, top + CAPTION))
            draw.text((left + 4, top + 5), label, fill="black")
            left += tile.width + 4
    return figure


def main() -> int:
    with serving(Settings()) as served, Client(served.address) as client:
        default = client.get_model()
        prediction = client.predict(SAMPLES[0], maps=MAPS, forms=["overlay_png"])
        first = [
            (
                f"input: {prediction.predictions[0].label} ({prediction.predictions[0].score:.2f})",
                Image.open(SAMPLES[0]).convert("RGB"),
            )
        ]
        for attention in prediction.attention:
            label = attention.name + (" (primary)" if attention.name == default.primary_attention else "")
            first.append((label, Image.open(io.BytesIO(attention.overlay_png)).convert("RGB")))
        grid([first], 256).save(ROOT / "docs" / "images" / "attention.png", optimize=True)

        models = [m.name for m in client.list_models().models]
        rows = []
        for sample in SAMPLES:
            row = [("input", Image.open(sample).convert("RGB"))]
            for model in models:
                answer = client.predict(sample, model=model, maps=["primary"], forms=["overlay_png"])
                (primary,) = answer.attention
                best = answer.predictions[0]
                row.append(
                    (
                        f"{model}: {best.label} ({best.score:.2f}) · {primary.name}",
                        Image.open(io.BytesIO(primary.overlay_png)).convert("RGB"),
                    )
                )
            rows.append(row)
        grid(rows, 200).save(ROOT / "docs" / "images" / "zoo.png", optimize=True)
    print("wrote docs/images/attention.png and docs/images/zoo.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
