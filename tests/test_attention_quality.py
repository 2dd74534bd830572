import numpy as np
import torch

from attnserve.export.attention_quality import box_masks, chance_energy, map_quality, upsample_maps


def test_a_map_on_the_box_scores_full_marks_and_a_uniform_map_scores_chance() -> None:
    boxes = np.array([[8, 8, 24, 24], [32, 40, 48, 56]])
    masks = torch.from_numpy(box_masks(boxes, (64, 64)).astype(np.float32))
    on_box = map_quality(masks, boxes, (64, 64))
    assert on_box.pointing == 1.0 and on_box.energy == 1.0
    uniform = map_quality(torch.ones(2, 8, 8), boxes, (64, 64))
    assert abs(uniform.energy - chance_energy(boxes, (64, 64))) < 1e-6
    assert chance_energy(boxes, (64, 64)) == 256 / 4096


def test_negative_values_carry_no_energy() -> None:
    boxes = np.array([[0, 0, 32, 64]])
    left_positive = torch.zeros(1, 4, 4)
    left_positive[0, :, :2] = 1.0
    left_positive[0, :, 2:] = -5.0
    assert map_quality(left_positive, boxes, (64, 64)).energy == 1.0


def test_box_masks_are_end_exclusive() -> None:
    mask = box_masks(np.array([[1, 2, 3, 5]]), (6, 6))[0]
    assert mask.sum() == 2 * 3 and mask[2, 1] and mask[4, 2] and not mask[5, 2] and not mask[2, 3]


def test_upsampling_keeps_a_constant_map_constant() -> None:
    assert torch.allclose(upsample_maps(torch.full((1, 8, 8), 0.25), (64, 64)), torch.tensor(0.25))
