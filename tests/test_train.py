import json
from pathlib import Path

import pytest

from attnserve.cli import main
from attnserve.export.checkpoint import load_checkpoint
from attnserve.export.train import one_cycle_lr


def test_one_cycle_warms_up_then_anneals() -> None:
    lrs = [one_cycle_lr(p / 100, 3e-3, 0.25) for p in range(101)]
    peak = max(range(101), key=lambda i: lrs[i])
    assert peak == 25 and lrs[0] == pytest.approx(3e-3 / 25) and lrs[-1] == pytest.approx(3e-3 / 1e4)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26], strict=True))
    assert all(a >= b for a, b in zip(lrs[25:-1], lrs[26:], strict=True))


@pytest.mark.slow
def test_train_command_writes_a_loadable_checkpoint_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "cbam",
            "--out",
            str(out),
            "--steps",
            "3",
            "--samples",
            "256",
            "--eval-samples",
            "100",
            "--quiet",
        ]
    )
    assert code == 0
    assert "standard test split: accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 3 and metrics["train"]["samples"] == 256
    assert metrics["selection"] == "standard" and metrics["splits"]["test"] == "scans 1497-1796"
    assert set(metrics["test"]) == {"standard", "small", "mixed"}
    assert metrics["test"]["standard"]["samples"] == 100
    for split in ("val", "test"):
        for variant in ("standard", "small", "mixed"):
            scores = metrics[split][variant]
            assert {"spatial_stage3", "spatial_product", "cam"} <= set(scores["attention"])
            assert 0 < scores["chance_energy"] < 1
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint.architecture == "cbam" and checkpoint.metrics["train"]["steps"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["racnn", "ram"])
def test_models_that_train_themselves_train_through_the_command(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / name
    argv = [
        "train",
        name,
        "--out",
        str(out),
        "--steps",
        "4",
        "--samples",
        "128",
        "--eval-samples",
        "50",
        "--quiet",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"] == "small" and metrics["train"]["steps"] == 4
    located = metrics["test"]["small"]["attention"]
    assert set(located) == ({"zoom_boxes"} if name == "racnn" else {"glimpses"})
    assert 0 <= next(iter(located.values()))["pointing"] <= 1


def test_unknown_architecture_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "nonesuch"]) == 1
    assert "unknown architecture 'nonesuch'" in capsys.readouterr().err


def test_every_architecture_has_a_trainer_its_own_or_its_tasks() -> None:
    import importlib

    from attnserve.export import task_trainers  # noqa: F401  (registers the other tasks' trainers)
    from attnserve.export.models import get_entry, list_models
    from attnserve.export.training import trainer_for

    for name in list_models():
        entry = get_entry(name)
        if entry.recipe.trainer:
            module, _, function = entry.recipe.trainer.partition(":")
            assert callable(getattr(importlib.import_module(module), function)), name
        else:
            assert callable(trainer_for(entry.spec.task)), name
    assert get_entry("partitioned_fcn").recipe.trainer.endswith(":train_partitioned")
