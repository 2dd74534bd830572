"""Mask R-CNN in plain torch: its pieces against direct computations, its losses, its export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from attnserve.export.data import OTHER_CANVAS_SIZES, canvas_parts, scene_preprocess
from attnserve.export.models import ServingGraph, create_model, get_spec
from attnserve.export.models._detection import box_iou, greedy_nms, roi_align
from attnserve.export.models.mask_rcnn import MASK_SIZE, MaskRCNN
from attnserve.export.onnx_export import PARITY_TOLERANCE, export_onnx
from attnserve.export.train_instances import TRAIN_CANVAS, average_precision, paste_mask, training_scenes
from attnserve.spec import Task

SMALL = (64, 64)


def _model(mask_mode: str = "per_class", **kwargs: object) -> MaskRCNN:
    torch.manual_seed(0)
    model = create_model("mask_rcnn", input_size=SMALL, mask_mode=mask_mode, **kwargs)
    assert isinstance(model, MaskRCNN)
    return model


def _targets(batch: int, label: int | None = None) -> tuple[torch.Tensor, ...]:
    """Two digits per image (one of them absent in the last image), with their masks."""
    generator = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[4.0, 6.0, 30.0, 34.0], [34.0, 30.0, 58.0, 60.0]]).repeat(batch, 1, 1)
    labels = torch.randint(0, 10, (batch, 2), generator=generator)
    if label is not None:
        labels.fill_(label)
    labels[-1, 1] = -1
    masks = torch.zeros(batch, 2, *SMALL)
    for index in range(2):
        x0, y0, x1, y1 = boxes[0, index].long().tolist()
        masks[:, index, y0:y1, x0:x1] = (
            torch.rand(batch, y1 - y0, x1 - x0, generator=generator) > 0.4
        ).float()
    images = torch.randn(batch, 1, *SMALL, generator=generator) + masks.sum(1, keepdim=True)
    return images, boxes, labels, masks


def test_outputs_match_the_spec_with_padding_rows_scored_zero() -> None:
    spec = get_spec("mask_rcnn")
    assert spec.task is Task.INSTANCE_SEGMENTATION and spec.labels == tuple(str(d) for d in range(10))
    model = _model(score_threshold=0.0).eval()
    images = torch.randn(3, 1, *SMALL)
    images[2] = 0.0
    with torch.no_grad():
        outputs = ServingGraph(model, spec).named_outputs(images)
    assert set(outputs) == set(spec.output_names)
    spec.check_output_dims({name: tuple(value.shape[1:]) for name, value in outputs.items()})
    count = outputs["scores"].shape[1]
    assert 0 < count <= model.proposals
    assert outputs["masks"].shape == (3, count, MASK_SIZE, MASK_SIZE)
    assert outputs["objectness"].shape == (3, SMALL[0] // 8, SMALL[1] // 8)
    scores = outputs["scores"]
    valid = scores > 0
    assert (scores <= 1).all()
    for row in range(3):  # kept rows first, best first; rows after them are zero
        kept = int(valid[row].sum())
        assert valid[row, :kept].all() and not valid[row, kept:].any()
        assert (scores[row, :kept].diff() <= 0).all()
        for name in ("boxes", "classes", "masks"):
            assert (outputs[name][row, kept:] == 0).all(), name
    boxes = outputs["boxes"][valid]
    assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
    classes = outputs["classes"][valid]
    assert ((classes >= 0) & (classes <= 9) & (classes == classes.round())).all()
    masks = outputs["masks"][valid]
    assert ((masks > 0) & (masks < 1)).all()


def test_a_threshold_above_every_score_gives_zero_detections() -> None:
    model = _model(score_threshold=1.01).eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, 1, *SMALL))
    assert outputs["boxes"].shape == (2, 0, 4) and outputs["masks"].shape == (2, 0, MASK_SIZE, MASK_SIZE)


def _bilinear(feature: np.ndarray, x: float, y: float) -> float:
    """One sample of a map (cell centres at i + 0.5), zero outside, as RoIAlign reads it."""
    height, width = feature.shape
    gx, gy = x - 0.5, y - 0.5
    x0, y0 = int(np.floor(gx)), int(np.floor(gy))
    value = 0.0
    for yy, wy in ((y0, 1 - (gy - y0)), (y0 + 1, gy - y0)):
        for xx, wx in ((x0, 1 - (gx - x0)), (x0 + 1, gx - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * feature[yy, xx]
    return value


def test_roi_align_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    stride, size, sampling = 4, 3, 2
    boxes = np.array(
        [[[1.5, 2.0, 20.0, 17.5], [-3.0, 10.0, 9.0, 33.0]], [[12.25, 0.0, 32.0, 32.0], [5.0, 5.0, 6.0, 6.5]]],
        dtype=np.float32,
    )
    result = roi_align(torch.from_numpy(features), torch.from_numpy(boxes), (32, 32), size, sampling).numpy()
    assert result.shape == (4, 3, size, size)
    for image in range(2):
        for box_index, (x0, y0, x1, y1) in enumerate(boxes[image]):
            bin_w, bin_h = (x1 - x0) / size, (y1 - y0) / size
            for channel in range(3):
                for row in range(size):
                    for col in range(size):
                        samples = [
                            _bilinear(
                                features[image, channel],
                                (x0 + (col + (sx + 0.5) / sampling) * bin_w) / stride,
                                (y0 + (row + (sy + 0.5) / sampling) * bin_h) / stride,
                            )
                            for sy in range(sampling)
                            for sx in range(sampling)
                        ]
                        want = float(np.mean(samples))
                        got = result[image * 2 + box_index, channel, row, col]
                        assert abs(got - want) < 1e-5, (image, box_index, channel, row, col)


def _reference_nms(
    boxes: np.ndarray, valid: np.ndarray, threshold: float, classes: np.ndarray | None
) -> np.ndarray:
    keep = np.zeros(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not valid[i]:
            continue
        suppressed = False
        for j in np.flatnonzero(keep):
            same = classes is None or classes[i] == classes[j]
            iou = float(box_iou(torch.from_numpy(boxes[j : j + 1]), torch.from_numpy(boxes[i : i + 1]))[0, 0])
            if same and iou > threshold:
                suppressed = True
                break
        keep[i] = not suppressed
    return keep


@pytest.mark.parametrize("class_aware", [False, True])
def test_nms_matches_the_greedy_reference_loop(class_aware: bool) -> None:
    rng = np.random.default_rng(3)
    batch, count = 4, 30
    corners = rng.uniform(0, 40, size=(batch, count, 2))
    sizes = rng.uniform(4, 20, size=(batch, count, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=2).astype(np.float32)
    valid = (rng.uniform(size=(batch, count)) > 0.15).astype(np.float32)
    classes = rng.integers(0, 3, size=(batch, count))
    keep = greedy_nms(
        torch.from_numpy(boxes),
        torch.from_numpy(valid),
        0.3,
        torch.from_numpy(classes) if class_aware else None,
    ).numpy()
    for image in range(batch):
        want = _reference_nms(boxes[image], valid[image] > 0, 0.3, classes[image] if class_aware else None)
        np.testing.assert_array_equal(keep[image] > 0.5, want)
    assert keep.sum() < valid.sum()  # something was suppressed


@pytest.mark.parametrize("mask_mode", ["per_class", "agnostic"])
def test_one_training_step_is_finite_with_gradients_in_every_stage(mask_mode: str) -> None:
    model = _model(mask_mode).train()
    result = model.detection_loss(*_targets(3))
    assert torch.isfinite(result.loss)
    assert set(result.logs) == {"obj", "dbox", "cls", "box", "mask"}
    result.loss.backward()
    for stage in (model.backbone, model.proposal_head, model.box_head, model.mask_head):
        grads = [p.grad for p in stage.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0, type(stage).__name__
    assert model.mask_head.logits.out_channels == (10 if mask_mode == "per_class" else 1)


def test_the_mask_loss_reaches_only_the_ground_truth_class_mask() -> None:
    model = _model().train()
    images, boxes, labels, masks = _targets(2, label=7)
    result = model.detection_loss(images, boxes, labels, masks)
    gradient = torch.autograd.grad(result.loss, model.mask_head.logits.weight)[0]
    per_class = gradient.abs().flatten(1).sum(dim=1)
    assert per_class[7] > 0
    assert (per_class[torch.arange(10) != 7] == 0).all()


def test_the_agnostic_ablation_has_one_mask_for_every_class() -> None:
    model = _model("agnostic", score_threshold=0.0).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 1, *SMALL))
    assert outputs["masks"].shape[2:] == (MASK_SIZE, MASK_SIZE)
    with pytest.raises(ValueError, match="mask_mode"):
        create_model("mask_rcnn", mask_mode="both")


def _threshold_between_scores(model: MaskRCNN, images: torch.Tensor) -> float:
    """A score threshold in the widest gap between the scores the images get (no detection on
    its edge), so that the images keep different numbers of detections."""
    model.score_threshold = 0.0
    with torch.no_grad():
        scores = np.sort(model(images)["scores"].numpy().ravel())
    scores = scores[scores > 0]
    middle = scores[len(scores) // 4 : 3 * len(scores) // 4]
    gap = int(np.argmax(np.diff(middle)))
    assert middle[gap + 1] - middle[gap] > 1e-4
    return float(middle[gap] + middle[gap + 1]) / 2


def test_onnx_export_keeps_parity_with_a_dynamic_number_of_detections() -> None:
    spec = get_spec("mask_rcnn").model_copy(
        update={"preprocess": get_spec("mask_rcnn").preprocess.model_copy(update={"input_size": SMALL})}
    )
    model = _model().eval()
    with torch.no_grad():  # random weights score every box ~0.1; spread the scores out
        model.box_head.classes.weight.mul_(30.0)
    images = torch.randn(3, 1, *SMALL)
    for threshold in (_threshold_between_scores(model, images), 1.01):
        model.score_threshold = threshold
        graph = ServingGraph(model, spec)
        session = ort.InferenceSession(export_onnx(graph), providers=["CPUExecutionProvider"])
        for batch in (images, images[:1], images[1:]):
            with torch.no_grad():
                expected = graph(batch)
            actual = session.run(list(spec.output_names), {spec.input_name: batch.numpy()})
            for name, want, got in zip(spec.output_names, expected, actual, strict=True):
                assert tuple(want.shape) == got.shape, (name, threshold)
                if got.size:
                    assert np.abs(want.numpy() - got).max() <= PARITY_TOLERANCE, name
        if threshold > 1:
            assert actual[0].shape == (2, 0, 4)
        else:
            counts = (actual[1] > 0).sum(axis=1)
            assert actual[1].shape[1] == counts.max() > 0


def test_pasting_matches_the_gateway() -> None:
    from attnserve.server.gateway.postprocess.masks import paste_mask as gateway_paste
    from attnserve.server.gateway.postprocess.masks import pixel_rect

    rng = np.random.default_rng(5)
    grid = rng.uniform(size=(MASK_SIZE, MASK_SIZE)).astype(np.float32)
    for box in ((3.2, 4.7, 40.1, 30.0), (0.0, 0.0, 64.0, 64.0), (50.5, 10.0, 63.9, 12.2)):
        mine = paste_mask(grid, np.array(box, dtype=np.float32), 64, 64)
        x0, y0, x1, y1 = pixel_rect(box, 64, 64)
        theirs = np.zeros((64, 64), dtype=bool)
        theirs[y0:y1, x0:x1] = gateway_paste(grid, box, (x0, y0, x1, y1))
        np.testing.assert_array_equal(mine, theirs)


def test_average_precision_is_cocos_101_point_interpolation() -> None:
    assert average_precision([(0.9, True), (0.8, True)], 2) == pytest.approx(1.0)
    assert average_precision([(0.9, True), (0.8, False)], 2) == pytest.approx(51 / 101)
    assert average_precision([(0.9, False), (0.8, True)], 1) == pytest.approx(0.5)
    assert average_precision([], 3) == 0.0
    assert np.isnan(average_precision([(0.5, False)], 0))


def test_training_scenes_come_at_other_sizes_too_letterboxed_as_served() -> None:
    """A quarter of the training scenes at 96–192 px: users send other sizes (trained on 128 px
    alone, box AP50 fell from 0.883 to 0.805 at 96 px). Digits scale with the canvas, so on
    the input they keep the training sizes; boxes and masks follow through the geometry."""
    assert canvas_parts(6_000, TRAIN_CANVAS, 0.25) == [(128, 4_500), *((s, 375) for s in OTHER_CANVAS_SIZES)]
    assert sum(count for _, count in canvas_parts(10, TRAIN_CANVAS, 0.25)) == 10
    assert canvas_parts(5, 64, 0.0) == [(64, 5), *((s, 0) for s in OTHER_CANVAS_SIZES)]
    preprocess = scene_preprocess()
    data = training_scenes(12, preprocess, seed=3, other_sizes_share=0.5)
    assert len(data) == 12 and data.pixels.shape[1:3] == preprocess.input_size
    scales = sorted({round(g.scale_x, 3) for g in data.geometries})
    assert scales == [round(TRAIN_CANVAS / size, 3) for size in (192, 160, 128, 112, 96)]
    found = data.labels >= 0
    assert found.any(axis=1).all() and (data.labels[found] < 10).all()
    boxes = data.boxes[found]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    for index in range(len(data)):  # each digit's mask lies inside its box on the input grid
        for number in range(1, int(found[index].sum()) + 1):
            ys, xs = np.nonzero(data.instances[index] == number)
            if len(xs):
                x0, y0, x1, y1 = data.boxes[index, number - 1]
                assert x0 - 1 <= xs.min() and xs.max() <= x1 and y0 - 1 <= ys.min() and ys.max() <= y1
