import numpy as np
import pytest
from sklearn.datasets import load_digits

from attnserve.export.data import SCENE_LABELS, SPLITS, DigitScenes, scene_preprocess
from attnserve.export.data.cluttered_digits import INK_THRESHOLD


def test_labels_put_background_first_and_digit_d_at_d_plus_1() -> None:
    assert SCENE_LABELS[0] == "background"
    assert SCENE_LABELS[1:] == tuple(str(d) for d in range(10))
    spec = scene_preprocess()
    assert spec.input_size == (128, 128) and spec.channels == 1


def test_scenes_are_deterministic_by_seed_and_differ_across_seeds_and_splits() -> None:
    a, b, c = DigitScenes("val", 4, seed=1), DigitScenes("val", 4, seed=1), DigitScenes("val", 4, seed=2)
    assert np.array_equal(a[3].image, b[3].image)
    assert np.array_equal(a[3].instances, b[3].instances)
    assert not np.array_equal(a[3].image, c[3].image)
    assert not np.array_equal(a[3].image, DigitScenes("test", 4, seed=1)[3].image)
    with pytest.raises(IndexError):
        a[4]


def test_splits_draw_on_disjoint_scans() -> None:
    used = {}
    for split in SPLITS:
        scenes = DigitScenes(split, 60, seed=0)
        used[split] = set(np.concatenate([scenes[i].scan_indices for i in range(len(scenes))]).tolist())
        assert used[split] <= set(SPLITS[split])
    assert (
        not used["train"] & used["val"]
        and not used["train"] & used["test"]
        and not used["val"] & used["test"]
    )


def test_masks_boxes_and_labels_agree() -> None:
    targets = load_digits().target
    scenes = DigitScenes("test", 60, seed=0)
    for i in range(len(scenes)):
        scene = scenes[i]
        n = len(scene.labels)
        assert scene.image.shape == (128, 128) and scene.image.dtype == np.float32
        assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
        assert scene.boxes.shape == (n, 4) and len(scene.scan_indices) == n
        assert np.array_equal(scene.labels, targets[scene.scan_indices])
        assert set(np.unique(scene.instances)) == set(range(n + 1))
        assert np.array_equal(scene.semantic > 0, scene.instances > 0)
        for k in range(n):
            pixels = scene.instances == k + 1
            assert (scene.semantic[pixels] == scene.labels[k] + 1).all()
            ys, xs = np.nonzero(pixels)
            assert tuple(scene.boxes[k]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert pixels.sum() >= scenes.min_visible_pixels
            # annotated pixels are ink in the image (noise only jitters them)
            assert np.median(scene.image[pixels]) >= INK_THRESHOLD


def test_digit_count_and_sizes_vary_from_tiny_to_large() -> None:
    scenes = DigitScenes("train", 150, seed=0)
    counts = [len(scenes[i].labels) for i in range(len(scenes))]
    sizes = np.concatenate([scenes[i].digit_sizes for i in range(len(scenes))])
    assert min(counts) >= 1 and max(counts) == 5
    assert np.percentile(sizes, 10) <= 16 and np.percentile(sizes, 90) >= 40


def test_later_digits_occlude_earlier_ones() -> None:
    # Five 56 px digits on a 64 px canvas, placed anywhere: each later one hides ink of the earlier.
    crowded = DigitScenes(
        "train", 20, canvas_size=64, digits_range=(5, 5), size_range=(56, 56), max_cover=1.0
    )
    counts = [len(crowded[i].labels) for i in range(len(crowded))]
    assert min(counts) < 5  # some digit hidden so much it is not annotated
    # in ordinary scenes an earlier digit's box holds a later digit's pixels now and then
    scenes = DigitScenes("val", 100, seed=0)
    overlapping = 0
    for i in range(len(scenes)):
        scene = scenes[i]
        for k, (x0, y0, x1, y1) in enumerate(scene.boxes.astype(int)):
            inside = scene.instances[y0:y1, x0:x1]
            overlapping += bool((inside > k + 1).any())
    assert overlapping >= 5
