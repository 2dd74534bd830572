"""What the gateway needs from an inference server, as a Protocol.

`TritonBackend` (`attnserve.server.gateway.triton`) implements it over Triton's gRPC API; tests
implement it with plain classes to drive the pipeline, the catalog and the fronts without a
server. Errors leave an implementation as `attnserve.errors` types, never as a client
library's exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc


@dataclass(frozen=True)
class RepositoryModel:
    """One entry of the server's model repository index."""

    name: str
    version: str
    state: str
    reason: str

    @property
    def ready(self) -> bool:
        return self.state == "READY"


class InferenceBackend(Protocol):
    """An inference server holding models described by Triton model configs.

    ``ModelConfig`` is Triton's config schema (the same protobuf the exporter writes); it is
    data, not a client: any backend that serves a Triton model repository can produce it.
    """

    async def is_ready(self) -> bool:
        """The server answers and is ready; never raises."""
        ...

    async def repository_index(self) -> list[RepositoryModel]: ...

    async def model_config(self, name: str, version: str = "") -> mc.ModelConfig: ...

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, NDArray[Any]],
        outputs: list[str],
        timeout_s: float,
        request_id: str = "",
    ) -> dict[str, NDArray[np.float32]]:
        """Runs one batch; returns exactly the ``outputs`` asked for, batch axis first."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ModelControl(Protocol):
    """A server that loads and unloads models on request (Triton's explicit model control).

    Loading a model that is loaded reloads it: the one serving keeps serving until the new one
    is ready, and stays if the new one fails to load.
    """

    async def load_model(self, name: str) -> None: ...

    async def unload_model(self, name: str) -> None: ...
