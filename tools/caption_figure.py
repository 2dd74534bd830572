"""Draws docs/images/captions.png from real Predict calls (Triton and the gateway, as `make run`
starts them): for test scenes (scans 1497–1796) enlarged to 224 px, the captioner's answer as the
gateway draws it on request (`TaskOptions.overlay`: one tile per word, the word's attention on
the image, the word under it), with the caption and each word's probability above. Run with the
venv's python after exporting show_attend_tell.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attnserve.clients import Client
from attnserve.demo import serving
from attnserve.export.data.captions import CaptionScenes
from attnserve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "show_attend_tell"
SCENES = (7, 5, 2)
"""Test scenes (seed 3): three digits; two side by side; two one above the other."""
HEADER = 30


def _scene_png(index: int) -> tuple[bytes, str]:
    scene = CaptionScenes("test", index + 1, seed=3)[index]
    image = Image.fromarray(np.round(scene.image * 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.resize((224, 224), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue(), " ".join(scene.words)


def main() -> int:
    font = ImageFont.load_default(size=16)
    rows = []
    with serving(Settings()) as served, Client(served.address, timeout_s=60) as client:
        for index in SCENES:
            data, truth = _scene_png(index)
            answer = client.predict(data, model=MODEL, omit_attention=True, task_overlay=True)
            assert answer.caption is not None
            tiles = Image.open(io.BytesIO(answer.task_overlay)).convert("RGB")
            row = Image.new("RGB", (tiles.width, tiles.height + HEADER), "white")
            row.paste(tiles, (0, HEADER))
            said = answer.caption.text
            verdict = "right" if said == truth else f'wrong: the reference says "{truth}"'
            label = f'test scene {index}: "{said}" ({verdict})'
            ImageDraw.Draw(row).text((4, 6), label, fill="black", font=font)
            rows.append(row)
    width = max(r.width for r in rows)
    figure = Image.new("RGB", (width, sum(r.height for r in rows) + 12 * (len(rows) - 1)), "white")
    top = 0
    for row in rows:
        figure.paste(row, (0, top))
        top += row.height + 12
    figure.save(ROOT / "docs" / "images" / "captions.png", optimize=True)
    print("wrote docs/images/captions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
