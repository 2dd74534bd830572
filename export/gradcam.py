"""Grad-CAM (Selvaraju et al., ICCV 2017), the offline baseline for our in-graph maps.

A few dozen lines instead of the `grad-cam` package, which pulls torchvision and a CUDA build
of torch (gigabytes) into the environment. Hooks and backward passes live here, for
evaluation only; serving never runs them.

``weights_c = mean_yx d(score_k) / dA_c(y, x)``, ``Grad-CAM_k = ReLU(sum_c weights_c A_c)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import has_gap_linear_head


def _logits(output: Tensor | dict[str, Tensor]) -> Tensor:
    return output["logits"] if isinstance(output, dict) else output


def grad_cam(model: nn.Module, layer: nn.Module, images: Tensor, target: Tensor | None = None) -> Tensor:
    """B×h×w Grad-CAM maps at ``layer``'s output (the first element if it returns a tuple),
    for ``target`` classes (default: the predicted ones)."""
    captured: list[Tensor] = []

    def keep_output(module: nn.Module, inputs: object, output: Tensor | tuple[Tensor, ...]) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = layer.register_forward_hook(keep_output)
    try:
        with torch.enable_grad():
            logits = _logits(model(images))
            activations = captured[-1]
            classes = logits.argmax(dim=1) if target is None else target
            score = logits.gather(1, classes[:, None]).sum()
            (gradients,) = torch.autograd.grad(score, activations)
    finally:
        handle.remove()
    return grad_cam_map(activations, gradients)


def grad_cam_at_pooled_features(model: nn.Module, images: Tensor, target: Tensor | None = None) -> Tensor:
    """Grad-CAM at the feature map a GAP + linear head pools (the in-graph CAM's layer)."""
    if not has_gap_linear_head(model):
        raise TypeError("the model's head is not global average pooling + linear")
    with torch.enable_grad():
        features, _ = model.forward_features(images)  # type: ignore[operator]
        logits = model.classifier(features.mean(dim=(2, 3)))  # type: ignore[operator]
        classes = logits.argmax(dim=1) if target is None else target
        score = logits.gather(1, classes[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, features)
    return grad_cam_map(features, gradients)


def grad_cam_map(activations: Tensor, gradients: Tensor | None) -> Tensor:
    """B×h×w Grad-CAM from a layer's B×C×h×w activations and the score's gradients there;
    zero where the score does not depend on the layer (``gradients`` None)."""
    if gradients is None:
        return torch.zeros(activations.shape[0], *activations.shape[-2:])
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1)).detach()


def mean_correlation(a: Tensor, b: Tensor) -> float:
    """Mean per-image Pearson correlation of two N×h×w map sets (images where either is
    constant are left out: correlation is undefined there)."""
    x = a.reshape(len(a), -1).double()
    y = b.reshape(len(b), -1).double()
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    norms = x.norm(dim=1) * y.norm(dim=1)
    valid = norms > 1e-12
    if not valid.any():
        return float("nan")
    return float(((x * y).sum(dim=1)[valid] / norms[valid]).mean())
