"""The benchmark suite: one model, the same images, every path measured in one run, with ratios.

    .venv/bin/python tools/bench_suite.py                 # ~10 min: docs/benchmarks.md + plot
    .venv/bin/python tools/bench_suite.py --smoke         # ~1 min, nothing written to docs/

Paths, each at concurrency 1, 4, 16 and 64 (saturation):
  in-process  the gateway's own pipeline (GatewayCore) on onnxruntime in this process: the limit
  hand loop   a minimal hand-written loop (decode, letterbox, onnxruntime, top-5, map peaks)
  triton      Triton directly through tritonclient (gRPC), the same tensor, the same outputs
  gateway     attnserve over gRPC (what clients use), and over HTTP/JSON
and, when their environments exist, the peers (tools/peers): TorchServe's /predictions and
/explanations (Captum), Grad-CAM in PyTorch. Each path is measured for predictions only, every
map RAW, and the primary map's overlay (PNG, and JPEG when the gateway offers it), on a
640×480 JPEG; the gateway and the in-process pipeline again at 0.3, 1, 3 and 12 megapixels,
with the gateway's memory sampled. Rounds alternate between paths (the machine is shared);
each figure is the median of ``--repeats`` rounds by throughput. Never a timed test:
tests/test_bench_suite.py runs ``--smoke`` to check that it works, not how fast.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: as the gateway (server/blas.py)

import argparse  # noqa: E402
import asyncio
import dataclasses
import io
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_suite_report import render_markdown  # noqa: E402

from attnserve._io import atomic_open, atomic_write_text  # noqa: E402
from attnserve.bench import OK, Bound, Summary, closed_loop, plot_png  # noqa: E402
from attnserve.bench.inprocess import HandLoop, OnnxRuntimeBackend  # noqa: E402
from attnserve.bench.processes import CpuMeter, MemorySampler  # noqa: E402
from attnserve.bench.targets import GrpcTarget, HttpTarget  # noqa: E402
from attnserve.clients._common import build_request  # noqa: E402
from attnserve.codec import request_from_proto  # noqa: E402
from attnserve.errors import AttnserveError  # noqa: E402
from attnserve.settings import Settings  # noqa: E402

Send = Callable[[], Awaitable[tuple[str, int]]]

MODES: dict[str, dict[str, Any]] = {
    "predictions": {"omit_attention": True},
    "maps raw": {"forms": ["raw"]},
    "overlay png": {"maps": ["primary"], "forms": ["overlay_png"]},
    "overlay jpeg": {"maps": ["primary"], "forms": ["overlay_png"], "image_encoding": "jpeg"},
    "overlay jpeg 256 px": {
        "maps": ["primary"],
        "forms": ["overlay_png"],
        "image_encoding": "jpeg",
        "image_quality": 75,
        "render_max_side": 256,
    },
}
"""What is asked for: the names are the table's columns."""

SIZES = {"0.3 MP": (640, 480), "1 MP": (1152, 864), "3 MP": (2048, 1536), "12 MP": (4000, 3000)}


def photo(size: tuple[int, int]) -> bytes:
    """A real photograph (scikit-image's astronaut and coffee, side by side) at ``size``, JPEG q90."""
    from skimage import data

    left, right = Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    buffer = io.BytesIO()
    canvas.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class Measured:
    """One measured path for one mode: how to send, and how to set it up and down."""

    name: str
    send: Send
    close: Callable[[], Awaitable[None]] | None = None
    points: dict[int, list[Summary]] = field(default_factory=dict)
    cpu: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By load: the median round's summary and the CPU per answer, as JSON."""


# -- the paths -------------------------------------------------------------------------------


async def in_process(
    repository: Path, image: bytes, options: dict[str, Any]
) -> tuple[Send, Callable[[], Awaitable[None]], Any]:
    from attnserve.server.gateway.core import GatewayCore

    # the limit: the same pipeline without the gateway's admission caps (a refused request would
    # come straight back to the closed loop and spin it)
    unlimited = Settings().model_copy(deep=True)
    unlimited.gateway.max_in_flight = unlimited.gateway.max_heavy_in_flight = 1 << 16
    unlimited.gateway.memory_budget_bytes = 1 << 40
    core = GatewayCore(unlimited, backend=OnnxRuntimeBackend(repository, threads=2))
    await core.start()
    request = request_from_proto(build_request(image, **options))

    async def send() -> tuple[str, int]:
        try:
            await core.predict(request)
        except AttnserveError as error:
            return type(error).__name__, 0
        return OK, 0

    return send, core.stop, core


def hand_loop(
    backend: OnnxRuntimeBackend, model: str, image: bytes, maps: bool
) -> tuple[Send, Callable[[], Awaitable[None]]]:
    loop = HandLoop(backend, model)

    async def send() -> tuple[str, int]:
        await loop.run(image, maps)
        return OK, 0

    async def close() -> None:
        loop.close()

    return send, close


async def triton_direct(
    url: str, model: str, tensor: np.ndarray, outputs: list[str]
) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import InferInput, InferRequestedOutput

    client = triton_aio.InferenceServerClient(url)
    infer_input = InferInput("image", list(tensor.shape), "FP32")
    infer_input.set_data_from_numpy(tensor)
    requested = [InferRequestedOutput(name) for name in outputs]

    async def send() -> tuple[str, int]:
        result = await client.infer(model, [infer_input], outputs=requested)
        return OK, result.get_response().ByteSize()

    return send, client.close


# -- the run ---------------------------------------------------------------------------------


async def measure(
    paths: list[Measured],
    loads: tuple[int, ...],
    seconds: float,
    warmup_s: float,
    repeats: int,
    cpu: CpuMeter,
) -> None:
    """Every path at every load, rounds alternating between paths; the CPU each process used."""
    for load in loads:
        for _ in range(repeats):
            for path in paths:
                if warmup_s > 0:
                    await closed_loop(path.send, load, Bound(duration_s=warmup_s))
                before = cpu.snapshot()
                summary = await closed_loop(path.send, load, Bound(duration_s=seconds))
                used = cpu.since(before)
                per_answer = {name: round(s * 1e3 / max(summary.ok, 1), 3) for name, s in used.items()}
                path.points.setdefault(load, []).append(summary)
                path.cpu.setdefault(load, []).append(per_answer)
                figures = (
                    f"{summary.throughput:8.1f}/s  p50 {summary.p50_ms:7.2f} ms  p99 {summary.p99_ms:7.2f} ms"
                )
                cpu_text = " ".join(f"{k} {v:.2f}" for k, v in per_answer.items())
                print(f"  {path.name:<28} c={load:<3} {figures}  CPU ms/answer: {cpu_text}", flush=True)
                if summary.errors:
                    print(f"    errors: {summary.errors}", flush=True)

    def median(path: Measured, load: int) -> dict[str, Any]:
        rounds = path.points[load]
        index = sorted(range(len(rounds)), key=lambda i: rounds[i].throughput)[len(rounds) // 2]
        return {**rounds[index].to_json(), "cpu_ms_per_answer": path.cpu[load][index]}

    for path in paths:
        path.figures = {str(load): median(path, load) for load in path.points}


async def postprocess_ms(core: Any, image: bytes, options: dict[str, Any], calls: int) -> float:
    """Median of the pipeline's own postprocessing time for one request at a time."""
    request = request_from_proto(build_request(image, **options))
    times = []
    for _ in range(calls):
        prediction = await core.predict(request)
        times.append(prediction.timings.postprocess_ms)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from attnserve.demo import serving
    from attnserve.server.gateway.preprocess import preprocess_image

    settings = Settings()
    repository = settings.triton.model_repository
    backend = OnnxRuntimeBackend(repository, threads=2)
    model = args.model
    config, spec = backend.config(model), backend.spec(model)
    image = photo(SIZES["0.3 MP"])
    tensor = preprocess_image(image, spec.preprocess, settings.gateway.image_limits).tensor[None]
    all_outputs = [o.name for o in config.output]
    results: dict[str, Any] = {
        "model": model,
        "image": f"640×480 JPEG ({len(image):,} B)",
        "settings": {
            "seconds": args.seconds,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "loads": args.loads,
        },
        "modes": {},
    }
    print(
        f"model {model}, 640×480 JPEG of {len(image):,} B; {args.seconds} s a point, {args.repeats} round(s)"
    )

    with serving(settings, quiet=True) as served:
        cpu = CpuMeter(served.pid)
        context = Context(args, served, cpu, repository, backend, spec, all_outputs)

        async def main() -> None:
            for mode, options in MODES.items():
                if mode not in args.modes:
                    continue
                results["modes"][mode] = await measure_mode(
                    context, mode, {"model": model, **options}, image, tensor
                )
            if not args.no_sizes:
                results["sizes"] = await measure_sizes(context)

        asyncio.run(main())
    if not args.no_peers:
        results["peers"] = peers(image, args)
    return results


@dataclass
class Context:
    args: argparse.Namespace
    served: Any
    cpu: CpuMeter
    repository: Path
    backend: OnnxRuntimeBackend
    spec: Any
    all_outputs: list[str]


async def measure_mode(
    context: Context, mode: str, options: dict[str, Any], image: bytes, tensor: np.ndarray
) -> dict[str, Any]:
    """Every path for one mode on the 640×480 image, at every load."""
    args, served = context.args, context.served
    print(f"\n{mode}:", flush=True)
    paths: list[Measured] = []
    send, close, core = await in_process(context.repository, image, options)
    paths.append(Measured("in-process pipeline", send, close))
    if not mode.startswith("overlay"):
        send, close = hand_loop(context.backend, options["model"], image, maps=mode == "maps raw")
        paths.append(Measured("hand loop", send, close))
        outputs = [context.spec.logits_name] if mode == "predictions" else context.all_outputs
        send, close = await triton_direct(
            f"127.0.0.1:{served.triton_grpc_port}", options["model"], tensor, outputs
        )
        paths.append(Measured("triton (tritonclient)", send, close))
    message = build_request(image, **options)
    grpc_target = GrpcTarget(served.address, message)
    paths.append(Measured("gateway gRPC", grpc_target.send, grpc_target.close))
    http_target = HttpTarget(served.http_url, message)
    paths.append(Measured("gateway HTTP", http_target.send, http_target.close))
    await measure(paths, args.loads, args.seconds, args.warmup, args.repeats, context.cpu)
    post = await postprocess_ms(core, image, options, 50 if not args.smoke else 5)
    for path in paths:
        if path.close is not None:
            await path.close()
    measured: dict[str, Any] = {p.name: p.figures for p in paths}
    if mode == "maps raw":  # Triton's own tool on the same model, every output
        measured["triton (perf_analyzer)"] = perf_analyzer_points(context, tensor.shape[1:])
    return {"postprocess_ms_c1": post, "paths": measured}


def perf_analyzer_points(context: Context, shape: tuple[int, ...]) -> dict[str, Any]:
    from peers.perf_analyzer import perf_analyzer_bench

    from attnserve.server.triton.runtime import ensure_runtime

    library_dir = ensure_runtime(Settings().triton).library_dir
    points: dict[str, Any] = {}
    for load in context.args.loads:
        point = perf_analyzer_bench(
            f"127.0.0.1:{context.served.triton_grpc_port}",
            context.args.model,
            shape,
            load,
            max(context.args.seconds, 1.0),
            library_dir,
        )
        if "skipped" in point:
            print(f"  perf_analyzer skipped: {point['skipped']}", flush=True)
            return {}
        figures = f"{point['throughput']:8.1f}/s  p50 {point['p50_ms']:7.2f} ms"
        print(f"  {'triton (perf_analyzer)':<28} c={load:<3} {figures}", flush=True)
        points[str(load)] = point
    return points


async def measure_sizes(context: Context) -> dict[str, Any]:
    """The in-process pipeline and the gateway at concurrency 4 on each image size, each mode,
    with the gateway's resident memory sampled."""
    args, served = context.args, context.served
    print("\nimage sizes (c=4):", flush=True)
    sizes: dict[str, Any] = {}
    for size_name, size in SIZES.items() if not args.smoke else list(SIZES.items())[:1]:
        picture = photo(size)
        for mode, options in MODES.items():
            options = {"model": args.model, **options}
            send, close, _ = await in_process(context.repository, picture, options)
            target = GrpcTarget(served.address, build_request(picture, **options), timeout_s=120)
            paths = [
                Measured("in-process pipeline", send, close),
                Measured("gateway gRPC", target.send, target.close),
            ]
            sampler = MemorySampler(served.pid)
            idle = sampler.rss()
            print(f" {size_name}, {mode}:", flush=True)
            with sampler:
                await measure(paths, (4,), args.seconds, min(args.warmup, 0.5), 1, context.cpu)
            sizes.setdefault(size_name, {})[mode] = {
                "bytes": len(picture),
                "gateway_rss_idle_mb": idle / 2**20,
                "gateway_rss_peak_mb": sampler.peak / 2**20,
                **{p.name: p.figures["4"] for p in paths},
            }
            for path in paths:
                if path.close is not None:
                    await path.close()
    return sizes


def peers(image: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Grad-CAM in PyTorch and TorchServe, each where its environment allows."""
    figures: dict[str, Any] = {}
    try:
        from peers import gradcam_bench, torch_predict_bench, torchserve_bench
    except ImportError as error:
        return {"skipped": f"tools/peers cannot be imported: {error}"}
    seconds = args.seconds if not args.smoke else 1.0
    print("\npeers:", flush=True)
    figures["gradcam"] = {t: _slim(gradcam_bench(image, seconds, threads=t)) for t in (1, 2)}
    figures["torch_forward"] = {t: _slim(torch_predict_bench(image, seconds, threads=t)) for t in (1, 2)}
    if args.smoke:
        figures["torchserve"] = {"skipped": "not in --smoke"}
    else:
        figures["torchserve"] = {c: torchserve_bench(image, seconds, concurrency=c) for c in (1, 4)}
    print(json.dumps(figures, indent=1, default=str)[:3000])
    return figures


def _slim(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k not in ("map", "logits")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cbam")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measured point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loads", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--smoke", action="store_true", help="a short run that checks everything works")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="default: all")
    parser.add_argument("--no-sizes", action="store_true", help="skip the image sizes")
    parser.add_argument("--no-peers", action="store_true", help="skip Grad-CAM and TorchServe")
    parser.add_argument(
        "--from-json", type=Path, help="measure nothing: write the markdown and the plot of a saved run"
    )
    parser.add_argument("--json", type=Path, default=None, help="raw figures (default docs/benchmarks.json)")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="default docs/benchmarks.md (not with --smoke)"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="default docs/images/benchmarks.png (not with --smoke)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.warmup, args.repeats, args.loads = 0.3, 0.1, 1, [2]
    else:
        args.json = args.json or ROOT / "docs" / "benchmarks.json"
        args.markdown = args.markdown or ROOT / "docs" / "benchmarks.md"
        args.plot = args.plot or ROOT / "docs" / "images" / "benchmarks.png"
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        started = time.perf_counter()
        results = run(args)
        results["wall_s"] = round(time.perf_counter() - started, 1)
    markdown = render_markdown(results, args)
    print("\n" + markdown)
    if args.json and not args.from_json:
        atomic_write_text(args.json, json.dumps(results, indent=1, default=str) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, markdown)
    if args.plot and "maps raw" in results["modes"]:
        series = {
            name: [_summary(point) for point in points.values()]
            for name, points in results["modes"]["maps raw"]["paths"].items()
        }
        with atomic_open(args.plot) as handle:
            handle.write(
                plot_png(series, title=f"{args.model}, every map RAW, 640x480 JPEG", x_label="concurrency")
            )


def _summary(point: dict[str, Any]) -> Summary:
    """A point of the JSON as a `Summary` again, for the plot: nulls were NaNs; what a path did
    not measure (perf_analyzer reports no counts) is NaN or 0; other figures stay out."""
    values: dict[str, Any] = {}
    for field_ in dataclasses.fields(Summary):
        value = point.get(field_.name)
        if value is None:
            value = {"label": "", "errors": {}, "requests": 0, "ok": 0}.get(field_.name, float("nan"))
        values[field_.name] = value
    return Summary(**values)


if __name__ == "__main__":
    main()
