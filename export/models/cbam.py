"""CBAM: a small ResNet with channel and spatial attention after each stage.

Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018: channel attention (a
shared MLP over average- and max-pooled features, sigmoid — squeeze-and-excitation style)
then spatial attention (a 7×7 convolution over the channel mean and max, sigmoid).

One change, measured (`shared/notes/attention-maps.md`): the last stage's sigmoid spatial map
saturates near 1 everywhere and shows nothing. Here the last stage's map is a softmax over
positions, applied to the block's output with the features rescaled by ``h·w`` so a uniform
map is the identity. Global average pooling of those features is then attention pooling: the
map *is* where the classifier takes its evidence from. It is trained on labels only.
"""

from __future__ import annotations

from typing import Literal

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
from ._layers import conv_bn
from ._registry import register_model
from ._training import TrainingRecipe


class ChannelAttention(nn.Module):
    """Per-channel weights in (0, 1) from a shared MLP over avg- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, features: Tensor) -> Tensor:
        pooled_avg = torch.mean(features, dim=(2, 3))
        pooled_max = torch.amax(features, dim=(2, 3))
        return torch.sigmoid(self.mlp(pooled_avg) + self.mlp(pooled_max))


class SpatialAttention(nn.Module):
    """A map over positions from a 7×7 convolution over the channel mean and max.

    ``sigmoid``: a gate in (0, 1) per position (CBAM). ``softmax``: a distribution over
    positions; the gated features are rescaled by h·w so that a uniform map is the identity.
    """

    def __init__(self, normalize: Literal["sigmoid", "softmax"], kernel_size: int = 7) -> None:
        super().__init__()
        self.normalize = normalize
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        descriptor = torch.cat(
            [torch.mean(features, dim=1, keepdim=True), torch.amax(features, dim=1, keepdim=True)],
            dim=1,
        )
        scores = self.conv(descriptor)
        batch, _, height, width = scores.shape
        if self.normalize == "sigmoid":
            attention = torch.sigmoid(scores)
            return features * attention, attention[:, 0]
        attention = torch.softmax(scores.reshape(batch, -1), dim=1).reshape(scores.shape)
        return features * (attention * (height * width)), attention[:, 0]


class CBAMStage(nn.Module):
    """A residual block with CBAM.

    Sigmoid stages gate the residual branch, as in the paper. The softmax stage gates the
    block's output instead, so that what the head pools is exactly what the map selects.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        spatial: Literal["sigmoid", "softmax"],
        reduction: int,
    ) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, stride)
        self.conv2 = conv_bn(out_channels, out_channels, 1)
        self.channel_attention = ChannelAttention(out_channels, reduction)
        self.spatial_attention = SpatialAttention(spatial)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (output features, spatial map B×h×w, channel weights B×C)."""
        branch = self.conv2(F.relu(self.conv1(features), inplace=True))
        channel_weights = self.channel_attention(branch)
        branch = branch * channel_weights[:, :, None, None]
        if self.spatial_attention.normalize == "sigmoid":
            branch, spatial_map = self.spatial_attention(branch)
            return F.relu(branch + self.shortcut(features)), spatial_map, channel_weights
        output = F.relu(branch + self.shortcut(features))
        output, spatial_map = self.spatial_attention(output)
        return output, spatial_map, channel_weights


class CBAMNet(GapLinearNet):
    """Stem (stride 2) → three CBAM stages → global average pooling → linear.

    ``forward`` returns every output by name: ``logits``, ``spatial_stage{i}`` (B×h×w),
    ``channel_stage{i}`` (B×C) and ``spatial_product`` (the product of the stages' spatial
    maps at the first stage's resolution, B×h×w).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (32, 64, 128),
        reduction: int = 8,
        last_spatial: Literal["sigmoid", "softmax"] = "softmax",
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList(
            [
                CBAMStage(widths[0], widths[0], 1, "sigmoid", reduction),
                CBAMStage(widths[0], widths[1], 2, "sigmoid", reduction),
                CBAMStage(widths[1], widths[2], 2, last_spatial, reduction),
            ]
        )
        self.classifier = nn.Linear(widths[2], num_classes)

    @property
    def last_conv(self) -> nn.Module:
        """The last convolution (before stage 3's attention): Grad-CAM's conventional layer."""
        stage = self.stages[-1]
        assert isinstance(stage, CBAMStage)
        return stage.conv2

    def forward_features(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.stem(images)
        attention: dict[str, Tensor] = {}
        spatial_maps = []
        for index, stage in enumerate(self.stages, start=1):
            features, spatial_map, channel_weights = stage(features)
            attention[f"spatial_stage{index}"] = spatial_map
            attention[f"channel_stage{index}"] = channel_weights
            spatial_maps.append(spatial_map)
        attention["spatial_product"] = _product_of_maps(spatial_maps)
        return features, attention


def _product_of_maps(maps: list[Tensor]) -> Tensor:
    """Product of spatial maps, each upsampled (bilinear) to the first map's resolution."""
    size = maps[0].shape[-2:]
    product = maps[0]
    for spatial_map in maps[1:]:
        upsampled = F.interpolate(spatial_map[:, None], size=size, mode="bilinear", align_corners=False)
        product = product * upsampled[:, 0]
    return product


def _stage_specs(widths: tuple[int, int, int]) -> tuple[AttentionSpec, ...]:
    sigmoid = Normalization(method="above_median", range=(0.0, 1.0))
    resolution = {1: "32×32", 2: "16×16", 3: "8×8"}
    specs = []
    for stage in (1, 2):
        specs.append(
            AttentionSpec(
                name=f"spatial_stage{stage}",
                kind=AttentionKind.SPATIAL,
                axes=("y", "x"),
                description=f"CBAM spatial gate of stage {stage} ({resolution[stage]} positions)",
                value_range="(0, 1), sigmoid gate per position",
                normalization=sigmoid,
                block=f"stage{stage}",
            )
        )
    specs.append(
        AttentionSpec(
            name="spatial_stage3",
            kind=AttentionKind.SPATIAL,
            axes=("y", "x"),
            description=(
                "Stage 3 spatial attention, a softmax over its 8×8 positions: the weights with "
                "which the classifier pools its evidence"
            ),
            value_range="[0, 1], sums to 1 over positions",
            normalization=Normalization(method="minmax"),
            block="stage3",
        )
    )
    specs.append(
        AttentionSpec(
            name="spatial_product",
            kind=AttentionKind.SPATIAL,
            axes=("y", "x"),
            description="Product of the three stages' spatial maps, upsampled to 32×32",
            value_range="[0, 1], scale depends on the map sizes",
            normalization=Normalization(method="minmax"),
            block="stages 1-3",
        )
    )
    for stage, width in enumerate(widths, start=1):
        specs.append(
            AttentionSpec(
                name=f"channel_stage{stage}",
                kind=AttentionKind.CHANNEL,
                axes=("channel",),
                description=f"CBAM channel weights of stage {stage} ({width} channels)",
                value_range="(0, 1), sigmoid gate per channel",
                normalization=sigmoid,
                block=f"stage{stage}",
            )
        )
    return tuple(specs)


_DIGITS_PREPROCESS = digit_preprocess((64, 64))


@register_model(
    ModelSpec(
        architecture="cbam",
        description=(
            "CBAM ResNet (3 stages, 32/64/128 channels, ~0.3 M parameters) for 64×64 cluttered "
            "handwritten digits, white ink on black; last-stage spatial attention is a softmax "
            "over positions"
        ),
        preprocess=_DIGITS_PREPROCESS,
        labels=digit_labels(),
        attention=_stage_specs((32, 64, 128)),
        primary_attention="spatial_stage3",
        primary_reason="default before evaluation: the map the classifier pools through",
    ),
    TrainingRecipe(data=(("standard", 0.6), ("mixed", 0.4)), max_seconds=480.0, max_steps=2_400),
)
def cbam(**kwargs: object) -> CBAMNet:
    return CBAMNet(**kwargs)  # type: ignore[arg-type]
