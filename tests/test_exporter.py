"""`attnserve export`: the whole path, and its refusals (one line, exit code, nothing written)."""

from pathlib import Path

import pytest

from attnserve.cli import main
from attnserve.export.exporter import export_model
from attnserve.export.repository import read_config

from .conftest import MakeCheckpoint


def test_export_writes_a_servable_model_and_prints_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_checkpoint: MakeCheckpoint
) -> None:
    make_checkpoint(tmp_path / "c.pt")
    code = main(
        ["export", "cbam", "--checkpoint", str(tmp_path / "c.pt"), "--repository", str(tmp_path / "repo")]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "parity" in out and "cam" in out and "FAIL" not in out
    config = read_config(tmp_path / "repo" / "cbam" / "config.pbtxt")
    assert [o.name for o in config.output][-1] == "cam"
    assert list(config.output[-1].dims) == [10, 8, 8]


def test_measured_quality_picks_the_primary_map(tmp_path: Path, make_checkpoint: MakeCheckpoint) -> None:
    val = {
        "spatial_stage3": {"pointing": 0.98, "energy": 0.9},
        "cam": {"pointing": 0.99, "energy": 0.7},
        "spatial_stage2": {"pointing": 0.90, "energy": 0.95},
    }
    test = {"spatial_stage3": {"pointing": 0.97, "energy": 0.85}, "cam": {"pointing": 0.99, "energy": 0.99}}
    make_checkpoint(
        tmp_path / "c.pt",
        selection="standard",
        val={"standard": {"samples": 200, "chance_energy": 0.2, "attention": val}},
        test={
            "standard": {"samples": 100, "chance_energy": 0.2, "attention": test},
            "small": {"attention": {"cam": {"pointing": 0.5, "energy": 0.25}}},
        },
    )
    result = export_model("cbam", tmp_path / "c.pt", tmp_path / "repo", name="digits")
    from attnserve.spec import SPEC_PARAMETER, ModelSpec

    config = read_config(result.model_dir / "config.pbtxt")
    spec = ModelSpec.from_json(config.parameters[SPEC_PARAMETER].string_value)
    # chosen on validation: stage 2 concentrates most but points 8 points worse than the best;
    # the test split (where cam looks better) selects nothing, it is only reported
    assert spec.primary_attention == "spatial_stage3"
    assert "validation split" in spec.primary_reason and "0.900" in spec.primary_reason
    assert "(200 images)" in spec.primary_reason and "(chance 0.200)" in spec.primary_reason
    assert "test split: pointing 0.970, energy 0.850" in spec.primary_reason
    assert spec.attention_by_name("cam").quality == {
        "pointing": 0.99,
        "energy": 0.99,
        "small_pointing": 0.5,
        "small_energy": 0.25,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "cbam", "--checkpoint", "{tmp}/missing.pt"], "does not exist"),
        (["export", "cbam", "--checkpoint", "{tmp}/corrupt.pt"], "not a readable torch checkpoint"),
        (["export", "nonesuch", "--checkpoint", "{tmp}/good.pt"], "unknown architecture 'nonesuch'"),
    ],
)
def test_bad_input_is_one_line_a_nonzero_exit_and_nothing_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
    make_checkpoint: MakeCheckpoint,
) -> None:
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    make_checkpoint(tmp_path / "good.pt")
    repo = tmp_path / "repo"
    code = main([a.format(tmp=tmp_path) for a in args] + ["--repository", str(repo)])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not repo.exists()


def test_a_failed_export_keeps_the_previous_version(tmp_path: Path, make_checkpoint: MakeCheckpoint) -> None:
    make_checkpoint(tmp_path / "good.pt")
    result = export_model("cbam", tmp_path / "good.pt", tmp_path / "repo")
    before = (result.model_dir / "1" / "model.onnx").read_bytes()
    (tmp_path / "bad.pt").write_bytes(b"broken")
    assert (
        main(
            [
                "export",
                "cbam",
                "--checkpoint",
                str(tmp_path / "bad.pt"),
                "--repository",
                str(tmp_path / "repo"),
            ]
        )
        == 1
    )
    assert (result.model_dir / "1" / "model.onnx").read_bytes() == before


def test_the_reason_says_only_what_was_measured() -> None:
    """Scene-based scoring counts scenes and measures no chance level: the reason gives the
    count and leaves the chance out (it said "(? images)" and "(chance 0.000)")."""
    from attnserve.export.models import get_spec
    from attnserve.export.scoring import with_measured_quality

    spec = get_spec("mask_rcnn")
    metrics = {
        "selection": "canvas128",
        "val": {"canvas128": {"scenes": 300, "attention": {"objectness": {"pointing": 1.0, "energy": 0.83}}}},
    }
    reason = with_measured_quality(spec, metrics).primary_reason
    assert reason == (
        "concentrates best on the validation split of the canvas128 data (300 images): energy in the "
        "digit box 0.830"
    )
