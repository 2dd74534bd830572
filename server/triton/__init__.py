"""A local Triton Inference Server from the PyPI wheel, with a Python-based ONNX Runtime backend."""

from .process import TritonProcess, check_port_free, check_shared_memory
from .runtime import TritonRuntime, ensure_runtime

__all__ = [
    "TritonProcess",
    "TritonRuntime",
    "check_port_free",
    "check_shared_memory",
    "ensure_runtime",
]
