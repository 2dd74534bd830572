"""The trained segmentation and instance models, served end to end: the real `tritonserver` and
the real gateway against the gateway's own pipeline run in-process on onnxruntime (the same
model files, no Triton), on test scenes (scans 1497–1796) and on the ways users send them:
enlarged, rotated by EXIF, letterboxed into another aspect ratio, blank, very large."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnserve.export.data.scenes import DigitScenes
from attnserve.export.repository import read_config
from attnserve.prediction import Prediction
from attnserve.spec import SPEC_PARAMETER, ModelSpec, Task

from .conftest import REPO_ROOT, GatewayThread, gateway_settings, png_turned, triton_settings

REPOSITORY = REPO_ROOT / "model_repository"


def _specs() -> dict[str, ModelSpec]:
    specs = {}
    for path in sorted(REPOSITORY.glob("*/config.pbtxt")):
        config = read_config(path)
        specs[config.name] = ModelSpec.from_json(config.parameters[SPEC_PARAMETER].string_value)
    return specs


SPECS = _specs()
DENSE = sorted(
    name
    for name, spec in SPECS.items()
    if spec.task in (Task.SEMANTIC_SEGMENTATION, Task.INSTANCE_SEGMENTATION)
)
"""Captioners have their own round trips (test_captioning.py)."""


def test_the_repository_serves_every_task() -> None:
    tasks = {spec.task for spec in SPECS.values()}
    assert set(Task) <= tasks


@pytest.fixture(scope="module")
def in_process() -> Iterator[GatewayThread]:
    """The gateway's pipeline on onnxruntime in this process: the reference a served answer must equal."""
    from attnserve.bench.inprocess import OnnxRuntimeBackend

    thread = GatewayThread(
        gateway_settings(triton_settings(), http_port=0),
        OnnxRuntimeBackend(REPOSITORY, threads=1),  # type: ignore[arg-type]
    ).start()
    yield thread
    thread.stop()


def _scene(index: int, size: int = 128) -> Image.Image:
    scene = DigitScenes("test", index + 1, canvas_size=size, seed=7)[index]
    return Image.fromarray(np.round(scene.image * 255).astype(np.uint8), mode="L")


def _predict(address: str, image: bytes, model: str, **options: object) -> Prediction:
    from attnserve.clients import Client

    with Client(address, timeout_s=60) as client:
        return client.predict(image, model=model, **options)  # type: ignore[arg-type]


def _same_answer(served: Prediction, reference: Prediction) -> None:
    assert served.task == reference.task
    if served.segmentation is not None:
        assert reference.segmentation is not None
        ours, theirs = served.segmentation.label_image(), reference.segmentation.label_image()
        assert ours.shape == theirs.shape and np.mean(ours == theirs) > 0.999
    assert len(served.instances) == len(reference.instances)
    for a, b in zip(served.instances, reference.instances, strict=True):
        assert a.label == b.label and abs(a.score - b.score) < 1e-3
        assert np.allclose(a.box, b.box, atol=0.5) and abs(a.area - b.area) <= max(3, 0.01 * b.area)


@pytest.mark.parametrize("model", DENSE)
def test_served_answers_equal_the_in_process_pipeline(
    gateway: GatewayThread, in_process: GatewayThread, model: str
) -> None:
    for index in range(3):
        image = png_turned(_scene(index))
        options = {"forms": ["raw", "overlay_png"], "render": ["primary"], "task_overlay": True}
        served = _predict(gateway.address, image, model, **options)
        _same_answer(served, _predict(in_process.address, image, model, **options))
        assert served.task_overlay and any(a.overlay_png for a in served.attention)
    found = served.segmentation.areas[1:] if served.segmentation else served.instances
    assert found  # a test scene has digits: something is found


@pytest.mark.parametrize("model", DENSE)
def test_an_enlarged_rotated_letterboxed_scene_gets_the_same_answer_in_its_own_pixels(
    gateway: GatewayThread, model: str
) -> None:
    """A scene on a wider canvas (letterboxed by the gateway), and the same picture 1.5× larger
    and stored turned with EXIF orientation 6: the model sees the same input, so the answers
    must be the same up to the ×1.5 between their pixels."""
    wide = Image.new("L", (480, 320), 0)
    wide.paste(_scene(1).resize((320, 320), Image.Resampling.BILINEAR), (80, 0))
    plain = _predict(gateway.address, png_turned(wide), model)
    larger = wide.resize((720, 480), Image.Resampling.BILINEAR)
    moved = _predict(gateway.address, png_turned(larger, exif_orientation=6), model)
    assert (moved.image.width, moved.image.height) == (720, 480)
    if plain.segmentation is not None:
        assert moved.segmentation is not None
        ours = moved.segmentation.label_image()
        theirs = np.asarray(
            Image.fromarray(plain.segmentation.label_image()).resize((720, 480), Image.Resampling.NEAREST)
        )
        found = (ours > 0) | (theirs > 0)
        assert found.any() and np.mean(ours[found] == theirs[found]) > 0.8
        assert not ours[:, :110].any() and not ours[:, 610:].any()  # the padding stays background
    else:
        assert plain.instances and len(moved.instances) == len(plain.instances)
        expected = [tuple(v * 1.5 for v in b.box) for b in plain.instances]
        matched = [max(_box_iou(box, a.box) for a in moved.instances) for box in expected]
        assert min(matched) >= 0.9, matched
        assert sorted(i.label for i in moved.instances) == sorted(i.label for i in plain.instances)


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("model", DENSE)
def test_a_blank_image_is_an_empty_answer(gateway: GatewayThread, model: str) -> None:
    answer = _predict(gateway.address, png_turned(Image.new("L", (200, 150), 0)), model)
    if answer.segmentation is not None:
        assert [a.label for a in answer.segmentation.areas] == ["background"]
    else:
        assert answer.instances == []


@pytest.mark.parametrize("model", DENSE)
def test_a_large_image_stays_within_the_message_limits(gateway: GatewayThread, model: str) -> None:
    """A 4096×4096 scene: label image and drawings at the render size, masks in original pixels,
    the answer well within gRPC's limit (set explicitly: GatewaySettings.max_message_bytes)."""
    large = _scene(2).resize((4096, 4096), Image.Resampling.BILINEAR)
    answer = _predict(
        gateway.address,
        png_turned(large),
        model,
        forms=["overlay_png"],
        render=["primary"],
        task_overlay=True,
        image_encoding="jpeg",
    )
    assert (answer.image.width, answer.image.height) == (4096, 4096)
    with Image.open(io.BytesIO(answer.task_overlay)) as drawn:
        assert drawn.size == (1024, 1024)
    if answer.segmentation is not None:
        assert (answer.segmentation.width, answer.segmentation.height) == (1024, 1024)
        assert sum(a.pixels for a in answer.segmentation.areas) == pytest.approx(4096 * 4096, rel=1e-3)
    for instance in answer.instances:
        assert instance.rle_size == (4096, 4096) and sum(instance.rle_counts) == 4096 * 4096


def test_the_per_scale_weights_are_drawn_a_tile_per_scale(gateway: GatewayThread, tmp_path: Path) -> None:
    spec = SPECS.get("attention_to_scale")
    if spec is None:
        pytest.skip("attention_to_scale is not in the model repository")
    options = {"maps": ["scale_weights"], "forms": ["raw", "overlay_png"]}
    answer = _predict(gateway.address, png_turned(_scene(0)), "attention_to_scale", **options)
    weights = answer.attention_map("scale_weights")
    scales = weights.raw.shape[0]
    assert scales >= 3 and np.allclose(weights.raw.sum(axis=0), 1.0, atol=1e-4)
    with Image.open(io.BytesIO(weights.overlay_png)) as tiles:
        assert tiles.size == (scales * 128 + (scales - 1) * 4, 128)
