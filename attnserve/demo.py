"""`attnserve demo`: the quick start's main job, end to end on real parts.

Starts ``attnserve serve`` (the local Triton from the PyPI wheel and the gateway) on free
ports, waits until the gateway's health is SERVING, predicts a sample image with every served
model (printing exactly what ``attnserve predict`` prints), writes one picture of every model's
primary attention side by side, and stops the server.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from attnserve._net import free_port
from attnserve.errors import SetupError
from attnserve.prediction import Prediction
from attnserve.settings import SAMPLE_IMAGE, Settings
from attnserve.spec import ColorMode, Task


@dataclass
class Served:
    address: str
    """The gateway's gRPC address, HOST:PORT."""
    http_url: str
    """Its HTTP API and web page, http://HOST:PORT."""
    pid: int
    """The `attnserve serve` process (the gateway; Triton is its child)."""
    triton_grpc_port: int
    metrics_url: str | None = None
    """The gateway's Prometheus endpoint, when asked for."""
    exit_code: int | None = None
    """Set once the block has ended and the server stopped."""


@contextlib.contextmanager
def serving(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    gateway_metrics: bool = False,
    quiet: bool = False,
    models: Sequence[str] | None = None,
) -> Iterator[Served]:
    """Runs ``attnserve serve`` on free ports until the block ends, then stops it (SIGINT).

    ``env`` adds to the server's environment (e.g. ``ATTNSERVE_GATEWAY__*`` settings);
    ``gateway_metrics`` serves the gateway's /metrics; ``quiet`` prints nothing; ``models``
    serves only those of the repository (Triton then starts in seconds rather than loading them all).
    """
    if models is not None:
        with repository_of(settings.triton.model_repository, models) as repository:
            triton = settings.triton.model_copy(update={"model_repository": repository})
            subset = settings.model_copy(update={"triton": triton})
            with serving(subset, env=env, gateway_metrics=gateway_metrics, quiet=quiet) as served:
                yield served
        return
    from attnserve.clients import Client

    names = ("http", "grpc", "metrics", "gateway", "page", "gateway_metrics")
    ports = {name: free_port() for name in names}
    if not gateway_metrics:
        ports["gateway_metrics"] = 0
    command = [
        sys.executable, "-m", "attnserve", "serve",
        f"--repository={settings.triton.model_repository}",
        f"--http-port={ports['http']}", f"--grpc-port={ports['grpc']}", f"--metrics-port={ports['metrics']}",
        f"--port={ports['gateway']}", f"--gateway-http-port={ports['page']}",
        f"--gateway-metrics-port={ports['gateway_metrics']}",
    ]  # fmt: skip
    say = (lambda *args, **kwargs: None) if quiet else print
    with tempfile.TemporaryFile() as server_log:
        started = time.monotonic()
        server = subprocess.Popen(
            command,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ATTNSERVE_LOG_LEVEL": "WARNING", **(env or {})},
        )
        served = Served(
            f"127.0.0.1:{ports['gateway']}",
            f"http://127.0.0.1:{ports['page']}",
            server.pid,
            ports["grpc"],
            f"http://127.0.0.1:{ports['gateway_metrics']}/metrics" if gateway_metrics else None,
        )
        say(
            f"starting Triton (gRPC :{ports['grpc']}) and the gateway (gRPC {served.address}, "
            f"HTTP and web page {served.http_url}/) ...",
            flush=True,
        )
        try:
            with Client(served.address) as client:
                while client.health() != "SERVING":
                    if server.poll() is not None:
                        server_log.seek(0)
                        tail = server_log.read().decode(errors="replace").strip().splitlines()[-10:]
                        raise SetupError("`attnserve serve` stopped while starting:\n" + "\n".join(tail))
                    if time.monotonic() - started > settings.triton.startup_timeout_s:
                        raise SetupError("the gateway did not become SERVING in time")
                    time.sleep(0.2)
            say(f"serving after {time.monotonic() - started:.1f} s\n", flush=True)
            yield served
        finally:
            server.send_signal(signal.SIGINT)
            try:
                served.exit_code = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                served.exit_code = server.wait()


@contextlib.contextmanager
def repository_of(repository: Path, models: Sequence[str]) -> Iterator[Path]:
    """A model repository of ``models`` alone: a temporary folder of links to their folders in
    ``repository``, removed when the block ends."""
    missing = [name for name in models if not (repository / name / "config.pbtxt").is_file()]
    if missing or not models:
        there = sorted(d.name for d in repository.iterdir() if (d / "config.pbtxt").is_file())
        raise SetupError(
            f"no model {', '.join(missing) or '(none named)'} in {repository}: it has {', '.join(there)}"
        )
    with tempfile.TemporaryDirectory(prefix="attnserve-models-") as folder:
        for name in models:
            (Path(folder) / name).symlink_to((repository / name).resolve(), target_is_directory=True)
        yield Path(folder)


def add_models_option(parser: argparse.ArgumentParser) -> None:
    """``--models NAME[,NAME…]`` for the tools that run `serving`: what ``models`` it serves."""
    parser.add_argument(
        "--models",
        type=lambda names: [name for name in names.split(",") if name],
        metavar="NAME[,NAME]",
        help="serve only these models of the repository: Triton starts in seconds (default: every "
        "model, as deployed)",
    )


def run_demo(settings: Settings, image: Path | None, overlay: Path) -> int:
    """Predicts ``image`` with every served model (the default first) and writes one picture of
    each model's primary attention, side by side, to ``overlay``."""
    from attnserve.clients import Client
    from attnserve.console import PictureRequest, predict_to_console, write_file

    if image is None:
        raise SetupError("no sample image outside a source checkout: pass --image PATH")
    if not image.is_file():
        raise SetupError(f"sample image {image} does not exist: pass --image PATH")
    shown = Path(os.path.relpath(image)) if image.is_absolute() and Path.cwd() in image.parents else image
    with serving(settings) as served, Client(served.address) as client:
        listing = client.list_models()
        ready = {m.name: m for m in listing.models if m.ready}
        names = sorted(ready, key=lambda n: n != listing.default_model)
        tiles = []
        for index, name in enumerate(names):
            if index:
                print()
            model = ready[name]
            sample = sample_for(model.preprocess.color_mode, shown, image == SAMPLE_IMAGE, model.task)
            prediction = predict_to_console(client, sample, model=name, pictures=PictureRequest(draw=True))
            tiles.extend(overlay_tiles(prediction))
    write_file(overlay, encode_figure(tiles))
    print(f"\nwrote {overlay}: the primary attention of {len(names)} models, side by side")
    print(f"open {overlay} to see where each model looked.")
    command = Path(sys.executable).parent / "attnserve"
    if Path.cwd() in command.parents:
        command = command.relative_to(Path.cwd())
    print(
        f"to try your own images in a browser: {command} serve, "
        f"then open http://127.0.0.1:{settings.gateway.http_port}/"
    )
    return 0


PHOTO_SAMPLE = "photo_digit.png"
"""Beside the sample digit: a digit on a test photograph (chelsea, scan 1497–1796), for colour
models, which read digits on photographs (photo_cbam misreads a white digit on black)."""
SCENE_SAMPLE = "digit_scene.png"
"""Beside the sample digit: a test scene of several digits (scans 1497–1796), for captioners,
whose captions say what is where (a lone digit makes a one-word story)."""


def sample_for(color_mode: str, image: Path, default: bool, task: str = "") -> Path:
    """The image a model (reading ``color_mode``, as its ModelInfo says) is shown: the one asked
    for, except that the default sample gives way to the photograph beside it for a colour model
    and to the scene beside it for a captioner."""
    photo, scene = image.with_name(PHOTO_SAMPLE), image.with_name(SCENE_SAMPLE)
    if default and color_mode == ColorMode.RGB.value and photo.is_file():
        return photo
    if default and task == Task.CAPTIONING.value and scene.is_file():
        return scene
    return image


def answer_caption(prediction: Prediction) -> str:
    """The answer in a few words: the top class, the classes segmented, the instances found, the
    caption."""
    if prediction.caption is not None:
        return f'"{prediction.caption.text}"'
    if prediction.predictions:
        best = prediction.predictions[0]
        return f"{best.label} ({best.score:.2f})"
    if prediction.segmentation is not None:
        found = [a.label for a in prediction.segmentation.areas if a.index != 0]
        return "classes " + (" ".join(found[:4]) or "none")
    return f"{len(prediction.instances)} instances"


def overlay_tiles(prediction: Prediction) -> list[tuple[str, bytes]]:
    """The prediction's drawn answer (segmentation, instances) and attention, captioned with the
    model, its answer and the map."""
    answer = f"{prediction.model}: {answer_caption(prediction)}"
    drawn = [(answer, prediction.task_overlay)] if prediction.task_overlay else []
    if prediction.caption is not None:  # its drawing is the word maps already, a tile a word
        return drawn
    return drawn + [(f"{answer} · {a.name}", a.overlay_png) for a in prediction.attention if a.overlay_png]


def encode_figure(tiles: list[tuple[str, bytes]], caption: int = 22) -> bytes:
    """Captioned PNG tiles in one row, as one PNG."""
    from PIL import Image, ImageDraw

    images = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in tiles]
    width = sum(i.width for i in images) + 4 * (len(images) - 1)
    height = max(i.height for i in images) + caption
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    left = 0
    for (label, _), tile in zip(tiles, images, strict=True):
        figure.paste(tile, (left, caption))
        draw.text((left + 4, 5), label, fill="black")
        left += tile.width + 4
    buffer = io.BytesIO()
    figure.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
