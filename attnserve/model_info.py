"""What the gateway knows about a model: its spec and Triton's description of its tensors, or, for
a model it cannot describe, why it is not ready."""

from __future__ import annotations

from dataclasses import dataclass

from attnserve.spec import ModelSpec


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    """Triton's name: FP32, ..."""
    shape: tuple[int, ...]
    """With -1 for the batch axis when the model batches."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    spec: ModelSpec
    max_batch_size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    ready: bool = True
    reason: str = ""
    """Why the model is not ready (empty when it is): the last description of a model that
    stopped being servable is kept, with ``ready=False`` and this reason."""
    release_error: str = ""
    """Why the last release put in the repository while serving could not be loaded (empty when
    it went into service): this description is then of the release that keeps serving."""

    def output_shape(self, name: str) -> tuple[int, ...]:
        """An output's shape as Triton declares it (batch axis included when the model batches)."""
        for output in self.outputs:
            if output.name == name:
                return output.shape
        raise KeyError(name)

    def item_shape(self, name: str) -> tuple[int, ...]:
        """An output's shape for one image (without the batch axis)."""
        shape = self.output_shape(name)
        return shape[1:] if self.max_batch_size > 0 else shape


@dataclass(frozen=True)
class ModelStatus:
    """A model Triton lists that the gateway cannot describe (it never loaded, or its config
    carries no attnserve spec): what is known of it, and why it is not ready."""

    name: str
    version: str
    reason: str

    @property
    def ready(self) -> bool:
        return False


ListedModel = ModelInfo | ModelStatus
"""One entry of the gateway's model listing."""
