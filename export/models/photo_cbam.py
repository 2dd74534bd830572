"""A CBAM ResNet for RGB photographs, written as a user of attnserve would write one.

Nothing here knows attnserve: ``forward(images) -> logits``, attention modules shaped like timm's
``CbamModule`` (``channel`` and ``spatial`` submodules, each ending in a ``gate`` module whose
output multiplies the features), a head of global average pooling and ``nn.Linear``. The
attention maps reach the serving graph through the bring-your-own export path, which taps the
gates' outputs (`attnserve.export.byo`); this file is not in the architecture registry.

The layout is timm's ResNet at a small width: a stem of two stride-2 convolutions (÷4; a third
of the cost of timm's 7×7 convolution and max pool on two CPU cores), three
stages of one basic block each (32/64/128 channels; CBAM on the residual branch before the
shortcut is added, as timm places ``attn_layer``; every stride-2 step keeps its grid centred on
its input's, `downsampling_conv`, so maps land where the net looked), then one more CBAM over the last stage's
output whose spatial gate is a softmax over positions (times h·w, so a uniform map is the
identity): the head's average pooling is then attention pooling, and the map is where the
classifier takes its evidence from (`shared/notes/attention-maps.md`: CBAM's last sigmoid gate
saturates and shows nothing). It is trained on labels only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PHOTO_LABELS = tuple(str(digit) for digit in range(10))


class SpatialSoftmax(nn.Module):
    """A gate over positions: softmax over h×w, times h·w (mean 1: uniform is the identity)."""

    def forward(self, scores: Tensor) -> Tensor:
        batch, channels, height, width = scores.shape
        weights = torch.softmax(scores.reshape(batch, channels, height * width), dim=-1)
        return weights.reshape(scores.shape) * (height * width)


class ChannelAttn(nn.Module):
    """timm's ``ChannelAttn``: a shared 1×1-conv MLP over average- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        x_avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        x_max = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * self.gate(x_avg + x_max)


class SpatialAttn(nn.Module):
    """timm's ``SpatialAttn``: a 7×7 conv (+ BN) over the channel mean and max, then the gate."""

    def __init__(self, gate: nn.Module, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        x_attn = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.gate(self.bn(self.conv(x_attn)))


class CbamModule(nn.Module):
    """Channel attention, then spatial attention with a sigmoid gate (Woo et al., ECCV 2018)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.channel = ChannelAttn(channels, reduction)
        self.spatial = SpatialAttn(nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))


class CbamPool(CbamModule):
    """CBAM whose spatial gate is a softmax over positions: placed before the head's pooling."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__(channels, reduction)
        self.spatial = SpatialAttn(SpatialSoftmax())


def downsampling_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A stride-2 convolution whose output grid is centred on its input's: a 4×4 kernel, padding
    1 (output j sees inputs 2j-1 … 2j+2, centred at 2j + 1 in pixel-edge coordinates, where
    ``align_corners=False`` upsampling puts it). A 3×3 stride-2 kernel is centred half an input
    pixel up and left of that; over four of them (stride 16) the maps drew 7.5 px down and right
    of what the net looked at, and the last map's peak missed the digit's box."""
    return nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)


class BasicBlock(nn.Module):
    """timm's ``BasicBlock`` with ``attn_layer``: conv-bn-relu, conv-bn, attention, + shortcut.

    Downsampling blocks use an aligned 4×4 stride-2 convolution, and average pooling before the
    shortcut's 1×1 convolution (timm's ``avg_down``), so every grid stays centred."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, reduction: int) -> None:
        super().__init__()
        if stride == 1:
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        else:
            self.conv1 = downsampling_conv(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attn = CbamModule(out_channels, reduction)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.attn(self.bn2(self.conv2(x)))
        return self.act2(x + shortcut)


class PhotoCbamNet(nn.Module):
    """Stem (÷4) → three CBAM basic blocks (÷1, ÷2, ÷2) → softmax-gated CBAM → GAP → linear.

    At 96 px the stages see 24², 12² and 6² positions; the last map's cells are 16 px.
    """

    def __init__(
        self, num_classes: int = 10, widths: tuple[int, int, int] = (32, 64, 128), reduction: int = 8
    ) -> None:
        super().__init__()
        stem_width = widths[0] // 2
        self.conv1 = nn.Sequential(
            downsampling_conv(3, stem_width),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            downsampling_conv(stem_width, widths[0]),
        )
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(widths[0], widths[0], 1, reduction)
        self.layer2 = BasicBlock(widths[0], widths[1], 2, reduction)
        self.layer3 = BasicBlock(widths[1], widths[2], 2, reduction)
        self.attn_pool = CbamPool(widths[2], reduction)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward_features(self, images: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(images)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.attn_pool(x)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.global_pool(features), 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))
