"""Mask R-CNN (He, Gkioxari, Dollár, Girshick, ICCV 2017) in plain torch, small enough to train on
two CPU cores: instance segmentation with *decoupled* per-class masks.

- Backbone: a stem and three residual blocks to stride 8, plus one top-down step (FPN-style) to a
  stride-4 map that the RoI heads read (digits are 12–56 px: 1.5–7 cells at stride 8).
- Proposals: a dense, anchor-free head on the stride-8 map (FCOS-style): per cell an objectness
  and the distances from the cell's centre to a box's four sides. With one feature level and
  objects of 1.5–7 cells, anchors would only add a size grid to tune and IoU matching to get
  right; a cell inside a digit's centre region simply owns it.
- NMS: greedy, exact, as K − 1 batched matrix steps (`_detection.greedy_nms`), so it exports.
- RoIAlign: bilinear sampling through ``F.grid_sample`` (2×2 samples per bin, no rounding).
- Box head (7×7 RoIs → two fully connected layers): 11-way classification (background + 10
  digits) and a class-agnostic box refinement.
- Mask head (14×14 RoIs → convolutions → 28×28): one sigmoid mask *per class*, its loss taken
  on the ground-truth class's mask only, so classes do not compete for pixels (the paper's
  decoupling of mask and class); ``mask_mode="agnostic"`` is the paper's ablation, one mask for
  every class.

Serving outputs (`TASK_OUTPUTS[INSTANCE_SEGMENTATION]`): boxes as fractions of the input, scores,
classes and each detection's 28×28 mask of its detected class (the graph selects the channel),
sorted by score; a batch is padded to its largest detection count with rows scored 0. Attention:
the proposal objectness map.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import AttentionKind, AttentionSpec, ModelSpec, Normalization, Task

from ..data.scenes import DigitScenes, scene_preprocess
from ._detection import (
    assign_cells,
    box_iou,
    cell_centres,
    decode_deltas,
    encode_deltas,
    greedy_nms,
    roi_align,
)
from ._layers import ResidualBlock, stem
from ._registry import register_model
from ._training import TrainingRecipe, TrainingStep

MaskMode = Literal["per_class", "agnostic"]
STRIDE = 8
"""The proposal map's stride; the RoI heads read the stride-4 map."""
MASK_SIZE = 28


class Backbone(nn.Module):
    """Image → (stride-4 map for the RoI heads, stride-8 map for the proposals)."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int], roi_channels: int) -> None:
        super().__init__()
        self.stem = stem(in_channels, widths[0])
        self.stage4 = ResidualBlock(widths[0], widths[1], stride=2)
        self.stage8 = nn.Sequential(
            ResidualBlock(widths[1], widths[2], stride=2), ResidualBlock(widths[2], widths[2])
        )
        self.lateral = nn.Conv2d(widths[1], roi_channels, 1)
        self.top_down = nn.Conv2d(widths[2], roi_channels, 1)
        self.smooth = nn.Sequential(
            nn.Conv2d(roi_channels, roi_channels, 3, padding=1), nn.ReLU(inplace=True)
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        c4 = self.stage4(self.stem(images))
        c8 = self.stage8(c4)
        p4 = self.lateral(c4) + F.interpolate(self.top_down(c8), scale_factor=2.0, mode="nearest")
        return self.smooth(p4), c8


class ProposalHead(nn.Module):
    """Per stride-8 cell: an objectness logit and log-distances (in strides) to the box's sides."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.tower = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.objectness = nn.Conv2d(channels, 1, 1)
        self.distances = nn.Conv2d(channels, 4, 1)
        assert self.objectness.bias is not None and self.distances.bias is not None
        nn.init.constant_(self.objectness.bias, -4.6)  # p ≈ 0.01: the focal loss's prior
        nn.init.constant_(self.distances.bias, float(np.log(2.0)))  # boxes of ~4 cells

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        tower = self.tower(features)
        return self.objectness(tower)[:, 0], self.distances(tower)


class BoxHead(nn.Module):
    """7×7 RoI features → class logits (background first) and class-agnostic box deltas."""

    def __init__(self, channels: int, num_classes: int, roi_size: int, hidden: int = 128) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, 32, 1), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * roi_size * roi_size, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.classes = nn.Linear(hidden, num_classes + 1)
        self.deltas = nn.Linear(hidden, 4)
        nn.init.normal_(self.deltas.weight, std=0.001)
        nn.init.zeros_(self.deltas.bias)

    def forward(self, rois: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.fc(self.reduce(rois))
        return self.classes(hidden), self.deltas(hidden)


class MaskHead(nn.Module):
    """14×14 RoI features → ``masks``×28×28 mask logits (one per class, or one for all)."""

    def __init__(self, channels: int, masks: int, width: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width, 2, stride=2),
            nn.ReLU(inplace=True),
        )
        self.logits = nn.Conv2d(width, masks, 1)

    def forward(self, rois: Tensor) -> Tensor:
        return self.logits(self.convs(rois))


class MaskRCNN(nn.Module):
    centres: Tensor
    """(h·w)×2 input-pixel centres of the proposal map's cells."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: tuple[int, int] = (128, 128),
        mask_mode: MaskMode = "per_class",
        widths: tuple[int, int, int] = (24, 32, 64),
        roi_channels: int = 32,
        pre_nms: int = 48,
        proposals: int = 16,
        train_proposals: int = 24,
        proposal_iou: float = 0.6,
        detection_iou: float = 0.5,
        score_threshold: float = 0.5,
        centre_radius: float = 1.5 * STRIDE,
    ) -> None:
        super().__init__()
        if mask_mode not in ("per_class", "agnostic"):
            raise ValueError(f"mask_mode is 'per_class' or 'agnostic', not {mask_mode!r}")
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mask_mode = mask_mode
        self.pre_nms = pre_nms
        self.proposals = proposals
        self.train_proposals = train_proposals
        self.proposal_iou = proposal_iou
        self.detection_iou = detection_iou
        self.score_threshold = score_threshold
        """Detections scored below this are dropped (evaluation lowers it to rank more)."""
        self.centre_radius = centre_radius
        self.backbone = Backbone(in_channels, widths, roi_channels)
        self.proposal_head = ProposalHead(widths[2])
        self.box_head = BoxHead(roi_channels, num_classes, 7)
        self.mask_head = MaskHead(roi_channels, num_classes if mask_mode == "per_class" else 1)
        height, width = self.input_size
        self.register_buffer(
            "centres", cell_centres(height // STRIDE, width // STRIDE, STRIDE), persistent=False
        )

    # -- shared stages ---------------------------------------------------------------------

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(stride-4 RoI map, objectness logits B×h×w, dense boxes B×(h·w)×4, raw distances)."""
        roi_map, proposal_map = self.backbone(images)
        objectness, distances = self.proposal_head(proposal_map)
        sides = torch.exp(distances.clamp(max=4.0)).flatten(2).transpose(1, 2) * STRIDE  # B×N×4
        centres = self.centres[None]
        boxes = torch.cat([centres - sides[..., :2], centres + sides[..., 2:]], dim=-1)
        return roi_map, objectness, self.clip(boxes), sides

    def clip(self, boxes: Tensor) -> Tensor:
        height, width = self.input_size
        limits = boxes.new_tensor([width, height, width, height])
        return torch.minimum(boxes.clamp(min=0.0), limits)

    def propose(self, objectness: Tensor, boxes: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``count`` best cells after NMS: (boxes B×count×4, objectness, validity)."""
        scores = torch.sigmoid(objectness.flatten(1))
        top_scores, top_index = torch.topk(scores, self.pre_nms, dim=1)
        top_boxes = torch.gather(boxes, 1, top_index[..., None].expand(-1, -1, 4))
        keep = greedy_nms(top_boxes, torch.ones_like(top_scores), self.proposal_iou)
        _, order = torch.topk(keep * (top_scores + 1.0), count, dim=1)  # kept first, by score
        return (
            torch.gather(top_boxes, 1, order[..., None].expand(-1, -1, 4)),
            torch.gather(top_scores, 1, order),
            torch.gather(keep, 1, order),
        )

    def roi_features(self, roi_map: Tensor, boxes: Tensor, size: int) -> Tensor:
        return roi_align(roi_map, boxes, self.input_size, size)

    def select_masks(self, mask_logits: Tensor, classes: Tensor) -> Tensor:
        """(R)×masks×28×28 logits → R×28×28: the mask of each RoI's class (or the one mask)."""
        if self.mask_mode == "agnostic":
            return mask_logits[:, 0]
        index = classes.long()[:, None, None, None].expand(-1, 1, *mask_logits.shape[2:])
        return torch.gather(mask_logits, 1, index)[:, 0]

    # -- serving ---------------------------------------------------------------------------

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        batch = images.shape[0]
        height, width = self.input_size
        roi_map, objectness, dense_boxes, _ = self.dense(images)
        proposals, _, proposal_valid = self.propose(objectness, dense_boxes, self.proposals)
        count = self.proposals

        class_logits, deltas = self.box_head(self.roi_features(roi_map, proposals, 7))
        probabilities = torch.softmax(class_logits, dim=1)[:, 1:].reshape(batch, count, self.num_classes)
        scores, classes = probabilities.max(dim=2)
        scores = scores * proposal_valid
        boxes = self.clip(decode_deltas(proposals, deltas.reshape(batch, count, 4)))

        scores, order = torch.topk(scores, count, dim=1)
        boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
        classes = torch.gather(classes, 1, order)
        above = (scores >= self.score_threshold).to(scores.dtype)
        keep = greedy_nms(boxes, above, self.detection_iou, classes)
        scores, order = torch.topk(scores * keep, count, dim=1)  # kept detections first
        boxes = torch.gather(boxes, 1, order[..., None].expand(-1, -1, 4))
        classes = torch.gather(classes, 1, order)

        mask_logits = self.mask_head(self.roi_features(roi_map, boxes, 14))
        masks = torch.sigmoid(self.select_masks(mask_logits, classes.reshape(-1)))
        masks = masks.reshape(batch, count, MASK_SIZE, MASK_SIZE)

        # The batch's largest detection count; every image's rows beyond its own count are 0.
        valid = (scores > 0).to(scores.dtype)
        # Kept rows come first in every image, so column j holds a detection in some image iff j
        # is below the largest count; NonZero gives that dynamic length in ONNX.
        detections = torch.nonzero(valid.amax(dim=0) > 0)[:, 0]
        valid = valid.index_select(1, detections)
        fractions = boxes.new_tensor([width, height, width, height])
        return {
            "boxes": boxes.index_select(1, detections) / fractions * valid[..., None],
            "scores": scores.index_select(1, detections) * valid,
            "classes": classes.index_select(1, detections).to(scores.dtype) * valid,
            "masks": masks.index_select(1, detections) * valid[..., None, None],
            "objectness": torch.sigmoid(objectness),
        }

    # -- training --------------------------------------------------------------------------

    def detection_loss(
        self, images: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_masks: Tensor
    ) -> TrainingStep:
        """The losses of all stages on one batch.

        Args:
            images: B×C×H×W inputs.
            gt_boxes: B×M×4 digit boxes in input pixels (rows of padding anywhere).
            gt_labels: B×M digit classes, −1 for padding.
            gt_masks: B×M×H×W, 1 on each digit's visible pixels.
        """
        batch = images.shape[0]
        gt_valid = gt_labels >= 0
        roi_map, objectness, dense_boxes, _ = self.dense(images)

        # Proposal stage: focal loss on objectness, GIoU on the boxes of the cells that own a digit.
        owner = assign_cells(self.centres, gt_boxes, gt_valid, self.centre_radius)
        positive = owner >= 0
        positives = positive.sum().clamp(min=1).to(images.dtype)
        objectness_loss = sigmoid_focal_loss(objectness.flatten(1), positive.to(images.dtype)) / positives
        owned = torch.gather(gt_boxes, 1, owner.clamp(min=0)[..., None].expand(-1, -1, 4))
        dense_box_loss = giou_loss(dense_boxes[positive], owned[positive]).sum() / positives

        # RoIs: the proposals (no gradient through them) and the ground truth boxes.
        with torch.no_grad():
            proposals, _, proposal_valid = self.propose(objectness, dense_boxes, self.train_proposals)
        rois = torch.cat([proposals.detach(), gt_boxes], dim=1)
        roi_valid = torch.cat([proposal_valid > 0.5, gt_valid], dim=1)
        overlap = box_iou(rois, gt_boxes).masked_fill(~gt_valid[:, None, :], -1.0)
        best_overlap, match = overlap.max(dim=2)
        foreground = roi_valid & (best_overlap >= 0.5)
        matched_labels = torch.gather(gt_labels, 1, match)
        targets = torch.where(foreground, matched_labels + 1, torch.zeros_like(matched_labels))

        class_logits, deltas = self.box_head(self.roi_features(roi_map, rois, 7))
        rois_per_image = rois.shape[1]
        class_loss = F.cross_entropy(class_logits, targets.reshape(-1), reduction="none")
        class_loss = (class_loss * roi_valid.reshape(-1)).sum() / roi_valid.sum().clamp(min=1)
        matched_boxes = torch.gather(gt_boxes, 1, match[..., None].expand(-1, -1, 4))
        fg = foreground.reshape(-1)
        fg_count = fg.sum().clamp(min=1)
        box_targets = encode_deltas(rois.reshape(-1, 4)[fg], matched_boxes.reshape(-1, 4)[fg])
        box_loss = F.smooth_l1_loss(deltas[fg], box_targets, beta=1.0, reduction="sum") / fg_count

        # Masks: only foreground RoIs, each on its ground truth class's mask (the decoupling).
        fg_rois = rois.reshape(-1, 4)[fg]
        image_of = torch.arange(batch, device=images.device).repeat_interleave(rois_per_image)[fg]
        mask_logits = self.mask_head(_roi_align_rows(roi_map, fg_rois, image_of, self.input_size, 14))
        with torch.no_grad():
            instance = match.reshape(-1)[fg]
            gt_rows = gt_masks[image_of, instance][:, None]  # F×1×H×W
            mask_targets = _roi_align_rows(
                gt_rows, fg_rois, torch.arange(len(fg_rois)), self.input_size, MASK_SIZE
            )
            mask_targets = (mask_targets[:, 0] >= 0.5).to(images.dtype)
        selected = self.select_masks(mask_logits, matched_labels.reshape(-1)[fg])
        if len(fg_rois):
            mask_loss = F.binary_cross_entropy_with_logits(selected, mask_targets)
        else:
            mask_loss = mask_logits.sum() * 0.0

        loss = objectness_loss + dense_box_loss + class_loss + box_loss + mask_loss
        return TrainingStep(
            loss,
            {
                "obj": float(objectness_loss.detach()),
                "dbox": float(dense_box_loss.detach()),
                "cls": float(class_loss.detach()),
                "box": float(box_loss.detach()),
                "mask": float(mask_loss.detach()),
            },
        )

    # -- export ----------------------------------------------------------------------------

    def parity_inputs(self, batch_size: int, seed: int) -> np.ndarray:
        """Validation scenes (their detections are clear of the score threshold) and, in batches
        of several, one blank image last: an image without detections beside ones with some."""
        from attnserve.transform import image_from_pixels, pixels_to_input, to_input_pixels

        preprocess = scene_preprocess(self.input_size)
        scenes = DigitScenes("val", batch_size, canvas_size=self.input_size[0], seed=seed)
        pixels = [
            to_input_pixels(image_from_pixels(scenes[i].image), preprocess)[0] for i in range(batch_size)
        ]
        if batch_size > 1:
            pixels[-1] = np.zeros_like(pixels[-1])
        return pixels_to_input(np.stack(pixels), preprocess)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al.), summed."""
    probability = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = probability * targets + (1 - probability) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * cross_entropy * (1 - p_true) ** gamma).sum()


def giou_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """1 − generalised IoU of matching rows (N×4 each)."""
    top_left = torch.maximum(predicted[:, :2], target[:, :2])
    bottom_right = torch.minimum(predicted[:, 2:], target[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area_p = (predicted[:, 2:] - predicted[:, :2]).clamp(min=0).prod(dim=1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(dim=1)
    union = (area_p + area_t - inter).clamp(min=1e-6)
    hull = torch.maximum(predicted[:, 2:], target[:, 2:]) - torch.minimum(predicted[:, :2], target[:, :2])
    hull_area = hull.clamp(min=0).prod(dim=1).clamp(min=1e-6)
    iou = inter / union
    return 1.0 - iou + (hull_area - union) / hull_area


def _roi_align_rows(
    features: Tensor, boxes: Tensor, image_of: Tensor, input_size: tuple[int, int], size: int
) -> Tensor:
    """RoIAlign of F boxes (F×4), box ``f`` read from image ``image_of[f]`` of ``features``."""
    if len(boxes) == 0:
        return features.new_zeros(0, features.shape[1], size, size)
    return roi_align(features[image_of], boxes[:, None, :], input_size, size)


_PREPROCESS = scene_preprocess((128, 128))


@register_model(
    ModelSpec(
        architecture="mask_rcnn",
        description=(
            "Mask R-CNN (He et al. 2017), small, on 128×128 digit scenes: anchor-free dense "
            "proposals at stride 8, NMS, RoIAlign on a stride-4 map, box and class heads, and one "
            "28×28 sigmoid mask per class (decoupled from classification); 0–16 detections"
        ),
        task=Task.INSTANCE_SEGMENTATION,
        preprocess=_PREPROCESS,
        labels=tuple(str(d) for d in range(10)),
        attention=(
            AttentionSpec(
                name="objectness",
                kind=AttentionKind.SPATIAL,
                axes=("y", "x"),
                description=(
                    "The proposal stage's objectness per stride-8 cell: the probability that the "
                    "cell lies in the centre region of a digit (where the detector looks before "
                    "it classifies); 16×16 over the input"
                ),
                value_range="probabilities in (0, 1) (a sigmoid)",
                normalization=Normalization(method="fixed", range=(0.0, 1.0)),
                block="proposal head",
            ),
        ),
        primary_attention="objectness",
        primary_reason="its only attention output: where the proposal stage finds digits",
    ),
    TrainingRecipe(
        data=(("scenes", 0.75), ("other_sizes", 0.25)),
        selection="scenes",
        train_samples=6_000,
        max_seconds=300.0,
        max_steps=1_000,
        batch_size=16,
        max_lr=3e-3,
    ),
)
def mask_rcnn(**kwargs: object) -> MaskRCNN:
    return MaskRCNN(**kwargs)  # type: ignore[arg-type]
