"""SE-ResNet: squeeze-and-excitation (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018).

Each residual block *squeezes* its features to one number per channel (global average
pooling), *excites* them through a small bottleneck MLP ending in a sigmoid, and rescales the
channels by the result: attention over channels, one weight vector per block. The head is
global average pooling + linear, so the exported graph also carries the in-graph class
activation map (`_cam`).
"""

from __future__ import annotations

import torch
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


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.excite = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, features: Tensor) -> Tensor:
        """B×C×H×W → B×C weights in (0, 1)."""
        return self.excite(torch.mean(features, dim=(2, 3)))


class SEBlock(ResidualBlock):
    """A residual block whose branch is rescaled per channel before the shortcut is added."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, reduction: int) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.squeeze_excitation = SqueezeExcitation(out_channels, reduction)

    def forward_with_weights(self, features: Tensor) -> tuple[Tensor, Tensor]:
        branch = self.branch(features)
        weights = self.squeeze_excitation(branch)
        output = torch.relu(branch * weights[:, :, None, None] + self.shortcut(features))
        return output, weights


class SENet(GapLinearNet):
    """Stem (stride 2) → three SE residual stages → global average pooling → linear."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (32, 64, 128),
        reduction: int = 8,
    ) -> None:
        super().__init__()
        self.stem = stem(in_channels, widths[0])
        self.stages = nn.ModuleList(
            [
                SEBlock(widths[0], widths[0], 1, reduction),
                SEBlock(widths[0], widths[1], 2, reduction),
                SEBlock(widths[1], widths[2], 2, reduction),
            ]
        )
        self.classifier = nn.Linear(widths[2], num_classes)

    @property
    def last_conv(self) -> nn.Module:
        """Grad-CAM's conventional layer: the last block's last convolution."""
        block = self.stages[-1]
        assert isinstance(block, SEBlock)
        return block.conv2

    def forward_features(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.stem(images)
        attention: dict[str, Tensor] = {}
        for index, block in enumerate(self.stages, start=1):
            assert isinstance(block, SEBlock)
            features, attention[f"se_stage{index}"] = block.forward_with_weights(features)
        return features, attention


_SE_SPECS = tuple(
    AttentionSpec(
        name=f"se_stage{stage}",
        kind=AttentionKind.CHANNEL,
        axes=("channel",),
        description=f"Squeeze-and-excitation weights of stage {stage} ({width} channels)",
        value_range="(0, 1), sigmoid gate per channel",
        normalization=Normalization(method="above_median", range=(0.0, 1.0)),
        block=f"stage{stage}",
    )
    for stage, width in enumerate((32, 64, 128), start=1)
)


@register_model(
    ModelSpec(
        architecture="se",
        description=(
            "SE-ResNet (3 stages, 32/64/128 channels) for 64×64 cluttered handwritten digits: "
            "squeeze-and-excitation channel attention in every block"
        ),
        preprocess=digit_preprocess((64, 64)),
        labels=digit_labels(),
        attention=_SE_SPECS,
        primary_attention=None,
        primary_reason="chosen at export from the measured maps (the in-graph CAM is its only map)",
    ),
    TrainingRecipe(data=(("standard", 0.5), ("mixed", 0.5)), max_seconds=480.0, max_steps=2_400),
)
def se(**kwargs: object) -> SENet:
    return SENet(**kwargs)  # type: ignore[arg-type]
