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
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1)).detach()


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
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * features).sum(dim=1)).detach()
