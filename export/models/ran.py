"""Residual Attention Network (Wang et al., "Residual Attention Network for Image
Classification", CVPR 2017).

Each *attention module* has a trunk branch (residual units) and a soft mask branch: bottom-up
down-sampling to a coarse view of the whole module input, top-down up-sampling back with skip
connections, and a sigmoid — one weight per position and channel, M in (0, 1). The module's
output is (1 + M)·T: the mask can only amplify the trunk's features, never erase them (the
*attention residual learning* that lets such modules stack). The served maps are each mask's
mean over channels; the head is global average pooling + linear, so the graph also carries the
in-graph class activation map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import (
    AttentionKind,
    AttentionSpec,
    ModelSpec,
    Normalization,
)

from ..data import digit_labels, digit_preprocess
from ._cam import GapLinearNet
from ._layers import ResidualBlock, stem
from ._registry import register_model
from ._training import TrainingRecipe


class SoftMaskBranch(nn.Module):
    """``depth`` levels of max-pool + residual unit down, then bilinear ×2 up adding the level's
    features (the skip connection) and a residual unit, then two 1×1 convolutions and a
    sigmoid: M, the same shape as the input."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        self.down = nn.ModuleList([ResidualBlock(channels, channels) for _ in range(depth)])
        self.up = nn.ModuleList([ResidualBlock(channels, channels) for _ in range(depth - 1)])
        self.output = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, features: Tensor) -> Tensor:
        skips = []
        for level, unit in enumerate(self.down):
            features = unit(F.max_pool2d(features, 2))
            if level < len(self.up):
                skips.append(features)
        for unit, skip in zip(self.up, reversed(skips), strict=True):
            features = unit(F.interpolate(features, scale_factor=2.0, mode="bilinear") + skip)
        return self.output(F.interpolate(features, scale_factor=2.0, mode="bilinear"))


class AttentionModule(nn.Module):
    """One trunk unit and the soft mask branch over the same input; (1 + M)·T. (The paper's
    Attention-56 has p = 1 unit before and after and t = 2 trunk units; one trunk unit keeps
    the network inside a 10-minute CPU budget.)"""

    def __init__(self, channels: int, mask_depth: int) -> None:
        super().__init__()
        self.trunk = ResidualBlock(channels, channels)
        self.mask = SoftMaskBranch(channels, mask_depth)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (output features, the soft mask M, B×C×H×W)."""
        mask = self.mask(features)
        return (1.0 + mask) * self.trunk(features), mask


class ResidualAttentionNet(GapLinearNet):
    """Stem (stride 2) → attention module → down → attention module → down → attention module
    → global average pooling → linear. Masks at 32×32, 16×16 and 8×8."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int, int] = (32, 64, 128)
    ) -> None:
        super().__init__()
        self.stem = stem(in_channels, widths[0])
        self.attention_modules = nn.ModuleList(
            [AttentionModule(widths[0], 2), AttentionModule(widths[1], 2), AttentionModule(widths[2], 1)]
        )
        self.downs = nn.ModuleList(
            [ResidualBlock(widths[0], widths[1], stride=2), ResidualBlock(widths[1], widths[2], stride=2)]
        )
        self.classifier = nn.Linear(widths[2], num_classes)

    @property
    def last_conv(self) -> nn.Module:
        """Grad-CAM's conventional layer: the last module's last convolution."""
        module = self.attention_modules[-1]
        assert isinstance(module, AttentionModule)
        return module.trunk.conv2

    def forward_features(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.stem(images)
        attention: dict[str, Tensor] = {}
        for index, module in enumerate(self.attention_modules, start=1):
            features, mask = module(features)
            attention[f"mask_stage{index}"] = torch.mean(mask, dim=1)
            if index <= len(self.downs):
                features = self.downs[index - 1](features)
        return features, attention


_MASK_SPECS = tuple(
    AttentionSpec(
        name=f"mask_stage{stage}",
        kind=AttentionKind.SPATIAL,
        axes=("y", "x"),
        description=(
            f"Soft mask of attention module {stage} ({size}×{size} positions), averaged over its "
            f"{width} channels: the module's output is (1 + M)·trunk"
        ),
        value_range="(0, 1), sigmoid per position and channel, averaged",
        normalization=Normalization(method="above_median", range=(0.0, 1.0)),
        block=f"attention module {stage}",
    )
    for stage, (size, width) in enumerate(((32, 32), (16, 64), (8, 128)), start=1)
)


@register_model(
    ModelSpec(
        architecture="ran",
        description=(
            "Residual Attention Network (3 attention modules, 32/64/128 channels) for 64×64 "
            "cluttered handwritten digits: soft masks from a bottom-up top-down branch, (1 + M)·T"
        ),
        preprocess=digit_preprocess((64, 64)),
        labels=digit_labels(),
        attention=_MASK_SPECS,
        primary_attention="mask_stage3",
        primary_reason="default before evaluation: the last module's mask",
    ),
    TrainingRecipe(data=(("standard", 0.5), ("mixed", 0.5)), max_seconds=480.0, max_steps=2_400),
)
def ran(**kwargs: object) -> ResidualAttentionNet:
    return ResidualAttentionNet(**kwargs)  # type: ignore[arg-type]
