"""The only place that talks to Triton: `tritonclient.grpc.aio`, binary tensors.

`tritonclient` exceptions are caught here and nowhere else, and leave as domain errors
(`error_from_triton`). Implements `InferenceBackend`.

Each inference carries the call's remaining time twice: as the gRPC deadline (the gateway stops
waiting, Triton sees the call cancelled, and the backend answers it without computing) and as
Triton's request timeout, which a model config with a queue policy allowing overrides honours.
Ours have none (a queue policy makes Triton 2.51's batcher stall: see
`attnserve.export.repository`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import tritonclient.grpc.aio as triton_aio
from numpy.typing import NDArray
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, InferInput, InferRequestedOutput, KeepAliveOptions
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from attnserve.errors import (
    AttnserveError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    Unavailable,
    UpstreamError,
)

from .backend import RepositoryModel

log = logging.getLogger(__name__)

# Triton answers a request for a model it does not have (or has not loaded) with one of these,
# depending on the endpoint and version, sometimes without a NOT_FOUND status.
_NOT_LOADED_PHRASES = ("unknown model", "not ready", "is not found", "not loaded")


def error_from_triton(exc: InferenceServerException, what: str) -> AttnserveError:
    """A `tritonclient` exception as the domain error a caller can act on."""
    status = (exc.status() or "").removeprefix("StatusCode.")
    message = f"{what}: {exc.message()}"
    if status == "UNAVAILABLE":
        # the details name Triton's internal address: they go to the log, not to the caller
        log.info("Triton is unavailable: %s", message)
        return Unavailable("Triton is unavailable; retry when the gateway is SERVING")
    if status == "DEADLINE_EXCEEDED":
        return DeadlineExceeded(f"Triton did not answer in time ({message})")
    if status == "RESOURCE_EXHAUSTED":
        return Overloaded(f"Triton is overloaded ({message})")
    if status == "NOT_FOUND" or any(phrase in message.lower() for phrase in _NOT_LOADED_PHRASES):
        return ModelNotReady(f"{message} (the model is not loaded in Triton)")
    if status == "INVALID_ARGUMENT":
        return InvalidInput(message)
    return UpstreamError(f"Triton error {status or '?'}: {message}")


def request_timeout_us(timeout_s: float) -> int:
    """Triton's request timeout (integer microseconds, at least 1: 0 would mean "none")."""
    return max(1, int(timeout_s * 1e6))


RECONNECT_BACKOFF_MS = (250, 1000)
"""First and largest wait between reconnection attempts to Triton. gRPC's defaults (1 s, growing
1.6× up to 120 s) kept the gateway NOT_SERVING for up to 5.3 s after a restarted Triton was
ready."""


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's own channel options (message sizes, keepalive) plus a short reconnect
    backoff; given explicitly, they replace tritonclient's, so they are all listed."""
    keepalive = KeepAliveOptions()
    first, largest = RECONNECT_BACKOFF_MS
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", first),
        ("grpc.min_reconnect_backoff_ms", first),
        ("grpc.max_reconnect_backoff_ms", largest),
    ]


class TritonBackend:
    """Async adapter over Triton's gRPC API (`InferenceBackend`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = triton_aio.InferenceServerClient(url, channel_args=channel_args())

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self, timeout_s: float = 2.0) -> bool:
        try:
            return bool(await self._client.is_server_ready(client_timeout=timeout_s))
        except InferenceServerException:
            return False

    async def repository_index(self, timeout_s: float = 5.0) -> list[RepositoryModel]:
        try:
            index = await self._client.get_model_repository_index(client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise error_from_triton(exc, "listing Triton's models") from None
        return [RepositoryModel(m.name, m.version, m.state, m.reason) for m in index.models]

    async def model_config(self, name: str, version: str = "", timeout_s: float = 5.0) -> mc.ModelConfig:
        try:
            response = await self._client.get_model_config(name, version, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise error_from_triton(exc, f"reading the config of {name!r}") from None
        config: mc.ModelConfig = response.config
        return config

    async def load_model(self, name: str, timeout_s: float = 300.0) -> None:
        """Loads ``name`` from the repository, or reloads it (`ModelControl`)."""
        try:
            await self._client.load_model(name, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise error_from_triton(exc, f"loading {name!r}") from None

    async def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        try:
            await self._client.unload_model(name, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise error_from_triton(exc, f"unloading {name!r}") from None

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, NDArray[Any]],
        outputs: list[str],
        timeout_s: float,
        request_id: str = "",
    ) -> dict[str, NDArray[np.float32]]:
        infer_inputs = []
        for name, array in inputs.items():
            infer_input = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            infer_input.set_data_from_numpy(array)
            infer_inputs.append(infer_input)
        requested = [InferRequestedOutput(name) for name in outputs]
        try:
            result = await self._client.infer(
                model,
                infer_inputs,
                model_version=version,
                outputs=requested,
                request_id=request_id,
                timeout=request_timeout_us(timeout_s),
                client_timeout=timeout_s,
            )
        except InferenceServerException as exc:
            raise error_from_triton(exc, f"inference on {model!r}") from None
        arrays: dict[str, NDArray[np.float32]] = {}
        for name in outputs:
            array = result.as_numpy(name)
            if array is None:
                raise UpstreamError(f"Triton's answer from {model!r} has no output {name!r}")
            arrays[name] = array
        return arrays
