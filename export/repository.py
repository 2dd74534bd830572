"""Writes a model into a Triton model repository, atomically.

Layout (Triton's): ``<repository>/<name>/config.pbtxt``, ``<name>/labels.txt``,
``<name>/<version>/model.onnx``. The config is built as Triton's own `ModelConfig` protobuf
(from tritonclient) and printed in text format, so every field name is checked by the schema.
It targets NVIDIA's ONNX Runtime backend (``backend: "onnxruntime"``) and loads unchanged in
the official container; locally the same file is served by attnserve's Python-based backend
of that name (`attnserve.server.triton`).

No model gets a queue policy (``dynamic_batching.default_queue_policy``): with one — any one,
even ``allow_timeout_override`` alone — Triton 2.51's dynamic batcher now and then leaves a
request in its queue until its 500 ms idle wake-up. Measured on cbam, 800 sequential calls of
Triton alone: 9–43 such stalls and 31–146 calls/s with a policy, none and 202–274 calls/s
without. Work for callers that gave up is dropped without it: the gateway's gRPC deadline
cancels the call in Triton, and the backend answers cancelled requests without computing
(tests/test_deadlines.py).

The new model directory is assembled beside the repository and swapped in with renames, so an
export that fails at any point leaves the previous model as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.errors import InvalidInput
from attnserve.spec import SPEC_PARAMETER, ModelSpec, Task

LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ServingOptions:
    max_batch_size: int = 64
    instances: int = 1
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_queue_delay_microseconds: int = 0


def build_config(
    name: str,
    spec: ModelSpec,
    output_dims: dict[str, tuple[int, ...]],
    options: ServingOptions,
) -> mc.ModelConfig:
    """Triton's model config for an exported model; ``output_dims`` exclude the batch (detection
    axes become -1)."""
    config = mc.ModelConfig(name=name, backend="onnxruntime", max_batch_size=options.max_batch_size)
    channels = spec.preprocess.channels
    height, width = spec.preprocess.input_size
    config.input.append(
        mc.ModelInput(name=spec.input_name, data_type=mc.TYPE_FP32, dims=[channels, height, width])
    )
    for output_name in spec.output_names:
        dims = list(output_dims[output_name])
        for axis in spec.dynamic_axes(output_name):
            dims[axis] = -1  # detections: as many as the image has
        output = mc.ModelOutput(name=output_name, data_type=mc.TYPE_FP32, dims=dims)
        if spec.task is Task.CLASSIFICATION and output_name == spec.logits_name:
            output.label_filename = LABELS_FILE  # Triton's classification extension
        config.output.append(output)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_microseconds
    config.instance_group.append(
        mc.ModelInstanceGroup(count=options.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    )
    warmup = mc.ModelWarmup(name="zeros_batch_1", batch_size=1)
    warmup.inputs[spec.input_name].data_type = mc.TYPE_FP32
    warmup.inputs[spec.input_name].dims.extend([channels, height, width])
    warmup.inputs[spec.input_name].zero_data = True
    config.model_warmup.append(warmup)
    # Parameters read by NVIDIA's ONNX Runtime backend and by the local one alike.
    config.parameters["intra_op_thread_count"].string_value = str(options.intra_op_threads)
    config.parameters["inter_op_thread_count"].string_value = str(options.inter_op_threads)
    config.parameters[SPEC_PARAMETER].string_value = spec.to_json()
    return config


def config_to_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def read_config(path: Path) -> mc.ModelConfig:
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise InvalidInput(f"cannot read Triton model config {path}: {exc}") from None


def write_model(
    repository: Path,
    name: str,
    version: int,
    model_bytes: bytes,
    config: mc.ModelConfig,
    labels: tuple[str, ...],
) -> Path:
    """Installs ``<repository>/<name>`` with the new version; other versions are kept."""
    if version < 1:
        raise InvalidInput(f"model versions start at 1, got {version}")
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / name
    staging = Path(tempfile.mkdtemp(prefix=f".attnserve-export-{name}-", dir=repository.parent))
    try:
        staged = staging / name
        if target.is_dir():
            shutil.copytree(target, staged, ignore=shutil.ignore_patterns(str(version)))
        else:
            staged.mkdir()
        (staged / str(version)).mkdir()
        (staged / str(version) / MODEL_FILE).write_bytes(model_bytes)
        (staged / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels))
        (staged / "config.pbtxt").write_text(config_to_text(config))
        _swap_in(staged, target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _swap_in(staged: Path, target: Path, staging: Path) -> None:
    """Replace ``target`` by ``staged``: two renames on one file system, old copy removed after."""
    retired = staging / f"{target.name}.previous"
    if target.exists():
        os.rename(target, retired)
    try:
        os.rename(staged, target)
    except OSError:
        if retired.exists():
            os.rename(retired, target)
        raise
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(retired)
