"""Attention to Scale: one FCN shared across input scales, fused by per-pixel attention.

Chen, Yang, Wang, Xu and Yuille, "Attention to Scale: Scale-aware Semantic Image Segmentation",
CVPR 2016. The same fully convolutional network reads the image at several scales (here 1, 0.75
and 0.5, resized in the graph); each scale's score map is brought to one resolution; an attention
model looks at every scale's features at each position and gives a softmax over the scales; the
fused score is ``Σ_s w_s · score_s``. The paper's extra supervision (cross-entropy on each scale's
own score map, added to the fused loss) is `training_loss`. ``fusion="average"`` and ``"max"``
are the paper's baselines on the same network (no attention model): the mean, or the
element-wise maximum, of the scales' scores.

The FCN is small for CPUs: a stride-2 stem, a stride-4 trunk of dilated 3×3 convolutions (a
receptive field of ~60 input pixels at the trunk's end, so a 56 px digit is seen whole only at
the smaller scales, while a 12 px digit keeps its strokes only at the larger), class scores at
stride 4 refined at stride 2 by a skip from the stem (as FCN-8s does). Served logits are at half
the input's resolution (11×64×64 for a 128 px input).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import AttentionKind, AttentionSpec, ModelSpec, Normalization, Task

from ..data import SCENE_LABELS, DigitScenes, scene_preprocess
from ._registry import register_model
from ._training import TrainingRecipe, TrainingStep

if TYPE_CHECKING:
    from ..train_segmentation import SegmentationTargets

Fusion = Literal["attention", "average", "max"]
SCALES = (1.0, 0.75, 0.5)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ScaleFCN(nn.Module):
    """The network every scale shares: ``image -> (trunk features at stride 4, scores at stride 2)``."""

    def __init__(self, classes: int, widths: tuple[int, int, int, int] = (16, 32, 48, 64)) -> None:
        super().__init__()
        stem, narrow, middle, wide = widths
        self.stem = _conv_bn_relu(1, stem, stride=2)
        self.trunk = nn.Sequential(
            _conv_bn_relu(stem, narrow, stride=2),
            _conv_bn_relu(narrow, middle),
            _conv_bn_relu(middle, wide, dilation=2),
            _conv_bn_relu(wide, wide, dilation=4),
        )
        self.feature_channels = wide
        self.classifier = nn.Conv2d(wide, classes, 1)
        self.skip = nn.Conv2d(stem, classes, 1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        early = self.stem(images)
        features = self.trunk(early)
        coarse = self.classifier(features)
        scores = F.interpolate(coarse, size=early.shape[-2:], mode="bilinear", align_corners=False)
        return features, scores + self.skip(early)


class AttentionToScale(nn.Module):
    def __init__(
        self,
        fusion: Fusion = "attention",
        scales: tuple[float, ...] = SCALES,
        classes: int = len(SCENE_LABELS),
        attention_channels: int = 32,
        scale_loss_weight: float = 1.0,
        attention_temperature: float = 10.0,
    ) -> None:
        super().__init__()
        if fusion not in ("attention", "average", "max"):
            raise ValueError(f"unknown fusion {fusion!r}; choose attention, average or max")
        if scales[0] != 1.0 or len(scales) < 2:
            raise ValueError(f"scales {scales} must start at 1.0 and number at least 2")
        self.fusion = fusion
        self.scales = tuple(scales)
        self.scale_loss_weight = scale_loss_weight
        # Adam moves the head's last layer by ~lr a step whatever its gradient: undamped, the
        # softmax saturated on ×1 within ~400 steps (weights exactly 1, 0, 0 on every pixel,
        # though ×0.75 scored large digits better) and, saturated, stopped learning.
        self.attention_temperature = attention_temperature
        self.fcn = ScaleFCN(classes)
        self.attention: nn.Module | None = None
        if fusion == "attention":
            weights_layer = nn.Conv2d(attention_channels, len(scales), 1)
            nn.init.zeros_(weights_layer.weight)  # every scale weighs the same at the start
            nn.init.zeros_(weights_layer.bias)  # type: ignore[arg-type]  # it has one
            # 1×1 convolutions: the trunk's features see ~60 px already, and a 3×3 layer over
            # every scale's features cost a third of a training step (measured: 415 steps in
            # the budget against the baselines' 588)
            self.attention = nn.Sequential(
                nn.Conv2d(self.fcn.feature_channels * len(scales), attention_channels, 1, bias=False),
                nn.BatchNorm2d(attention_channels),
                nn.ReLU(inplace=True),
                weights_layer,
            )

    def per_scale(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Each scale's trunk features and scores, both at scale 1's resolutions (stride 4 and 2)."""
        height, width = int(images.shape[-2]), int(images.shape[-1])
        features, scores = [], []
        for scale in self.scales:
            scaled = images
            if scale != 1.0:
                size = (round(height * scale), round(width * scale))
                scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            scale_features, scale_scores = self.fcn(scaled)
            features.append(scale_features)
            scores.append(scale_scores)
        for index in range(1, len(self.scales)):
            features[index] = _resize(features[index], features[0].shape[-2:])
            scores[index] = _resize(scores[index], scores[0].shape[-2:])
        return features, scores

    def fuse(self, features: list[Tensor], scores: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(fused logits N×C×h×w, scale weights N×S×h×w)."""
        stacked = torch.stack(scores, dim=1)  # N×S×C×h×w
        batch, count, _, height, width = stacked.shape
        if self.attention is not None:
            scores_of_scales = self.attention(torch.cat(features, dim=1)) / self.attention_temperature
            weights = torch.softmax(scores_of_scales, dim=1)
            weights = _resize(weights, (height, width))
            return (stacked * weights.unsqueeze(2)).sum(dim=1), weights
        if self.fusion == "average":
            return stacked.mean(dim=1), torch.full_like(stacked[:, :, 0], 1.0 / count)
        fused = stacked.amax(dim=1)
        # the scale whose score wins, for the class the fused score predicts
        predicted = fused.argmax(dim=1, keepdim=True)  # N×1×h×w
        index = predicted.unsqueeze(1).expand(batch, count, 1, height, width)
        winning = torch.gather(stacked, 2, index)[:, :, 0].argmax(dim=1, keepdim=True)
        steps = torch.arange(count, device=stacked.device).view(1, count, 1, 1)
        return fused, (winning == steps).to(stacked.dtype)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        logits, weights = self.fuse(*self.per_scale(images))
        return {"logits": logits, "scale_weights": weights}

    def training_loss(
        self, images: Tensor, targets: SegmentationTargets, progress: float, step: int
    ) -> TrainingStep:
        """Cross-entropy on the fused scores plus, weighted by `scale_loss_weight`, on each scale's
        own scores (the paper's extra supervision), all upsampled to the targets' pixels."""
        features, scores = self.per_scale(images)
        fused, weights = self.fuse(features, scores)
        semantic = targets.semantic
        fused_loss = F.cross_entropy(_resize(fused, semantic.shape[-2:]), semantic)
        scale_losses = [F.cross_entropy(_resize(s, semantic.shape[-2:]), semantic) for s in scores]
        loss = fused_loss + self.scale_loss_weight * sum(scale_losses, torch.zeros(()))
        logs = {"fused": float(fused_loss.detach())}
        logs.update(
            {
                f"s{scale:g}": float(value.detach())
                for scale, value in zip(self.scales, scale_losses, strict=True)
            }
        )
        return TrainingStep(loss, logs)

    def parity_inputs(self, batch_size: int, seed: int) -> np.ndarray:
        """Validation scenes plus one noise image, normalised as the gateway does."""
        preprocess = scene_preprocess()
        rng = np.random.default_rng(seed)
        inputs = rng.normal(size=(batch_size, 1, *preprocess.input_size)).astype(np.float32)
        scenes = DigitScenes("val", batch_size, canvas_size=preprocess.input_size[0], seed=seed)
        for index in range(batch_size - 1):
            inputs[index, 0] = (scenes[index].image - preprocess.mean[0]) / preprocess.std[0]
        return inputs


def _resize(values: Tensor, size: tuple[int, ...] | torch.Size) -> Tensor:
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    return F.interpolate(values, size=tuple(size), mode="bilinear", align_corners=False)


_SCALE_WORDS = ", ".join(f"{i}: ×{s:g} ({round(128 * s)} px)" for i, s in enumerate(SCALES))


@register_model(
    ModelSpec(
        architecture="attention_to_scale",
        description=(
            "Attention to Scale (Chen et al., CVPR 2016): one small dilated FCN (~0.1 M parameters) "
            "shared by three input scales (×1, ×0.75, ×0.5), fused per pixel by a softmax over the "
            "scales; semantic segmentation of 128×128 scenes of handwritten digits, white ink on "
            "black; logits at half the input's resolution"
        ),
        task=Task.SEMANTIC_SEGMENTATION,
        preprocess=scene_preprocess((128, 128)),
        labels=SCENE_LABELS,
        attention=(
            AttentionSpec(
                name="scale_weights",
                kind=AttentionKind.SPATIAL,
                axes=("scale", "y", "x"),
                description=(
                    "Per pixel, the weight the fused score gives each input scale's score "
                    f"(scale index {_SCALE_WORDS}); small digits should lean on ×1, large ones on ×0.5"
                ),
                value_range=(
                    f"[0, 1], softmax over the scales (index {_SCALE_WORDS}): sums to 1 at each pixel"
                ),
                normalization=Normalization(method="fixed", range=(0.0, 1.0)),
                block="attention model",
            ),
        ),
        primary_attention="scale_weights",
        primary_reason="its only attention output: which input scale each pixel's answer comes from",
    ),
    TrainingRecipe(
        data=(("scenes", 0.75), ("other_sizes", 0.25)),
        selection="scenes",
        train_samples=6_000,
        max_seconds=210.0,
        max_steps=1_500,
        batch_size=16,
        max_lr=4e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        ema_decay=0.99,
    ),
)
def attention_to_scale(**kwargs: object) -> AttentionToScale:
    return AttentionToScale(**kwargs)  # type: ignore[arg-type]
