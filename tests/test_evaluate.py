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
        "Grad-CAM, last conv", "Grad-CAM, pooled features",
    ]  # fmt: skip
    assert all(
        0 <= row.pointing <= 1 and 0 <= row.energy <= 1 and row.ms_per_image_batch1 > 0 for row in report.rows
    )
    assert report.cam_gradcam_correlation is not None and report.cam_gradcam_correlation >= 0.99
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test"] == {"accuracy": 0.5}  # the training figures are kept
    assert set(written["evaluation"]["sources"]) == set(sources)
    assert "| cam |" in report.table()


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
