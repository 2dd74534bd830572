"""How the in-graph CAM of a foreign classifier agrees with Grad-CAM (an offline check).

Two Grad-CAMs by autograd, for the predicted class:

- at the pooled feature map (the CAM's own layer): for a GAP + linear head it *equals*
  ReLU(CAM) by construction (`..models._cam`), so this measures only float rounding and
  confirms the head was read right;
- at the last convolution before the pooling whose output has the pooled map's size (strided
  1×1 projection shortcuts and the attention modules' own convolutions skipped): a genuine comparison at
  Grad-CAM's conventional layer, with the layers between it and the pooling (norm, attention
  gates, the residual sum, the activation) in the way.

Hooks and backward passes live here, for export's report only; serving never runs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..gradcam import grad_cam_map, mean_correlation
from ..models._cam import class_activation_maps
from ._capture import CapturedGraph

_ZERO = 1e-12


@dataclass(frozen=True)
class CamAgreement:
    images: int
    pooled_layer: str
    pooled_max_abs_diff: float
    """max |ReLU(CAM) - Grad-CAM| at the pooled feature map, over images and positions."""
    pooled_correlation: float
    """mean Pearson correlation per image (NaN when every map is flat)."""
    conv_layer: str | None
    conv_correlation: float
    conv_peak_agreement: float
    """share of images whose Grad-CAM peak at the conv layer is the CAM's peak position."""
    conv_flat_images: int
    """images whose Grad-CAM at the conv layer is zero everywhere (no correlation defined)."""

    def lines(self) -> list[str]:
        rows = [
            f"CAM vs Grad-CAM on {self.images} images, predicted class:",
            f"  at the pooled features ({self.pooled_layer}): max |ReLU(CAM) - Grad-CAM| = "
            f"{self.pooled_max_abs_diff:.1e}, correlation {_figure(self.pooled_correlation)} "
            "(equal by construction)",
        ]
        if self.conv_layer is None:
            rows.append("  no convolution before the pooling: no second comparison")
        else:
            flat = f"; Grad-CAM zero on {self.conv_flat_images} images" if self.conv_flat_images else ""
            rows.append(
                f"  at the last convolution ({self.conv_layer}): correlation "
                f"{_figure(self.conv_correlation)}, same peak on {self.conv_peak_agreement:.0%} of "
                f"images{flat}"
            )
        return rows


def _figure(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def cam_agreement(graph: CapturedGraph, images: Tensor) -> CamAgreement:
    """Grad-CAM at the pooled features and at the last convolution vs the graph's CAM."""
    head = graph.head
    if head is None:
        raise ValueError("the graph has no CAM (its head is not GAP + linear)")
    model = graph.model
    paths = {module: path for path, module in model.named_modules()}
    order: list[tuple[str, nn.Module, Tensor]] = []
    pooled: list[Tensor] = []

    def keep_conv(module: nn.Module, inputs: object, output: Tensor) -> None:
        order.append(("conv", module, output))

    def keep_pool_input(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        order.append(("pool", module, inputs[0]))
        pooled.append(inputs[0])

    handles = [head.pool.register_forward_pre_hook(keep_pool_input)]
    attention_paths = tuple(f"{m.site.path}." for m in graph.maps)
    handles += [
        module.register_forward_hook(keep_conv)
        for path, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and not path.startswith(attention_paths)  # a gate's own convs
    ]
    model.eval()
    try:
        with torch.enable_grad():
            inputs = images.detach().clone().requires_grad_(True)  # gradients even if weights are frozen
            logits = model(inputs)
            features = pooled[-1]
            conv = _last_convolution(order, features)
            classes = logits.argmax(dim=1)
            score = logits.gather(1, classes[:, None]).sum()
            wanted = [features] + ([conv[1]] if conv is not None else [])
            gradients = torch.autograd.grad(score, wanted, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    rows = torch.arange(len(classes))
    with torch.no_grad():
        cam = F.relu(class_activation_maps(features, head.classifier)[rows, classes])
        at_pool = grad_cam_map(features, gradients[0])
        pooled_diff = float((cam - at_pool).abs().max())
        pooled_corr = mean_correlation(cam, at_pool)
        if conv is None:
            return CamAgreement(len(images), head.pool_path, pooled_diff, pooled_corr, None, math.nan, 0.0, 0)
        at_conv = grad_cam_map(conv[1], gradients[1])
        if at_conv.shape[-2:] != cam.shape[-2:]:
            at_conv = F.interpolate(at_conv[:, None], size=cam.shape[-2:], mode="bilinear")[:, 0]
        conv_corr, flat = mean_correlation(cam, at_conv), _flat_maps(at_conv)
        same_peak = cam.flatten(1).argmax(1) == at_conv.flatten(1).argmax(1)
        peaks = same_peak & (at_conv.flatten(1).amax(1) > _ZERO)
    return CamAgreement(
        len(images),
        head.pool_path,
        pooled_diff,
        pooled_corr,
        paths[conv[0]],
        conv_corr,
        float(peaks.float().mean()),
        flat,
    )


def _last_convolution(
    order: list[tuple[str, nn.Module, Tensor]], features: Tensor
) -> tuple[nn.Module, Tensor] | None:
    """The last convolution that ran before the pooling with an output the pooled map's size, not
    a strided 1×1 projection shortcut."""
    pool_index = max(i for i, (what, _, _) in enumerate(order) if what == "pool")
    for what, module, output in reversed(order[:pool_index]):
        if what != "conv" or output.dim() != 4 or output.shape[-2:] != features.shape[-2:]:
            continue
        assert isinstance(module, nn.Conv2d)
        if module.kernel_size == (1, 1) and module.stride != (1, 1):
            continue
        if output.requires_grad and output.shape[0] == features.shape[0]:
            return module, output
    return None


def _flat_maps(maps: Tensor) -> int:
    """How many of N×h×w maps are constant (no correlation is defined with them)."""
    centred = maps.flatten(1).double()
    return int(((centred - centred.mean(dim=1, keepdim=True)).norm(dim=1) <= _ZERO).sum())
