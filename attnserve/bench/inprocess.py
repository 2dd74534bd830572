"""The limit a served request is compared with: the gateway's own pipeline, in this process, on
onnxruntime directly — no Triton, no gRPC, no HTTP.

`OnnxRuntimeBackend` implements `InferenceBackend` over a Triton model repository (the same
``config.pbtxt`` and ``model.onnx`` Triton loads, the same session options as our Triton backend),
so `GatewayCore` discovers and serves its models exactly as it does Triton's. Sessions run on a
thread pool (onnxruntime releases the GIL), one request at a time each, without batching.
Benchmarks only: the product serves through Triton.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.errors import ModelNotReady
from attnserve.server.gateway.backend import RepositoryModel
from attnserve.server.gateway.catalog import model_info_from_config
from attnserve.spec import ModelSpec


def _parameter(config: mc.ModelConfig, key: str, default: str) -> str:
    parameter = config.parameters.get(key)
    return parameter.string_value if parameter is not None and parameter.string_value else default


class OnnxRuntimeBackend:
    """Every model of a Triton model repository (highest version), on onnxruntime's CPU provider."""

    def __init__(self, repository: Path, threads: int = 2) -> None:
        import onnxruntime as ort

        self._configs: dict[str, mc.ModelConfig] = {}
        self._sessions: dict[str, Any] = {}
        self._versions: dict[str, str] = {}
        for config_path in sorted(repository.glob("*/config.pbtxt")):
            config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
            versions = sorted(
                (int(p.name) for p in config_path.parent.iterdir() if p.name.isdigit()), reverse=True
            )
            if not versions:
                continue
            name = config.name or config_path.parent.name
            options = ort.SessionOptions()
            options.intra_op_num_threads = int(_parameter(config, "intra_op_thread_count", "0"))
            options.inter_op_num_threads = int(_parameter(config, "inter_op_thread_count", "0"))
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            model_file = config.default_model_filename or "model.onnx"
            path = config_path.parent / str(versions[0]) / model_file
            self._sessions[name] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            self._configs[name] = config
            self._versions[name] = str(versions[0])
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="onnxruntime")

    async def is_ready(self) -> bool:
        return True

    async def repository_index(self) -> list[RepositoryModel]:
        return [RepositoryModel(name, self._versions[name], "READY", "") for name in self._configs]

    def config(self, name: str) -> mc.ModelConfig:
        try:
            return self._configs[name]
        except KeyError:
            raise ModelNotReady(f"no model {name!r} in the repository") from None

    def spec(self, name: str) -> ModelSpec:
        """The model's attnserve spec, read from its config as the gateway's catalog reads it."""
        return model_info_from_config(self.config(name), self._versions[name]).spec

    def session(self, name: str) -> Any:
        """The model's onnxruntime session."""
        self.config(name)
        return self._sessions[name]

    async def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        return self.config(name)

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, NDArray[np.float32]],
        outputs: list[str],
        timeout_s: float,
        request_id: str = "",
    ) -> dict[str, NDArray[np.float32]]:
        session = self._sessions[model]
        loop = asyncio.get_running_loop()
        values = await loop.run_in_executor(self._executor, session.run, outputs, dict(inputs))
        return dict(zip(outputs, values, strict=True))

    async def close(self) -> None:
        self._executor.shutdown(wait=False)


class HandLoop:
    """The floor under everything: a minimal hand-written loop for one model — Pillow decode
    (JPEG draft), letterbox to the input size, normalise, onnxruntime, top-5 and each spatial
    map's peak — with no validation, no geometry, no answer object. What a request costs when
    nothing but the work is done."""

    def __init__(self, backend: OnnxRuntimeBackend, model: str, threads: int = 2) -> None:
        self.spec = backend.spec(model)
        self.session = backend.session(model)
        self.outputs = [o.name for o in backend.config(model).output]
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="hand-loop")

    def __call__(self, data: bytes, maps: bool) -> tuple[list[int], list[tuple[int, int]]]:
        import io

        from PIL import Image

        preprocess = self.spec.preprocess
        height, width = preprocess.input_size
        mode = "L" if preprocess.channels == 1 else "RGB"
        encoded = Image.open(io.BytesIO(data))
        encoded.draft(mode, (width, height))
        image = encoded.convert(mode)
        scale = min(width / image.width, height / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        canvas = Image.new(mode, (width, height), int(preprocess.pad_value * 255))
        canvas.paste(
            image.resize(size, Image.Resampling.BILINEAR), ((width - size[0]) // 2, (height - size[1]) // 2)
        )
        pixels = np.asarray(canvas, dtype=np.float32) / 255.0
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        mean = np.asarray(preprocess.mean, np.float32)[:, None, None]
        std = np.asarray(preprocess.std, np.float32)[:, None, None]
        tensor = ((pixels - mean) / std)[None]
        wanted = self.outputs if maps else [self.spec.logits_name]
        values = dict(zip(wanted, self.session.run(wanted, {self.spec.input_name: tensor}), strict=True))
        logits = values[self.spec.logits_name][0]
        top = [int(i) for i in np.argsort(-logits)[:5]]
        peaks = [
            divmod(int(np.argmax(value[0])), value.shape[-1])
            for name, value in values.items()
            if name != self.spec.logits_name and value.ndim == 3
        ]
        return top, peaks

    async def run(self, data: bytes, maps: bool) -> tuple[list[int], list[tuple[int, int]]]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self, data, maps)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
