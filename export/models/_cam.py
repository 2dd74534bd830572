"""In-graph class activation maps (Zhou et al., "Learning Deep Features for Discriminative
Localization", CVPR 2016).

For a head made of global average pooling and one linear layer,
``logit_k = sum_yx(sum_c W_kc F_c(y, x) / (h·w)) + b_k``, so ``CAM_k = sum_c W_kc F_c / (h·w)``
is exactly each position's contribution to the class logit, computable in the same forward
pass as a 1×1 convolution. Grad-CAM at the feature map that feeds the pooling has weights
``alpha_kc = W_kc / (h·w)`` for such a head, so it equals ``ReLU(CAM_k)``: the graph gives
Grad-CAM's map without a backward pass, on ONNX or TensorRT.

It does not apply to other heads (attention pooling with learned queries, MLP heads,
multi-scale fusion): there the gradient varies with position and only a real backward pass
gives Grad-CAM.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import AttentionKind, AttentionSpec, Normalization

CAM_OUTPUT = "cam"

CAM_SPEC = AttentionSpec(
    name=CAM_OUTPUT,
    kind=AttentionKind.CLASS_ACTIVATION,
    axes=("class", "y", "x"),
    description=(
        "Class activation map of every class over the last feature map (in-graph CAM: each "
        "position's contribution to the class logit); its positive part equals Grad-CAM at "
        "that layer. The gateway returns the top-1 class's map unless a class is asked."
    ),
    value_range="unbounded; its sum over positions plus the class bias is the class logit",
    normalization=Normalization(method="relu_minmax"),
    block="classifier head (the pooled feature map)",
)


@runtime_checkable
class GapLinearClassifier(Protocol):
    """A classifier whose head is global average pooling followed by one linear layer."""

    global_pool: str
    classifier: nn.Linear

    def forward_features(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The feature map the head pools (B×C×h×w) and the attention maps by name."""
        ...


def pooled_logits(features: Tensor, classifier: nn.Linear) -> Tensor:
    """The GAP + linear head: B×C×h×w features → B×K logits."""
    return classifier(torch.mean(features, dim=(2, 3)))


class GapLinearNet(nn.Module):
    """Base of our classifiers with a GAP + linear head: they define `forward_features` and
    `classifier`; `forward` is the head over the features, with the attention maps beside it."""

    global_pool = "avg"
    classifier: nn.Linear

    def forward_features(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features, attention = self.forward_features(images)
        return {"logits": pooled_logits(features, self.classifier), **attention}


def has_gap_linear_head(model: nn.Module) -> bool:
    return (
        isinstance(model, GapLinearClassifier)
        and model.global_pool == "avg"
        and isinstance(model.classifier, nn.Linear)
    )


def class_activation_maps(features: Tensor, classifier: nn.Linear) -> Tensor:
    """B×C×h×w features → B×K×h×w maps, ``sum_c W_kc F_c / (h·w)`` (no bias, as in CAM).

    Scaled by 1/(h·w) so that each value is that position's contribution to the logit: the map
    sums to the logit minus the bias, and its positive part *equals* Grad-CAM at this layer.
    (Unscaled, values reach the thousands and float32 rounding alone exceeds 1e-4.)
    """
    height, width = features.shape[-2:]
    weight = classifier.weight[:, :, None, None] / (height * width)
    return F.conv2d(features, weight)
