"""Peer 1: Grad-CAM in plain PyTorch, one image at a time — what a user would reach for to
explain our model — against a plain forward of the same model on the same input tensor.

Both start from the image's bytes and run the gateway's own preprocessing
(`preprocess_image`, with the gateway's default image limits), so the model sees exactly the
tensor the gateway would send to Triton. Grad-CAM is taken at the model's conventional layer
(`last_conv`) for the predicted class, upsampled to the input and min-max scaled as
`pytorch_grad_cam` does, in one of two ways that give the same map:

- ``hooks`` (the default: what a user writes, and what `pytorch_grad_cam` does): a forward hook
  keeps the layer's output and hooks its gradient, then ``score.backward()`` runs through the
  whole network, parameter gradients included;
- ``autograd``: attnserve's offline baseline `attnserve.export.gradcam.grad_cam` (checked
  against the `grad-cam` package by tools/check_gradcam_package.py: r = 1.0000), which asks
  autograd for the gradient at the layer only: the cheapest Grad-CAM can be.

The forward is the serving graph (logits and every attention map, the in-graph CAM included)
under `torch.inference_mode()`.

    PYTHONPATH=tools .venv/bin/python -m peers gradcam            # docs/samples/digit.png, 1 and 2 threads
    PYTHONPATH=tools .venv/bin/python -m peers gradcam IMAGE --seconds 10 --threads 2
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from attnserve.export.checkpoint import export_spec, load_checkpoint
from attnserve.export.evaluate import mean_correlation
from attnserve.export.gradcam import grad_cam, grad_cam_at_pooled_features
from attnserve.export.models import CAM_OUTPUT, ServingGraph
from attnserve.server.gateway.preprocess import PreparedInput, preprocess_image
from attnserve.settings import GatewaySettings
from attnserve.spec import ModelSpec
from attnserve.transform import ImageLimits, peak_in_original

from ._timing import time_calls

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "checkpoints" / "cbam"
SAMPLE_IMAGE = REPO_ROOT / "docs" / "samples" / "digit.png"

GradCamMethod = Literal["hooks", "autograd"]
METHOD_NOTES: dict[str, str] = {
    "hooks": "hooks + full backward, as pytorch_grad_cam",
    "autograd": "gradient at the layer only, attnserve.export.gradcam",
}


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set for the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class HookedGradCAM:
    """Grad-CAM as `pytorch_grad_cam` computes it: hooks registered once, then per call a full
    ``backward()`` of the class score (every parameter's gradient too, as a user's code does)."""

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        self.model = model
        self.activations: Tensor | None = None
        self.gradients: Tensor | None = None
        self.handle = layer.register_forward_hook(self._keep_output)

    def _keep_output(self, module: nn.Module, inputs: object, output: Tensor) -> None:
        if not output.requires_grad:  # a forward without gradients (inference mode) passes by
            return
        self.activations = output.detach()
        output.register_hook(self._keep_gradient)

    def _keep_gradient(self, gradient: Tensor) -> None:
        self.gradients = gradient.detach()

    def __call__(self, images: Tensor) -> Tensor:
        """B×h×w maps for the predicted classes."""
        self.model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            outputs = self.model(images)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs
            logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum().backward()
        assert self.activations is not None and self.gradients is not None
        weights = self.gradients.mean(dim=(2, 3), keepdim=True)
        return F.relu((weights * self.activations).sum(dim=1))


@dataclass
class TorchPeer:
    """A trained model as a PyTorch user holds it: the module, its serving graph and spec."""

    model: nn.Module
    graph: ServingGraph
    spec: ModelSpec
    limits: ImageLimits
    layer: nn.Module
    layer_name: str
    hooked: HookedGradCAM

    @classmethod
    def load(cls, model_dir: Path = DEFAULT_MODEL_DIR) -> TorchPeer:
        checkpoint = load_checkpoint(Path(model_dir) / "checkpoint.pt")
        model = checkpoint.model.eval()
        layer = getattr(model, "last_conv", None)
        if not isinstance(layer, nn.Module):
            raise TypeError(f"{checkpoint.architecture} has no last_conv: Grad-CAM has no layer to hook")
        layer_name = next(name for name, module in model.named_modules() if module is layer)
        graph = ServingGraph(model, export_spec(checkpoint)).eval()
        hooked = HookedGradCAM(model, layer)
        return cls(model, graph, graph.spec, GatewaySettings().image_limits, layer, layer_name, hooked)

    def prepare(self, image_bytes: bytes) -> tuple[Tensor, PreparedInput]:
        """The gateway's preprocessing: bytes → the 1×C×H×W tensor it would send, and geometry."""
        prepared = preprocess_image(image_bytes, self.spec.preprocess, self.limits)
        return torch.from_numpy(prepared.tensor)[None], prepared

    def predict(self, image_bytes: bytes) -> dict[str, Tensor]:
        """Bytes → every output of the serving graph (logits and attention maps), no gradients."""
        images, _ = self.prepare(image_bytes)
        with torch.inference_mode():
            return self.graph.named_outputs(images)

    def explain(
        self, image_bytes: bytes, method: GradCamMethod = "hooks"
    ) -> tuple[Tensor, Tensor, PreparedInput]:
        """Bytes → Grad-CAM of the predicted class at `layer` (h×w), the same map upsampled to
        the input and min-max scaled (H×W, what a user overlays), and the prepared input."""
        images, prepared = self.prepare(image_bytes)
        cells = self.hooked(images) if method == "hooks" else grad_cam(self.model, self.layer, images)
        upsampled = F.interpolate(
            cells[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
        )
        heatmap = upsampled[0, 0]
        low, high = heatmap.min(), heatmap.max()
        return cells[0], (heatmap - low) / (high - low).clamp_min(1e-12), prepared


def gradcam_bench(
    image_bytes: bytes,
    seconds: float = 5.0,
    threads: int = 1,
    model_dir: Path = DEFAULT_MODEL_DIR,
    method: GradCamMethod = "hooks",
) -> dict[str, Any]:
    """Grad-CAM per image (bytes → gateway preprocessing → forward + backward → heatmap on the
    input) for ``seconds`` on ``threads`` torch threads: throughput, latency quantiles, the map
    (cells at the hooked layer, over the input's field of view), its peak in original pixels
    and its agreement with the model's own maps on the same image."""
    peer = TorchPeer.load(model_dir)
    load = os.getloadavg()[0]  # others' work on the same cores skews every figure
    with torch_threads(threads):
        timing = time_calls(lambda: peer.explain(image_bytes, method), seconds)
        preprocess = time_calls(lambda: peer.prepare(image_bytes), seconds / 5)
        cells, _, prepared = peer.explain(image_bytes, method)
        agreement = map_agreement(peer, image_bytes)
    values = cells.numpy()
    peak_x, peak_y, _ = peak_in_original(values, prepared.geometry)
    return {
        "peer": f"Grad-CAM in PyTorch ({METHOD_NOTES[method]}), batch 1",
        "model": peer.spec.architecture,
        "method": method,
        "layer": peer.layer_name,
        "threads": threads,
        "torch": torch.__version__,
        **timing.figures(),
        "preprocess_p50_ms": preprocess.figures()["p50_ms"],
        "host_load_1m": round(load, 2),
        "class": agreement["class"],
        "map_shape": list(values.shape),
        "map": np.round(values, 6).tolist(),
        "peak_xy": [round(peak_x, 1), round(peak_y, 1)],
        "agreement": agreement,
    }


def torch_predict_bench(
    image_bytes: bytes, seconds: float = 5.0, threads: int = 1, model_dir: Path = DEFAULT_MODEL_DIR
) -> dict[str, Any]:
    """A plain forward per image (bytes → gateway preprocessing → the serving graph: logits and
    every attention map) for ``seconds`` on ``threads`` torch threads."""
    peer = TorchPeer.load(model_dir)
    load = os.getloadavg()[0]  # others' work on the same cores skews every figure
    with torch_threads(threads):
        timing = time_calls(lambda: peer.predict(image_bytes), seconds)
        preprocess = time_calls(lambda: peer.prepare(image_bytes), seconds / 5)
        logits = peer.predict(image_bytes)[peer.spec.logits_name][0]
    probabilities = torch.softmax(logits, dim=0)
    predicted = int(probabilities.argmax())
    return {
        "peer": "PyTorch forward (serving graph: logits + attention maps), batch 1",
        "model": peer.spec.architecture,
        "threads": threads,
        "torch": torch.__version__,
        **timing.figures(),
        "preprocess_p50_ms": preprocess.figures()["p50_ms"],
        "host_load_1m": round(load, 2),
        "class": predicted,
        "probability": round(float(probabilities[predicted]), 6),
        "logits": [round(float(v), 6) for v in logits],
    }


def map_agreement(peer: TorchPeer, image_bytes: bytes) -> dict[str, Any]:
    """Pearson and rank (Spearman) correlation of Grad-CAM at `last_conv` with the model's
    in-graph CAM of the same class and with its primary spatial map, on one image (both 8×8
    over the same field of view for CBAM); and, as a check of the theory in `models._cam`,
    Grad-CAM at the pooled features against ReLU(CAM), which should correlate at 1."""
    images, _ = peer.prepare(image_bytes)
    with torch.inference_mode():
        outputs = peer.graph.named_outputs(images)
    predicted = int(outputs[peer.spec.logits_name][0].argmax())
    gradcam = grad_cam(peer.model, peer.layer, images)[0]  # either method's map (tests: equal)
    references: dict[str, Tensor] = {}
    if CAM_OUTPUT in outputs:
        references[f"{CAM_OUTPUT} (ReLU, class {predicted})"] = torch.relu(outputs[CAM_OUTPUT][0, predicted])
    primary = peer.spec.primary_attention
    if primary in outputs and primary != CAM_OUTPUT and outputs[primary].dim() == 3:
        references[primary] = outputs[primary][0]
    figures: dict[str, Any] = {"class": predicted, "gradcam_layer": peer.layer_name}
    for name, reference in references.items():
        if reference.shape != gradcam.shape:  # compared on the coarser grid
            reference = F.interpolate(
                reference[None, None], size=gradcam.shape, mode="bilinear", align_corners=False
            )[0, 0]
        figures[f"vs {name}"] = _correlations(gradcam, reference)
    if CAM_OUTPUT in outputs:
        pooled = grad_cam_at_pooled_features(peer.model, images)[0]
        figures["pooled-features Grad-CAM vs ReLU(cam)"] = _correlations(
            pooled, torch.relu(outputs[CAM_OUTPUT][0, predicted])
        )
    return figures


def _correlations(a: Tensor, b: Tensor) -> dict[str, float]:
    pearson = mean_correlation(a[None], b[None])
    ranks_a = torch.from_numpy(_average_ranks(a.reshape(-1).numpy()))
    ranks_b = torch.from_numpy(_average_ranks(b.reshape(-1).numpy()))
    spearman = mean_correlation(ranks_a[None], ranks_b[None])
    return {"pearson": round(pearson, 4), "spearman": round(spearman, 4)}


def _average_ranks(values: NDArray[Any]) -> NDArray[np.float64]:
    """Ranks 0..n-1, ties sharing their mean rank (ReLU'd maps have many zeros)."""
    ranks = np.empty(len(values))
    ranks[values.argsort(kind="stable")] = np.arange(len(values))
    _, groups = np.unique(values, return_inverse=True)
    return (np.bincount(groups, ranks) / np.bincount(groups))[groups]
