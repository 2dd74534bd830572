from pathlib import Path

import pytest
import torch

from attnserve.errors import InvalidInput, ModelNotFound
from attnserve.export.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from attnserve.export.models import create_model, get_spec

from .conftest import MakeCheckpoint


def test_round_trip_keeps_weights_spec_and_metrics(tmp_path: Path, make_checkpoint: MakeCheckpoint) -> None:
    saved = make_checkpoint(tmp_path / "c.pt", test={"accuracy": 0.9})
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.architecture == "cbam" and loaded.spec == saved.spec
    assert loaded.metrics == {"test": {"accuracy": 0.9}}
    assert not loaded.model.training
    for (name, a), (_, b) in zip(
        saved.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_missing_corrupt_and_foreign_files_are_one_clear_error(
    tmp_path: Path, make_checkpoint: MakeCheckpoint
) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InvalidInput, match="not a readable torch checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(InvalidInput, match="not an attnserve checkpoint"):
        load_checkpoint(foreign)


def test_truncated_checkpoint_is_refused(tmp_path: Path, make_checkpoint: MakeCheckpoint) -> None:
    path = tmp_path / "c.pt"
    make_checkpoint(path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InvalidInput):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture_are_refused(
    tmp_path: Path, make_checkpoint: MakeCheckpoint
) -> None:
    path = tmp_path / "c.pt"
    checkpoint = Checkpoint("cbam", create_model("cbam", widths=(16, 32, 64)), get_spec("cbam"))
    save_checkpoint(path, checkpoint)
    payload = torch.load(path, weights_only=True)
    payload["model_kwargs"] = "{}"  # claims the default widths
    torch.save(payload, path)
    with pytest.raises(InvalidInput, match="does not fit"):
        load_checkpoint(path)
    payload["architecture"] = "gone"
    torch.save(payload, path)
    with pytest.raises(ModelNotFound):
        load_checkpoint(path)


def test_export_spec_keeps_the_data_contract_and_takes_display_from_the_registry(
    tmp_path: Path, make_checkpoint: MakeCheckpoint
) -> None:
    from attnserve.export.checkpoint import export_spec
    from attnserve.spec import Normalization

    checkpoint = make_checkpoint(tmp_path / "c.pt")
    old = checkpoint.spec
    stale = old.model_copy(
        update={
            "labels": tuple(f"digit {i}" for i in range(10)),
            "attention": tuple(
                a.model_copy(update={"normalization": Normalization(method="minmax"), "description": "old"})
                for a in old.attention
            ),
        }
    )
    checkpoint.spec = stale
    spec = export_spec(checkpoint)
    assert spec.labels == stale.labels and spec.preprocess == stale.preprocess
    assert (
        spec.attention_by_name("spatial_stage1").normalization
        == get_spec("cbam").attention_by_name("spatial_stage1").normalization
    )
    checkpoint.spec = old.model_copy(update={"attention": old.attention[:2]})
    with pytest.raises(InvalidInput, match="retrain"):
        export_spec(checkpoint)
