import json
from pathlib import Path

import pytest
import torch

from attnserve.cli import main
from attnserve.errors import InvalidInput
from attnserve.export.evaluate import evaluate_checkpoint, mean_correlation

from .conftest import MakeCheckpoint


def test_evaluate_scores_every_map_against_grad_cam_and_writes_the_figures(
    tmp_path: Path, make_checkpoint: MakeCheckpoint
) -> None:
    make_checkpoint(tmp_path / "checkpoint.pt")
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    report = evaluate_checkpoint(tmp_path / "checkpoint.pt", "cbam", samples=40)
    sources = [row.source for row in report.rows]
    assert sources == [
        "spatial_stage1", "spatial_stage2", "spatial_stage3", "spatial_product", "cam",
        "Grad-CAM, last conv", "Grad-CAM, pooled features", "chance (uniform map)",
    ]  # fmt: skip
    assert report.variants == ("standard", "small", "mixed") and set(report.accuracy) == set(report.variants)
    for row in report.rows:
        assert set(row.figures) == set(report.variants), row.source
        for figures in row.figures.values():
            assert 0 <= figures["pointing"] <= 1 and 0 <= figures["energy"] <= 1
        assert row.source.startswith("chance") or (row.ms_per_image_batch1 or 0) > 0
    assert report.cam_gradcam_correlation is not None and report.cam_gradcam_correlation >= 0.99
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test"] == {"accuracy": 0.5}  # the training figures are kept
    assert set(written["evaluation"]["sources"]) == set(sources)
    assert "| cam |" in report.table() and "| standard | small | mixed |" in report.table()


@pytest.mark.parametrize(("name", "output"), [("racnn", "zoom_boxes"), ("ram", "glimpses")])
def test_boxes_and_paths_are_scored_and_grad_cam_only_where_it_applies(
    tmp_path: Path, make_checkpoint: MakeCheckpoint, name: str, output: str
) -> None:
    make_checkpoint(tmp_path / "checkpoint.pt", name)
    report = evaluate_checkpoint(tmp_path / "checkpoint.pt", name, samples=20, write=False)
    rows = {row.source: row for row in report.rows}
    assert rows[output].kind in {"boxes", "path"} and "primary" in rows[output].note
    assert {"pointing", "iou", "coverage"} <= set(rows[output].figures["small"]) or "visited" in rows[
        output
    ].figures["small"]
    if name == "ram":  # nothing convolves the whole input: no Grad-CAM, said so
        assert (
            not rows["Grad-CAM, last conv"].figures and "not applicable" in rows["Grad-CAM, last conv"].note
        )
    else:
        assert set(rows["Grad-CAM, last conv"].figures) == set(report.variants)
        assert set(report.auxiliary_accuracy["small"]) == {"logits_scale1", "logits_scale2"}


def test_the_cli_refuses_a_checkpoint_of_another_architecture(
    tmp_path: Path, make_checkpoint: MakeCheckpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    make_checkpoint(tmp_path / "checkpoint.pt")
    assert main(["evaluate", "nonesuch", "--checkpoint", str(tmp_path / "checkpoint.pt")]) == 1
    assert "nonesuch" in capsys.readouterr().err
    with pytest.raises(InvalidInput):
        evaluate_checkpoint(tmp_path / "missing.pt", "cbam")


def test_mean_correlation_ignores_constant_maps() -> None:
    a = torch.rand(3, 4, 4)
    b = a.clone()
    b[1] = 0.5
    assert mean_correlation(a, b) == pytest.approx(1.0)
    assert mean_correlation(a, -a) == pytest.approx(-1.0)
