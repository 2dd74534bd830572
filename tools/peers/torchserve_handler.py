"""TorchServe handler for an attnserve checkpoint: the TorchServe peer of the benchmark suite.

Runs inside TorchServe's Python worker, in .venv-torchserve (tools/peers/torchserve_setup.sh),
never in attnserve's own environment. It is what a TorchServe user would write for our model,
with two things taken from attnserve so the comparison is like for like:

- the image → tensor step is the gateway's own `preprocess_image` with the gateway's default
  limits (TorchServe's `VisionHandler` would use torchvision transforms, a different resize),
  so the logits equal the gateway's on the same bytes;
- the model is the checkpoint's, loaded by `load_checkpoint` (the archive's serialized file).

``/predictions`` answers as TorchServe's `image_classifier` does: the top 5 labels and their
probabilities; with the request header ``x-attnserve-logits: 1`` the logits too (the parity
check). ``/explanations`` is `VisionHandler.get_insights`: Captum's IntegratedGradients with 15
steps, the attributions as nested lists (1×C×H×W per image) — except that the default target
is the predicted class rather than class 0, so the map explains the prediction as ours do
(a request's ``target`` still wins). The handler's section of the model's config may set
``torch_threads`` (intra-op threads per worker).
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import torch
from captum.attr import IntegratedGradients
from torch import Tensor
from ts.torch_handler.base_handler import BaseHandler

from attnserve.export.checkpoint import export_spec, load_checkpoint
from attnserve.server.gateway.preprocess import preprocess_image
from attnserve.settings import GatewaySettings

logger = logging.getLogger(__name__)

LOGITS_HEADER = "x-attnserve-logits"
TOP_K = 5


class AttnserveHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        self.context = context
        self.manifest = context.manifest
        config = getattr(context, "model_yaml_config", None) or {}
        threads = (config.get("handler") or {}).get("torch_threads")
        if threads:
            torch.set_num_threads(int(threads))
        model_dir = Path(context.system_properties["model_dir"])
        checkpoint = load_checkpoint(model_dir / self.manifest["model"]["serializedFile"])
        self.spec = export_spec(checkpoint)
        self.labels = list(self.spec.labels)
        self.model = checkpoint.model.eval()
        self.map_location = "cpu"
        self.device = torch.device("cpu")
        self.limits = GatewaySettings().image_limits
        self.ig = IntegratedGradients(self.logits)
        self.initialized = True
        logger.info("attnserve %s loaded, %d torch threads", self.spec.architecture, torch.get_num_threads())

    def logits(self, images: Tensor) -> Tensor:
        """The model as Captum and TorchServe want it: images → logits (its maps dropped)."""
        return self.model(images)[self.spec.logits_name]

    def inference(self, data: Tensor, *args: object, **kwargs: object) -> Tensor:
        with torch.inference_mode():
            return self.logits(data)

    def preprocess(self, data: list[dict[str, Any]]) -> Tensor:
        tensors = []
        for row in data:
            image = row.get("data") or row.get("body")
            if isinstance(image, str):
                image = base64.b64decode(image)
            if not isinstance(image, (bytes, bytearray)):
                raise ValueError("send the image's encoded bytes as the request body")
            prepared = preprocess_image(bytes(image), self.spec.preprocess, self.limits)
            tensors.append(torch.from_numpy(prepared.tensor))
        return torch.stack(tensors)

    def postprocess(self, data: Tensor) -> list[dict[str, Any]]:
        probabilities = torch.softmax(data, dim=1)
        top = torch.topk(probabilities, min(TOP_K, probabilities.shape[1]), dim=1)
        answers = []
        for index, (values, classes) in enumerate(zip(top.values, top.indices, strict=True)):
            answer: dict[str, Any] = {
                self.labels[int(c)]: float(v) for v, c in zip(values, classes, strict=True)
            }
            if self.context.get_request_header(index, LOGITS_HEADER):
                answer = {"predictions": answer, "logits": data[index].tolist()}
            answers.append(answer)
        return answers

    def explain_handle(self, data_preprocess: Tensor, raw_data: list[dict[str, Any]]) -> list[Any]:
        with torch.inference_mode():
            predicted = self.logits(data_preprocess).argmax(dim=1)
        targets = [_target(row, int(p)) for row, p in zip(raw_data, predicted, strict=True)]
        return self.get_insights(data_preprocess, None, targets)

    def get_insights(self, tensor_data: Tensor, _: object, target: list[int] | int = 0) -> list[Any]:
        attributions: Tensor = self.ig.attribute(tensor_data, target=target, n_steps=15)
        return attributions.tolist()


def _target(row: dict[str, Any], predicted: int) -> int:
    target = row.get("target") if isinstance(row, dict) else None
    if isinstance(target, (bytes, bytearray)):
        target = target.decode()
    return int(target) if target not in (None, "") else predicted
