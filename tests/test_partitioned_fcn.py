import numpy as np
import pytest
import torch

from attnserve.export.models import ServingGraph, create_model, get_spec
from attnserve.export.models.partitioned_fcn import (
    KEYPOINT_LABELS,
    PartitionedFCN,
    coarse_targets,
    digit_centres,
    keypoint_targets,
)
from attnserve.export.onnx_export import check_parity, export_onnx
from attnserve.spec import AttentionKind, Task

SPEC = get_spec("partitioned_fcn")


class _Targets:
    """What the segmentation trainer passes (`SegmentationTargets`), without importing it."""

    def __init__(self, semantic: torch.Tensor, instances: torch.Tensor) -> None:
        self.semantic = semantic
        self.instances = instances
        self.instance_labels = [torch.zeros(int(i.max()), dtype=torch.int64) for i in instances]


def _model(**kwargs: object) -> PartitionedFCN:
    torch.manual_seed(0)
    model = create_model("partitioned_fcn", **kwargs).eval()
    assert isinstance(model, PartitionedFCN)
    return model


def _scene_targets(size: int = 64) -> _Targets:
    """Two square digits on a size×size canvas: a small full one, a hollow large one."""
    instances = torch.zeros(2, size, size, dtype=torch.int64)
    instances[0, 4:12, 6:14] = 1
    instances[0, 30:54, 20:44] = 2
    instances[0, 34:50, 24:40] = 0  # a hollow digit: its centre holds no ink
    instances[1, 40:48, 40:60] = 1
    return _Targets((instances > 0).long() * 3, instances)


def test_spec_is_segmentation_of_digit_centres_with_a_fixed_range_coarse_attention() -> None:
    assert SPEC.task is Task.SEMANTIC_SEGMENTATION and SPEC.labels == KEYPOINT_LABELS
    attention = SPEC.attention_by_name("attention")
    assert attention.kind is AttentionKind.SPATIAL and attention.axes == ("y", "x")
    assert attention.normalization.method == "fixed" and attention.normalization.range == (0.0, 1.0)
    assert "8×8" in attention.description and SPEC.primary_attention == "attention"


@pytest.mark.parametrize("partition", [True, False])
@pytest.mark.parametrize("size", [64, 128])
def test_outputs_match_the_spec_at_any_input_size(partition: bool, size: int) -> None:
    graph = ServingGraph(_model(partition=partition), SPEC)
    with torch.no_grad():
        outputs = graph.named_outputs(torch.randn(2, 1, size, size))
    assert set(outputs) == set(SPEC.output_names)
    SPEC.check_output_dims({name: tuple(value.shape[1:]) for name, value in outputs.items()})
    assert outputs["logits"].shape == (2, 2, size // 2, size // 2)
    attention = outputs["attention"]
    assert attention.shape == (2, size // 8, size // 8) and 0 <= attention.min() and attention.max() <= 1
    assert torch.isfinite(outputs["logits"]).all()
    if partition:  # the logits are log-probabilities of two exclusive classes
        torch.testing.assert_close(outputs["logits"].exp().sum(dim=1), torch.ones(2, size // 2, size // 2))


def test_targets_are_box_centres_and_ink_cells() -> None:
    targets = _scene_targets()
    (xs, ys), _ = digit_centres(targets.instances)
    assert xs.tolist() == [10.0, 32.0] and ys.tolist() == [8.0, 42.0]
    centres = keypoint_targets(targets.instances, (32, 32), radius=1.5)
    # fine cells (2 px) whose centres lie within 1.5 px of (10, 8): x in {9, 11}, y in {7, 9}
    assert centres[0].nonzero().tolist() == [
        [3, 4],
        [3, 5],
        [4, 4],
        [4, 5],
        [20, 15],
        [20, 16],
        [21, 15],
        [21, 16],
    ]
    assert centres[1].sum() == 4
    coarse = coarse_targets(targets.semantic, 8)
    assert coarse.shape == (2, 8, 8) and coarse[0, 5, 3] == 0 and coarse[0, 4, 3] == 1


def test_the_partitioned_loss_counts_only_inside_the_attention_region() -> None:
    model = _model()
    targets = _scene_targets()
    fine = model.branches(torch.randn(2, 1, 64, 64))[0].detach().requires_grad_(True)
    centres = keypoint_targets(targets.instances, (32, 32))
    truth = coarse_targets(targets.semantic, 8)
    closed = torch.full((2, 8, 8), -5.0)  # the deep branch sees no digit: the ink's cells count
    region = model.training_region(closed, truth, fine.shape[-2:])
    assert 0 < region.sum() < region.numel()
    opened = closed.clone()
    opened[1, 0, 0] = 5.0  # a false alarm of the deep branch counts too
    assert (
        model.training_region(opened, truth, fine.shape[-2:])[1, :8, :8].all()
        and region[1, :8, :8].sum() == 0
    )
    assert (region[centres > 0] == 1).all()  # every centre, the hollow digit's too, is inside
    loss = model.fine_loss(fine, centres, region)
    (gradient,) = torch.autograd.grad(loss, fine)
    outside = (region == 0).unsqueeze(1).expand_as(fine)
    assert (gradient[outside] == 0).all() and gradient[~outside].abs().sum() > 0
    changed = fine.detach().clone()
    changed[outside] = torch.randn(int(outside.sum())) * 10
    torch.testing.assert_close(model.fine_loss(changed, centres, region), loss.detach())

    unpartitioned = _model(partition=False)
    loss_everywhere = unpartitioned.fine_loss(fine, centres, region)
    (gradient_everywhere,) = torch.autograd.grad(loss_everywhere, fine)
    assert gradient_everywhere[outside].abs().sum() > 0
    assert not torch.isclose(unpartitioned.fine_loss(changed, centres, region), loss_everywhere)


def test_the_served_answer_is_background_where_the_attention_is_closed() -> None:
    model = _model()
    fine = torch.randn(1, 2, 32, 32) * 5
    coarse = torch.full((1, 8, 8), -20.0)
    coarse[0, 2, 3] = 20.0
    probability = model.served_logits(fine, coarse).exp()[:, 1]
    region = torch.zeros(1, 32, 32)
    region[0, 4:16, 8:20] = 1  # the open cell dilated by one, on the fine grid
    torch.testing.assert_close(probability * region, torch.sigmoid(fine[:, 1] - fine[:, 0]) * region)
    assert (probability[region == 0] < 1e-5).all()
    unpartitioned = _model(partition=False)
    assert torch.equal(unpartitioned.served_logits(fine, coarse), fine)


@pytest.mark.parametrize("partition", [True, False])
def test_one_training_step_gives_finite_losses_and_gradients_in_both_branches(partition: bool) -> None:
    model = _model(partition=partition).train()
    targets = _scene_targets()
    result = model.training_loss(torch.randn(2, 1, 64, 64), targets, 0.1, 0)
    assert torch.isfinite(result.loss) and {"coarse", "fine"} <= set(result.logs)
    result.loss.backward()
    for part in (model.stem, model.shallow, model.deep):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in part.parameters())
        assert any(p.grad.abs().sum() > 0 for p in part.parameters())


@pytest.mark.parametrize("partition", [True, False])
def test_onnx_export_has_parity(partition: bool) -> None:
    graph = ServingGraph(_model(partition=partition), SPEC)
    inputs = graph.model.parity_inputs(3, 0)
    assert inputs.shape == (3, 1, 128, 128) and np.isfinite(inputs).all()
    report = check_parity(graph, export_onnx(graph), batch_sizes=(1, 3))
    assert report.passed, "\n".join(report.lines())


class _Oracle(PartitionedFCN):
    """Branch outputs from the true targets of the scenes it is given (in input pixels)."""

    def __init__(self, targets: _Targets) -> None:
        super().__init__()
        self.centres = keypoint_targets(targets.instances, (64, 64))
        self.cells = coarse_targets(targets.semantic, 8)

    def branches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = torch.nn.functional.one_hot(self.centres, 2).permute(0, 3, 1, 2).float() * 20
        return fine, self.cells * 20 - 10


@pytest.mark.parametrize("canvas", [128, 192])
def test_evaluation_scores_a_perfect_model_as_perfect_at_any_size(canvas: int) -> None:
    from attnserve.export.data import DigitScenes
    from attnserve.export.evaluate_partitioned import evaluate_keypoints
    from attnserve.export.train_segmentation import scene_batch

    scenes = DigitScenes("test", 4, canvas_size=canvas)
    listed = [scenes[i] for i in range(4)]
    batch = scene_batch(listed, SPEC.preprocess)
    oracle = _Oracle(
        _Targets(*(torch.from_numpy(m.astype(np.int64)) for m in (batch.semantic, batch.instances)))
    )
    result = evaluate_keypoints(oracle, listed)
    assert result["digits"] == sum(len(s.labels) for s in listed)
    for reading in ("shallow", "gated"):
        assert result[reading]["f1"] == 1.0 and result[reading]["ap"] == 1.0, result[reading]
    assert result["attention_iou"]["ink_cells"] == 1.0 and 0 < result["attention_iou"]["ink"] < 1
    assert result["attention"]["attention"]["iou_ink_cells"] == 1.0  # as export attaches it


def test_average_precision_and_matching() -> None:
    from attnserve.export.evaluate_partitioned import average_precision, match_peaks

    centres, tolerances = np.array([[10.0, 10.0], [50.0, 50.0]]), np.array([4.0, 4.0])
    outcomes, taken = match_peaks([(11, 10, 0.9), (10, 12, 0.8), (30, 30, 0.7)], centres, tolerances)
    assert [hit for _, hit in outcomes] == [True, False, False] and taken.tolist() == [True, False]
    assert average_precision(outcomes, 2) == pytest.approx(0.5)
    assert average_precision([(0.9, True), (0.8, True)], 2) == 1.0
