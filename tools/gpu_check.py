"""Every model of a repository on the GPU against the CPU: output differences and latency.

Standalone for a GPU machine: needs numpy and onnxruntime(-gpu) only, plus the local backend's
provider choice (server/triton/backends/onnxruntime/model.py, loaded by path), so the GPU
sessions are built as the served ones are. For every ``<repository>/*/1/model.onnx``:

- seeded N(0, 1) inputs at batch 1, 3 and 8 (the input shape read from the model), and for a
  model with option inputs (a captioner's beam size and length) 1, 2, 3, ... per image;
- each target against CPUExecutionProvider: the largest absolute difference of every output
  (logits and each attention map), also relative to the output's magnitude (its largest
  absolute value on the CPU), the measure attnserve's tolerances use (export/accelerate.py);
- targets: ``cuda`` (the CUDA EP as `attnserve export --format cuda` configures it: TF32
  off), ``cuda_tf32`` (onnxruntime's defaults, TF32 on: ``--format cuda --tf32``),
  ``tensorrt_fp16`` (TensorRT EP with ``trt_fp16_enable``) where TensorRT's libraries are
  present. The CUDA EP has no fp16 switch; without TensorRT no fp16 figure exists, and the
  report says so;
- median latency per batch (after warm-up) on the CPU and on each target.

A model that fails is reported and the others go on; a time budget (``--budget-s``) skips
what is left rather than overrun. Prints a table; writes ``$OUT/gpu_check.json`` when OUT is set
(or ``--json PATH``). Exit status: 0 all measured, 1 a model failed, 2 a target provider is
missing here.

    python tools/gpu_check.py                                   # on the GPU machine
    python tools/gpu_check.py --targets cpu --models cbam       # the logic, on any machine
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "server" / "triton" / "backends" / "onnxruntime" / "model.py"
BATCH_SIZES = (1, 3, 8)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# target -> (model config as Triton hands it to the backend, extra provider options, provider
# that must come first). `cpu` compares the CPU with itself: the harness's own check.
TARGETS: dict[str, tuple[dict[str, Any], dict[str, dict[str, str]], str]] = {
    # what `attnserve export --format cuda` writes: the CUDA accelerator in strict fp32
    "cuda": (
        {
            "instance_group": [{"kind": "KIND_GPU"}],
            "optimization": {
                "execution_accelerators": {
                    "gpu_execution_accelerator": [{"name": "cuda", "parameters": {"use_tf32": "0"}}]
                }
            },
        },
        {},
        CUDA,
    ),
    # onnxruntime's defaults (TF32 on): what `--format cuda --tf32` writes
    "cuda_tf32": ({"instance_group": [{"kind": "KIND_GPU"}]}, {}, CUDA),
    "tensorrt_fp16": (
        {
            "instance_group": [{"kind": "KIND_GPU"}],
            "optimization": {
                "execution_accelerators": {
                    "gpu_execution_accelerator": [
                        {"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}
                    ]
                }
            },
        },
        {},
        TENSORRT,
    ),
    "cpu": ({"instance_group": [{"kind": "KIND_CPU"}]}, {}, CPU),
}
DEFAULT_TARGETS = ("cuda", "cuda_tf32", "tensorrt_fp16")


def load_backend() -> Any:
    spec = importlib.util.spec_from_file_location("attnserve_onnxruntime_backend", BACKEND)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def target_providers(
    backend: Any, target: str, input_name: str, input_shape: list[int]
) -> list[tuple[str, dict[str, str]]]:
    """The providers the local backend picks for ``target``'s config, plus the target's options."""
    template, extra, _ = TARGETS[target]
    config = json.loads(json.dumps(template))
    shape = "x".join(str(d) for d in input_shape[1:])
    gpu_accelerators = config.get("optimization", {}).get("execution_accelerators", {})
    for accelerator in gpu_accelerators.get("gpu_execution_accelerator", []):
        if accelerator["name"] != "tensorrt":  # the CUDA EP refuses options it does not know
            continue
        accelerator["parameters"].update(  # one engine for batch 1..8, as export writes it
            {
                "trt_profile_min_shapes": f"{input_name}:1x{shape}",
                "trt_profile_opt_shapes": f"{input_name}:8x{shape}",
                "trt_profile_max_shapes": f"{input_name}:8x{shape}",
            }
        )
    kind = "CPU" if target == "cpu" else "GPU"
    providers, _ = backend.choose_providers(config, kind, 0, ort.get_available_providers())
    return [(name, {**options, **extra.get(name, {})}) for name, options in providers]


def session(model: bytes, providers: list[tuple[str, dict[str, str]]]) -> tuple[Any, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # onnxruntime prints its fallback reasons
        created = ort.InferenceSession(model, providers=providers)
    why = " ".join(line.strip() for line in printed.getvalue().splitlines() if "Error" in line)
    return created, why[:600]


def inputs_for(shape: list[int], batch: int) -> np.ndarray:
    return np.random.default_rng(batch).normal(size=(batch, *shape[1:])).astype(np.float32)


def option_feeds(session: Any, batch: int) -> dict[str, np.ndarray]:
    """A model's option inputs after the image (int64, one per image: a captioner's beam size
    and longest caption): 1, 2, 3, ... per image, which the graph clamps into its bounds."""
    return {
        i.name: (np.arange(batch, dtype=np.int64)[:, None] % 16) + 1
        for i in session.get_inputs()[1:]
        if i.type == "tensor(int64)"
    }


def median_ms(run: Any, repeats: int) -> float:
    run()
    run()  # warm-up: cuDNN's algorithm search, TensorRT's engine, allocator growth
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 3)


def check_model(
    path: Path, targets: list[str], backend: Any, repeats: int, deadline: float
) -> dict[str, Any]:
    model = path.read_bytes()
    cpu, _ = session(model, [(CPU, {})])
    graph_input = cpu.get_inputs()[0]
    shape = [d if isinstance(d, int) else -1 for d in graph_input.shape]
    if any(d < 1 for d in shape[1:]):
        return {"error": f"input {graph_input.name} has no fixed shape: {graph_input.shape}"}
    outputs = [o.name for o in cpu.get_outputs()]
    feeds = {b: {graph_input.name: inputs_for(shape, b), **option_feeds(cpu, b)} for b in BATCH_SIZES}
    references = {b: cpu.run(outputs, feeds[b]) for b in BATCH_SIZES}
    magnitude = {
        name: max(float(np.max(np.abs(references[b][i]), initial=0.0)) for b in BATCH_SIZES)
        for i, name in enumerate(outputs)
    }
    result: dict[str, Any] = {
        "input": [graph_input.name, shape[1:]],
        "outputs": outputs,
        "magnitude": magnitude,
        "latency_ms_p50": {
            "cpu": {b: median_ms(lambda b=b: cpu.run(outputs, feeds[b]), repeats) for b in BATCH_SIZES}
        },
        "targets": {},
    }
    for target in targets:
        if time.monotonic() > deadline:
            result["targets"][target] = {"skipped": "time budget spent"}
            continue
        providers = target_providers(backend, target, graph_input.name, shape)
        result["targets"][target] = check_target(
            model, target, providers, outputs, feeds, references, magnitude, repeats
        )
    return result


def check_target(
    model: bytes,
    target: str,
    providers: list[tuple[str, dict[str, str]]],
    outputs: list[str],
    feeds: dict[int, dict[str, np.ndarray]],
    references: dict[int, list[np.ndarray]],
    magnitude: dict[str, float],
    repeats: int,
) -> dict[str, Any]:
    expected = TARGETS[target][2]
    if providers[0][0] != expected:
        return {"unavailable": f"{expected} is not in onnxruntime {ort.__version__} here"}
    started_at = time.perf_counter()
    created, why = session(model, providers)
    started = created.get_providers()
    entry: dict[str, Any] = {
        "providers": started,
        "session_s": round(time.perf_counter() - started_at, 2),
    }
    if started[0] != expected:
        entry["unavailable"] = f"{expected} did not start: {why or 'no reason printed'}"
        return entry
    worst_abs = {name: 0.0 for name in outputs}
    shape_mismatch: dict[str, str] = {}
    for batch, feed in feeds.items():
        for name, want, got in zip(outputs, references[batch], created.run(outputs, feed), strict=True):
            if want.shape != got.shape:
                shape_mismatch.setdefault(name, f"batch {batch}: cpu {want.shape} vs {got.shape}")
            elif want.size:
                diff = float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64))))
                worst_abs[name] = max(worst_abs[name], diff)
    entry["max_abs_diff"] = worst_abs
    entry["relative_diff"] = {n: worst_abs[n] / max(magnitude[n], 1e-12) for n in outputs}
    if shape_mismatch:
        entry["shape_mismatch"] = shape_mismatch
    entry["latency_ms_p50"] = {
        b: median_ms(lambda b=b: created.run(outputs, feeds[b]), repeats) for b in BATCH_SIZES
    }
    return entry


def table(report: dict[str, Any], targets: list[str]) -> str:
    lines = [
        "model                worst relative diff (output)              "
        + "  ".join(f"p50 ms b{b} cpu/{'/'.join(targets)}" for b in (1, 8))
    ]
    for name, model in report["models"].items():
        if "error" in model:
            lines.append(f"{name:<20} ERROR {model['error'][:150]}")
            continue
        diffs = []
        for target in targets:
            entry = model["targets"][target]
            if "relative_diff" in entry:
                worst = max(entry["relative_diff"], key=entry["relative_diff"].get)
                mismatch = " SHAPES" if entry.get("shape_mismatch") else ""
                diffs.append(f"{target} {entry['relative_diff'][worst]:.1e} ({worst}){mismatch}")
            else:
                diffs.append(f"{target} n/a")
        speeds = []
        for b in (1, 8):
            cells = [str(model["latency_ms_p50"]["cpu"][b])]
            cells += [str(model["targets"][t].get("latency_ms_p50", {}).get(b, "-")) for t in targets]
            speeds.append("/".join(cells))
        lines.append(f"{name:<20} {'; '.join(diffs):<42}  " + "  ".join(f"{s:<28}" for s in speeds))
    for target in targets:
        reasons = {
            m["targets"][target].get("unavailable") for m in report["models"].values() if "targets" in m
        }
        for reason in sorted(r for r in reasons if r):
            lines.append(f"{target}: {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help=f"of {', '.join(TARGETS)}")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per batch size")
    parser.add_argument("--budget-s", type=float, default=75.0, help="skip what is left after this")
    parser.add_argument("--json", type=Path, default=None, help="default: $OUT/gpu_check.json if OUT is set")
    args = parser.parse_args(argv)
    begun = time.monotonic()
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    ort.set_default_logger_severity(3)
    preload = getattr(ort, "preload_dlls", None)
    if callable(preload) and CUDA in ort.get_available_providers():
        with contextlib.redirect_stdout(io.StringIO()):
            preload()  # CUDA/cuDNN from the nvidia-* wheels when the system has none on its path
    backend = load_backend()
    wanted = {m for m in args.models.split(",") if m}
    paths = sorted(
        p for p in args.repository.glob("*/1/model.onnx") if not wanted or p.parent.parent.name in wanted
    )
    report: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "onnxruntime_device": ort.get_device(),
            "available_providers": ort.get_available_providers(),
            "batch_sizes": list(BATCH_SIZES),
            "targets": targets,
            "fp16": "TensorRT EP only (the CUDA EP has no fp16 switch)",
        },
        "models": {},
    }
    failed = False
    for path in paths:
        name = path.parent.parent.name
        try:
            report["models"][name] = check_model(path, targets, backend, args.repeats, begun + args.budget_s)
        except Exception as exc:  # one model's failure is reported; the others still run
            report["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        failed = failed or "error" in report["models"][name]
    report["wall_s"] = round(time.monotonic() - begun, 1)
    print(table(report, targets))
    print(f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}); {report['wall_s']} s")
    out = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {out}")
    missing = any(
        "unavailable" in entry
        for model in report["models"].values()
        for entry in model.get("targets", {}).values()
    )
    return 1 if failed else 2 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
