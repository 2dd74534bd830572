"""Draws docs/images/dense.png from real Predict calls (Triton and the gateway, as `make run`
starts them): for test scenes (scans 1497–1796) at 3× their canvas, each dense model's answer as
the gateway draws it (classes coloured; masks, boxes and labels) beside its attention, with the
per-scale weights of Attention to Scale a tile per scale. Run with the venv's python after
exporting the dense models.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from attnserve.clients import Client
from attnserve.demo import serving
from attnserve.export.data.scenes import DigitScenes
from attnserve.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_figure import grid  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("attention_to_scale", "mask_rcnn", "partitioned_fcn")
SCENES = (3, 11)


def _scene_png(index: int) -> tuple[bytes, Image.Image]:
    scene = DigitScenes("test", index + 1, canvas_size=128, seed=7)[index]
    image = Image.fromarray(np.round(scene.image * 255).astype(np.uint8), mode="L").resize(
        (384, 384), Image.Resampling.BILINEAR
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), image.convert("RGB")


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def main() -> int:
    with serving(Settings()) as served, Client(served.address, timeout_s=60) as client:
        served_models = {m.name for m in client.list_models().models}
        rows = []
        for index in SCENES:
            data, picture = _scene_png(index)
            row = [(f"test scene {index} (384 px)", picture)]
            for model in MODELS:
                if model not in served_models:
                    continue
                answer = client.predict(
                    data, model=model, maps=["primary"], forms=["overlay_png"], task_overlay=True
                )
                if answer.segmentation is not None:
                    found = ", ".join(a.label for a in answer.segmentation.areas[1:4])
                    what = f"{model}: {found or 'nothing'}"
                else:
                    what = f"{model}: " + " ".join(f"{i.label}({i.score:.2f})" for i in answer.instances[:4])
                row.append((what, _image(answer.task_overlay)))
                attention = answer.attention[0]
                row.append((f"{model}: {attention.name}", _image(attention.overlay_png)))
            rows.append(row)
        grid(rows, 256).save(ROOT / "docs" / "images" / "dense.png", optimize=True)
    print("wrote docs/images/dense.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
