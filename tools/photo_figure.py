"""Draws docs/images/photo.png from real Predict calls (Triton and the gateway, as `make run`
starts them): test digits (scans 1497–1796) on the held-out test photographs, at 480×320 (an
aspect ratio and size the model was not trained at), each with photo_cbam's answer, its last block's
spatial gate (the primary map), the softmax attention before the head and the class activation
map, drawn by the gateway in the
photograph's own pixels, and the digit's true box outlined on the input. Run with the venv's
python after exporting photo_cbam (`python -m attnserve.export.train_photos --export`).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from attnserve.clients import Client
from attnserve.demo import serving
from attnserve.export.data.photos import DigitsOnPhotos
from attnserve.settings import Settings
from attnserve.transform import image_from_pixels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_figure import grid  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "photo_cbam"
SIZE = (480, 320)
SEED = 5
SAMPLES = 40
"""The first sample on each test photo among these is drawn (one row per photo)."""


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    dataset = DigitsOnPhotos("test", SAMPLES, canvas_size=SIZE, seed=SEED)
    chosen: dict[str, int] = {}
    for index in range(len(dataset)):
        chosen.setdefault(dataset[index].photo, index)
    with serving(Settings()) as served, Client(served.address, timeout_s=60) as client:
        rows = []
        for photo, index in sorted(chosen.items()):
            sample = dataset[index]
            image = image_from_pixels(sample.image)
            answer = client.predict(
                _png(image), model=MODEL, maps=["primary", "attn_pool_spatial", "cam"], forms=["overlay_png"]
            )
            best = answer.predictions[0]
            shown = image.copy()
            ImageDraw.Draw(shown).rectangle(
                [v - (i >= 2) for i, v in enumerate(sample.box)], outline=(255, 0, 0)
            )
            row = [(f"test photo {photo}, digit {sample.label} (box in red)", shown)]
            for attention in answer.attention:
                x, y = attention.peak or (float("nan"), float("nan"))
                x0, y0, x1, y1 = sample.box
                on = "on the digit" if x0 <= x < x1 and y0 <= y < y1 else "off the digit"
                caption = f"{best.label} ({best.score:.2f}) · {attention.name}: peak {on}"
                row.append((caption, Image.open(io.BytesIO(attention.overlay_png)).convert("RGB")))
            rows.append(row)
    out = ROOT / "docs" / "images" / "photo.png"
    grid(rows, 240).save(out, optimize=True)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
