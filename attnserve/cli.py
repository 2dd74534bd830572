"""The `attnserve` command.

    attnserve setup                          provision the local Triton runtime
    attnserve train NAME                     train on cluttered digits (CPU, ≤ 10 min)
    attnserve export NAME --checkpoint P     checkpoint → parity-checked ONNX → model_repository/
    attnserve export --timm NAME [--checkpoint P]   your timm/torchvision model, with its attention
    attnserve retarget MODEL_DIR --format cuda   rewrite an installed model's config for a GPU
    attnserve evaluate NAME --checkpoint P   attention quality vs Grad-CAM and chance
    attnserve triton                         run Triton alone
    attnserve gateway                        run the gateway alone (against --triton-url)
    attnserve serve                          run Triton and the gateway together
    attnserve predict IMAGE                  ask the gateway; --overlay OUT.png, --json
    attnserve models                         list the served models and their attention maps
    attnserve demo                           serve, predict a sample with every model, write overlays, stop

Settings come from ``ATTNSERVE_*`` environment variables (see `attnserve.settings`); flags
override them. A failure prints one line on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnserve.errors import AttnserveError, InvalidInput, SetupError
from attnserve.logs import configure_logging
from attnserve.settings import DEFAULT_GATEWAY_ADDRESS, SAMPLE_IMAGE, Settings

if TYPE_CHECKING:
    from attnserve.clients import Credentials


def _override(settings: Settings, section: str, **values: Any) -> Settings:
    updates = {k: v for k, v in values.items() if v is not None}
    if not updates:
        return settings
    current = getattr(settings, section)
    return settings.model_copy(update={section: current.model_copy(update=updates)})


def _train_extra() -> None:
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise SetupError(
            f"{exc.name} is missing: training and export need `pip install attnserve[train]`"
        ) from None


# --- commands ------------------------------------------------------------------------------


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from attnserve.server.triton import ensure_runtime

    runtime = ensure_runtime(settings.triton)
    print(f"Triton runtime ready: {runtime.tritonserver}")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    _train_extra()
    from attnserve.export.models import get_entry
    from attnserve.export.train import TrainConfig, train

    get_entry(args.architecture)
    overrides = {
        key: value
        for key, value in (
            ("max_seconds", args.seconds),
            ("max_steps", args.steps),
            ("train_samples", args.samples),
        )
        if value is not None
    }
    config = TrainConfig(
        architecture=args.architecture,
        out_dir=args.out or Path("runs") / args.architecture,
        seed=args.seed,
        val_samples=args.eval_samples,
        test_samples=args.eval_samples,
        recipe=overrides,
    )
    result = train(config, progress_bar=not args.quiet)
    for line in result.summary:
        print(line)
    print(f"checkpoint {result.checkpoint_path}\nmetrics    {result.metrics_path}")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    _train_extra()
    from attnserve.export.exporter import export_model
    from attnserve.export.repository import ServingOptions

    sources = [s for s in (args.architecture, args.timm, args.torchvision) if s]
    if len(sources) != 1:
        raise InvalidInput(
            "name one model: an architecture (attnserve export cbam), --timm NAME or --torchvision NAME"
        )
    options = ServingOptions(
        max_batch_size=args.max_batch_size,
        instances=args.instances,
        intra_op_threads=args.threads,
        accelerator=_accelerator(args),
    )
    repository = args.repository or settings.triton.model_repository
    if not args.architecture:
        return _export_foreign(args, repository, options)
    if args.checkpoint is None:
        raise InvalidInput(f"exporting {args.architecture} needs --checkpoint (attnserve train writes one)")
    result = export_model(
        args.architecture,
        args.checkpoint,
        repository,
        name=args.name,
        version=args.version,
        options=options,
        verify_accelerator=not args.no_verify,
    )
    print("\n".join(result.parity.lines()))
    print(f"exported {result.name} version {result.version} to {result.model_dir}")
    return 0


def cmd_retarget(args: argparse.Namespace, settings: Settings) -> int:
    _train_extra()
    from attnserve.export.accelerate import retarget
    from attnserve.export.repository import ACCELERATOR_PARITY_PARAMETER, accelerator_of

    config = retarget(args.model_dir, _accelerator(args), verify=not args.no_verify)
    record = ""
    if ACCELERATOR_PARITY_PARAMETER in config.parameters:
        record = f": {config.parameters[ACCELERATOR_PARITY_PARAMETER].string_value}"
    print(f"{args.model_dir}/config.pbtxt now targets {accelerator_of(config)}{record}")
    return 0


def _accelerator(args: argparse.Namespace) -> Any:
    from attnserve.export.repository import AcceleratorOptions

    return AcceleratorOptions(
        target="cpu" if args.format == "onnx" else args.format,
        precision=args.precision,
        gpu_required=not args.gpu_optional,
        workspace_bytes=args.trt_workspace_mib << 20,
        engine_cache_dir=str(args.trt_engine_cache) if args.trt_engine_cache else None,
        tf32=args.tf32,
    )


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    """Where Triton runs the model (docs/gpu.md); a GPU target is checked on the GPU first."""
    gpu = parser.add_argument_group("GPU target (docs/gpu.md)")
    gpu.add_argument(
        "--format",
        choices=["onnx", "cuda", "tensorrt"],
        default="onnx",
        help="onnx: CPU instances (default); cuda: GPU instances; tensorrt: plus the TensorRT accelerator",
    )
    gpu.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="fp16: tensorrt only")
    gpu.add_argument("--tf32", action="store_true", help="cuda: allow TF32 maths (default: strict fp32)")
    gpu.add_argument(
        "--gpu-optional", action="store_true", help="KIND_AUTO: serve on the CPU where Triton sees no GPU"
    )
    gpu.add_argument("--trt-workspace-mib", type=int, default=1024, help="TensorRT's workspace")
    gpu.add_argument("--trt-engine-cache", type=Path, metavar="DIR", help="keep built TensorRT engines here")
    gpu.add_argument(
        "--no-verify",
        action="store_true",
        help="write a GPU config without running it here against the CPU (recorded as unverified)",
    )


def _export_foreign(args: argparse.Namespace, repository: Path, options: Any) -> int:
    """``--timm NAME`` / ``--torchvision NAME``: a model of theirs with attnserve's export."""
    from attnserve.export.byo import PreprocessOverrides, export_module, read_labels
    from attnserve.export.byo import timm_source as from_timm
    from attnserve.export.byo import torchvision_source as from_torchvision
    from attnserve.spec import Interpolation

    height_width = args.input_size
    if height_width is not None and len(height_width) not in (1, 2):
        raise InvalidInput("--input-size takes SIZE or HEIGHT WIDTH")
    overrides = PreprocessOverrides(
        input_size=None if height_width is None else (height_width[0], height_width[-1]),
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        crop_pct=args.crop_pct,
        interpolation=Interpolation(args.interpolation) if args.interpolation else None,
    )
    labels = read_labels(args.labels) if args.labels else None
    load = from_timm if args.timm else from_torchvision
    name = args.timm or args.torchvision
    source = load(name, checkpoint=args.checkpoint, labels=labels, overrides=overrides)
    result = export_module(
        source.model,
        name=args.name or _repository_name(name),
        preprocess=source.preprocess,
        labels=source.labels,
        repository=repository,
        description=args.description or "",
        version=args.version,
        options=options,
        cam=args.cam,
        primary_attention=args.primary_attention,
        architecture=source.architecture,
        notes=source.notes,
        verify_accelerator=not args.no_verify,
    )
    print("\n".join(result.report_lines()))
    print(f"exported {result.name} version {result.version} to {result.model_dir}")
    return 0


def _repository_name(model_name: str) -> str:
    """timm's ``resnet50.a1_in1k`` → ``resnet50_a1_in1k``: a Triton model name."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in model_name)


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    _train_extra()
    from attnserve.export.evaluate import evaluate_checkpoint
    from attnserve.export.models import get_spec
    from attnserve.spec import Task

    task = get_spec(args.architecture).task
    if task is not Task.CLASSIFICATION:
        raise InvalidInput(
            f"evaluate compares a classifier's maps with Grad-CAM; {args.architecture} is a "
            f"{task.value} model, whose test figures `attnserve train` writes into its metrics.json"
        )
    report = evaluate_checkpoint(
        args.checkpoint, args.architecture, samples=args.samples, write=not args.no_write
    )
    print(report.table())
    if report.written_to is not None:
        print(f"figures written into {report.written_to}")
    return 0


def cmd_triton(args: argparse.Namespace, settings: Settings) -> int:
    from attnserve.server.serve import run_triton

    run_triton(settings)
    return 0


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from attnserve.server.blas import single_threaded_blas

    single_threaded_blas()
    from attnserve.server.serve import run_gateway

    run_gateway(settings)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from attnserve.server.blas import single_threaded_blas

    single_threaded_blas()
    from attnserve.server.serve import run_serve

    run_serve(settings)
    return 0


def _credentials(args: argparse.Namespace) -> Credentials:
    from attnserve.clients import Credentials

    return Credentials(args.api_key, args.tls_ca, args.tls_cert, args.tls_key)


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from attnserve.clients import connect
    from attnserve.console import PictureRequest, encoding_for, predict_to_console

    with connect(args.server, args.timeout, _credentials(args)) as client:
        predict_to_console(
            client,
            args.image,
            model=args.model,
            top_k=args.top_k,
            target_class=args.target_class,
            pictures=PictureRequest(args.map, args.overlay, args.heatmap, map_overlay=args.map_overlay),
            as_json=args.json,
            image_encoding=args.image_encoding or encoding_for(args.overlay, args.heatmap, args.map_overlay),
            model_options=_model_options(args.option),
        )
    return 0


def _model_options(pairs: Sequence[str]) -> dict[str, int]:
    """``NAME=VALUE`` flags → options; a malformed one is `InvalidInput` (exit 2)."""
    options: dict[str, int] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            options[name.strip()] = int(value)
        except ValueError:
            raise InvalidInput(f"--option wants NAME=INTEGER (e.g. beam_size=1), got {pair!r}") from None
    return options


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from attnserve.clients import connect
    from attnserve.console import models_to_console

    with connect(args.server, args.timeout, _credentials(args)) as client:
        models_to_console(client, as_json=args.json)
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import json
    import logging

    from attnserve._io import atomic_open, atomic_write_text
    from attnserve.bench import Bound, LoadPlan, make_target, plot_png, sweep, table, to_json
    from attnserve.clients._common import build_request

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    try:
        bound = Bound.of(args.duration, args.requests)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if args.rate:
        plan = LoadPlan(bound, rates=tuple(args.rate), warmup_s=args.warmup, poisson=args.poisson)
    else:
        plan = LoadPlan(bound, concurrency=tuple(args.concurrency or (1, 4, 16)), warmup_s=args.warmup)
    request = build_request(
        args.image,
        model=args.model,
        maps=args.maps,
        forms=args.forms,
        omit_attention=args.omit_attention,
        render_max_side=args.render_max_side,
        image_encoding=args.image_encoding,
        image_quality=args.image_quality,
        map_dtype=args.map_dtype,
    )

    async def run() -> list[Any]:
        target = make_target(
            args.server,
            request,
            credentials=_credentials(args),
            connections=plan.grpc_connections if args.connections is None else args.connections,
            timeout_s=args.timeout,
        )
        try:
            return await sweep(target, plan, progress=sys.stderr)
        finally:
            await target.close()

    summaries = asyncio.run(run())
    what = (
        "predictions only"
        if args.omit_attention
        else f"maps {', '.join(args.maps) or 'all'} as {', '.join(args.forms)}"
    )
    model = args.model or "default model"
    title = f"{args.server} · {args.image.name} ({len(request.image):,} B) · {model} · {what}"
    document = to_json({"gateway": summaries}, server=args.server, image=str(args.image), request=title)
    if args.out:
        atomic_write_text(args.out, json.dumps(document, indent=2) + "\n")
    if args.plot:
        with atomic_open(args.plot) as handle:
            handle.write(plot_png({"gateway": summaries}, title=title, x_label=plan.x_label))
    print(json.dumps(document, indent=2) if args.json else table(summaries, title=title))
    return 0 if all(s.ok for s in summaries) else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from attnserve.demo import run_demo

    return run_demo(settings, args.image, args.overlay)


# --- parser --------------------------------------------------------------------------------


def _add_triton_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Triton")
    group.add_argument("--repository", type=Path, help="model repository (default: model_repository/)")
    group.add_argument("--http-port", type=int, help="Triton HTTP port (default 8000)")
    group.add_argument("--grpc-port", type=int, help="Triton gRPC port (default 8001)")
    group.add_argument("--metrics-port", type=int, help="Triton metrics port (default 8002)")
    group.add_argument(
        "--watch-repository",
        action="store_true",
        default=None,
        help="serve: load models added to the repository, reload changed ones and unload removed "
        "ones while serving (Triton's model control on loopback)",
    )


def _add_gateway_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway")
    group.add_argument("--host", help="gateway address to bind (default 127.0.0.1)")
    group.add_argument("--port", type=int, help="gateway gRPC port (default 8500)")
    group.add_argument(
        "--gateway-http-port", type=int, help="gateway HTTP/JSON API and web page port (default 8501)"
    )
    group.add_argument(
        "--no-http", dest="http", action="store_false", default=None, help="no HTTP API and web page"
    )
    group.add_argument(
        "--gateway-metrics-port", type=int, help="gateway Prometheus port (default 8502; 0: off)"
    )
    group.add_argument("--default-model", help="model used when a request names none")
    group.add_argument(
        "--tls-cert-file", type=Path, help="PEM certificate chain: serve gRPC and HTTP over TLS"
    )
    group.add_argument("--tls-key-file", type=Path, help="PEM private key of --tls-cert-file")
    group.add_argument("--tls-client-ca-file", type=Path, help="PEM CA: require client certificates (mTLS)")
    group.add_argument("--api-keys-file", type=Path, help="file of API keys, one per line: require one")


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=DEFAULT_GATEWAY_ADDRESS,
        help=f"gateway: HOST:PORT for gRPC (default {DEFAULT_GATEWAY_ADDRESS}) or http://HOST:PORT",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument(
        "--api-key", default=os.environ.get("ATTNSERVE_API_KEY"), help="API key (default: $ATTNSERVE_API_KEY)"
    )
    parser.add_argument("--tls-ca", type=Path, help="PEM CA of the gateway's certificate (gRPC: use TLS)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="the client certificate's private key (PEM)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnserve", description="Serve attention models with their attention maps."
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace, Settings], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("setup", cmd_setup, "provision the local Triton runtime (binary, backend environment)")

    sub = command("train", cmd_train, "train an architecture on cluttered digits")
    sub.add_argument("architecture")
    sub.add_argument("--out", type=Path, help="output folder (default runs/ARCH)")
    sub.add_argument("--seconds", type=float, help="wall-clock budget for the optimisation steps")
    sub.add_argument("--steps", type=int, help="maximum number of steps")
    sub.add_argument("--samples", type=int, help="training canvases to generate")
    sub.add_argument(
        "--eval-samples", type=int, default=1000, help="validation and test images per data variant"
    )
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--quiet", action="store_true", help="no progress bar")

    sub = command("export", cmd_export, "export a checkpoint into a Triton model repository")
    sub.add_argument("architecture", nargs="?", help="a registered architecture (or --timm/--torchvision)")
    sub.add_argument(
        "--checkpoint",
        type=Path,
        help="an attnserve checkpoint; with --timm/--torchvision a state_dict (.pth/.pt/.safetensors)",
    )
    sub.add_argument("--repository", type=Path, help="model repository (default: model_repository/)")
    sub.add_argument("--name", help="model name in the repository (default: the architecture)")
    own = sub.add_argument_group(
        "your own model (docs/byo.md)",
        "a timm or torchvision classifier, its attention modules' maps and the in-graph CAM as outputs; "
        "preprocessing and labels from its pretrained configuration unless given",
    )
    chosen = own.add_mutually_exclusive_group()
    chosen.add_argument("--timm", metavar="NAME", help="a timm model name, e.g. seresnet50")
    chosen.add_argument(
        "--torchvision", metavar="NAME", help="a torchvision classification model, e.g. resnet50"
    )
    own.add_argument("--labels", type=Path, help="class names, one per line (sets the number of classes)")
    own.add_argument("--input-size", type=int, nargs="+", metavar="N", help="SIZE or HEIGHT WIDTH")
    own.add_argument("--mean", type=float, nargs=3, help="per channel, on pixels scaled to [0, 1]")
    own.add_argument("--std", type=float, nargs=3)
    own.add_argument("--crop-pct", type=float, help="centre crop: shorter side to input/crop_pct, then crop")
    own.add_argument("--interpolation", choices=["bilinear", "bicubic"])
    own.add_argument("--description", help="what the model is, in words")
    own.add_argument(
        "--cam",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require the in-graph CAM (refused unless the head is GAP + linear) / leave it out "
        "(default: added where it applies)",
    )
    own.add_argument("--primary-attention", metavar="OUTPUT", help="the map an overlay shows by default")
    sub.add_argument("--version", type=int, default=1)
    sub.add_argument("--max-batch-size", type=int, default=64)
    sub.add_argument("--instances", type=int, default=1, help="Triton instances (CPU)")
    sub.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per instance")
    _add_target_flags(sub)

    sub = command("retarget", cmd_retarget, "rewrite an installed model's config for a CPU or GPU target")
    sub.add_argument("model_dir", type=Path, help="e.g. model_repository/cbam")
    _add_target_flags(sub)

    sub = command(
        "evaluate",
        cmd_evaluate,
        "measure attention-map quality on the test split, against Grad-CAM",
    )
    sub.add_argument("architecture")
    sub.add_argument("--checkpoint", type=Path, required=True)
    sub.add_argument(
        "--samples", type=int, default=1000, help="test images per data variant (scans 1497-1796)"
    )
    sub.add_argument(
        "--no-write",
        action="store_true",
        help="do not write the figures into the checkpoint folder",
    )

    sub = command("triton", cmd_triton, "run the local Triton Inference Server in the foreground")
    _add_triton_flags(sub)

    sub = command("gateway", cmd_gateway, "run the gateway alone, against a running Triton")
    _add_gateway_flags(sub)
    sub.add_argument("--triton-url", help="Triton gRPC address (default 127.0.0.1:8001)")

    sub = command("serve", cmd_serve, "run Triton and the gateway together in the foreground")
    _add_triton_flags(sub)
    _add_gateway_flags(sub)

    sub = command("predict", cmd_predict, "predict an image, with its attention maps")
    sub.add_argument("image", type=Path)
    sub.add_argument("--model", help="model name (default: the gateway's default)")
    sub.add_argument("--top-k", type=int)
    sub.add_argument("--target-class", type=int, help="class to explain in class activation maps")
    sub.add_argument(
        "--overlay",
        type=Path,
        help="write the answer drawn on the image here (.png, .jpg, .webp): a classifier's attention "
        "overlay; a segmentation's classes, the instances' masks and boxes, or a caption's tiles (one "
        "per word, with where it looked)",
    )
    sub.add_argument(
        "--map-overlay", type=Path, help="write the attention map's overlay here (segmentation and instances)"
    )
    sub.add_argument("--heatmap", type=Path, help="write the attention heatmap here (.png, .jpg, .webp)")
    sub.add_argument(
        "--image-encoding",
        choices=["png", "jpeg", "webp"],
        help="encoding of the overlay and heatmap (default: from the file name's suffix, else png)",
    )
    sub.add_argument("--map", default="primary", help="map to draw (default: the model's primary map)")
    sub.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a model's own option (`attnserve models` lists them), e.g. beam_size=1; repeatable",
    )
    _add_client_flags(sub)

    sub = command(
        "bench", cmd_bench, "load-test a running gateway: answers/s and latency percentiles per load"
    )
    sub.add_argument("image", type=Path, nargs="?", default=SAMPLE_IMAGE, help="default: the sample digit")
    sub.add_argument("--model", help="model name (default: the gateway's default)")
    sub.add_argument("--maps", nargs="*", default=[], help="maps by name or 'primary' (default: all)")
    sub.add_argument(
        "--forms", nargs="+", default=["raw"], help="raw, upsampled, heatmap_png, overlay_png (default raw)"
    )
    sub.add_argument("--omit-attention", action="store_true", help="predictions only")
    sub.add_argument(
        "--render-max-side", type=int, default=0, help="image forms' longest side (0: the gateway's)"
    )
    sub.add_argument(
        "--image-encoding",
        choices=["png", "jpeg", "webp"],
        default="png",
        help="of the image forms (default png)",
    )
    sub.add_argument("--image-quality", type=int, help="JPEG/WebP quality 1-100 (default 85 / 80)")
    sub.add_argument(
        "--map-dtype", choices=["float32", "float16", "uint8"], default="float32", help="of the tensor forms"
    )
    load = sub.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency", type=int, nargs="+", help="closed loop at each of these (default 1 4 16)"
    )
    load.add_argument("--rate", type=float, nargs="+", help="open loop at each of these requests/s")
    sub.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals (default: even)")
    sub.add_argument("--duration", type=float, help="seconds per load (default 10, unless --requests)")
    sub.add_argument("--requests", type=int, help="requests per load")
    sub.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each load")
    sub.add_argument(
        "--connections",
        type=int,
        help="gRPC connections (default: one per 96 calls in flight; HTTP: a pool of ≥ 64)",
    )
    sub.add_argument("--out", type=Path, help="write the figures here as JSON")
    sub.add_argument("--plot", type=Path, help="write latency percentiles vs load here as a PNG")
    _add_client_flags(sub)

    sub = command("models", cmd_models, "list the served models and their attention outputs")
    _add_client_flags(sub)

    sub = command(
        "demo",
        cmd_demo,
        "serve every model, predict a sample with each, write their overlays side by side, stop",
    )
    sub.add_argument(
        "--image", type=Path, default=SAMPLE_IMAGE, help="image to predict (default: the sample digit)"
    )
    sub.add_argument("--overlay", type=Path, default=Path("overlay.png"))
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level})
    settings = _override(
        settings,
        "triton",
        model_repository=getattr(args, "repository", None) if args.command in ("triton", "serve") else None,
        http_port=getattr(args, "http_port", None),
        grpc_port=getattr(args, "grpc_port", None),
        metrics_port=getattr(args, "metrics_port", None),
        url=getattr(args, "triton_url", None),
        watch_repository=getattr(args, "watch_repository", None),
    )
    return _override(
        settings,
        "gateway",
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        http_port=getattr(args, "gateway_http_port", None),
        http=getattr(args, "http", None),
        metrics_port=getattr(args, "gateway_metrics_port", None),
        default_model=getattr(args, "default_model", None),
        tls_cert_file=getattr(args, "tls_cert_file", None),
        tls_key_file=getattr(args, "tls_key_file", None),
        tls_client_ca_file=getattr(args, "tls_client_ca_file", None),
        api_keys_file=getattr(args, "api_keys_file", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        print(f"attnserve: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, sys.stderr)
    try:
        code: int = args.handler(args, settings)
        return code
    except AttnserveError as exc:
        message = str(exc).strip()
        print(f"attnserve {args.command}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
