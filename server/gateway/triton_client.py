"""The only place that talks to Triton: `tritonclient.grpc.aio`, binary tensors.

`tritonclient` exceptions are caught here and nowhere else, and leave as domain errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as triton_aio
from numpy.typing import NDArray
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from attnserve.errors import (
    AttnserveError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    Overloaded,
    Unavailable,
    UpstreamError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepositoryModel:
    name: str
    version: str
    state: str
    reason: str

    @property
    def ready(self) -> bool:
        return self.state == "READY"


def _domain_error(exc: InferenceServerException, what: str) -> AttnserveError:
    status = (exc.status() or "").removeprefix("StatusCode.")
    message = f"{what}: {exc.message()}"
    if status == "UNAVAILABLE":
        return Unavailable(f"Triton is unavailable ({message}); retry when the gateway is SERVING")
    if status == "DEADLINE_EXCEEDED":
        return DeadlineExceeded(f"Triton did not answer in time ({message})")
    if status == "RESOURCE_EXHAUSTED":
        return Overloaded(f"Triton is overloaded ({message})")
    if status == "NOT_FOUND" or "unknown model" in message or "not ready" in message.lower():
        return ModelNotReady(f"{message} (the model is not loaded in Triton)")
    if status == "INVALID_ARGUMENT":
        return InvalidInput(message)
    return UpstreamError(f"Triton error {status or '?'}: {message}")


class TritonClient:
    """Async adapter over Triton's gRPC API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = triton_aio.InferenceServerClient(url)

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
            raise _domain_error(exc, "listing Triton's models") from None
        return [RepositoryModel(m.name, m.version, m.state, m.reason) for m in index.models]

    async def model_config(self, name: str, version: str = "", timeout_s: float = 5.0) -> mc.ModelConfig:
        try:
            response = await self._client.get_model_config(name, version, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise _domain_error(exc, f"reading the config of {name!r}") from None
        config: mc.ModelConfig = response.config
        return config

    async def infer(
        self,
        model: str,
        version: str,
        input_name: str,
        batch: NDArray[np.float32],
        outputs: list[str],
        timeout_s: float,
        request_id: str = "",
    ) -> dict[str, NDArray[np.float32]]:
        infer_input = InferInput(input_name, list(batch.shape), "FP32")
        infer_input.set_data_from_numpy(batch)
        requested = [InferRequestedOutput(name) for name in outputs]
        try:
            result = await self._client.infer(
                model,
                [infer_input],
                model_version=version,
                outputs=requested,
                request_id=request_id,
                client_timeout=timeout_s,
            )
        except InferenceServerException as exc:
            raise _domain_error(exc, f"inference on {model!r}") from None
        arrays: dict[str, NDArray[np.float32]] = {}
        for name in outputs:
            array = result.as_numpy(name)
            if array is None:
                raise UpstreamError(f"Triton's answer from {model!r} has no output {name!r}")
            arrays[name] = array
        return arrays
