"""RA-CNN: the Recurrent Attention Convolutional Neural Network (Fu, Zheng, Mei, "Look Closer to
See Better", CVPR 2017) — attention as a zoom.

At each scale a classification network looks at its view of the image, and an *attention
proposal network* (two fully connected layers over its last feature map) proposes a square
box (tx, ty, tl): centre and half side. The next scale classifies that box, cropped from the
full-resolution input and zoomed to its own input size by bilinear sampling — differentiable,
inside the graph, so the cascade of scales is one ONNX model. Training alternates the
classification losses of all scales with the *inter-scale pairwise ranking loss*
``max(0, p_t(s) - p_t(s+1) + margin)``, which moves only the proposal networks: a box is good
when the finer scale is surer of the true class than the coarser one. The proposals start from
the region of highest response in the first scale's last feature map (the paper's
initialisation), learned by regression before the alternation.

Outputs: the fused logits (a linear layer over every scale's pooled features), each scale's
logits, and each proposed box in the input's field of view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import (
    AttentionKind,
    AttentionSpec,
    AuxiliaryOutput,
    ModelSpec,
)

from ..data import digit_labels, digit_preprocess
from ._layers import ResidualBlock, stem
from ._registry import register_model
from ._training import TrainingRecipe, TrainingStep


class ScaleNetwork(nn.Module):
    """A small ResNet: a ``view``×``view`` image → a C×(view/8)×(view/8) feature map."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            stem(in_channels, widths[0]),
            ResidualBlock(widths[0], widths[0]),
            ResidualBlock(widths[0], widths[1], stride=2),
            ResidualBlock(widths[1], widths[2], stride=2),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images)


class AttentionProposal(nn.Module):
    """Features → a square box: centre (tx, ty) in [0, 1] and half side tl in [min, max], all as
    fractions of the scale's own view."""

    def __init__(self, channels: int, cells: int, half_range: tuple[float, float]) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, 16, 1)
        last = nn.Linear(256, 3)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # a centred box of middle size to begin with
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(16 * cells * cells, 256), nn.ReLU(inplace=True), last)
        self.half_range = half_range

    def forward(self, features: Tensor) -> Tensor:
        """B×C×h×w → B×3 (tx, ty, tl)."""
        raw = self.fc(F.relu(self.reduce(features)))
        low, high = self.half_range
        centre = torch.sigmoid(raw[:, :2])
        half = low + (high - low) * torch.sigmoid(raw[:, 2:])
        return torch.cat([centre, half], dim=1)


def proposal_to_box(proposal: Tensor, parent: Tensor | None) -> Tensor:
    """(tx, ty, tl) relative to a view → (x0, y0, x1, y1) in the input's field of view; the view
    is the whole input (``parent`` None) or the parent box."""
    centre, half = proposal[:, :2], proposal[:, 2:]
    box = torch.cat([centre - half, centre + half], dim=1)
    if parent is None:
        return box
    origin, side = parent[:, :2], parent[:, 2:] - parent[:, :2]
    return torch.cat([origin + box[:, :2] * side, origin + box[:, 2:] * side], dim=1)


BOX_STEPS = 512
"""Box coordinates are snapped to 1/512 of the input (a quarter pixel at 128 px): a crop is a
steep function of its box, so float32 rounding differences between runtimes (~1e-7) would
otherwise reach the finer scale's logits (measured: 1e-3 on a noise image). Snapped, PyTorch,
onnxruntime and TensorRT crop exactly the same pixels."""


def snap(boxes: Tensor) -> Tensor:
    """Boxes on the 1/`BOX_STEPS` grid; the gradient passes as if unsnapped (straight-through)."""
    return boxes + (torch.round(boxes * BOX_STEPS) / BOX_STEPS - boxes).detach()


def zoom(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """The boxes (fractions of the input) cropped from ``images`` and resampled (bilinear) to
    size×size; outside the image reads as zero (the letterbox padding's value after
    normalisation is not zero, but the box rarely leaves the image)."""
    steps = (torch.arange(size, dtype=images.dtype, device=images.device) + 0.5) / size
    x = boxes[:, 0, None] + steps[None, :] * (boxes[:, 2, None] - boxes[:, 0, None])
    y = boxes[:, 1, None] + steps[None, :] * (boxes[:, 3, None] - boxes[:, 1, None])
    batch = images.shape[0]
    grid = torch.stack(
        [x[:, None, :].expand(batch, size, size), y[:, :, None].expand(batch, size, size)], dim=3
    )
    return F.grid_sample(
        images, grid * 2.0 - 1.0, mode="bilinear", padding_mode="border", align_corners=False
    )


class RACNN(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        scales: int = 2,
        view: int = 48,
        widths: tuple[int, int, int] = (32, 64, 128),
        half_range: tuple[float, float] = (0.08, 0.25),
        margin: float = 0.05,
        warmup: float = 0.2,
        initialise_until: float = 0.4,
    ) -> None:
        super().__init__()
        self.scales = scales
        self.warmup = warmup
        self.initialise_until = initialise_until
        self.view = view
        self.margin = margin
        self.networks = nn.ModuleList([ScaleNetwork(in_channels, widths) for _ in range(scales)])
        self.heads = nn.ModuleList([nn.Linear(widths[2], num_classes) for _ in range(scales)])
        self.proposals = nn.ModuleList(
            [AttentionProposal(widths[2], view // 8, half_range) for _ in range(scales - 1)]
        )
        self.fuse = nn.Linear(widths[2] * scales, num_classes)

    @property
    def last_conv(self) -> nn.Module:
        """Grad-CAM's conventional layer: the first scale's last convolution (its view is the
        whole input)."""
        network = self.networks[0]
        assert isinstance(network, ScaleNetwork)
        block = network.features[-1]
        assert isinstance(block, ResidualBlock)
        return block.conv2

    def whole_view(self, images: Tensor) -> Tensor:
        """The first scale's view: the whole input, box-filtered by the largest whole factor,
        then resampled (bilinear) to view×view."""
        factor = images.shape[-1] // self.view
        view = F.avg_pool2d(images, factor) if factor > 1 else images
        if view.shape[-1] == self.view and view.shape[-2] == self.view:
            return view
        whole = images.new_tensor([[0.0, 0.0, 1.0, 1.0]]).expand(images.shape[0], 4)
        return zoom(view, whole, self.view)

    def cascade(self, images: Tensor, zoom_gradient: bool = True) -> dict[str, Tensor]:
        """Every scale's features, logits, proposal and box; without ``zoom_gradient`` no
        gradient reaches the proposals through the crops (classification steps)."""
        view = self.whole_view(images)
        features, logits, proposals, boxes = [], [], [], []
        box: Tensor | None = None
        for scale in range(self.scales):
            if scale > 0:
                assert box is not None
                view = zoom(images, box if zoom_gradient else box.detach(), self.view)
            feature_map = self.networks[scale](view)
            features.append(feature_map)
            logits.append(self.heads[scale](torch.mean(feature_map, dim=(2, 3))))
            if scale < self.scales - 1:
                proposal = self.proposals[scale](feature_map)
                proposals.append(proposal)
                box = snap(proposal_to_box(proposal, box))
                boxes.append(box)
        pooled = torch.cat([torch.mean(f, dim=(2, 3)) for f in features], dim=1)
        return {
            "fused": self.fuse(pooled),
            **{f"logits_scale{s + 1}": value for s, value in enumerate(logits)},
            "zoom_boxes": torch.stack(boxes, dim=1),
            "proposals": torch.stack(proposals, dim=1),
            "first_features": features[0],
        }

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        result = self.cascade(images)
        outputs = {"logits": result["fused"], "zoom_boxes": result["zoom_boxes"]}
        outputs.update({f"logits_scale{s + 1}": result[f"logits_scale{s + 1}"] for s in range(self.scales)})
        return outputs

    def proposal_parameters(self) -> list[nn.Parameter]:
        return list(self.proposals.parameters())

    def classification_parameters(self) -> list[nn.Parameter]:
        proposals = {id(p) for p in self.proposal_parameters()}
        return [p for p in self.parameters() if id(p) not in proposals]

    @torch.no_grad()
    def response_boxes(self, features: Tensor, labels: Tensor) -> Tensor:
        """The paper's initial proposals: a square on the first scale's strongest response to the
        true class (its class activation): centred on the cells above half the response's
        range, as large as they spread."""
        head = self.heads[0]
        assert isinstance(head, nn.Linear)
        response = torch.einsum("bchw,bc->bhw", features, head.weight[labels])
        batch, height, width = response.shape
        flat = response.reshape(batch, -1)
        low, high = flat.min(dim=1, keepdim=True)[0], flat.max(dim=1, keepdim=True)[0]
        above = torch.relu(flat - (low + 0.5 * (high - low)))
        weights = above / above.sum(dim=1, keepdim=True).clamp_min(1e-6)
        xs = ((torch.arange(width) + 0.5) / width).repeat(height)
        ys = ((torch.arange(height) + 0.5) / height).repeat_interleave(width)
        centre = torch.stack([(weights * xs).sum(dim=1), (weights * ys).sum(dim=1)], dim=1)
        spread = torch.sqrt((weights * ((xs - centre[:, :1]) ** 2 + (ys - centre[:, 1:]) ** 2)).sum(dim=1))
        proposal = self.proposals[0]
        assert isinstance(proposal, AttentionProposal)
        half = (spread + 0.5 / width).clamp(*proposal.half_range)
        return torch.cat([centre, half[:, None]], dim=1)

    def training_loss(self, images: Tensor, labels: Tensor, progress: float, step: int) -> TrainingStep:
        """The paper's schedule, compressed into one budget: the scales learn to classify; the
        proposals learn the strongest-response region; then classification (proposal networks
        frozen, two steps in three) alternates with the ranking loss (everything but the proposals
        frozen)."""
        ranking_step = progress >= self.initialise_until and step % 3 == 2
        result = self.cascade(images, zoom_gradient=ranking_step)
        scale_logits = [result[f"logits_scale{s + 1}"] for s in range(self.scales)]
        classification = sum(F.cross_entropy(logits, labels) for logits in scale_logits)
        classification = classification + F.cross_entropy(result["fused"], labels)
        accuracy = {
            f"acc{s + 1}": float((logits.argmax(dim=1) == labels).float().mean())
            for s, logits in enumerate(scale_logits)
        }
        if progress < self.warmup:
            return TrainingStep(
                classification,
                {"ce": float(classification.detach()), **accuracy},
                self.classification_parameters(),
            )
        if progress < self.initialise_until:
            target = self.response_boxes(result["first_features"], labels)
            regression = F.mse_loss(result["proposals"][:, 0], target)
            return TrainingStep(
                classification + 10.0 * regression, {"box": float(regression.detach()), **accuracy}
            )
        if not ranking_step:
            return TrainingStep(
                classification,
                {"ce": float(classification.detach()), **accuracy},
                self.classification_parameters(),
            )
        probabilities = [
            torch.softmax(logits, dim=1).gather(1, labels[:, None])[:, 0] for logits in scale_logits
        ]
        ranking = torch.stack(
            [
                torch.clamp(probabilities[s].detach() - probabilities[s + 1] + self.margin, min=0.0).mean()
                for s in range(self.scales - 1)
            ]
        ).sum()
        return TrainingStep(
            ranking, {"rank": float(ranking.detach()), **accuracy}, self.proposal_parameters()
        )


_RACNN_PREPROCESS = digit_preprocess((128, 128))


@register_model(
    ModelSpec(
        architecture="racnn",
        description=(
            "RA-CNN (Fu et al. 2017), 2 scales on a 128×128 input: scale 1 sees the whole input "
            "at 48×48, its attention proposal network picks a square that scale 2 sees zoomed to "
            "48×48; fused logits over both scales"
        ),
        preprocess=_RACNN_PREPROCESS,
        labels=digit_labels(),
        attention=(
            AttentionSpec(
                name="zoom_boxes",
                kind=AttentionKind.BOXES,
                axes=("scale", "box"),
                description=(
                    "The square each scale's attention proposal network chose for the next scale "
                    "to zoom into (one box: scale 1 → scale 2)"
                ),
                value_range="boxes (x0, y0, x1, y1) as fractions of the input's width and height",
                block="attention proposal networks",
            ),
        ),
        auxiliary_outputs=(
            AuxiliaryOutput(name="logits_scale1", description="scale 1's logits (the whole input)"),
            AuxiliaryOutput(name="logits_scale2", description="scale 2's logits (the zoomed box)"),
        ),
        primary_attention="zoom_boxes",
        primary_reason="its only attention output: where it zoomed",
    ),
    TrainingRecipe(
        data=(("small", 0.6), ("standard", 0.4)),
        selection="small",
        train_samples=36_000,
        max_seconds=480.0,
        max_steps=3_000,
    ),
)
def racnn(**kwargs: object) -> RACNN:
    return RACNN(**kwargs)  # type: ignore[arg-type]
