"""Building blocks the registered families share."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(in_channels: int, out_channels: int, stride: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    )


def stem(in_channels: int, out_channels: int) -> nn.Sequential:
    """A stride-2 3×3 convolution, batch norm, ReLU."""
    return nn.Sequential(conv_bn(in_channels, out_channels, 2), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a shortcut (a 1×1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, stride)
        self.conv2 = conv_bn(out_channels, out_channels, 1)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv_bn(in_channels, out_channels, stride, kernel_size=1)

    def branch(self, features: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(features), inplace=True))

    def forward(self, features: Tensor) -> Tensor:
        return F.relu(self.branch(features) + self.shortcut(features))
