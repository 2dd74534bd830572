"""GPU targets for an exported model: is one usable here, and does it reproduce the CPU?

`export --format cuda|tensorrt` and `retarget` write a GPU config only after the model has run
on that GPU through the same provider choice the local backend makes
(`server/triton/backends/onnxruntime/model.py`, `choose_providers`) and matched onnxruntime on
the CPU — logits *and* every attention map — at batch 1, 3 and 8.

Tolerances are relative to each output's magnitude (its largest absolute value on the CPU), so
one figure fits logits in the tens and gates in (0, 1); `RELATIVE_TOLERANCE` gives them with
their reasons (the CUDA ones measured on an H100, the TensorRT ones reasoned: docs/gpu.md).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.errors import ModelNotFound, SetupError
from attnserve.spec import SPEC_PARAMETER, ModelSpec

from .onnx_export import ParityError
from .repository import (
    CONFIG_FILE,
    MODEL_FILE,
    AcceleratorOptions,
    apply_accelerator,
    read_config,
    retarget_model,
)

CPU_PROVIDER = "CPUExecutionProvider"
GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
RELATIVE_TOLERANCE = {("cuda", "fp32"): 1e-4, ("tensorrt", "fp32"): 5e-3, ("tensorrt", "fp16"): 2e-2}
"""Largest difference from the CPU allowed, as a share of each output's largest CPU magnitude.
cuda fp32 (TF32 off): the H100 measured at most 1e-6 over the 8 models (docs/gpu.md); cuda with
TF32 on allows `TF32_TOLERANCE` (measured up to 5.9e-2, RA-CNN). The TensorRT figures are
reasoned, not measured (no TensorRT was there to run): TensorRT allows TF32 for fp32 layers
(5e-3); fp16 activations (unit roundoff 4.9e-4) compound over 10–20 layers to a few 1e-3, and
2e-2 still fails a wrong kernel (tens of per cent) — on a map, ~5 of the 255 grey levels drawn."""
TF32_TOLERANCE = 1e-1


def relative_tolerance(accelerator: AcceleratorOptions) -> float:
    if accelerator.tf32:
        return TF32_TOLERANCE
    return RELATIVE_TOLERANCE[(accelerator.target, accelerator.precision)]


ACCELERATOR_BATCH_SIZES = (1, 3, 8)
BACKEND_SOURCE = (
    Path(__file__).resolve().parent.parent / "server" / "triton" / "backends" / "onnxruntime" / "model.py"
)
"""The local backend; in an installed package `export/` and `server/` are both under attnserve/."""

InputsFor = Callable[[int, int], np.ndarray]
"""``(batch_size, seed) -> inputs`` for the model's one input (`onnx_export.parity_inputs`)."""


class AcceleratorUnavailable(SetupError):
    """A GPU target was asked for where no NVIDIA GPU, onnxruntime-gpu or TensorRT is usable."""


@dataclass(frozen=True)
class ProviderProbe:
    provider: str
    usable: bool
    reason: str = ""


@dataclass
class AcceleratorParity:
    """onnxruntime on the GPU target against onnxruntime on the CPU, per output."""

    target: str
    precision: str
    providers: list[str]
    relative_tolerance: float
    batch_sizes: tuple[int, ...]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    magnitude: dict[str, float] = field(default_factory=dict)
    shape_mismatch: dict[str, str] = field(default_factory=dict)

    def relative_diff(self, name: str) -> float:
        return self.max_abs_diff[name] / max(self.magnitude[name], 1e-12)

    def ok(self, name: str) -> bool:
        return name not in self.shape_mismatch and self.relative_diff(name) <= self.relative_tolerance

    @property
    def passed(self) -> bool:
        return all(self.ok(name) for name in self.max_abs_diff)

    def lines(self) -> list[str]:
        width = max(len(name) for name in self.max_abs_diff)
        rows = []
        for name, diff in self.max_abs_diff.items():
            if name in self.shape_mismatch:
                rows.append(f"  {name:<{width}}  shapes differ: {self.shape_mismatch[name]}  FAIL")
                continue
            rows.append(
                f"  {name:<{width}}  max |gpu - cpu| = {diff:.2e}  (magnitude {self.magnitude[name]:.3g},"
                f" relative {self.relative_diff(name):.2e})  {'ok' if self.ok(name) else 'FAIL'}"
            )
        batches = ", ".join(str(b) for b in self.batch_sizes)
        return [
            f"{self.target} {self.precision} on {', '.join(self.providers)} vs {CPU_PROVIDER} (batch sizes "
            f"{batches}; tolerance {self.relative_tolerance:.0e} of each output's magnitude):",
            *rows,
        ]

    def record(self) -> dict[str, object]:
        """What the config keeps of it (`repository.ACCELERATOR_PARITY_PARAMETER`)."""
        worst = max(self.max_abs_diff, key=self.relative_diff)
        return {
            "verified": True,
            "target": self.target,
            "precision": self.precision,
            "providers": self.providers,
            "relative_tolerance": self.relative_tolerance,
            "worst_output": worst,
            "worst_relative_diff": float(f"{self.relative_diff(worst):.3g}"),
            "onnxruntime": _onnxruntime().__version__,
        }


def unverified_record(accelerator: AcceleratorOptions) -> dict[str, object]:
    return {"verified": False, "target": accelerator.target, "precision": accelerator.precision}


def probe_provider(provider: str, options: Mapping[str, str] | None = None) -> ProviderProbe:
    """Whether ``provider`` really runs here: listed by onnxruntime *and* able to run a
    one-node model (onnxruntime-gpu lists CUDA and TensorRT on machines with no GPU, or
    without TensorRT's libraries, then quietly falls back to the CPU)."""
    ort = _onnxruntime()
    available = ort.get_available_providers()
    if provider not in available:
        reason = f"onnxruntime {ort.__version__} here has no {provider} (it has {', '.join(available)})"
        return ProviderProbe(provider, False, reason + _wheel_hint())
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # onnxruntime prints why it fell back
            session = ort.InferenceSession(
                onnx.ModelProto.SerializeToString(model),
                providers=[(provider, dict(options or {}))]
                + ([CPU_PROVIDER] if provider != CPU_PROVIDER else []),
            )
        started = session.get_providers()
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        ran = np.array_equal(session.run(None, {"x": x})[0], x + x)
    except (RuntimeError, ValueError) as exc:  # onnxruntime's own errors derive from RuntimeError
        return ProviderProbe(provider, False, f"{provider} failed to start: {exc}")
    if started[0] != provider:
        why = " ".join(line for line in printed.getvalue().splitlines() if "Error" in line)[:400]
        return ProviderProbe(provider, False, f"{provider} did not start ({why or 'no device'})")
    if not ran:
        return ProviderProbe(provider, False, f"{provider} started but computed 1+1 wrong")
    return ProviderProbe(provider, True)


def require_accelerator(accelerator: AcceleratorOptions) -> None:
    """Raises `AcceleratorUnavailable` unless ``accelerator``'s provider runs here."""
    if not accelerator.on_gpu:
        return
    provider = GPU_PROVIDERS[accelerator.target]
    options = {"trt_fp16_enable": "1"} if accelerator.precision == "fp16" else {}
    probe = probe_provider(provider, options)
    if not probe.usable:
        needs = "onnxruntime-gpu" + (" and TensorRT's libraries" if accelerator.target == "tensorrt" else "")
        raise AcceleratorUnavailable(
            f"the {accelerator.target} target needs an NVIDIA GPU and {needs}: {probe.reason}. "
            "The config was not written; use --format onnx, or pass --no-verify to write it unverified."
        )


def check_accelerator_parity(
    model_bytes: bytes,
    config: mc.ModelConfig,
    accelerator: AcceleratorOptions,
    inputs_for: InputsFor | None = None,
    batch_sizes: tuple[int, ...] = ACCELERATOR_BATCH_SIZES,
) -> AcceleratorParity:
    """Runs the model on ``accelerator`` (providers chosen as the local backend chooses them
    from ``config``, already set for that target) and on the CPU, on the same inputs."""
    ort = _onnxruntime()
    providers, _ = backend().choose_providers(
        json_format.MessageToDict(config, preserving_proto_field_name=True),
        "GPU",
        0,
        ort.get_available_providers(),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        target_session = ort.InferenceSession(model_bytes, providers=providers)
    expected = GPU_PROVIDERS[accelerator.target]
    started = target_session.get_providers()
    if started[0] != expected:
        raise AcceleratorUnavailable(
            f"{expected} did not start for this model (running on {', '.join(started)}); "
            "the config was not written"
        )
    cpu_session = ort.InferenceSession(model_bytes, providers=[CPU_PROVIDER])
    output_names = [output.name for output in config.output]
    report = AcceleratorParity(
        accelerator.target,
        accelerator.precision,
        [p for p in started if p != CPU_PROVIDER],
        relative_tolerance(accelerator),
        batch_sizes,
        {name: 0.0 for name in output_names},
        {name: 0.0 for name in output_names},
    )
    for seed, batch_size in enumerate(batch_sizes):
        inputs = inputs_for(batch_size, seed) if inputs_for else _noise(config, batch_size, seed)
        feed = {config.input[0].name: inputs, **_option_feed(config, batch_size, seed)}
        reference = cpu_session.run(output_names, feed)
        actual = target_session.run(output_names, feed)
        for name, want, got in zip(output_names, reference, actual, strict=True):
            if want.shape != got.shape:
                report.shape_mismatch.setdefault(
                    name, f"batch {batch_size}: cpu {want.shape}, gpu {got.shape}"
                )
                continue
            if want.size:
                report.magnitude[name] = max(report.magnitude[name], float(np.max(np.abs(want))))
                diff = float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64))))
                report.max_abs_diff[name] = max(report.max_abs_diff[name], diff)
    return report


def verified_record(
    model_bytes: bytes,
    config: mc.ModelConfig,
    accelerator: AcceleratorOptions,
    inputs_for: InputsFor | None = None,
    verify: bool = True,
) -> dict[str, object] | None:
    """The parity record to write with a GPU config, after proving the target (None for the
    CPU). Raises `AcceleratorUnavailable` where the target cannot run, `ParityError` where it
    differs from the CPU beyond the tolerance; ``verify=False`` skips both and records so."""
    if not accelerator.on_gpu:
        return None
    if not verify:
        return unverified_record(accelerator)
    require_accelerator(accelerator)
    parity = check_accelerator_parity(model_bytes, config, accelerator, inputs_for)
    if not parity.passed:
        raise ParityError("\n".join(["refused: the GPU differs from the CPU", *parity.lines()]))
    return parity.record()


def retarget(model_dir: Path, accelerator: AcceleratorOptions, verify: bool = True) -> mc.ModelConfig:
    """Rewrites an installed model's config for ``accelerator`` after checking every version
    of its model on that target (`verified_record`); the model files stay as they are."""
    config = read_config(model_dir / CONFIG_FILE)
    apply_accelerator(config, accelerator)
    records = []
    versions = sorted(p for p in model_dir.iterdir() if p.name.isdigit() and (p / MODEL_FILE).is_file())
    if not versions and accelerator.on_gpu and verify:
        raise ModelNotFound(f"{model_dir} has no <version>/{MODEL_FILE} to verify")
    inputs_for = _registered_inputs(config) if accelerator.on_gpu and verify else None
    for version in versions:
        model_bytes = (version / MODEL_FILE).read_bytes()
        records.append(verified_record(model_bytes, config, accelerator, inputs_for, verify))
    if not records:  # no model file to check: a GPU config says it is unverified
        records.append(unverified_record(accelerator) if accelerator.on_gpu else None)
    return retarget_model(model_dir, accelerator, records[-1])


@functools.cache
def backend() -> ModuleType:
    """The local backend's module (model.py), loaded by path: it is not part of a package."""
    spec = importlib.util.spec_from_file_location("attnserve_onnxruntime_backend", BACKEND_SOURCE)
    if spec is None or spec.loader is None:
        raise SetupError(f"cannot load the local backend from {BACKEND_SOURCE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _onnxruntime() -> Any:
    import onnxruntime

    return onnxruntime


def _wheel_hint() -> str:
    installed = set()
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            installed.add(importlib.metadata.distribution(name).metadata["Name"])
    if len(installed) > 1:
        return (
            "; both onnxruntime and onnxruntime-gpu are installed and overwrite each other's files: "
            "uninstall both, then install onnxruntime-gpu alone"
        )
    return "; install onnxruntime-gpu instead of onnxruntime (not beside it)"


def _noise(config: mc.ModelConfig, batch_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch_size, *config.input[0].dims)).astype(np.float32)


def _option_feed(config: mc.ModelConfig, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """The spec's input options (a captioner's beam size, ...) over their range, as export's
    parity check feeds them; none for a model without a spec."""
    if SPEC_PARAMETER not in config.parameters:
        return {}
    from .onnx_export import option_inputs

    spec = ModelSpec.from_json(config.parameters[SPEC_PARAMETER].string_value)
    return option_inputs(spec, batch_size, seed)


def _registered_inputs(config: mc.ModelConfig) -> InputsFor | None:
    """Export's own parity inputs (digit canvases, a detector's scenes) for a model whose
    architecture is registered here; None (seeded noise) for any other."""
    if SPEC_PARAMETER not in config.parameters:
        return None
    spec = ModelSpec.from_json(config.parameters[SPEC_PARAMETER].string_value)
    from .models import ServingGraph, create_model
    from .onnx_export import parity_inputs

    try:
        graph = ServingGraph(create_model(spec.architecture), spec)
    except ModelNotFound:
        return None
    return lambda batch_size, seed: parity_inputs(graph, batch_size, seed)
