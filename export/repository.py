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

GPU targets (`AcceleratorOptions`): ``cuda`` puts the instances on the GPU, where NVIDIA's
backend runs the CUDA execution provider; ``tensorrt`` adds its TensorRT execution accelerator
(``optimization.execution_accelerators.gpu_execution_accelerator``) with the parameter names of
NVIDIA's onnxruntime_backend README: ``precision_mode``, ``max_workspace_size_bytes``,
``trt_profile_{min,opt,max}_shapes`` (one engine for every batch size the dynamic batcher can
form, instead of a rebuild per new size), ``trt_engine_cache_enable``/``trt_engine_cache_path``.
That backend refuses a TensorRT parameter it does not know, so only these are written. A CPU
target writes exactly the config it always did. `retarget_model` rewrites an installed model's
config for another target without re-exporting.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from attnserve._io import atomic_write_text
from attnserve.errors import InvalidInput
from attnserve.spec import SPEC_PARAMETER, ModelSpec, Task

LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"

Accelerator = Literal["cpu", "cuda", "tensorrt"]
Precision = Literal["fp32", "fp16"]
ACCELERATORS: tuple[Accelerator, ...] = get_args(Accelerator)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

TENSORRT_ACCELERATOR = "tensorrt"  # the names NVIDIA's backend knows
CUDA_ACCELERATOR = "cuda"
ACCELERATOR_PARITY_PARAMETER = "attnserve_accelerator_parity"
"""Model parameter holding what was verified for a GPU target (JSON; NVIDIA's backend ignores
model parameters it does not read, as it does ``attnserve_spec``)."""
TENSORRT_OPT_BATCH = 8
"""The batch size TensorRT tunes its kernels for (within 1..max_batch_size): the dynamic
batcher forms small batches at the delays attnserve configures."""


@dataclass(frozen=True)
class AcceleratorOptions:
    """Where Triton runs a model.

    Args:
        target: ``cpu`` (KIND_CPU, the default config), ``cuda`` (GPU instances: NVIDIA's
            backend runs the CUDA execution provider) or ``tensorrt`` (GPU instances plus the
            TensorRT execution accelerator, CUDA for the nodes TensorRT does not take).
        precision: ``fp16`` lets TensorRT build half-precision kernels; ``tensorrt`` only (the
            CUDA provider runs the graph as exported, in fp32).
        gpu_required: GPU targets only. True writes ``KIND_GPU``: Triton refuses to load the
            model where it sees no GPU (a GPU deployment never degrades silently). False writes
            ``KIND_AUTO``: GPU instances where Triton sees a GPU, CPU instances elsewhere, with
            the GPU accelerator ignored, so the same repository also serves on a laptop.
        workspace_bytes: TensorRT's ``max_workspace_size_bytes`` (NVIDIA's default, 1 GiB).
        engine_cache_dir: an absolute directory where TensorRT keeps its built engines between
            starts (``trt_engine_cache_path``); None builds them at every load.
        tf32: ``cuda`` only. False (the default) writes the CUDA accelerator with
            ``use_tf32: "0"``: matrix products in full fp32. Measured on an H100 (docs/gpu.md),
            onnxruntime's default TF32 moved RA-CNN's zoom box by 0.002 and, through the crop it
            feeds, its second-scale logits by 6 % of their magnitude; strict fp32 stayed within
            1e-6 of the CPU for every model, at about the same latency for models this size.
    """

    target: Accelerator = "cpu"
    precision: Precision = "fp32"
    gpu_required: bool = True
    workspace_bytes: int = 1 << 30
    engine_cache_dir: str | None = None
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.target not in ACCELERATORS:
            raise InvalidInput(f"unknown accelerator {self.target!r}; choose {', '.join(ACCELERATORS)}")
        if self.precision not in PRECISIONS:
            raise InvalidInput(f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")
        if self.precision == "fp16" and self.target != "tensorrt":
            raise InvalidInput(
                f"fp16 needs the tensorrt target: the {self.target} target runs the graph as exported (fp32)"
            )
        if self.tf32 and self.target != "cuda":
            raise InvalidInput("tf32 is a choice of the cuda target (TensorRT picks its own precision)")
        if self.workspace_bytes < 1:
            raise InvalidInput(f"the TensorRT workspace must be at least 1 byte, got {self.workspace_bytes}")
        if self.engine_cache_dir is not None:
            if self.target != "tensorrt":
                raise InvalidInput("an engine cache directory is for the tensorrt target only")
            if not Path(self.engine_cache_dir).is_absolute():
                raise InvalidInput(
                    f"the TensorRT engine cache directory must be absolute (Triton resolves it from its "
                    f"own working directory), got {self.engine_cache_dir!r}"
                )

    @property
    def on_gpu(self) -> bool:
        return self.target != "cpu"


@dataclass(frozen=True)
class ServingOptions:
    max_batch_size: int = 64
    instances: int = 1
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_queue_delay_microseconds: int = 0
    accelerator: AcceleratorOptions = field(default_factory=AcceleratorOptions)


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
    for option in spec.options:  # one integer per image; the graph clamps it into its bounds
        config.input.append(mc.ModelInput(name=option.name, data_type=mc.TYPE_INT64, dims=[1]))
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
    for option in spec.options:
        warmup.inputs[option.name].data_type = mc.TYPE_INT64
        warmup.inputs[option.name].dims.append(1)
        warmup.inputs[option.name].zero_data = True
    config.model_warmup.append(warmup)
    # Parameters read by NVIDIA's ONNX Runtime backend and by the local one alike.
    config.parameters["intra_op_thread_count"].string_value = str(options.intra_op_threads)
    config.parameters["inter_op_thread_count"].string_value = str(options.inter_op_threads)
    config.parameters[SPEC_PARAMETER].string_value = spec.to_json()
    apply_accelerator(config, options.accelerator)
    return config


def apply_accelerator(
    config: mc.ModelConfig,
    accelerator: AcceleratorOptions,
    parity_record: Mapping[str, object] | None = None,
) -> None:
    """Sets ``config`` (in place) to run on ``accelerator``, replacing whatever target it had:
    the instance kind, the GPU execution accelerators and the parity record (written for GPU
    targets when given). A CPU target leaves no trace of an earlier GPU one."""
    kind = mc.ModelInstanceGroup.KIND_CPU
    if accelerator.on_gpu:
        kind = mc.ModelInstanceGroup.KIND_GPU if accelerator.gpu_required else mc.ModelInstanceGroup.KIND_AUTO
    for group in config.instance_group:
        group.kind = kind
        del group.gpus[:]  # Triton then uses every GPU it sees, as for a new config

    if config.HasField("optimization"):
        accelerators = config.optimization.execution_accelerators
        accelerators.ClearField("gpu_execution_accelerator")
        if not accelerators.ListFields():
            config.optimization.ClearField("execution_accelerators")
        if not config.optimization.ListFields():
            config.ClearField("optimization")
    if accelerator.target == "tensorrt":
        tensorrt = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        tensorrt.name = TENSORRT_ACCELERATOR
        tensorrt.parameters.update(tensorrt_parameters(config, accelerator))
    elif accelerator.target == "cuda" and not accelerator.tf32:
        cuda = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        cuda.name = CUDA_ACCELERATOR  # its parameters are onnxruntime's CUDA provider options
        cuda.parameters["use_tf32"] = "0"

    if ACCELERATOR_PARITY_PARAMETER in config.parameters:
        del config.parameters[ACCELERATOR_PARITY_PARAMETER]
    if accelerator.on_gpu and parity_record is not None:
        config.parameters[ACCELERATOR_PARITY_PARAMETER].string_value = json.dumps(
            parity_record, sort_keys=True, separators=(",", ":")
        )


def tensorrt_parameters(config: mc.ModelConfig, accelerator: AcceleratorOptions) -> dict[str, str]:
    """The TensorRT accelerator's parameters (names as NVIDIA's onnxruntime backend reads them)."""
    parameters = {
        "precision_mode": accelerator.precision.upper(),
        "max_workspace_size_bytes": str(accelerator.workspace_bytes),
    }
    parameters.update(_tensorrt_profiles(config))
    if accelerator.engine_cache_dir is not None:
        parameters["trt_engine_cache_enable"] = "1"
        parameters["trt_engine_cache_path"] = accelerator.engine_cache_dir
    return parameters


def _tensorrt_profiles(config: mc.ModelConfig) -> dict[str, str]:
    """One optimisation profile over batch 1..max_batch_size for every input; none where a
    shape is not fixed (TensorRT then builds for the shapes it meets)."""
    if config.max_batch_size < 1 or any(dim < 1 for i in config.input for dim in i.dims):
        return {}
    opt_batch = min(TENSORRT_OPT_BATCH, config.max_batch_size)

    def shapes(batch: int) -> str:
        return ",".join(f"{i.name}:" + "x".join(str(d) for d in (batch, *i.dims)) for i in config.input)

    return {
        "trt_profile_min_shapes": shapes(1),
        "trt_profile_opt_shapes": shapes(opt_batch),
        "trt_profile_max_shapes": shapes(config.max_batch_size),
    }


def accelerator_of(config: mc.ModelConfig) -> str:
    """The target a config was written for: ``tensorrt``, ``cuda`` or ``cpu``."""
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if any(a.name == TENSORRT_ACCELERATOR for a in accelerators):
        return "tensorrt"
    gpu_kinds = (mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO)
    if any(group.kind in gpu_kinds for group in config.instance_group):
        return "cuda"
    return "cpu"


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
        (staged / CONFIG_FILE).write_text(config_to_text(config))
        _swap_in(staged, target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def retarget_model(
    model_dir: Path,
    accelerator: AcceleratorOptions,
    parity_record: Mapping[str, object] | None = None,
) -> mc.ModelConfig:
    """Rewrites ``<model_dir>/config.pbtxt`` for ``accelerator`` (its model files untouched), in
    one rename: a failed write leaves the old config. Returns the new config. Verifying the
    model on the target is the caller's part (`attnserve.export.accelerate.retarget`)."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise InvalidInput(f"{model_dir} is not a model directory: it has no {CONFIG_FILE}")
    config = read_config(path)
    apply_accelerator(config, accelerator, parity_record)
    atomic_write_text(path, config_to_text(config))
    return config


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
