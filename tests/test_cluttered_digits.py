import numpy as np
import pytest
from sklearn.datasets import load_digits

from attnserve.export.data import SPLITS, ClutteredDigits, as_photo
from attnserve.export.data.cluttered_digits import INK_THRESHOLD


def test_splits_partition_the_scans_and_test_is_1497_to_1796() -> None:
    scans = [set(r) for r in SPLITS.values()]
    assert set.union(*scans) == set(range(1797))
    assert sum(len(s) for s in scans) == 1797
    assert SPLITS["test"] == range(1497, 1797)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_no_scan_crosses_its_split_as_digit_or_clutter(split: str) -> None:
    dataset = ClutteredDigits(split, 200, seed=3)  # type: ignore[arg-type]
    allowed = SPLITS[split]
    for sample in (dataset[i] for i in range(len(dataset))):
        assert sample.scan_index in allowed
        assert sample.clutter_scans and all(s in allowed for s in sample.clutter_scans)
        assert sample.scan_index not in sample.clutter_scans


def test_samples_are_deterministic_by_seed_and_differ_across_seeds() -> None:
    a, b, c = (
        ClutteredDigits("val", 5, seed=1),
        ClutteredDigits("val", 5, seed=1),
        ClutteredDigits("val", 5, seed=2),
    )
    assert np.array_equal(a[3].image, b[3].image)
    assert not np.array_equal(a[3].image, c[3].image)
    assert np.array_equal(a.batch().images[3], a[3].image)


def test_labels_boxes_and_masks_are_the_digits_own() -> None:
    targets = load_digits().target
    dataset = ClutteredDigits("test", 100, seed=0)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample.image.shape == (64, 64) and sample.image.dtype == np.float32
        assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
        assert sample.label == targets[sample.scan_index]
        x0, y0, x1, y1 = sample.box
        ys, xs = np.nonzero(sample.mask)
        # the box is exactly the mask's extent
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        # digit pixels are ink in the image (clutter and noise only add or jitter)
        assert np.median(sample.image[sample.mask]) >= INK_THRESHOLD


def test_distortion_changes_the_digit_but_keeps_box_and_label_consistent() -> None:
    plain, distorted = (
        ClutteredDigits("train", 20, seed=5),
        ClutteredDigits("train", 20, seed=5, distort=True),
    )
    assert not np.array_equal(plain[0].image, distorted[0].image)
    sample = distorted[0]
    ys, xs = np.nonzero(sample.mask)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == sample.box


def test_unknown_split_and_too_small_canvas_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        ClutteredDigits("holdout", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot hold"):
        ClutteredDigits("train", 1, canvas_size=32)
    with pytest.raises(IndexError):
        ClutteredDigits("train", 1)[1]


def test_as_photo_scales_and_pads_the_box() -> None:
    sample = ClutteredDigits("test", 1, seed=0)[0]
    photo, box = as_photo(sample, scale=3.0, pad=(10, 20, 0, 5))
    assert photo.size == (64 * 3 + 10, 64 * 3 + 25)
    x0, y0, x1, y1 = sample.box
    assert box == (x0 * 3 + 10, y0 * 3 + 20, x1 * 3 + 10, y1 * 3 + 20)
    pixels = np.asarray(photo, dtype=np.float32) / 255
    inside = pixels[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])]
    assert inside.mean() > pixels[:, :10].mean() + 0.1  # ink in the box, only black padding left of it


def test_camera_round_trip_resamples_some_canvases_and_keeps_their_ground_truth() -> None:
    plain = ClutteredDigits("train", 40, seed=9, distort=True)
    resampled = ClutteredDigits("train", 40, seed=9, distort=True, resample_share=0.5)
    changed = [i for i in range(40) if not np.array_equal(plain[i].image, resampled[i].image)]
    assert 5 <= len(changed) <= 35  # about half
    for i in changed:
        a, b = plain[i], resampled[i]
        assert (
            b.image.shape == (64, 64)
            and b.image.dtype == np.float32
            and 0 <= b.image.min() <= b.image.max() <= 1
        )
        assert a.label == b.label and a.box == b.box and np.array_equal(a.mask, b.mask)
        assert np.abs(a.image - b.image).mean() < 0.1  # the same picture, resampled


@pytest.mark.parametrize("variant", ["small", "mixed"])
def test_variants_are_deterministic_and_split_by_source_scan(variant: str) -> None:
    from attnserve.export.data import make_dataset

    for split in ("train", "val", "test"):
        first = make_dataset(variant, split, 30, seed=4)  # type: ignore[arg-type]
        again = make_dataset(variant, split, 30, seed=4)  # type: ignore[arg-type]
        other = make_dataset(variant, split, 30, seed=5)  # type: ignore[arg-type]
        for i in range(len(first)):
            sample = first[i]
            assert np.array_equal(sample.image, again[i].image) and sample.box == again[i].box
            assert sample.scan_index in SPLITS[split]
            assert all(s in SPLITS[split] for s in sample.clutter_scans)
        assert any(not np.array_equal(first[i].image, other[i].image) for i in range(len(first)))


def test_small_digits_are_small_in_a_larger_picture() -> None:
    from attnserve.export.data import make_dataset

    dataset = make_dataset("small", "test", 200, seed=0)
    sides, shares = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        height, width = sample.image.shape
        assert height == width and 96 <= width <= 128
        x0, y0, x1, y1 = sample.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        sides.append(max(x1 - x0, y1 - y0))
        shares.append((x1 - x0) * (y1 - y0) / (width * height))
    assert 6 <= min(sides) and max(sides) <= 20  # the ink of a 10–20 px digit
    assert np.mean(shares) < 0.02  # ~1 % of the picture: a model must find it first


def test_mixed_canvases_have_other_sizes_and_aspect_ratios() -> None:
    from attnserve.export.data import make_dataset

    dataset = make_dataset("mixed", "test", 100, seed=0)
    ratios = []
    for i in range(len(dataset)):
        sample = dataset[i]
        height, width = sample.image.shape
        ratios.append(width / height)
        ys, xs = np.nonzero(sample.mask)
        assert sample.box == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    assert min(ratios) < 0.7 and max(ratios) > 1.4
    assert min(min(dataset[i].image.shape) for i in range(len(dataset))) >= 64
