"""The captioning benchmark: show_attend_tell served beside PyTorch eager decoding of the same
model in this process, in the same run, at beam 1 and beam 3.

    .venv/bin/python tools/bench_captions.py          # ~6 min: docs/benchmarks_captions.{json,md}
    .venv/bin/python tools/bench_captions.py --smoke  # ~1 min, nothing written to docs/

Paths, each at concurrency 1 and 8, on the same test scenes (``--scenes`` PNGs, cycled):
  served             attnserve over gRPC (the real Triton and gateway, `attnserve serve`): the
                     default request (the caption, every word's map RAW) with model_options
                     ``beam_size``
  triton direct      Triton through tritonclient (gRPC), the same tensor and options, every output:
                     what the gateway adds is the difference
  eager              ``ShowAttendTell.forward(images, beam_size, max_length)`` of the trained
                     checkpoint in this process, torch threads = 2, on the gateway's own tensors
                     (preprocessed once beforehand: the decoding alone); concurrency 8 is 8
                     callers through a thread pool, batch 1 each
  eager greedy-only  the same weights and the same forward with the search's ``MAX_BEAM`` at 1
                     (a copy of the function whose globals say so; the model module is untouched),
                     at beam 1 only: what computing `MAX_BEAM` beams always costs
Every path at a concurrency is measured in rounds alternating between all of them (the machine
is shared and noisy); each figure is the median of ``--repeats`` rounds by throughput. Ratios are
to figures of the same run. Never a timed test: tests/test_bench_captions.py runs ``--smoke`` to
check that it works, not how fast.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: as the gateway (server/blas.py)

import argparse  # noqa: E402
import asyncio
import datetime
import io
import itertools
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_suite import Measured, measure  # noqa: E402

from attnserve._io import atomic_write_text  # noqa: E402
from attnserve.bench import OK, Bound, GrpcTarget, closed_loop  # noqa: E402
from attnserve.bench.processes import CpuMeter  # noqa: E402
from attnserve.clients._common import build_request  # noqa: E402
from attnserve.settings import Settings  # noqa: E402

MODEL = "show_attend_tell"
CHECKPOINT = ROOT / "checkpoints" / MODEL / "checkpoint.pt"
BEAMS = (1, 3)
LOADS = (1, 8)
C1, C8 = (str(load) for load in LOADS)
TORCH_THREADS = 2
SERVED, TRITON, EAGER, GREEDY = "served", "triton direct", "eager", "eager greedy-only"
PATHS = (SERVED, TRITON, EAGER, GREEDY)
NOISE = 0.15
"""Ratios within 1 ± this are called the same: rounds on this shared machine vary about as much."""
DOCS_JSON = ROOT / "docs" / "benchmarks_captions.json"
DOCS_MARKDOWN = ROOT / "docs" / "benchmarks_captions.md"


def path_name(path: str, beam: int) -> str:
    return f"{path}, beam {beam}"


# -- what is measured ------------------------------------------------------------------------


def scene_pngs(count: int, seed: int) -> list[bytes]:
    """The first ``count`` test scenes as the PNG files a client would send (8-bit grey)."""
    from attnserve.export.data.captions import CaptionScenes
    from attnserve.transform import image_from_pixels

    scenes = CaptionScenes("test", count, seed=seed)
    pngs = []
    for index in range(count):
        buffer = io.BytesIO()
        image_from_pixels(scenes[index].image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def served_spec(repository: Path) -> Any:
    """The model's spec as the gateway reads it from the served config, and its version."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from attnserve.server.gateway.catalog import model_info_from_config

    folder = repository / MODEL
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    version = max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    return model_info_from_config(config, str(version)).spec, config


def greedy_only_forward(model: Any) -> Callable[..., dict[str, Any]]:
    """``model.forward`` with the beam search's width at 1: the same code object, run with a
    copy of its module's globals in which ``MAX_BEAM`` is 1. Nothing is patched, so no other
    path (or thread) can see it; beam size 1 of the 5-beam graph is the same decoding."""
    from attnserve.export.models.show_attend_tell import ShowAttendTell

    forward: types.FunctionType = ShowAttendTell.__dict__["forward"]
    namespace = {**forward.__globals__, "MAX_BEAM": 1}
    function = types.FunctionType(
        forward.__code__, namespace, forward.__name__, forward.__defaults__, forward.__closure__
    )
    return types.MethodType(function, model)


def eager_send(
    forward: Callable[..., dict[str, Any]],
    tensors: list[Any],
    beam: int,
    max_length: int,
    pool: ThreadPoolExecutor,
) -> Callable[[], Any]:
    """One caption by ``forward`` on the pool, the scenes in turn (batch 1)."""
    import torch

    beam_size = torch.tensor([[beam]], dtype=torch.int64)
    longest = torch.tensor([[max_length]], dtype=torch.int64)
    turn = itertools.count()

    def decode(index: int) -> None:
        with torch.inference_mode():
            forward(tensors[index], beam_size, longest)

    async def send() -> tuple[str, int]:
        await asyncio.get_running_loop().run_in_executor(pool, decode, next(turn) % len(tensors))
        return OK, 0

    return send


async def triton_send(
    url: str, spec: Any, tensors: list[np.ndarray], beam: int, max_length: int
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Triton's own gRPC API through tritonclient: the gateway's tensor and option inputs, every
    output the gateway asks for (tokens, word scores, word maps, gates), the scenes in turn."""
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import InferInput, InferRequestedOutput
    from tritonclient.utils import InferenceServerException

    client = triton_aio.InferenceServerClient(url)
    requests = []
    for tensor in tensors:
        image = InferInput(spec.input_name, list(tensor.shape), "FP32")
        image.set_data_from_numpy(tensor)
        options = []
        for name, value in (("beam_size", beam), ("max_length", max_length)):
            option = InferInput(name, [1, 1], "INT64")
            option.set_data_from_numpy(np.array([[value]], dtype=np.int64))
            options.append(option)
        requests.append([image, *options])
    requested = [InferRequestedOutput(name) for name in spec.output_names]
    turn = itertools.count()

    async def send() -> tuple[str, int]:
        try:
            result = await client.infer(MODEL, requests[next(turn) % len(requests)], outputs=requested)
        except InferenceServerException as error:
            return str(error.status() or "TRITON"), 0
        return OK, result.get_response().ByteSize()

    return send, client.close


async def triton_batching(url: str, send: Callable[[], Any], load: int, seconds: float) -> dict[str, Any]:
    """How Triton batched the requests of ``send`` at ``load``: its own inference and execution
    counts for the model around a closed-loop run of ``seconds``."""
    import tritonclient.grpc.aio as triton_aio

    client = triton_aio.InferenceServerClient(url)

    async def counts() -> tuple[int, int]:
        statistics = await client.get_inference_statistics(MODEL)
        model = statistics.model_stats[0]
        return int(model.inference_count), int(model.execution_count)

    try:
        inferences, executions = await counts()
        summary = await closed_loop(send, load, Bound(duration_s=seconds))
        after = await counts()
    finally:
        await client.close()
    inferences, executions = after[0] - inferences, after[1] - executions
    return {
        "concurrency": load,
        "answers": summary.ok,
        "inferences": inferences,
        "executions": executions,
        "mean_batch": round(inferences / max(executions, 1), 2),
    }


def served_send(address: str, pngs: list[bytes], beam: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The default request (caption and word maps RAW) with ``beam_size``, one prepared
    `GrpcTarget` per scene, in turn."""
    targets = [
        GrpcTarget(address, build_request(png, model=MODEL, model_options={"beam_size": beam}))
        for png in pngs
    ]
    order = itertools.cycle(targets)

    async def send() -> tuple[str, int]:
        return await next(order).send()

    async def close() -> None:
        for target in targets:
            await target.close()

    return send, close


# -- checks: every path decodes the same captions ---------------------------------------------


def words_of(tokens: Any) -> list[int]:
    from attnserve.server.gateway.postprocess.captions import caption_length

    ids = np.rint(np.asarray(tokens, dtype=np.float64).reshape(-1)).astype(np.int64)
    return [int(t) for t in ids[: caption_length(ids)]]


def check_captions(
    address: str,
    pngs: list[bytes],
    model: Any,
    greedy: Callable[..., dict[str, Any]],
    tensors: list[Any],
    max_length: int,
) -> dict[str, Any]:
    """Served against eager, beam by beam, and the greedy-only graph against beam 1; the served
    answer carries a caption and one RAW word map per word."""
    import torch

    from attnserve.clients import Client
    from attnserve.export.data.captions import VOCABULARY

    checks: dict[str, Any] = {"captions": {}}
    longest = torch.tensor([[max_length]])
    with Client(address) as client, torch.inference_mode():
        for beam in BEAMS:
            agree, rows = 0, []
            for index, png in enumerate(pngs):
                eager = words_of(model(tensors[index], torch.tensor([[beam]]), longest)["tokens"])
                prediction = client.predict(png, model=MODEL, model_options={"beam_size": beam})
                caption = prediction.caption
                if caption is None:
                    raise RuntimeError(f"the served answer at beam {beam} has no caption")
                maps = prediction.attention_map("word_attention")
                if maps.raw is None or maps.raw.shape[0] != len(caption.words):
                    raise RuntimeError(f"the served answer at beam {beam} lacks one RAW map per word")
                served = [word.index for word in caption.words]
                agree += served == eager
                rows.append(
                    {
                        "served": caption.text,
                        "eager": " ".join(VOCABULARY[t] for t in eager),
                        "log_prob": caption.log_prob,
                    }
                )
            checks["captions"][str(beam)] = rows
            checks[f"served_equals_eager_beam_{beam}"] = f"{agree}/{len(pngs)}"
        same = sum(
            words_of(greedy(tensor, torch.tensor([[1]]), longest)["tokens"])
            == words_of(model(tensor, torch.tensor([[1]]), longest)["tokens"])
            for tensor in tensors
        )
    checks["greedy_only_equals_beam_1"] = f"{same}/{len(tensors)}"
    for key, value in checks.items():
        if key != "captions":
            print(f"  {key}: {value}", flush=True)
    for row in checks["captions"]["3"][:3]:
        print(f"  beam 3: {row['served']!r} (log p {row['log_prob']:.3f})", flush=True)
    return checks


# -- the run ---------------------------------------------------------------------------------


def context_of(args: argparse.Namespace, config: Any, checkpoint: Any) -> dict[str, Any]:
    """What the figures depend on: the machine, the versions, the model's serving config."""
    import onnx
    import torch

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    parameters = {
        key: value.string_value for key, value in config.parameters.items() if key != "attnserve_spec"
    }
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"),
        "tree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": {
            "cpu": cpu_model,
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": os.getloadavg(),
        },
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnx": onnx.__version__,
        "triton": f"Triton 2.51 (nvidia-pytriton {Settings().triton.pytriton_version}), onnxruntime backend",
        "served_config": {
            "max_batch_size": config.max_batch_size,
            "instances": [f"{g.count}× {mc_kind(g.kind)}" for g in config.instance_group],
            "dynamic_batching": config.HasField("dynamic_batching"),
            "parameters": parameters,
        },
        "checkpoint": {"path": str(CHECKPOINT.relative_to(ROOT)), "metrics": checkpoint.metrics},
    }


def mc_kind(kind: int) -> str:
    from tritonclient.grpc import model_config_pb2 as mc

    return str(mc.ModelInstanceGroup.Kind.Name(kind))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnserve.demo import serving
    from attnserve.export.checkpoint import load_checkpoint
    from attnserve.export.models import show_attend_tell as module
    from attnserve.server.gateway.preprocess import preprocess_image

    torch.set_num_threads(TORCH_THREADS)
    max_beam = module.MAX_BEAM
    settings = Settings()
    source = settings.triton.model_repository / MODEL
    spec, config = served_spec(settings.triton.model_repository)
    max_length = next(option.default for option in spec.options if option.name == "max_length")
    pngs = scene_pngs(args.scenes, args.seed)
    # the gateway's own preprocessing, once: the eager and Triton paths get exactly its tensors
    arrays = [
        preprocess_image(png, spec.preprocess, settings.gateway.image_limits).tensor[None] for png in pngs
    ]
    tensors = [torch.from_numpy(array.copy()) for array in arrays]
    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.model.eval()
    greedy = greedy_only_forward(model)
    results: dict[str, Any] = {
        "model": MODEL,
        "context": context_of(args, config, checkpoint),
        "settings": {
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "repeats": args.repeats,
            "loads": list(LOADS),
            "beams": list(BEAMS),
            "scenes": f"{args.scenes} CaptionScenes('test', seed={args.seed}) as 8-bit PNGs, cycled",
            "max_length": max_length,
            "max_beam": max_beam,
            "max_steps": module.MAX_STEPS,
            "smoke": args.smoke,
        },
    }
    print(
        f"{MODEL}: {args.scenes} test scenes, {args.seconds} s a point after {args.warmup} s of warm-up, "
        f"{args.repeats} round(s); torch threads {torch.get_num_threads()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-captions-") as folder:
        repository = Path(folder)  # the captioner alone: Triton starts sooner, nothing else loaded
        shutil.copytree(source, repository / MODEL)
        served_settings = settings.model_copy(
            update={"triton": settings.triton.model_copy(update={"model_repository": repository})}
        )
        with serving(served_settings, quiet=True) as served, ThreadPoolExecutor(max(LOADS), "eager") as pool:
            started = time.perf_counter()
            results["checks"] = check_captions(served.address, pngs, model, greedy, tensors, max_length)
            cpu = CpuMeter(served.pid)

            async def main() -> list[Measured]:
                paths: list[Measured] = []
                for beam in BEAMS:
                    send, close = served_send(served.address, pngs, beam)
                    paths.append(Measured(path_name(SERVED, beam), send, close))
                    send, close = await triton_send(
                        f"127.0.0.1:{served.triton_grpc_port}", spec, arrays, beam, max_length
                    )
                    paths.append(Measured(path_name(TRITON, beam), send, close))
                    paths.append(
                        Measured(path_name(EAGER, beam), eager_send(model, tensors, beam, max_length, pool))
                    )
                    if beam == 1:
                        send = eager_send(greedy, tensors, beam, max_length, pool)
                        paths.append(Measured(path_name(GREEDY, beam), send))
                await measure(paths, LOADS, args.seconds, args.warmup, args.repeats, cpu)
                for path in paths:  # every round's throughput beside the median's figures: the noise
                    for load, rounds in path.points.items():
                        path.figures[str(load)]["rounds_throughput"] = [
                            round(r.throughput, 1) for r in rounds
                        ]
                triton_url = f"127.0.0.1:{served.triton_grpc_port}"
                for beam in BEAMS:
                    path = next(p for p in paths if p.name == path_name(SERVED, beam))
                    batching = await triton_batching(triton_url, path.send, max(LOADS), args.seconds)
                    results.setdefault("triton_batching", {})[str(beam)] = batching
                    print(f"  served beam {beam} c={max(LOADS)}: Triton's batches {batching}", flush=True)
                for path in paths:
                    if path.close is not None:
                        await path.close()
                return paths

            measured = asyncio.run(main())
            results["measure_s"] = round(time.perf_counter() - started, 1)
    if module.MAX_BEAM != max_beam:  # the greedy-only path must not have touched the module
        raise RuntimeError(f"the model module's MAX_BEAM changed during the run: {module.MAX_BEAM}")
    results["context"]["machine"]["loadavg_after"] = os.getloadavg()
    results["figures"] = {
        str(beam): {
            path: figures_of(measured, path_name(path, beam)) for path in PATHS if beam == 1 or path != GREEDY
        }
        for beam in BEAMS
    }
    results["ratios"] = ratios(results["figures"])
    return results


def figures_of(measured: list[Measured], name: str) -> dict[str, Any]:
    return next(path.figures for path in measured if path.name == name)


def ratios(figures: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Served against eager and against Triton direct; beam 3 against beam 1; greedy-only against
    the 5-beam graph at beam 1: captions/s and p50, at each concurrency."""

    def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
        return round(a[key] / b[key], 3) if a.get(key) and b.get(key) else None

    def both(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
        return {
            "throughput": ratio(a, b, "throughput"),
            "p50": ratio(a, b, "p50_ms"),
            "p99": ratio(a, b, "p99_ms"),
        }

    out: dict[str, Any] = {"served_over_eager": {}, "served_over_triton": {}, "beam3_over_beam1": {}}
    for beam in map(str, BEAMS):
        for load in map(str, LOADS):
            key = f"beam {beam}, c={load}"
            point = figures[beam]
            out["served_over_eager"][key] = both(point[SERVED][load], point[EAGER][load])
            out["served_over_triton"][key] = both(point[SERVED][load], point[TRITON][load])
    for path in (SERVED, TRITON, EAGER):
        for load in map(str, LOADS):
            out["beam3_over_beam1"][f"{path}, c={load}"] = both(
                figures["3"][path][load], figures["1"][path][load]
            )
    out["greedy_only_over_5_beams_at_beam_1"] = {
        f"c={load}": both(figures["1"][GREEDY][load], figures["1"][EAGER][load]) for load in map(str, LOADS)
    }
    return out


# -- the report ------------------------------------------------------------------------------


def render_markdown(results: dict[str, Any]) -> str:
    figures, r, s, context = results["figures"], results["ratios"], results["settings"], results["context"]
    machine = context["machine"]
    dirty = " (with uncommitted changes)" if context["tree_dirty"] else ""

    def x(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}×"

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    lines = [
        "# Captioning benchmark: show_attend_tell served and in PyTorch",
        "",
        f"Written by `tools/bench_captions.py` ({results.get('wall_s', '?')} s run, {s['seconds']} s "
        f"per point after {s['warmup_s']} s of warm-up, {s['repeats']} rounds per point alternating "
        "between every path and beam, the median round by throughput). "
        f"{s['scenes']}; captions of at most {s['max_length']} words (the default `max_length`). "
        f"Machine: {machine['cpu']}, {machine['affinity']} CPUs (shared with other work: load average "
        f"{machine['loadavg_before'][0]:.1f} before, {machine['loadavg_after'][0]:.1f} after); the load "
        "generator, the eager model, the gateway and Triton all share them, so every figure includes the "
        f"client's own CPU. Commit `{context['commit'][:10]}`{dirty}, "
        f"torch {context['torch']}, {context['triton']}. Raw figures: `docs/benchmarks_captions.json`.",
        "",
        "## Results",
        "",
        "CPU per caption: ms of CPU time of this process (load generator and eager decoding) / the "
        "gateway / Triton.",
        "",
        "| beam | concurrency | path | captions/s | p50 ms | p99 ms | CPU ms per caption "
        "| every round's captions/s |",
        "|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for beam in map(str, BEAMS):
        for load in map(str, LOADS):
            for path, point in ((p, figures[beam][p][load]) for p in PATHS if p in figures[beam]):
                cpu = " / ".join(f"{v:.1f}" for v in point["cpu_ms_per_answer"].values())
                errors = f" ({point['errors']})" if point["errors"] else ""
                lines.append(
                    f"| {beam} | {load} | {path}{errors} | {point['throughput']:.1f} | "
                    f"{ms(point['p50_ms'])} | {ms(point['p99_ms'])} | {cpu} | "
                    f"{', '.join(f'{v:.1f}' for v in point.get('rounds_throughput', []))} |"
                )
    lines += [
        "",
        "## Ratios (same run)",
        "",
        "| beam | concurrency | served / eager captions/s | served / eager p50 | served / eager p99 "
        "| served / Triton direct captions/s | served − Triton direct p50 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for beam in map(str, BEAMS):
        for load in map(str, LOADS):
            key = f"beam {beam}, c={load}"
            eager, triton = r["served_over_eager"][key], r["served_over_triton"][key]
            gap = figures[beam][SERVED][load]["p50_ms"] - figures[beam][TRITON][load]["p50_ms"]
            lines.append(
                f"| {beam} | {load} | {x(eager['throughput'])} | {x(eager['p50'])} | {x(eager['p99'])} | "
                f"{x(triton['throughput'])} | {gap:+.1f} |"
            )
    lines += [
        "",
        "## Beam 3 against beam 1",
        "",
        "| path | concurrency | beam 3 / beam 1 captions/s | beam 3 / beam 1 p50 |",
        "|---|---:|---:|---:|",
    ]
    for key, value in r["beam3_over_beam1"].items():
        path, load = key.rsplit(", c=", 1)
        lines.append(f"| {path} | {load} | {x(value['throughput'])} | {x(value['p50'])} |")
    lines += [
        "",
        f"## What computing {s['max_beam']} beams costs: the greedy-only graph",
        "",
        f"| concurrency | greedy-only captions/s | {s['max_beam']}-beam graph at beam 1 captions/s "
        "| greedy-only / 5-beam captions/s | greedy-only / 5-beam p50 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for load in map(str, LOADS):
        greedy, full = figures["1"][GREEDY][load], figures["1"][EAGER][load]
        value = r["greedy_only_over_5_beams_at_beam_1"][f"c={load}"]
        lines.append(
            f"| {load} | {greedy['throughput']:.1f} | {full['throughput']:.1f} | {x(value['throughput'])} | "
            f"{x(value['p50'])} |"
        )
    checks = results["checks"]
    lines += [
        "",
        "## Checks",
        "",
        f"- Served captions equal the eager model's on the same scenes: beam 1 "
        f"{checks['served_equals_eager_beam_1']}, beam 3 {checks['served_equals_eager_beam_3']} "
        "(ONNX in Triton against PyTorch: the same checkpoint, exported).",
        f"- The greedy-only graph decodes what the {s['max_beam']}-beam graph does at beam size 1: "
        f"{checks['greedy_only_equals_beam_1']} scenes.",
        "- Every served answer carried a caption and one RAW word map per word.",
        "",
        "## How measured",
        "",
        "- **served**: `attnserve serve` (the real Triton 2.51 from the PyPI wheel and the gateway, in "
        "their own processes) on a model repository holding the exported `show_attend_tell` alone; the "
        "default request (the caption and every word's `word_attention` map RAW) with "
        '`model_options={"beam_size": B}`, sent over gRPC by `attnserve.bench.GrpcTarget` (one prepared '
        "request per scene, serialised once, answers not decoded).",
        "- **triton direct**: the same tensors (the gateway's own preprocessing of the PNGs) and the same "
        "`beam_size` and `max_length` inputs straight to Triton's gRPC API with tritonclient, every output "
        "asked for. Served minus Triton direct is what the gateway adds: decoding and preprocessing the "
        "PNG, the caption's postprocessing (words, scores, peaks, the maps cut to the words), gRPC.",
        "- **eager**: `ShowAttendTell.forward(images, beam_size, max_length)` of "
        f"`{context['checkpoint']['path']}` in this process under `torch.inference_mode()`, "
        f"`torch.set_num_threads({context['torch_threads']})`, on the gateway's tensors preprocessed once "
        "beforehand: the decoding alone. Concurrency 8 is 8 callers through a thread pool, batch 1 "
        "each (no batching across callers).",
        "- **eager greedy-only**: the same weights and the same `forward` code, run with a copy of its "
        "module's globals in which `MAX_BEAM` is 1 (the module itself is untouched): a search of one beam, "
        "at beam 1 only.",
        "- Load: `attnserve.bench.closed_loop` (each caller sends its next request when the last is "
        "answered); latencies and percentiles: `attnserve.bench.Summary` (nearest rank); rounds and CPU "
        "accounting: `tools/bench_suite.py`'s `measure`.",
        f"- Served config: max batch size {context['served_config']['max_batch_size']}, instances "
        f"{', '.join(context['served_config']['instances'])}, dynamic batching "
        f"{'on' if context['served_config']['dynamic_batching'] else 'off'}, parameters "
        f"{json.dumps(context['served_config']['parameters'])}.",
        "",
        "## What the numbers mean",
        "",
        *meaning(results),
    ]
    return "\n".join(lines) + "\n"


def meaning(results: dict[str, Any]) -> list[str]:
    """Sentences from the figures: which way each comparison went, and why."""
    return [
        _beams_line(results),
        _greedy_line(results),
        _served_line(results),
        *_contention_lines(results),
        _gateway_line(results),
    ]


def _at_loads(values: dict[str, float | None]) -> str:
    return ", ".join(f"c={load} {'–' if v is None else f'{v:.2f}×'}" for load, v in values.items())


def _near(value: float | None) -> bool:
    return value is not None and abs(value - 1.0) <= NOISE


def _beams_line(results: dict[str, Any]) -> str:
    r, s = results["ratios"], results["settings"]

    def beam_ratio(path: str) -> dict[str, float | None]:
        return {load: r["beam3_over_beam1"][f"{path}, c={load}"]["throughput"] for load in (C1, C8)}

    served_beams, eager_beams = beam_ratio(SERVED), beam_ratio(EAGER)
    same = all(_near(v) for v in [*served_beams.values(), *eager_beams.values()])
    if same:
        verdict = f"the same, within this machine's noise (±{NOISE:.0%})"
    else:
        verdict = (
            f"more than ±{NOISE:.0%} apart, although the work is the same: read the difference as the "
            "noise of this shared machine (every round's figures are in the first table)"
        )
    return (
        f"- **{'Beam 3 costs what beam 1 costs' if same else 'Beam 3 against beam 1'}.** Beam 3 / beam 1 "
        f"captions/s: served {_at_loads(served_beams)}; "
        f"eager {_at_loads(eager_beams)}: {verdict}. The graph always computes all {s['max_beam']} beams for "
        f"all {s['max_steps']} unrolled steps and masks the beams beyond the requested size, so `beam_size` "
        "changes which candidates survive, not how much is computed (and `max_length` likewise: every step "
        "runs, the later ones forced to the end token)."
    )


def _greedy_line(results: dict[str, Any]) -> str:
    r, s = results["ratios"], results["settings"]
    greedy = {load: r["greedy_only_over_5_beams_at_beam_1"][f"c={load}"] for load in (C1, C8)}
    faster = {load: v["throughput"] for load, v in greedy.items()}
    line = (
        f"- **What the {s['max_beam']} beams cost a greedy request.** A search of one beam (the greedy-only "
        f"graph, the same captions) runs at {_at_loads(faster)} the captions/s of the {s['max_beam']}-beam "
        f"graph at beam size 1 in eager PyTorch (p50 {_at_loads({k: v['p50'] for k, v in greedy.items()})}). "
    )
    g1, g8 = faster[C1], faster[C8]
    if g1 is None or g1 < 1 - NOISE:
        return (
            line
            + f"At concurrency {C1} the greedy-only graph was slower: this run cannot tell what beams cost."
        )
    if _near(g1):
        return line + (
            f"At concurrency {C1} that is within the noise (±{NOISE:.0%}): at these sizes (a 192-unit LSTM, "
            "196 cells) a decoder step's cost is per operator rather than per beam."
        )
    line += (
        f"At concurrency {C1}, where one caller has the CPUs to itself, a beam-1 request pays for "
        f"{s['max_beam']} beams it never uses"
    )
    if g1 < s["max_beam"]:
        line += (
            f"; the factor stays well below {s['max_beam']}: the encoder runs once either way, and "
            "at these sizes (a 192-unit LSTM, 196 cells) a decoder step's cost seems to be largely per "
            "operator (eager dispatch), not per beam"
        )
    line += "."
    if g8 is not None and g8 < g1 - NOISE:
        line += (
            f" At concurrency {C8} the gap shrinks to {g8:.2f}×: there eager decoding is bound by "
            "contention between its callers, not by the decoder's work."
        )
    return line + " This is the eager ratio; the served graph's would need a second exported graph."


def _served_line(results: dict[str, Any]) -> str:
    figures, r, s = results["figures"], results["ratios"], results["settings"]
    over_eager = {
        f"beam {beam} c={load}": r["served_over_eager"][f"beam {beam}, c={load}"]["throughput"]
        for beam in BEAMS
        for load in (C1, C8)
    }
    shown = ", ".join(f"{k} {'–' if v is None else f'{v:.2f}×'}" for k, v in over_eager.items())
    triton_p50, eager_p50 = figures["1"][TRITON][C1]["p50_ms"], figures["1"][EAGER][C1]["p50_ms"]
    line = f"- **Served against eager in-process.** Served / eager captions/s: {shown}. "
    known = [v for v in over_eager.values() if v is not None]
    if known and all(v > 1 for v in known):
        line += (
            "Served is faster at every point although it also decodes the PNG, crosses gRPC twice and "
            "postprocesses the caption: "
        )
    elif known and all(v < 1 for v in known):
        line += "Eager decoding in-process is faster at every point: "
    else:
        line += "Neither is faster everywhere: "
    line += (
        f"the model alone, at beam 1 and concurrency 1, takes {triton_p50:.1f} ms at p50 in Triton "
        f"(onnxruntime, one graph) against {eager_p50:.1f} ms in eager PyTorch (a Python loop dispatching "
        f"each of the decoder's operators for {s['max_steps']} steps)."
    )
    batching = results.get("triton_batching", {})
    if batching:
        means = ", ".join(f"beam {beam} {b['mean_batch']:.2f}" for beam, b in batching.items())
        line += (
            f" At concurrency {C8}, Triton's dynamic batcher ran the served captions in batches of {means} "
            "on average (Triton's own inference and execution counts over a separate "
            f"{s['seconds']} s run); the eager callers decode batch 1 each, sharing the GIL between "
            "operators."
        )
    return line


def _contention_lines(results: dict[str, Any]) -> list[str]:
    """Eager decoding at concurrency 8 against 1, when 8 callers bought no captions."""
    figures, context = results["figures"], results["context"]
    one, eight = figures["1"][EAGER][C1], figures["1"][EAGER][C8]
    cpu_one, cpu_eight = (point["cpu_ms_per_answer"]["this process"] for point in (one, eight))
    if eight["throughput"] < one["throughput"] * (1 - NOISE):
        title = "Eager decoding gets slower with more callers"
    elif eight["throughput"] <= one["throughput"] * (1 + NOISE) and cpu_eight > cpu_one * (1 + NOISE):
        title = "Eager decoding gains nothing from more callers"
    else:
        return []
    return [
        f"- **{title}**: at beam 1, {eight['throughput']:.1f} captions/s at concurrency {C8} against "
        f"{one['throughput']:.1f} at {C1}, using {cpu_eight:.0f} ms of CPU per caption against "
        f"{cpu_one:.0f}. {C8} callers each run their operators on torch's pool of "
        f"{context['torch_threads']} threads, on {context['machine']['affinity']} CPUs, and hold the GIL "
        "between operators: the extra CPU goes to contention, not captions. So at concurrency "
        f"{C8} the served / eager ratio reflects this contention as well as Triton's batching."
    ]


def _gateway_line(results: dict[str, Any]) -> str:
    figures, r = results["figures"], results["ratios"]
    over_triton = {load: r["served_over_triton"][f"beam 1, c={load}"]["throughput"] for load in (C1, C8)}
    gap = figures["1"][SERVED][C1]["p50_ms"] - figures["1"][TRITON][C1]["p50_ms"]
    gateway_cpu = figures["1"][SERVED][C8]["cpu_ms_per_answer"].get("gateway", 0.0)
    line = (
        f"- **The gateway's share.** Served / Triton direct captions/s at beam 1: {_at_loads(over_triton)}; "
        f"at concurrency {C1} the gateway adds {gap:+.1f} ms to the p50 and, at concurrency {C8}, "
        f"{gateway_cpu:.1f} ms of its own CPU per caption (PNG decode and preprocessing, the caption's "
        "words, scores and peaks, the RAW maps cut to the words, gRPC)."
    )
    direct = figures["1"][TRITON][C8]
    cores = direct["cpu_ms_per_answer"].get("triton", 0.0) * direct["throughput"] / 1e3
    config = results["context"]["served_config"]
    one_thread = config["parameters"].get("intra_op_thread_count") == "1"
    line += f" At concurrency {C8}, Triton direct kept {cores:.2f} CPU busy in Triton"
    capped = over_triton[C8] is not None and over_triton[C8] >= 1 - NOISE
    if one_thread and config["instances"] == ["1× KIND_CPU"] and capped:
        return line + (
            ", as one model instance running its graph on one thread (`intra_op_thread_count` 1) would: "
            "that thread is the ceiling for served and direct alike, and the gateway's work runs beside "
            f"it on the other CPU, so the gateway costs latency at concurrency {C1} but little throughput "
            f"at {C8}."
        )
    return line + "."


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'beam':>4} {'c':>3} {'path':<20} {'captions/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for beam, paths in results["figures"].items():
        for load in map(str, LOADS):
            for path, points in paths.items():
                point = points[load]
                print(
                    f"{beam:>4} {load:>3} {path:<20} {point['throughput']:>10.1f} {point['p50_ms']:>8.1f} "
                    f"{point['p99_ms']:>8.1f}"
                )
    print(json.dumps(results["ratios"], indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured load before each point")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per point; the median by throughput")
    parser.add_argument("--scenes", type=int, default=8, help="test scenes, cycled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--smoke", action="store_true", help="a short run that checks everything works")
    parser.add_argument(
        "--json", type=Path, default=None, help=f"raw figures (default {DOCS_JSON.relative_to(ROOT)})"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help=f"default {DOCS_MARKDOWN.relative_to(ROOT)} (not with --smoke)",
    )
    parser.add_argument("--from-json", type=Path, help="measure nothing: write the markdown of a saved run")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.warmup, args.repeats, args.scenes = 0.4, 0.2, 1, 4
    else:
        args.json = args.json or DOCS_JSON
        args.markdown = args.markdown or DOCS_MARKDOWN
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        repository = Settings().triton.model_repository / MODEL
        for needed in (repository / "config.pbtxt", args.checkpoint):
            if not needed.is_file():
                print(
                    f"bench_captions: {needed} does not exist (train and export {MODEL} first)",
                    file=sys.stderr,
                )
                return 2
        started = time.perf_counter()
        results = run(args)
        results["wall_s"] = round(time.perf_counter() - started, 1)
        print_table(results)
    markdown = render_markdown(results)
    print("\n" + markdown)
    if args.json and not args.from_json:
        atomic_write_text(args.json, json.dumps(results, indent=1, default=str) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
