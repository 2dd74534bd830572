"""Digits on photographs and photo_cbam, the RGB model exported through the bring-your-own path:
the data's splits and determinism, the committed checkpoint's accuracy, the committed ONNX model
against it, and a served prediction of a test photograph in its own pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from attnserve.export.data import SPLITS, model_batch
from attnserve.export.data.photos import (
    PHOTO_CROP_PCT,
    PHOTO_SPLITS,
    DigitsOnPhotos,
    photo_preprocess,
)
from attnserve.export.repository import read_config
from attnserve.export.scoring import run_graph
from attnserve.export.train_photos import CHECKPOINT_DIR, NAME, capture, load_photo_checkpoint
from attnserve.spec import SPEC_PARAMETER, ModelSpec
from attnserve.transform import image_from_pixels

from .conftest import REPO_ROOT

MODEL_DIR = REPO_ROOT / "model_repository" / NAME
CHECKPOINT = REPO_ROOT / CHECKPOINT_DIR / "checkpoint.pt"
ACCURACY_FLOOR = 0.6
"""Well under the measured test accuracy (docs/photos.md), on 150 test samples."""
SERVED_FLOOR = 0.5
"""Share of served 300×200 test photographs answered right, and with the primary map's peak on the
digit (in process, on 60 of them: accuracy 0.88, the peak on the digit 0.70; a 6×6 map's peaks
lie on a 16 px grid of the input, and a narrow digit's box can fall between them)."""


def test_no_photo_and_no_scan_is_in_two_splits() -> None:
    photos = [set(names) for names in PHOTO_SPLITS.values()]
    assert sum(len(p) for p in photos) == len(set().union(*photos))
    for split in ("train", "val", "test"):
        dataset = DigitsOnPhotos(split, 30, seed=3)  # type: ignore[arg-type]
        for sample in (dataset[i] for i in range(len(dataset))):
            assert sample.photo in PHOTO_SPLITS[split]
            assert sample.scan_index in SPLITS[split]
            assert all(scan in SPLITS[split] for scan in sample.clutter_scans)


def test_samples_are_deterministic_by_seed_split_and_index() -> None:
    first, again = DigitsOnPhotos("test", 4, seed=1)[3], DigitsOnPhotos("test", 4, seed=1)[3]
    np.testing.assert_array_equal(first.image, again.image)
    assert (first.box, first.label, first.photo) == (again.box, again.label, again.photo)
    other = DigitsOnPhotos("test", 4, seed=2)[3]
    assert not np.array_equal(first.image, other.image)


def test_boxes_lie_in_the_part_the_centre_crop_keeps() -> None:
    dataset = DigitsOnPhotos("train", 40, seed=4, shape_share=0.5)
    shapes = set()
    for sample in (dataset[i] for i in range(len(dataset))):
        height, width, channels = sample.image.shape
        shapes.add((width, height))
        assert channels == 3 and 0.0 <= sample.image.min() and sample.image.max() <= 1.0
        x0, y0, x1, y1 = sample.box
        side = min(width, height) * PHOTO_CROP_PCT
        left, top = (width - side) / 2, (height - side) / 2
        assert left <= x0 < x1 <= left + side + 1 and top <= y0 < y1 <= top + side + 1
        assert sample.mask[y0:y1, x0:x1].any() and not sample.mask[:y0].any() and not sample.mask[y1:].any()
    assert len(shapes) > 2 and any(w != h for w, h in shapes)


def test_the_committed_checkpoint_reads_test_photographs() -> None:
    model, metrics = load_photo_checkpoint(CHECKPOINT)
    dataset = DigitsOnPhotos("test", 150, seed=21)
    batch = model_batch([dataset[i] for i in range(len(dataset))], photo_preprocess())
    with torch.no_grad():
        predicted = model(batch.inputs()).argmax(dim=1).numpy()
    assert float(np.mean(predicted == batch.labels)) >= ACCURACY_FLOOR
    assert metrics["test"]["accuracy"] > ACCURACY_FLOOR + 0.1


def test_the_served_model_is_the_checkpoint_with_its_spec() -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    spec = ModelSpec.from_json(
        read_config(MODEL_DIR / "config.pbtxt").parameters[SPEC_PARAMETER].string_value
    )
    assert spec.preprocess == photo_preprocess()
    model, _ = load_photo_checkpoint(CHECKPOINT)
    graph = capture(model)
    assert spec.output_names == graph.spec.output_names
    assert spec.primary_attention == "layer3_attn_spatial" and "cam" in spec.output_names
    dataset = DigitsOnPhotos("test", 4, seed=22)
    batch = model_batch([dataset[i] for i in range(len(dataset))], spec.preprocess)
    expected = run_graph(graph, batch)
    session = onnxruntime.InferenceSession(str(MODEL_DIR / "1" / "model.onnx"))
    served = session.run(list(spec.output_names), {spec.input_name: batch.inputs().numpy()})
    for name, value in zip(spec.output_names, served, strict=True):
        np.testing.assert_allclose(value, expected[name].numpy(), atol=1e-4, err_msg=name)


@pytest.mark.triton
def test_a_served_test_photograph_is_read_and_attended_in_its_own_pixels(client: object) -> None:
    """300×200 canvases (the model trained on 146 px squares and some other shapes): the answer,
    every map drawn at the photograph's size, and the primary map's peak, mapped back into the
    photograph's pixels, on the digit's box (on the 146 px test split: 83 %)."""
    from attnserve.clients import Client

    assert isinstance(client, Client)
    dataset = DigitsOnPhotos("test", 40, canvas_size=(300, 200), seed=23)
    right, on_digit = 0, 0
    for sample in (dataset[i] for i in range(len(dataset))):
        buffer = io.BytesIO()
        image_from_pixels(sample.image).save(buffer, format="PNG")
        maps = ["primary", "attn_pool_spatial", "cam"]
        answer = client.predict(buffer.getvalue(), model=NAME, maps=maps, forms=["raw", "overlay_png"])
        assert (answer.image.width, answer.image.height) == (300, 200)
        right += answer.predictions[0].index == sample.label
        primary, pooling, cam = answer.attention
        assert primary.name == "layer3_attn_spatial" and pooling.name == "attn_pool_spatial"
        for attention in (primary, pooling, cam):
            assert attention.raw is not None and attention.raw.shape[-2:] == (6, 6)
            assert Image.open(io.BytesIO(attention.overlay_png)).size == (300, 200)
            assert attention.peak is not None
            assert 0 <= attention.peak[0] <= 300 and 0 <= attention.peak[1] <= 200
        x0, y0, x1, y1 = sample.box
        on_digit += x0 <= primary.peak[0] < x1 and y0 <= primary.peak[1] < y1  # type: ignore[index]
    assert right / len(dataset) >= SERVED_FLOOR
    assert on_digit / len(dataset) >= SERVED_FLOOR
