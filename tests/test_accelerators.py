"""GPU targets: the configs written for them, the local backend's provider choice, the refusal
where no GPU is usable, serving a GPU config on this CPU through the real Triton, and
tools/gpu_check.py's harness. Tests that need an NVIDIA GPU are marked ``gpu``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.errors import InvalidInput
from attnserve.export import accelerate, repository
from attnserve.export.models import get_spec
from attnserve.export.repository import (
    ACCELERATOR_PARITY_PARAMETER,
    AcceleratorOptions,
    ServingOptions,
    accelerator_of,
    apply_accelerator,
    build_config,
    config_to_text,
    read_config,
    retarget_model,
)
from attnserve.settings import DEFAULT_MODEL_REPOSITORY
from attnserve.spec import SPEC_PARAMETER

from .conftest import REPO_ROOT, MakeCheckpoint, triton_settings

SPEC = get_spec("cbam")
DIMS = {name: (10,) if name == "logits" else (8, 8) for name in SPEC.output_names}
CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ALL_PROVIDERS = [TENSORRT, CUDA, CPU]
COMMITTED = sorted(p.name for p in DEFAULT_MODEL_REPOSITORY.iterdir() if (p / "config.pbtxt").is_file())


def config_for(accelerator: AcceleratorOptions, max_batch_size: int = 64) -> mc.ModelConfig:
    options = ServingOptions(max_batch_size=max_batch_size, accelerator=accelerator)
    config = build_config("cbam", SPEC, DIMS, options)
    return text_format.Parse(config_to_text(config), mc.ModelConfig())  # as Triton reads it


def as_triton_json(config: mc.ModelConfig) -> dict[str, Any]:
    """The config as Triton hands it to a Python backend (`args["model_config"]`)."""
    parsed: dict[str, Any] = json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
    return parsed


# --- the configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMITTED)
def test_the_cpu_target_leaves_every_committed_config_byte_for_byte(name: str) -> None:
    path = DEFAULT_MODEL_REPOSITORY / name / "config.pbtxt"
    config = read_config(path)
    apply_accelerator(config, AcceleratorOptions())
    assert config_to_text(config) == path.read_text()
    assert accelerator_of(config) == "cpu"


def test_the_default_options_write_the_cpu_config() -> None:
    assert config_to_text(build_config("cbam", SPEC, DIMS, ServingOptions())) == config_to_text(
        build_config("cbam", SPEC, DIMS, ServingOptions(accelerator=AcceleratorOptions("cpu")))
    )
    config = config_for(AcceleratorOptions())
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert not config.HasField("optimization") and ACCELERATOR_PARITY_PARAMETER not in config.parameters


def test_the_tensorrt_config_names_nvidias_accelerator_and_keeps_every_attention_output() -> None:
    accelerator = AcceleratorOptions("tensorrt", "fp16", workspace_bytes=1 << 28, engine_cache_dir="/var/trt")
    config = config_for(accelerator, max_batch_size=32)
    cpu_config = config_for(AcceleratorOptions(), max_batch_size=32)
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (tensorrt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert tensorrt.name == "tensorrt"
    assert dict(tensorrt.parameters) == {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(1 << 28),
        "trt_profile_min_shapes": "image:1x1x64x64",
        "trt_profile_opt_shapes": "image:8x1x64x64",
        "trt_profile_max_shapes": "image:32x1x64x64",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/var/trt",
    }
    assert not config.optimization.execution_accelerators.cpu_execution_accelerator
    # the outputs, inputs, batching, warm-up and spec are the CPU config's
    assert list(config.output) == list(cpu_config.output) and [o.name for o in config.output] == list(
        SPEC.output_names
    )
    assert list(config.input) == list(cpu_config.input) and config.model_warmup == cpu_config.model_warmup
    assert config.parameters[SPEC_PARAMETER] == cpu_config.parameters[SPEC_PARAMETER]
    assert accelerator_of(config) == "tensorrt"


def test_fp32_tensorrt_without_a_cache_writes_only_what_it_needs() -> None:
    (tensorrt,) = config_for(
        AcceleratorOptions("tensorrt")
    ).optimization.execution_accelerators.gpu_execution_accelerator
    assert tensorrt.parameters["precision_mode"] == "FP32"
    assert tensorrt.parameters["max_workspace_size_bytes"] == str(1 << 30)  # NVIDIA's default
    assert not any(key.startswith("trt_engine_cache") for key in tensorrt.parameters)


def test_the_cuda_config_puts_instances_on_the_gpu_in_strict_fp32_unless_tf32_is_asked() -> None:
    config = config_for(AcceleratorOptions("cuda"))
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    (cuda,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert cuda.name == "cuda" and dict(cuda.parameters) == {"use_tf32": "0"}
    assert accelerator_of(config) == "cuda"
    with_tf32 = config_for(AcceleratorOptions("cuda", tf32=True))
    assert not with_tf32.HasField("optimization") and accelerator_of(with_tf32) == "cuda"


def test_gpu_optional_writes_kind_auto() -> None:
    config = config_for(AcceleratorOptions("tensorrt", gpu_required=False))
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_AUTO
    assert accelerator_of(config) == "tensorrt"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": "cuda", "precision": "fp16"}, "fp16 needs the tensorrt target"),
        ({"target": "tpu"}, "unknown accelerator"),
        ({"target": "tensorrt", "precision": "int8"}, "unknown precision"),
        ({"target": "tensorrt", "engine_cache_dir": "trt-cache"}, "must be absolute"),
        ({"target": "cuda", "engine_cache_dir": "/var/trt"}, "tensorrt target only"),
        ({"target": "tensorrt", "workspace_bytes": 0}, "at least 1 byte"),
    ],
)
def test_impossible_accelerator_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        AcceleratorOptions(**options)


def test_retarget_rewrites_only_the_config_and_back_to_cpu_restores_it(tmp_path: Path) -> None:
    model_dir = tmp_path / "cbam"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "cbam", model_dir)
    original = {p.relative_to(model_dir): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}

    record = {"verified": False, "target": "tensorrt", "precision": "fp16"}
    config = retarget_model(model_dir, AcceleratorOptions("tensorrt", "fp16"), record)
    on_disk = read_config(model_dir / "config.pbtxt")
    assert on_disk == config and accelerator_of(on_disk) == "tensorrt"
    assert json.loads(on_disk.parameters[ACCELERATOR_PARITY_PARAMETER].string_value) == record
    assert (model_dir / "1" / "model.onnx").read_bytes() == original[Path("1/model.onnx")]

    retarget_model(model_dir, AcceleratorOptions("cuda"))  # a new target replaces the old one
    assert read_config(model_dir / "config.pbtxt") == config_with(original, AcceleratorOptions("cuda"))
    retarget_model(model_dir, AcceleratorOptions())
    after = {p.relative_to(model_dir): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    assert after == original
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]  # no temp


def config_with(files: dict[Path, bytes], accelerator: AcceleratorOptions) -> mc.ModelConfig:
    config = text_format.Parse(files[Path("config.pbtxt")].decode(), mc.ModelConfig())
    apply_accelerator(config, accelerator)
    return config


def test_a_failed_retarget_leaves_the_config_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "cbam"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "cbam", model_dir, ignore=shutil.ignore_patterns("1"))
    before = (model_dir / "config.pbtxt").read_bytes()

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(repository, "config_to_text", fail)
    with pytest.raises(OSError, match="disk full"):
        retarget_model(model_dir, AcceleratorOptions("tensorrt"))
    assert (model_dir / "config.pbtxt").read_bytes() == before
    with pytest.raises(InvalidInput, match="not a model directory"):
        retarget_model(tmp_path, AcceleratorOptions("cuda"))


# --- the local backend's provider choice ------------------------------------------------------

choose_providers = accelerate.backend().choose_providers


def test_a_cpu_config_runs_on_the_cpu_whatever_onnxruntime_has() -> None:
    config = as_triton_json(config_for(AcceleratorOptions()))
    assert choose_providers(config, "CPU", 0, ALL_PROVIDERS) == ([(CPU, {})], [])


def test_a_tensorrt_instance_on_a_gpu_gets_tensorrt_then_cuda_then_cpu() -> None:
    accelerator = AcceleratorOptions("tensorrt", "fp16", engine_cache_dir="/var/trt")
    config = as_triton_json(config_for(accelerator))
    providers, warnings = choose_providers(config, "GPU", 1, ALL_PROVIDERS)
    assert warnings == []
    assert [name for name, _ in providers] == [TENSORRT, CUDA, CPU]
    assert providers[0][1] == {
        "device_id": "1",
        "trt_fp16_enable": "1",
        "trt_max_workspace_size": str(1 << 30),
        "trt_profile_min_shapes": "image:1x1x64x64",
        "trt_profile_opt_shapes": "image:8x1x64x64",
        "trt_profile_max_shapes": "image:64x1x64x64",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/var/trt",
    }
    assert providers[1] == (CUDA, {"device_id": "1"})


def test_fp32_tensorrt_sets_no_precision_flag() -> None:
    config = as_triton_json(config_for(AcceleratorOptions("tensorrt")))
    providers, _ = choose_providers(config, "GPU", 0, ALL_PROVIDERS)
    assert not any(
        key in providers[0][1] for key in ("trt_fp16_enable", "trt_int8_enable", "trt_bf16_enable")
    )


def test_a_cuda_instance_gets_cuda_then_cpu_even_where_tensorrt_is_installed() -> None:
    config = as_triton_json(config_for(AcceleratorOptions("cuda")))
    cuda_options = {"use_tf32": "0", "device_id": "0"}  # strict fp32, passed on to onnxruntime
    assert choose_providers(config, "GPU", 0, ALL_PROVIDERS) == ([(CUDA, cuda_options), (CPU, {})], [])


def test_a_gpu_instance_keeps_only_the_providers_onnxruntime_has() -> None:
    config = as_triton_json(config_for(AcceleratorOptions("tensorrt", "fp16")))
    providers, warnings = choose_providers(config, "GPU", 0, [CUDA, CPU])  # onnxruntime-gpu, no TensorRT
    assert [name for name, _ in providers] == [CUDA, CPU]
    assert len(warnings) == 1 and TENSORRT in warnings[0]

    providers, warnings = choose_providers(config, "GPU", 0, ["AzureExecutionProvider", CPU])  # CPU wheel
    assert providers == [(CPU, {})]
    assert (
        any("install onnxruntime-gpu" in w for w in warnings)
        and "serving on CPUExecutionProvider" in warnings[-1]
    )


def test_a_gpu_config_placed_on_the_cpu_serves_there_with_a_warning() -> None:
    config = as_triton_json(config_for(AcceleratorOptions("tensorrt", "fp16", gpu_required=False)))
    providers, warnings = choose_providers(config, "CPU", 0, ALL_PROVIDERS)
    assert providers == [(CPU, {})]
    assert len(warnings) == 1 and "tensorrt" in warnings[0] and "sees no GPU" in warnings[0]


@pytest.mark.parametrize(
    ("accelerator", "message"),
    [
        (
            {"name": "tensorrt", "parameters": {"precision_mode": "FP8"}},
            "unsupported TensorRT precision_mode",
        ),
        ({"name": "tensorrt", "parameters": {"workspace": "1"}}, "unknown parameter 'workspace'"),
        ({"name": "openvino"}, "unknown GPU execution accelerator"),
    ],
)
def test_what_nvidias_backend_refuses_is_refused_on_a_gpu(accelerator: dict[str, Any], message: str) -> None:
    config = {"optimization": {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}}
    with pytest.raises(ValueError, match=message):
        choose_providers(config, "GPU", 0, ALL_PROVIDERS)


# --- no GPU here -----------------------------------------------------------------------------

GPU_USABLE = accelerate.probe_provider(CUDA)
needs_gpu = pytest.mark.skipif(not GPU_USABLE.usable, reason=f"no usable NVIDIA GPU: {GPU_USABLE.reason}")


def test_the_probe_runs_a_model_on_the_provider() -> None:
    assert accelerate.probe_provider(CPU).usable
    missing = accelerate.probe_provider("NoSuchExecutionProvider")
    assert not missing.usable and "has no NoSuchExecutionProvider" in missing.reason


@pytest.mark.skipif(GPU_USABLE.usable, reason="this machine has a usable GPU")
@pytest.mark.parametrize("accelerator", [AcceleratorOptions("tensorrt", "fp16"), AcceleratorOptions("cuda")])
def test_a_gpu_target_without_a_gpu_stops_with_what_to_do(accelerator: AcceleratorOptions) -> None:
    with pytest.raises(accelerate.AcceleratorUnavailable) as raised:
        accelerate.verified_record(b"never read", config_for(accelerator), accelerator)
    message = str(raised.value)
    assert f"the {accelerator.target} target needs an NVIDIA GPU" in message
    assert "The config was not written; use --format onnx, or pass --no-verify" in message


def test_without_verification_the_config_records_that_it_is_unverified() -> None:
    accelerator = AcceleratorOptions("tensorrt", "fp16")
    record = accelerate.verified_record(b"never read", config_for(accelerator), accelerator, verify=False)
    assert record == {"verified": False, "target": "tensorrt", "precision": "fp16"}
    assert accelerate.verified_record(b"", config_for(AcceleratorOptions()), AcceleratorOptions()) is None


def test_retarget_without_a_gpu_writes_nothing_unless_told(tmp_path: Path) -> None:
    model_dir = tmp_path / "cbam"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "cbam", model_dir)
    before = (model_dir / "config.pbtxt").read_bytes()
    if not GPU_USABLE.usable:
        with pytest.raises(accelerate.AcceleratorUnavailable):
            accelerate.retarget(model_dir, AcceleratorOptions("cuda"))
        assert (model_dir / "config.pbtxt").read_bytes() == before
    config = accelerate.retarget(model_dir, AcceleratorOptions("cuda"), verify=False)
    assert accelerator_of(config) == "cuda"
    assert json.loads(config.parameters[ACCELERATOR_PARITY_PARAMETER].string_value)["verified"] is False


def test_the_parity_harness_compares_every_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU comparison's own logic, with the CPU standing in for the GPU (difference 0)."""
    monkeypatch.setitem(accelerate.GPU_PROVIDERS, "cuda", CPU)
    model_bytes = (DEFAULT_MODEL_REPOSITORY / "cbam" / "1" / "model.onnx").read_bytes()
    config = read_config(DEFAULT_MODEL_REPOSITORY / "cbam" / "config.pbtxt")
    apply_accelerator(config, AcceleratorOptions("cuda"))
    parity = accelerate.check_accelerator_parity(model_bytes, config, AcceleratorOptions("cuda"))
    assert parity.passed and set(parity.max_abs_diff) == {o.name for o in config.output}
    assert all(diff == 0.0 for diff in parity.max_abs_diff.values())
    assert all(parity.magnitude[name] > 0 for name in parity.magnitude)
    record = parity.record()
    assert record["verified"] is True and record["relative_tolerance"] == 1e-4
    assert "tolerance 1e-04 of each output's magnitude" in parity.lines()[0]

    parity.max_abs_diff["cam"] = parity.magnitude["cam"] * 0.01  # a GPU 1 % off on one map
    assert not parity.passed and parity.lines()[-1].endswith("FAIL")


# --- the real tritonserver ---------------------------------------------------------------------


@pytest.mark.triton
def test_triton_serves_a_tensorrt_config_on_this_cpu_with_the_cpu_models_answers(tmp_path: Path) -> None:
    """A tensorrt fp16 repository (KIND_AUTO) loads here as CPU instances: the local backend
    warns and answers exactly as the CPU config does. (A KIND_GPU config is refused by Triton
    itself where it sees no GPU: "has kind KIND_GPU but no GPUs are available".)"""
    import tritonclient.http as httpclient

    from attnserve.server.triton import TritonProcess

    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "cbam", tmp_path / "cbam")
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "cbam", tmp_path / "cbam_trt")
    config = read_config(tmp_path / "cbam_trt" / "config.pbtxt")
    config.name = "cbam_trt"
    (tmp_path / "cbam_trt" / "config.pbtxt").write_text(config_to_text(config))
    retarget_model(tmp_path / "cbam_trt", AcceleratorOptions("tensorrt", "fp16", gpu_required=False))

    settings = triton_settings(repository=tmp_path)
    log_path = tmp_path.parent / "tritonserver.log"
    images = np.random.default_rng(3).normal(size=(3, 1, 64, 64)).astype(np.float32)
    with TritonProcess(settings, log_path=log_path):
        client = httpclient.InferenceServerClient(f"127.0.0.1:{settings.http_port}")
        served = client.get_model_config("cbam_trt")
        assert served["instance_group"][0]["kind"] == "KIND_CPU"  # Triton's KIND_AUTO, no GPU
        answers = {}
        for model in ("cbam", "cbam_trt"):
            infer_input = httpclient.InferInput("image", list(images.shape), "FP32")
            infer_input.set_data_from_numpy(images, binary_data=True)
            answers[model] = client.infer(model, [infer_input])
        client.close()
    for name in SPEC.output_names:
        np.testing.assert_array_equal(answers["cbam_trt"].as_numpy(name), answers["cbam"].as_numpy(name))
    log = log_path.read_text()
    assert "cbam_trt: configured for the GPU (tensorrt)" in log and "serving on CPUExecutionProvider" in log
    assert "cbam_trt: execution providers CPUExecutionProvider" in log


# --- on an NVIDIA GPU -----------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "accelerator",
    [AcceleratorOptions("cuda"), AcceleratorOptions("tensorrt"), AcceleratorOptions("tensorrt", "fp16")],
    ids=["cuda", "tensorrt-fp32", "tensorrt-fp16"],
)
def test_the_committed_model_matches_the_cpu_on_the_gpu(accelerator: AcceleratorOptions) -> None:
    if accelerator.target == "tensorrt" and not accelerate.probe_provider(TENSORRT).usable:
        pytest.skip(f"TensorRT is not usable here: {accelerate.probe_provider(TENSORRT).reason}")
    model_dir = DEFAULT_MODEL_REPOSITORY / "cbam"
    config = read_config(model_dir / "config.pbtxt")
    apply_accelerator(config, accelerator)
    model_bytes = (model_dir / "1" / "model.onnx").read_bytes()
    parity = accelerate.check_accelerator_parity(model_bytes, config, accelerator)
    assert parity.passed, "\n".join(parity.lines())


# --- tools/gpu_check.py ------------------------------------------------------------------------


def run_gpu_check(*args: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "gpu_check.py"),
            "--json",
            str(out),
            "--repeats",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, json.loads(out.read_text())


def test_gpu_check_compares_every_output_of_a_model(tmp_path: Path) -> None:
    result, report = run_gpu_check("--targets", "cpu", "--models", "cbam", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    cbam = report["models"]["cbam"]
    assert list(report["models"]) == ["cbam"] and cbam["input"] == ["image", [1, 64, 64]]
    entry = cbam["targets"]["cpu"]
    assert set(entry["max_abs_diff"]) == set(SPEC.output_names) | {"cam"} == set(cbam["outputs"])
    assert all(diff == 0.0 for diff in entry["max_abs_diff"].values())
    assert set(entry["latency_ms_p50"]) == set(cbam["latency_ms_p50"]["cpu"]) == {"1", "3", "8"}
    assert "cbam" in result.stdout and "0.0e+00" in result.stdout


@pytest.mark.skipif(CUDA in accelerate._onnxruntime().get_available_providers(), reason="CUDA EP here")
def test_gpu_check_says_plainly_when_cuda_is_missing(tmp_path: Path) -> None:
    result, report = run_gpu_check("--models", "se", tmp_path=tmp_path)
    assert result.returncode == 2
    assert report["models"]["se"]["targets"]["cuda"]["unavailable"].startswith(
        "CUDAExecutionProvider is not in onnxruntime"
    )
    assert "cuda: CUDAExecutionProvider is not in onnxruntime" in result.stdout
    assert "tensorrt_fp16: TensorrtExecutionProvider is not in onnxruntime" in result.stdout


@pytest.mark.skipif(GPU_USABLE.usable, reason="this machine has a usable GPU")
def test_export_for_a_gpu_target_stops_before_any_work_without_one_and_writes_nothing(
    tmp_path: Path, make_checkpoint: MakeCheckpoint
) -> None:
    from attnserve.export.exporter import export_model

    make_checkpoint(tmp_path / "se.pt", "se")
    options = ServingOptions(accelerator=AcceleratorOptions("tensorrt", "fp16"))
    with pytest.raises(accelerate.AcceleratorUnavailable, match="--no-verify"):
        export_model("se", tmp_path / "se.pt", tmp_path / "repo", options=options)
    assert not (tmp_path / "repo").exists()
    repo = tmp_path / "repo"
    unverified = export_model("se", tmp_path / "se.pt", repo, options=options, verify_accelerator=False)
    config = read_config(unverified.model_dir / "config.pbtxt")
    assert accelerator_of(config) == "tensorrt"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    record = json.loads(config.parameters[ACCELERATOR_PARITY_PARAMETER].string_value)
    assert record["verified"] is False and record["target"] == "tensorrt"


@pytest.mark.skipif(GPU_USABLE.usable, reason="this machine has a usable GPU")
def test_the_retarget_command_refuses_unverifiable_targets_and_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from attnserve.cli import main

    model_dir = tmp_path / "se"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "se", model_dir)
    original = (model_dir / "config.pbtxt").read_bytes()
    assert main(["retarget", str(model_dir), "--format", "tensorrt", "--precision", "fp16"]) == 1
    assert "--no-verify" in capsys.readouterr().err
    assert (model_dir / "config.pbtxt").read_bytes() == original
    assert main(["retarget", str(model_dir), "--format", "cuda", "--no-verify"]) == 0
    assert '"verified":false' in capsys.readouterr().out
    assert accelerator_of(read_config(model_dir / "config.pbtxt")) == "cuda"
    assert main(["retarget", str(model_dir), "--format", "onnx"]) == 0
    committed = read_config(DEFAULT_MODEL_REPOSITORY / "se" / "config.pbtxt")
    assert read_config(model_dir / "config.pbtxt") == committed
