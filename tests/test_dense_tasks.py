"""Segmentation and instances through the real gateway (gRPC and HTTP), from toy models whose
answers are computed from the very input tensor the gateway sent: the bright pixels are the
class, the instance, its box and its mask. So every check is of the gateway's geometry — the
letterbox undone, EXIF orientation applied, masks pasted on the right original pixels — not of
a trained model's quality (the trained models' round trips are in test_dense_models.py)."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.export.repository import ServingOptions, build_config
from attnserve.prediction import Instance, PredictionRequest
from attnserve.server.gateway.pipeline import resolve_task_options
from attnserve.server.gateway.postprocess.masks import paste_mask, pixel_rect, rle_counts
from attnserve.spec import (
    AttentionKind,
    AttentionSpec,
    ColorMode,
    ModelSpec,
    Normalization,
    PreprocessSpec,
    ResizeMode,
    Task,
)

from .conftest import FakeBackend, GatewayThread, gateway_settings, triton_settings

INPUT = 64
CELLS = 32  # the toy segmenter's logits: 32×32 over the 64×64 input
PREPROCESS = PreprocessSpec(
    input_size=(INPUT, INPUT),
    color_mode=ColorMode.GRAY,
    mean=(0.0,),
    std=(1.0,),
    resize_mode=ResizeMode.LETTERBOX,
)
WEIGHTS = AttentionSpec(
    name="scale_weights",
    kind=AttentionKind.SPATIAL,
    axes=("scale", "y", "x"),
    description="per-pixel weights of two input scales",
    value_range="[0, 1], summing to 1 over the scales",
    normalization=Normalization(method="fixed", range=(0.0, 1.0)),
)
SEG_SPEC = ModelSpec(
    architecture="toy_segmenter",
    description="class 1 where the input is bright",
    task=Task.SEMANTIC_SEGMENTATION,
    preprocess=PREPROCESS,
    labels=("background", "bright"),
    attention=(WEIGHTS,),
    primary_attention="scale_weights",
)
OBJECTNESS = AttentionSpec(
    name="objectness",
    kind=AttentionKind.SPATIAL,
    axes=("y", "x"),
    description="the input itself",
    value_range="[0, 1]",
    normalization=Normalization(method="fixed", range=(0.0, 1.0)),
)
INST_SPEC = ModelSpec(
    architecture="toy_detector",
    description="one instance: the bright pixels' box, all of it masked",
    task=Task.INSTANCE_SEGMENTATION,
    preprocess=PREPROCESS,
    labels=("dim", "bright"),
    attention=(OBJECTNESS,),
    primary_attention="objectness",
)
DIMS = {
    "toy_segmenter": {"logits": (2, CELLS, CELLS), "scale_weights": (2, CELLS, CELLS)},
    "toy_detector": {
        "boxes": (2, 4),
        "scores": (2,),
        "classes": (2,),
        "masks": (2, 8, 8),
        "objectness": (64, 64),
    },
}
SPECS = {"toy_segmenter": SEG_SPEC, "toy_detector": INST_SPEC}


def _bright(image: np.ndarray) -> np.ndarray:
    return image[0] > 0.5


def _segment(image: np.ndarray) -> dict[str, np.ndarray]:
    pooled = image[0].reshape(CELLS, 2, CELLS, 2).mean(axis=(1, 3))
    logits = np.stack([np.zeros_like(pooled), (pooled - 0.5) * 10.0])
    weights = np.stack([pooled, 1.0 - pooled])
    return {"logits": logits, "scale_weights": weights}


def _detect(image: np.ndarray) -> dict[str, np.ndarray]:
    ys, xs = np.nonzero(_bright(image))
    found = xs.size > 0
    outputs = {
        "boxes": np.zeros((2 if found else 0, 4)),
        "scores": np.zeros(2 if found else 0),  # the second row is padding (score 0)
        "classes": np.ones(2 if found else 0),
        "masks": np.ones((2 if found else 0, 8, 8)),
        "objectness": image[0],
    }
    if found:
        outputs["boxes"][0] = (
            xs.min() / INPUT,
            ys.min() / INPUT,
            (xs.max() + 1) / INPUT,
            (ys.max() + 1) / INPUT,
        )
        outputs["scores"][0] = 0.9
    return outputs


class DenseBackend(FakeBackend):
    """Serves the toy segmenter and detector, answering from the input tensor."""

    def __init__(self) -> None:
        super().__init__(names=("cbam",))
        for name, spec in SPECS.items():
            self.configs[name] = build_config(name, spec, DIMS[name], ServingOptions())

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        timeout_s: float,
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        if model not in SPECS:
            return await super().infer(model, version, inputs, outputs, timeout_s, request_id)
        answer = (_segment if model == "toy_segmenter" else _detect)(inputs["image"][0])
        return {name: answer[name][None].astype(np.float32) for name in outputs}


@pytest.fixture(scope="module")
def dense_gateway() -> Iterator[GatewayThread]:
    thread = GatewayThread(
        gateway_settings(triton_settings(), default_model="cbam", http_port=0), DenseBackend()
    ).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def clients(dense_gateway: GatewayThread) -> Iterator[dict[str, object]]:
    from attnserve.clients import Client, HttpClient

    with Client(dense_gateway.address) as grpc_client, HttpClient(dense_gateway.http_url) as http_client:
        yield {"grpc": grpc_client, "http": http_client}


RECT = (120, 20, 160, 60)  # x0, y0, x1, y1 of the bright rectangle on a 200×100 image


def scene(width: int = 200, height: int = 100, rect: tuple[int, int, int, int] = RECT) -> Image.Image:
    pixels = np.full((height, width), 20, dtype=np.uint8)
    x0, y0, x1, y1 = rect
    pixels[y0:y1, x0:x1] = 235
    return Image.fromarray(pixels, mode="L")


def encoded(image: Image.Image, orientation: int | None = None) -> bytes:
    """PNG bytes; with an EXIF ``orientation``, the pixels stored so that the oriented image is
    ``image`` (6: shown rotated 90° clockwise)."""
    buffer = io.BytesIO()
    if orientation is None:
        image.save(buffer, format="PNG")
    else:
        assert orientation == 6
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.transpose(Image.Transpose.ROTATE_90).save(buffer, format="PNG", exif=exif)
    return buffer.getvalue()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _rect_mask(shape: tuple[int, int], rect: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rect[1] : rect[3], rect[0] : rect[2]] = True
    return mask


@pytest.mark.parametrize("front", ["grpc", "http"])
@pytest.mark.parametrize("orientation", [None, 6])
def test_a_segmentation_lands_on_the_original_pixels(
    clients: dict[str, object], front: str, orientation: int | None
) -> None:
    client = clients[front]
    answer = client.predict(encoded(scene(), orientation), model="toy_segmenter", maps=["primary"])  # type: ignore[attr-defined]
    assert answer.task == "semantic_segmentation" and answer.predictions == []
    segmentation = answer.segmentation
    assert (segmentation.width, segmentation.height) == (200, 100)  # oriented: landscape again
    labels = segmentation.label_image()
    assert labels.shape == (100, 200) and set(np.unique(labels)) == {0, 1}
    assert _iou(labels == 1, _rect_mask((100, 200), RECT)) > 0.85
    areas = {a.label: a for a in segmentation.areas}
    assert areas["bright"].pixels == pytest.approx(40 * 40, rel=0.15)
    assert sum(a.pixels for a in segmentation.areas) == 200 * 100
    assert segmentation.areas[0].label == "background"  # largest first
    # the per-scale weights: a stack no task selects, returned whole
    weights = answer.attention_map("scale_weights")
    assert weights.raw.shape == (2, CELLS, CELLS)


@pytest.mark.parametrize("front", ["grpc", "http"])
@pytest.mark.parametrize("orientation", [None, 6])
def test_instances_land_on_the_original_pixels(
    clients: dict[str, object], front: str, orientation: int | None
) -> None:
    client = clients[front]
    answer = client.predict(encoded(scene(), orientation), model="toy_detector", omit_attention=True)  # type: ignore[attr-defined]
    assert answer.task == "instance_segmentation"
    assert len(answer.instances) == 1  # the padding row (score 0) is not an instance
    instance: Instance = answer.instances[0]
    assert (instance.label, instance.class_index, instance.score) == ("bright", 1, pytest.approx(0.9))
    assert np.allclose(instance.box, RECT, atol=3.5)  # a 64-px input sees 3.125 original pixels a pixel
    mask = instance.mask()
    x, y = instance.mask_origin
    full = np.zeros((100, 200), dtype=bool)
    full[y : y + mask.shape[0], x : x + mask.shape[1]] = mask
    assert _iou(full, _rect_mask((100, 200), RECT)) > 0.85 and instance.area == full.sum()
    # the RLE is the same mask over the whole image (column-major runs, 0s first)
    assert instance.rle_size == (100, 200) and sum(instance.rle_counts) == 100 * 200
    decoded = np.repeat(np.arange(len(instance.rle_counts)) % 2 == 1, instance.rle_counts)
    assert np.array_equal(decoded.reshape(200, 100).T, full)
    # one outline, around the box
    assert len(instance.polygons) == 1
    points = np.array(instance.polygons[0])
    box = instance.box
    assert points[:, 0].min() >= box[0] - 1e-3 and points[:, 0].max() <= box[2] + 1e-3
    assert points[:, 1].min() >= box[1] - 1e-3 and points[:, 1].max() <= box[3] + 1e-3


def test_an_image_with_nothing_gives_no_instances_not_an_error(clients: dict[str, object]) -> None:
    for client in clients.values():
        answer = client.predict(encoded(scene(rect=(0, 0, 0, 0))), model="toy_detector")  # type: ignore[attr-defined]
        assert answer.instances == [] and answer.task == "instance_segmentation"
        empty = client.predict(encoded(scene(rect=(0, 0, 0, 0))), model="toy_segmenter")  # type: ignore[attr-defined]
        assert [a.label for a in empty.segmentation.areas] == ["background"]


def test_thresholds_and_counts_filter_instances(clients: dict[str, object]) -> None:
    client = clients["grpc"]
    image = encoded(scene())
    assert client.predict(image, model="toy_detector", score_threshold=0.95).instances == []  # type: ignore[attr-defined]
    assert len(client.predict(image, model="toy_detector", score_threshold=0.0).instances) == 1  # type: ignore[attr-defined]
    assert len(client.predict(image, model="toy_detector", max_instances=1).instances) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", ["toy_segmenter", "toy_detector"])
def test_a_large_image_is_drawn_at_the_render_size_and_answered_in_original_pixels(
    clients: dict[str, object], model: str
) -> None:
    rect = (1800, 300, 2400, 900)
    image = encoded(scene(3000, 1500, rect))
    for encoding in ("png", "jpeg"):
        answer = clients["grpc"].predict(  # type: ignore[attr-defined]
            image,
            model=model,
            render_max_side=512,
            task_overlay=True,
            image_encoding=encoding,
            omit_attention=True,
        )
        assert answer.task_overlay_encoding == encoding
        with Image.open(io.BytesIO(answer.task_overlay)) as drawn:
            assert drawn.size == (512, 256)
            pixels = np.asarray(drawn.convert("RGB"), dtype=np.int16)
        # the drawn answer tints the object, not the background
        inside = pixels[60:140, 320:400].reshape(-1, 3)
        outside = pixels[200:250, 20:100].reshape(-1, 3)
        assert np.abs(inside - 235).max() > 20 and np.abs(outside - 20).max() < 12
    if model == "toy_segmenter":
        assert (answer.segmentation.width, answer.segmentation.height) == (512, 256)
        assert answer.segmentation.areas[1].pixels == pytest.approx(600 * 600, rel=0.15)
    else:
        instance = answer.instances[0]
        assert np.allclose(instance.box, rect, atol=30) and instance.rle_size == (1500, 3000)
        assert instance.area == pytest.approx(600 * 600, rel=0.1)


def test_options_of_another_task_are_refused_by_name(clients: dict[str, object]) -> None:
    from attnserve.export.models import create_model, get_spec, serving_spec

    cbam = serving_spec(get_spec("cbam"), create_model("cbam"))
    cases = [
        (PredictionRequest(top_k=3), SEG_SPEC, "top_k does not apply to a semantic_segmentation model"),
        (PredictionRequest(score_threshold=0.3), SEG_SPEC, "score_threshold does not apply"),
        (PredictionRequest(max_instances=3), cbam, "max_instances does not apply to a classification model"),
        (PredictionRequest(task_overlay=True), cbam, "attention formats OVERLAY_PNG"),
        (PredictionRequest(score_threshold=1.5), INST_SPEC, r"score_threshold must be in \[0, 1\]"),
        (PredictionRequest(max_instances=101), INST_SPEC, "max_instances must be 0–100"),
    ]
    for request, spec, message in cases:
        with pytest.raises(InvalidInput, match=message):
            resolve_task_options(request, spec, 100)
    with pytest.raises(
        InvalidInput, match="top_k does not apply"
    ):  # and through a front, as INVALID_ARGUMENT
        clients["grpc"].predict(encoded(scene()), model="toy_detector", top_k=2)  # type: ignore[attr-defined]
    assert clients["grpc"].predict(encoded(scene()), model="cbam").task == "classification"  # type: ignore[attr-defined]


def test_models_say_their_task(clients: dict[str, object]) -> None:
    listed = {m.name: m for m in clients["grpc"].list_models().models}  # type: ignore[attr-defined]
    assert listed["toy_detector"].task == "instance_segmentation"
    assert listed["toy_segmenter"].task == "semantic_segmentation" and listed["cbam"].task == "classification"


def test_masks_paste_bilinearly_and_their_rle_is_cocos() -> None:
    grid = np.zeros((4, 4), dtype=np.float32)
    grid[1:3, 1:3] = 1.0
    box = (10.0, 20.0, 18.0, 28.0)  # 2 px a grid cell
    rect = pixel_rect(box, 40, 40)
    assert rect == (10, 20, 18, 28)
    mask = paste_mask(grid, box, rect)
    assert mask[2:6, 2:6].all() and mask.sum() == 16  # the middle 2×2 cells, threshold 0.5
    full = np.zeros((40, 40), dtype=bool)
    full[20:28, 10:18] = mask
    counts = rle_counts(mask, (10, 20), (40, 40))
    runs = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    assert np.array_equal(runs.reshape(40, 40).T, full)


def test_the_cli_prints_and_writes_each_tasks_answer(
    clients: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from attnserve.console import PictureRequest, predict_to_console

    image = tmp_path / "scene.png"
    image.write_bytes(encoded(scene()))
    drawn, weights = tmp_path / "drawn.jpg", tmp_path / "weights.png"
    pictures = PictureRequest(overlay=drawn, map_overlay=weights)
    predict_to_console(
        clients["grpc"], image, model="toy_segmenter", pictures=pictures, image_encoding="jpeg"
    )  # type: ignore[arg-type]
    printed = capsys.readouterr().out
    share = re.search(r"segmentation 200×100: background \d+\.\d%, bright (\d+\.\d)%", printed)
    assert share is not None and abs(float(share.group(1)) - 8.0) < 1.0, printed  # 40×40 of 200×100
    assert f"wrote {drawn} (the semantic segmentation)" in printed
    with Image.open(drawn) as picture:
        assert picture.format == "JPEG" and picture.size == (200, 100)
    assert weights.stat().st_size > 0  # the per-scale weights' overlay (tiles)

    predict_to_console(clients["grpc"], image, model="toy_detector", as_json=True)  # type: ignore[arg-type]
    document = json.loads(capsys.readouterr().out)
    assert document["task"] == "instance_segmentation" and document["predictions"] == []
    (instance,) = document["instances"]
    assert instance["label"] == "bright" and np.allclose(instance["box"], RECT, atol=3.5)
    assert len(instance["polygons"]) == 1 and len(instance["polygons"][0]) >= 4

    predict_to_console(clients["grpc"], image, model="cbam", as_json=True)  # type: ignore[arg-type]
    assert "task" not in json.loads(capsys.readouterr().out)  # a classifier's summary as it was


def test_outlines_are_the_outer_ones_and_specks_are_bounded() -> None:
    from attnserve.server.gateway.postprocess.masks import MAX_OUTLINES, mask_polygons

    yy, xx = np.mgrid[0:28, 0:28]
    radius = np.hypot(yy - 13.5, xx - 13.5)
    ring = ((radius < 12) & (radius > 5)).astype(np.float32)
    (outline,) = mask_polygons(ring, (0.0, 0.0, 28.0, 28.0))  # the hole is not an outline
    assert max(np.hypot(x - 14.0, y - 14.0) for x, y in outline) > 11
    discs = ((np.hypot(yy - 7, xx - 7) < 5) | (np.hypot(yy - 20, xx - 20) < 6)).astype(np.float32)
    larger, smaller = mask_polygons(discs, (0.0, 0.0, 28.0, 28.0))  # largest first
    assert min(x for x, _ in larger) > 12 and max(x for x, _ in smaller) < 14
    noise = (np.random.default_rng(0).random((28, 28)) > 0.4).astype(np.float32)
    assert len(mask_polygons(noise, (0.0, 0.0, 28.0, 28.0))) <= MAX_OUTLINES


def test_outlines_are_the_same_in_every_process() -> None:
    """A mask is traced from the same point whatever the process's string hashing (restarts,
    replicas, render worker processes answer alike)."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from attnserve.server.gateway.postprocess.masks import mask_polygons\n"
        "yy, xx = np.mgrid[0:28, 0:28]\n"
        "discs = ((np.hypot(yy - 7, xx - 7) < 5) | (np.hypot(yy - 20, xx - 19) < 6.5)).astype(np.float32)\n"
        "noise = (np.random.default_rng(1).random((28, 28)) > 0.5).astype(np.float32)\n"
        "print([mask_polygons(g, (3.0, 5.0, 59.0, 61.0)) for g in (discs, noise)])\n"
    )
    traced = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }  # fmt: skip
    assert len(traced) == 1
