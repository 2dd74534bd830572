from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.export import repository
from attnserve.export.models import get_spec
from attnserve.export.repository import ServingOptions, build_config, config_to_text, read_config, write_model
from attnserve.settings import DEFAULT_MODEL_REPOSITORY
from attnserve.spec import SPEC_PARAMETER, ModelSpec

SPEC = get_spec("cbam")
DIMS = {name: (10,) if name == "logits" else (8, 8) for name in SPEC.output_names}


def test_config_is_a_valid_triton_model_config_for_the_onnxruntime_backend() -> None:
    config = build_config(
        "cbam", SPEC, DIMS, ServingOptions(max_batch_size=32, instances=2, intra_op_threads=3)
    )
    parsed = text_format.Parse(config_to_text(config), mc.ModelConfig())
    assert parsed.backend == "onnxruntime" and parsed.max_batch_size == 32
    assert [i.name for i in parsed.input] == ["image"] and list(parsed.input[0].dims) == [1, 64, 64]
    assert [o.name for o in parsed.output] == list(SPEC.output_names)
    assert parsed.output[0].label_filename == "labels.txt"
    assert parsed.HasField("dynamic_batching")
    assert not parsed.dynamic_batching.HasField("default_queue_policy")  # it stalls Triton 2.51
    assert (
        parsed.instance_group[0].count == 2
        and parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    )
    assert parsed.model_warmup[0].inputs["image"].zero_data
    assert parsed.parameters["intra_op_thread_count"].string_value == "3"
    assert ModelSpec.from_json(parsed.parameters[SPEC_PARAMETER].string_value) == SPEC


def test_write_model_lays_out_a_triton_repository(tmp_path: Path) -> None:
    config = build_config("m", SPEC, DIMS, ServingOptions())
    target = write_model(tmp_path / "repo", "m", 1, b"onnx-bytes", config, SPEC.labels)
    assert (target / "1" / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (target / "labels.txt").read_text().splitlines() == list(SPEC.labels)
    assert read_config(target / "config.pbtxt").name == "m"
    write_model(tmp_path / "repo", "m", 2, b"v2", config, SPEC.labels)
    assert (target / "1" / "model.onnx").read_bytes() == b"onnx-bytes"  # other versions are kept
    assert (target / "2" / "model.onnx").read_bytes() == b"v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging left behind


def test_a_failed_write_leaves_the_previous_model_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = build_config("m", SPEC, DIMS, ServingOptions())
    target = write_model(tmp_path / "repo", "m", 1, b"old", config, SPEC.labels)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(repository, "config_to_text", fail)
    with pytest.raises(OSError, match="disk full"):
        write_model(tmp_path / "repo", "m", 1, b"new", config, SPEC.labels)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_the_committed_default_model_is_complete() -> None:
    model_dir = DEFAULT_MODEL_REPOSITORY / "cbam"
    config = read_config(model_dir / "config.pbtxt")
    spec = ModelSpec.from_json(config.parameters[SPEC_PARAMETER].string_value)
    assert (model_dir / "1" / "model.onnx").is_file()
    assert (model_dir / "labels.txt").read_text().splitlines() == list(spec.labels)
    assert [o.name for o in config.output] == list(spec.output_names)
    assert spec.primary_attention is not None and spec.attention_by_name(spec.primary_attention).quality
