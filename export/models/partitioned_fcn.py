"""Task-partitioned FCN: a deep branch says where the digits are, a shallow one finds their centres.

Lin, Shi and Zou, "Fully Convolutional Network With Task Partitioning for Inshore Ship Detection
in Optical Remote Sensing Images", IEEE GRSL 2017. Two tasks of different nature go to layers
of different depth: the *deep* branch (downsampled to stride 8, a large receptive field) gives a
coarse segmentation — digit vs background on a 16×16 grid for a 128 px input — and the *shallow*
branch (early features, never downsampled past stride 2) predicts the fine targets, here each
digit's centre keypoint (as the paper's ship heads). The shallow branch's loss counts only inside
the attention region, the deep branch's segmentation dilated by one cell (the task partitioning:
it need not learn to reject background clutter, the deep branch tells it where to look); served,
its probability is multiplied by that dilated attention, so outside the region the answer is
background. ``partition=False`` is the paper's comparison: the same shallow branch with its loss
over every pixel, served on its own.

The fine target: the centre of each digit's visible-ink box, a disk of `KEYPOINT_RADIUS` input
pixels. Derived from the scenes' instance masks (`keypoint_targets`), in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import AttentionKind, AttentionSpec, ModelSpec, Normalization, Task

from ..data import DigitScenes, scene_preprocess
from ._registry import register_model
from ._training import TrainingRecipe, TrainingStep

if TYPE_CHECKING:
    from ..train_segmentation import SegmentationTargets

KEYPOINT_LABELS = ("background", "digit centre")
KEYPOINT_RADIUS = 3.0
"""Input pixels around a digit's centre that count as the centre (a disk)."""
FINE_STRIDE = 2
COARSE_STRIDE = 8
CENTRE_WEIGHT = 5.0
"""Weight of centre pixels in the fine cross-entropy (they are ~3 % of the attention region)."""


def _log_sigmoid(values: Tensor) -> Tensor:
    """log σ(x) from elementary operations, exact in both tails (ONNX has no LogSigmoid)."""
    return torch.clamp(values, max=0.0) - torch.log(1.0 + torch.exp(-torch.abs(values)))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def keypoint_targets(instances: Tensor, size: tuple[int, int], radius: float = KEYPOINT_RADIUS) -> Tensor:
    """Digit-centre targets on an h×w grid over the input's field of view.

    Args:
        instances: N×H×W int, 0 none, k ≥ 1 the k-th digit's visible ink (input pixels).
        size: (h, w) of the grid; its cells cover the input evenly.
        radius: in input pixels: cells whose centre lies this close to a digit's centre are 1.

    Returns:
        N×h×w int64, 1 at the cells near a digit's centre (the centre of its visible-ink box).
    """
    batch, height, width = instances.shape
    grid_h, grid_w = size
    ys = (torch.arange(grid_h, dtype=torch.float32) + 0.5) * (height / grid_h)
    xs = (torch.arange(grid_w, dtype=torch.float32) + 0.5) * (width / grid_w)
    targets = torch.zeros(batch, grid_h, grid_w, dtype=torch.int64)
    for index, (centres_x, centres_y) in enumerate(digit_centres(instances)):
        for cx, cy in zip(centres_x.tolist(), centres_y.tolist(), strict=True):
            near = (ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2 <= radius**2
            targets[index][near] = 1
    return targets


def digit_centres(instances: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per image, the (x, y) centres in pixels of each instance's visible-ink box (end-exclusive,
    so a one-pixel digit at column c has its centre at c + 0.5)."""
    centres = []
    for mask in instances:
        present = mask.unique()
        present = present[present > 0]
        xs, ys = [], []
        for k in present.tolist():
            rows = (mask == k).any(dim=1).nonzero()[:, 0]
            cols = (mask == k).any(dim=0).nonzero()[:, 0]
            xs.append((float(cols[0]) + float(cols[-1]) + 1) / 2)
            ys.append((float(rows[0]) + float(rows[-1]) + 1) / 2)
        centres.append((torch.tensor(xs), torch.tensor(ys)))
    return centres


def coarse_targets(semantic: Tensor, stride: int = COARSE_STRIDE) -> Tensor:
    """N×H×W labels (0 background) → N×(H/stride)×(W/stride) float: 1 where a cell holds ink."""
    digits = (semantic > 0).float().unsqueeze(1)
    return F.max_pool2d(digits, stride, stride).squeeze(1)


def dilate(values: Tensor) -> Tensor:
    """Grey dilation by one cell (3×3 max), N×h×w → N×h×w."""
    return F.max_pool2d(values.unsqueeze(1), 3, 1, padding=1).squeeze(1)


def to_grid(values: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """N×h×w → N×H×W by nearest cells (the coarse grid's cells onto the fine grid's)."""
    return F.interpolate(values.unsqueeze(1), size=tuple(size), mode="nearest").squeeze(1)


class PartitionedFCN(nn.Module):
    """``image -> {"logits": N×2×(H/2)×(W/2), "attention": N×(H/8)×(W/8)}``.

    A shared stem (stride 2); the shallow branch continues at stride 2 with dilated 3×3
    convolutions (receptive field ~65 input px, so the centre of a 56 px digit is within reach);
    the deep branch goes down to stride 8 (receptive field ~120 px) and ends in one logit per cell.
    """

    def __init__(
        self,
        partition: bool = True,
        shallow_channels: int = 24,
        deep_channels: tuple[int, int] = (32, 64),
        centre_weight: float = CENTRE_WEIGHT,
    ) -> None:
        super().__init__()
        self.partition = partition
        self.centre_weight = centre_weight
        self.stem = nn.Sequential(_conv_bn_relu(1, 16), _conv_bn_relu(16, shallow_channels, stride=2))
        self.shallow = nn.Sequential(
            _conv_bn_relu(shallow_channels, shallow_channels),
            _conv_bn_relu(shallow_channels, shallow_channels, dilation=2),
            _conv_bn_relu(shallow_channels, shallow_channels, dilation=4),
            _conv_bn_relu(shallow_channels, shallow_channels, dilation=8),
            nn.Conv2d(shallow_channels, len(KEYPOINT_LABELS), 1),
        )
        middle, wide = deep_channels
        self.deep = nn.Sequential(
            _conv_bn_relu(shallow_channels, middle, stride=2),
            _conv_bn_relu(middle, middle),
            _conv_bn_relu(middle, wide, stride=2),
            _conv_bn_relu(wide, wide, dilation=2),
            _conv_bn_relu(wide, wide, dilation=4),
            nn.Conv2d(wide, 1, 1),
        )

    def branches(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(fine logits N×2×(H/2)×(W/2), coarse logits N×(H/8)×(W/8)), before any gating."""
        early = self.stem(images)
        return self.shallow(early), self.deep(early).squeeze(1)

    def served_logits(self, fine: Tensor, coarse: Tensor) -> Tensor:
        """The task's logits. Partitioned: log-probabilities of ``p = region · q``, where q is the
        shallow branch's centre probability and region the attention dilated by one cell (the
        region its loss counted); unpartitioned: the shallow branch's logits as they are.

        Computed from logits (``1 - p = (1 - region) + region · (1 - q)``, each term a sigmoid)
        so that neither side loses precision when p is near 0 or 1 (ONNX parity).
        """
        if not self.partition:
            return fine
        region = to_grid(dilate(coarse), fine.shape[-2:])  # dilating logits = dilating sigmoids
        centre = fine[:, 1] - fine[:, 0]
        log_centre = _log_sigmoid(region) + _log_sigmoid(centre)
        outside, missed = _log_sigmoid(-region), _log_sigmoid(region) + _log_sigmoid(-centre)
        larger = torch.maximum(outside, missed)
        log_background = larger + torch.log(torch.exp(outside - larger) + torch.exp(missed - larger))
        return torch.stack([log_background, log_centre], dim=1)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        fine, coarse = self.branches(images)
        return {"logits": self.served_logits(fine, coarse), "attention": torch.sigmoid(coarse)}

    def fine_loss(self, fine: Tensor, centres: Tensor, region: Tensor) -> Tensor:
        """Weighted cross-entropy of the fine logits over the pixels where ``region`` is 1 (all of
        them when the model is not partitioned); a weighted mean over the pixels counted."""
        weights = torch.where(centres > 0, self.centre_weight, 1.0)
        if self.partition:
            weights = weights * region
        per_pixel = F.cross_entropy(fine, centres, reduction="none")
        return (per_pixel * weights).sum() / weights.sum().clamp_min(1.0)

    def training_region(self, coarse: Tensor, coarse_truth: Tensor, size: torch.Size) -> Tensor:
        """Where the fine loss counts, on the fine grid: the cells the deep branch calls digit or
        that hold ink, dilated by one cell (the centre of a hollow digit lies in its region)."""
        predicted = (coarse.detach() > 0).float()
        return to_grid(dilate(torch.maximum(predicted, coarse_truth)), size)

    def training_loss(
        self, images: Tensor, targets: SegmentationTargets, progress: float, step: int
    ) -> TrainingStep:
        """Binary cross-entropy of the coarse segmentation plus the fine loss (`fine_loss`)."""
        fine, coarse = self.branches(images)
        coarse_truth = coarse_targets(targets.semantic, images.shape[-1] // coarse.shape[-1])
        centres = keypoint_targets(targets.instances, (int(fine.shape[-2]), int(fine.shape[-1])))
        region = self.training_region(coarse, coarse_truth, fine.shape[-2:])
        coarse_loss = F.binary_cross_entropy_with_logits(coarse, coarse_truth)
        fine_loss = self.fine_loss(fine, centres, region)
        logs = {"coarse": float(coarse_loss.detach()), "fine": float(fine_loss.detach())}
        return TrainingStep(coarse_loss + fine_loss, logs)

    def parity_inputs(self, batch_size: int, seed: int) -> np.ndarray:
        """Validation scenes plus one noise image, normalised as the gateway does."""
        preprocess = scene_preprocess()
        rng = np.random.default_rng(seed)
        inputs = rng.normal(size=(batch_size, 1, *preprocess.input_size)).astype(np.float32)
        scenes = DigitScenes("val", batch_size, canvas_size=preprocess.input_size[0], seed=seed)
        for index in range(batch_size - 1):
            inputs[index, 0] = (scenes[index].image - preprocess.mean[0]) / preprocess.std[0]
        return inputs


@register_model(
    ModelSpec(
        architecture="partitioned_fcn",
        description=(
            "Task-partitioned FCN (Lin et al., GRSL 2017): a deep branch (stride 8) segments digits "
            "from background coarsely, a shallow branch (stride 2) finds each digit's centre, trained "
            "and served only inside the deep branch's region; 128×128 scenes of handwritten digits, "
            "white ink on black; logits at half the input's resolution"
        ),
        task=Task.SEMANTIC_SEGMENTATION,
        preprocess=scene_preprocess((128, 128)),
        labels=KEYPOINT_LABELS,
        attention=(
            AttentionSpec(
                name="attention",
                kind=AttentionKind.SPATIAL,
                axes=("y", "x"),
                description=(
                    "The deep branch's coarse segmentation: per cell of 8×8 input pixels (16×16 for a "
                    "128 px input), the probability that the cell holds digit ink. Dilated by one cell, "
                    "it is the region where the shallow branch's digit centres count"
                ),
                value_range="[0, 1], a sigmoid per cell: 1 digit, 0 background",
                normalization=Normalization(method="fixed", range=(0.0, 1.0)),
                block="deep branch",
            ),
        ),
        primary_attention="attention",
        primary_reason="its only attention output: where the deep branch tells the shallow one to look",
    ),
    TrainingRecipe(
        trainer="attnserve.export.evaluate_partitioned:train_partitioned",  # scored as keypoints
        data=(("scenes", 0.75), ("other_sizes", 0.25)),
        selection="scenes",
        train_samples=6_000,
        max_seconds=225.0,
        max_steps=560,
        batch_size=16,
        max_lr=4e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        ema_decay=0.99,
    ),
)
def partitioned_fcn(**kwargs: object) -> PartitionedFCN:
    return PartitionedFCN(**kwargs)  # type: ignore[arg-type]
