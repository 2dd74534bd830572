"""Shared fixtures: the real tritonserver and the real gateway, on free ports.

`triton` and `gateway` are session-scoped and serve the committed default model from
model_repository/. Tests that break things (stop Triton) build their own pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from attnserve._net import free_port
from attnserve.demo import repository_of
from attnserve.server.gateway.backend import RepositoryModel
from attnserve.settings import DEFAULT_MODEL_REPOSITORY, GatewaySettings, Settings, TritonSettings

REPO_ROOT = Path(__file__).resolve().parent.parent

CBAM_OUTPUT_DIMS = {
    "logits": (10,),
    "spatial_stage1": (32, 32),
    "spatial_stage2": (16, 16),
    "spatial_stage3": (8, 8),
    "spatial_product": (32, 32),
    "channel_stage1": (32,),
    "channel_stage2": (64,),
    "channel_stage3": (128,),
    "cam": (10, 8, 8),
}
"""Non-batch output shapes of the cbam architecture, for tests that fake Triton's answers."""


class FakeBackend:
    """An `InferenceBackend` without a server: serves cbam-shaped models from their configs.

    ``infer`` answers with seeded random outputs (or ``answer(name, batch)``), after waiting for
    ``gate`` when one is set; ``ready`` and ``fail_with`` let tests break it.
    """

    def __init__(self, names: tuple[str, ...] = ("cbam",)) -> None:
        from attnserve.export.models import create_model, get_spec, serving_spec
        from attnserve.export.repository import ServingOptions, build_config

        spec = serving_spec(get_spec("cbam"), create_model("cbam")).model_copy(
            update={"primary_attention": "spatial_stage3"}
        )
        self.configs = {name: build_config(name, spec, CBAM_OUTPUT_DIMS, ServingOptions()) for name in names}
        self.ready = True
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None
        self.calls: list[tuple[str, dict[str, tuple[int, ...]], list[str]]] = []

    async def is_ready(self) -> bool:
        return self.ready

    async def repository_index(self) -> list[RepositoryModel]:
        return [RepositoryModel(name, "1", "READY", "") for name in self.configs]

    async def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        return self.configs[name]

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        timeout_s: float,
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        self.calls.append((model, {k: v.shape for k, v in inputs.items()}, outputs))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        batch = len(next(iter(inputs.values())))
        rng = np.random.default_rng(len(self.calls))
        return {name: rng.random((batch, *CBAM_OUTPUT_DIMS[name])).astype(np.float32) for name in outputs}

    async def close(self) -> None:
        return None


def png_turned(image: Image.Image, exif_orientation: int | None = None) -> bytes:
    """``image`` as PNG bytes; with an EXIF orientation, stored turned a quarter with the tag
    saying so (6: shown rotated 90° clockwise), so that the oriented image is ``image``."""
    buffer = io.BytesIO()
    if exif_orientation is None:
        image.save(buffer, format="PNG")
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.transpose(Image.Transpose.ROTATE_90).save(buffer, format="PNG", exif=exif)
    return buffer.getvalue()


def grey_png(width: int = 96, height: int = 64, value: int = 30) -> bytes:
    """A small uniform grey PNG: a valid image when its content does not matter."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), value).save(buffer, format="PNG")
    return buffer.getvalue()


def triton_settings(repository: Path = DEFAULT_MODEL_REPOSITORY, **overrides: object) -> TritonSettings:
    values: dict[str, object] = {
        "http_port": free_port(),
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "model_repository": repository,
        "startup_timeout_s": 180,
    }
    return TritonSettings(**{**values, **overrides})  # type: ignore[arg-type]


class GatewayThread:
    """A real `Gateway` on its own event loop in a background thread."""

    def __init__(self, settings: Settings, backend: FakeBackend | None = None) -> None:
        from attnserve.server.app import Gateway

        self.settings = settings
        self.gateway = Gateway(settings, backend)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.gateway.start())
        except BaseException as exc:  # surfaced to the test thread in start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self) -> GatewayThread:
        self._thread.start()
        self._started.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def call(self, coroutine: object, timeout: float = 30) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"

    def stop(self) -> None:
        self.call(self.gateway.stop(grace_s=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def gateway_settings(triton: TritonSettings, **overrides: object) -> Settings:
    values: dict[str, Any] = {"port": free_port(), "http_port": 0, "metrics_port": free_port()}
    gateway = GatewaySettings(**{**values, "health_interval_s": 0.2, **overrides})
    return Settings(triton=triton, gateway=gateway)


@contextlib.contextmanager
def workers_blas_like_this_process() -> Iterator[None]:
    """Worker processes spawned in the block use as many BLAS threads as this process does.

    Serving commands set ``OPENBLAS_NUM_THREADS=1`` before numpy loads (server/blas.py), and
    render workers inherit it. In a test process numpy loaded first, with its default, and a test
    may have set the variable since: a worker would then sum upsampling's products in another
    order, one level off here and there, and its PNGs would differ from this process's."""
    from threadpoolctl import threadpool_info

    pools = [pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas"]
    threads = max(pools, default=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENBLAS_NUM_THREADS", str(threads))
        yield


def assert_same_answer(a: object, b: object, path: str = "") -> None:
    """Two answers' parts equal, arrays element by element, timings and request IDs aside."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for field in dataclasses.fields(a):
            if field.name not in ("timings", "request_id"):
                assert_same_answer(getattr(a, field.name), getattr(b, field.name), f"{path}.{field.name}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_answer(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)  # type: ignore[arg-type]
    else:
        assert a == b, path


MakeCheckpoint = Callable[..., Any]


@pytest.fixture()
def make_checkpoint() -> MakeCheckpoint:
    """Writes a randomly initialised checkpoint (cbam unless told, with the given metrics)."""
    import torch

    from attnserve.export.checkpoint import Checkpoint, save_checkpoint
    from attnserve.export.models import create_model, get_spec

    def make(path: Path, architecture: str = "cbam", **metrics: object) -> Checkpoint:
        torch.manual_seed(0)
        model = create_model(architecture).eval()
        checkpoint = Checkpoint(architecture, model, get_spec(architecture), metrics=dict(metrics))
        save_checkpoint(path, checkpoint)
        return checkpoint

    return make


@pytest.fixture()
def cbam_repository() -> Iterator[Path]:
    """A model repository of cbam alone (links to the real one): for tests of what does not
    depend on the models served, Triton is ready in ~6 s rather than ~16 s."""
    with repository_of(DEFAULT_MODEL_REPOSITORY, ["cbam"]) as repository:
        yield repository


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonSettings]:
    from attnserve.server.triton import TritonProcess

    settings = triton_settings()
    with TritonProcess(settings):
        yield settings


def held_gateway() -> Iterator[tuple[GatewayThread, FakeBackend]]:
    """A gateway of two slots on a `FakeBackend` that answers only when its gate opens, so that a
    test holds the cap as long as it wants (`HeldCap`) and the gateway refuses the rest with
    its retry hint (a fixture's body)."""
    backend = FakeBackend()
    settings = gateway_settings(triton_settings(), default_model="cbam", http_port=0, max_in_flight=2)
    thread = GatewayThread(settings, backend).start()
    yield thread, backend
    thread.stop()


class HeldCap:
    """Both slots of `held_gateway`'s gateway filled, through ``channel`` (a gRPC channel), by
    calls that ``backend`` holds until `release` or the end of the ``with`` block; meanwhile the
    gateway refuses the rest with its retry hint."""

    def __init__(self, thread: GatewayThread, backend: FakeBackend, channel: Any) -> None:
        from attnserve.v1 import attnserve_pb2 as pb
        from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

        self.thread, self.backend = thread, backend
        self.gate = asyncio.Event()
        backend.gate = self.gate
        stub = pb_grpc.AttentionServiceStub(channel)
        request = pb.PredictRequest(image=grey_png(64, 64))
        self.held = [stub.Predict.future(request, timeout=30) for _ in range(2)]
        self.released = False
        deadline = time.monotonic() + 10
        while thread.gateway.core.metrics.in_flight._value.get() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    def release(self) -> None:
        """Opens the gate: the held calls are answered, the slots free."""
        if not self.released:
            self.released = True
            self.thread.loop.call_soon_threadsafe(self.gate.set)
            assert all(call.result(10).predictions for call in self.held)
            self.backend.gate = None

    def __enter__(self) -> HeldCap:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def serving_gateway(triton: TritonSettings) -> Iterator[GatewayThread]:
    """A real gateway on ``triton``, SERVING, stopped afterwards (a fixture's body)."""
    from attnserve.clients import Client

    thread = GatewayThread(gateway_settings(triton)).start()
    with Client(thread.address) as client:
        client.wait_until_serving(60)
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def gateway(triton: TritonSettings) -> Iterator[GatewayThread]:
    yield from serving_gateway(triton)


@pytest.fixture()
def client(gateway: GatewayThread) -> Iterator[object]:
    from attnserve.clients import Client

    with Client(gateway.address) as c:
        yield c
