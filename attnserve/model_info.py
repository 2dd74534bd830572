"""What the gateway knows about a served model: its spec and Triton's description of its tensors."""

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
