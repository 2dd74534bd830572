import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnserve.export.data import SCENE_LABELS, DigitScenes, scene_preprocess
from attnserve.export.models import ServingGraph, create_model, get_spec
from attnserve.export.models.attention_to_scale import AttentionToScale
from attnserve.export.onnx_export import check_parity, export_onnx
from attnserve.export.train_segmentation import (
    SegmentationTargets,
    evaluate,
    mask_to_input,
    scene_batch,
    training_step,
)
from attnserve.spec import AttentionKind, Task
from attnserve.transform import ResizeGeometry

SPEC = get_spec("attention_to_scale")


def _model(**kwargs: object) -> AttentionToScale:
    torch.manual_seed(0)
    model = create_model("attention_to_scale", **kwargs).eval()
    assert isinstance(model, AttentionToScale)
    return model


def test_spec_is_semantic_segmentation_with_scale_weights() -> None:
    assert SPEC.task is Task.SEMANTIC_SEGMENTATION and SPEC.labels == SCENE_LABELS
    weights = SPEC.attention_by_name("scale_weights")
    assert weights.kind is AttentionKind.SPATIAL and weights.axes == ("scale", "y", "x")
    assert weights.normalization.method == "fixed" and weights.normalization.range == (0.0, 1.0)
    assert "×0.5" in weights.description and "×0.75" in weights.value_range
    assert SPEC.primary_attention == "scale_weights"


@pytest.mark.parametrize("fusion", ["attention", "average", "max"])
def test_outputs_match_the_spec_and_weights_sum_to_one_over_scales(fusion: str) -> None:
    graph = ServingGraph(_model(fusion=fusion), SPEC)
    with torch.no_grad():
        outputs = graph.named_outputs(torch.randn(2, 1, 64, 64))
    assert set(outputs) == set(SPEC.output_names)
    SPEC.check_output_dims({name: tuple(value.shape[1:]) for name, value in outputs.items()})
    assert outputs["logits"].shape == (2, 11, 32, 32)
    weights = outputs["scale_weights"]
    assert weights.shape == (2, 3, 32, 32)
    assert 0.0 <= weights.min() and weights.max() <= 1.0
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 32, 32))


def test_fusion_modes_combine_the_same_scale_scores() -> None:
    images = torch.randn(2, 1, 64, 64)
    for fusion in ("attention", "average", "max"):
        model = _model(fusion=fusion)
        with torch.no_grad():
            features, scores = model.per_scale(images)
            fused = model(images)
        stacked = torch.stack(scores, dim=1)
        logits, weights = fused["logits"], fused["scale_weights"]
        if fusion == "average":
            torch.testing.assert_close(logits, stacked.mean(dim=1))
            torch.testing.assert_close(weights, torch.full_like(weights, 1 / 3))
        elif fusion == "max":
            torch.testing.assert_close(logits, stacked.amax(dim=1))
            assert set(weights.unique().tolist()) <= {0.0, 1.0}  # the winning scale, one-hot
        else:
            torch.testing.assert_close(logits, (stacked * weights.unsqueeze(2)).sum(dim=1))
    assert _model(fusion="average").attention is None
    with pytest.raises(ValueError, match="fusion"):
        AttentionToScale(fusion="median")


def test_one_training_step_gives_finite_losses_and_gradients_for_every_scale() -> None:
    model = _model().train()
    scenes = DigitScenes("train", 4, canvas_size=64, size_range=(12, 40))
    batch = scene_batch([scenes[i] for i in range(4)], scene_preprocess((64, 64)))
    index = np.arange(4)
    targets = batch.targets(index)
    assert isinstance(targets, SegmentationTargets) and targets.semantic.shape == (4, 64, 64)
    result = training_step(model, SPEC, batch.inputs(index), targets, 0.1, 0)
    assert torch.isfinite(result.loss) and {"fused", "s1", "s0.75", "s0.5"} <= set(result.logs)
    result.loss.backward()
    assert model.attention is not None
    for part in (model.fcn, model.attention):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in part.parameters())
        assert any(p.grad.abs().sum() > 0 for p in part.parameters())


def test_onnx_export_has_parity() -> None:
    graph = ServingGraph(_model(), SPEC)
    report = check_parity(graph, export_onnx(graph), batch_sizes=(1, 3))
    assert report.passed, "\n".join(report.lines())


def test_masks_follow_the_letterbox_into_input_pixels() -> None:
    mask = np.zeros((64, 32), dtype=np.int64)
    mask[:, :16] = 3
    geometry = ResizeGeometry.for_spec(32, 64, scene_preprocess((128, 128)))
    resized = mask_to_input(mask, geometry)
    assert resized.shape == (128, 128)
    assert (resized[:, :32] == 0).all() and (resized[:, 96:] == 0).all()  # padding is background
    assert (resized[:, 32:64] == 3).all() and (resized[:, 64:96] == 0).all()


def test_evaluation_scores_a_perfect_model_as_perfect_at_any_size() -> None:
    class Oracle(torch.nn.Module):
        """Logits from the true labels of the scenes it is given (at the input's pixels)."""

        def __init__(self, semantic: torch.Tensor) -> None:
            super().__init__()
            self.semantic = semantic

        def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = torch.nn.functional.one_hot(self.semantic, 11).permute(0, 3, 1, 2).float() * 20
            return {"logits": logits, "scale_weights": torch.full((len(images), 3, 128, 128), 1 / 3)}

    scenes = DigitScenes("test", 3, canvas_size=128)
    listed = [scenes[i] for i in range(3)]
    batch = scene_batch(listed, SPEC.preprocess)
    oracle = Oracle(torch.from_numpy(batch.semantic.astype(np.int64)))
    result = evaluate(ServingGraph(oracle, SPEC), listed, weights_name="scale_weights")
    assert result["pixel_accuracy"] > 0.99 and result["miou"] > 0.95
    for entry in result["by_digit_size"].values():
        assert entry["mean_scale_weights"] == pytest.approx([1 / 3] * 3, abs=1e-3)


@pytest.mark.slow
def test_train_dispatches_by_task_and_writes_metrics(tmp_path: Path) -> None:
    from attnserve.export.checkpoint import export_spec, load_checkpoint
    from attnserve.export.scoring import with_measured_quality
    from attnserve.export.train import TrainConfig, train

    config = TrainConfig(
        architecture="attention_to_scale",
        out_dir=tmp_path,
        val_samples=4,
        test_samples=4,
        recipe={"train_samples": 40, "max_steps": 2, "batch_size": 8},
    )
    result = train(config, progress_bar=False)
    metrics = json.loads(result.metrics_path.read_text())
    assert set(metrics["test"]) == {"128px", "96px", "192px"} and metrics["train"]["steps"] == 2
    assert "mean_scale_weights" in next(iter(metrics["test"]["128px"]["by_digit_size"].values()))
    assert result.summary and "mIoU" in result.summary[0]
    checkpoint = load_checkpoint(result.checkpoint_path)
    assert checkpoint.architecture == "attention_to_scale"
    # export attaches the test split's scale weights by digit size to the attention output
    spec = with_measured_quality(export_spec(checkpoint), checkpoint.metrics)
    quality = spec.attention_by_name("scale_weights").quality
    assert any(key.startswith("scale0_weight_") for key in quality)
    assert any(key.startswith("96px_scale2_weight_") for key in quality)
    assert spec.primary_attention == "scale_weights"
