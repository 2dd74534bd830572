import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from attnserve.export.caption_metrics import bleu4, digit_pointing, exact_match
from attnserve.export.data import SPLITS
from attnserve.export.data.captions import (
    DIGIT_WORDS,
    END,
    MAX_CAPTION_TOKENS,
    PAD,
    SMALL_SIDES,
    START,
    VOCABULARY,
    CaptionScene,
    CaptionScenes,
    caption_batch,
    caption_preprocess,
    decode,
    digit_word_positions,
    encode,
)


@pytest.fixture(scope="module")
def scenes() -> list[CaptionScene]:
    dataset = CaptionScenes("val", 500, seed=0)
    return [dataset[i] for i in range(len(dataset))]


def test_scenes_are_deterministic_by_seed_and_differ_across_seeds_and_splits() -> None:
    a, b, c = (
        CaptionScenes("val", 4, seed=1),
        CaptionScenes("val", 4, seed=1),
        CaptionScenes("val", 4, seed=2),
    )
    assert np.array_equal(a[3].image, b[3].image) and a[3].words == b[3].words
    assert not np.array_equal(a[3].image, c[3].image)
    assert not np.array_equal(a[3].image, CaptionScenes("test", 4, seed=1)[3].image)
    with pytest.raises(IndexError):
        a[4]


def test_splits_draw_on_disjoint_scans() -> None:
    used = {}
    for split in SPLITS:
        dataset = CaptionScenes(split, 60)
        used[split] = set(np.concatenate([dataset[i].scan_indices for i in range(60)]).tolist())
        assert used[split] <= set(SPLITS[split])
    assert (
        not used["train"] & used["val"]
        and not used["train"] & used["test"]
        and not used["val"] & used["test"]
    )


def test_annotations_agree_with_the_image_and_the_scans(scenes: list[CaptionScene]) -> None:
    targets = load_digits().target
    for scene in scenes:
        n = len(scene.labels)
        assert 1 <= n <= 4 and scene.boxes.shape == (n, 4) and len(scene.sizes) == n
        assert scene.image.shape == (112, 112) and scene.image.dtype == np.float32
        assert 0.0 <= scene.image.min() and scene.image.max() <= 1.0
        assert np.array_equal(scene.labels, targets[scene.scan_indices])
        for x0, y0, x1, y1 in scene.boxes.astype(int):
            assert scene.image[y0:y1, x0:x1].max() > 0.5


def test_digits_never_overlap(scenes: list[CaptionScene]) -> None:
    for scene in scenes:
        for a in range(len(scene.boxes)):
            for b in range(a + 1, len(scene.boxes)):
                (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = scene.boxes[a], scene.boxes[b]
                # ink lies in its square, so ink boxes are as far apart as the squares (≥ 2 px)
                assert ax1 + 2 <= bx0 or bx1 + 2 <= ax0 or ay1 + 2 <= by0 or by1 + 2 <= ay0


def test_captions_describe_the_layout(scenes: list[CaptionScene]) -> None:
    for scene in scenes:
        words, n = scene.words, len(scene.labels)
        assert len(scene.word_digit) == len(words)
        positions = [t for t, k in enumerate(scene.word_digit) if k >= 0]
        assert positions == digit_word_positions(words)
        assert [scene.word_digit[t] for t in positions] == list(range(n))
        assert [words[t] for t in positions] == [DIGIT_WORDS[d] for d in scene.labels]
        assert [words[t - 1] for t in positions] == list(scene.sizes)
        sides = np.maximum(scene.boxes[:, 2] - scene.boxes[:, 0], scene.boxes[:, 3] - scene.boxes[:, 1])
        for size, side in zip(scene.sizes, sides, strict=True):
            assert side <= SMALL_SIDES[1] if size == "small" else side >= 24
        centres = (scene.boxes[:, :2] + scene.boxes[:, 2:]) / 2
        dx, dy = np.abs(centres[-1] - centres[0])
        if n == 1:
            assert words == ("a", scene.sizes[0], DIGIT_WORDS[scene.labels[0]])
        elif n == 2 and "left" in words:
            assert words[3:5] == ("left", "of") and centres[0, 0] < centres[1, 0] and dx >= 1.6 * dy
        elif n == 2:
            assert words[3] == "above" and centres[0, 1] < centres[1, 1] and dx <= 0.6 * dy
        else:
            assert words[:3] == (("three", "four")[n - 3], "digits", ":")
            assert np.diff(centres[:, 0]).min() >= 6


def test_vocabulary_covers_every_caption(scenes: list[CaptionScene]) -> None:
    assert VOCABULARY[:3] == (PAD, START, END) and len(set(VOCABULARY)) == len(VOCABULARY)
    used = {word for scene in scenes for word in scene.words}
    assert used == set(VOCABULARY[3:])
    assert max(len(scene.words) for scene in scenes) == MAX_CAPTION_TOKENS


def test_encode_and_decode_round_trip() -> None:
    words = ("three", "digits", ":", "small", "four", ",", "large", "five", ",", "small", "one")
    ids = encode(words, 16)
    assert ids.dtype == np.int64 and ids.shape == (16,)
    assert ids[len(words)] == VOCABULARY.index(END) and not ids[len(words) + 1 :].any()
    assert decode(ids) == words
    assert decode(np.concatenate([[VOCABULARY.index(START)], ids])) == words
    assert decode(encode(words, len(words) + 1)) == words
    with pytest.raises(ValueError):
        encode(words, len(words))


def test_batches_stack_images_and_encoded_captions() -> None:
    dataset = CaptionScenes("train", 8)
    images, tokens = caption_batch(dataset, [5, 2])
    assert images.shape == (2, 1, 112, 112) and images.dtype == np.float32
    assert tokens.shape == (2, 16) and tokens.dtype == np.int64
    assert np.array_equal(images[1, 0], dataset[2].image) and decode(tokens[0]) == dataset[5].words
    spec = caption_preprocess()
    assert spec.input_size == (112, 112) and spec.channels == 1


def test_bleu_matches_a_hand_computed_corpus() -> None:
    references = ["a b c d e f".split(), "a b c d".split()]
    hypotheses = ["a b c d e".split(), "a b b d".split()]
    # pooled clipped precisions 8/9, 5/7, 3/5, 2/3 ("b" counts once); lengths c = 9 < r = 10
    expected = math.exp(1 - 10 / 9) * (8 / 9 * 5 / 7 * 3 / 5 * 2 / 3) ** 0.25
    assert bleu4(references, hypotheses) == pytest.approx(expected)
    assert bleu4(references, references) == 1.0
    assert bleu4(references, [["x", "y", "z", "w"]] * 2) == 0.0
    assert bleu4(["the cat is on the mat".split()], ["the cat sat on the mat".split()]) == 0.0
    assert exact_match(references, [references[0], hypotheses[1]]) == 0.5


def test_bleu_agrees_with_nltk() -> None:
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    references = ["a b c d e f".split(), "a b c d".split()]
    hypotheses = ["a b c d e".split(), "a b b d".split()]
    assert bleu4(references, hypotheses) == pytest.approx(
        nltk_bleu.corpus_bleu([[r] for r in references], hypotheses)
    )


def test_digit_pointing_counts_correct_digit_words_and_their_peaks() -> None:
    scene_words = tuple("a small seven left of a large two".split())
    word_digit = (-1, -1, 0, -1, -1, -1, -1, 1)
    boxes = np.array([[10, 10, 24, 24], [60, 20, 90, 50]], dtype=np.float32)
    maps = np.zeros((8, 7, 7), dtype=np.float32)  # 16 px cells over a 112 px input
    maps[2, 0, 0] = 1.0  # centre (8, 8): 2 px off the box, inside the margin
    maps[7, 2, 4] = 1.0  # centre (72, 40)
    assert digit_pointing(scene_words, maps, scene_words, boxes, word_digit, (112, 112)) == (2, 2)
    assert digit_pointing(scene_words, maps, scene_words, boxes + 1, word_digit, (112, 112)) == (1, 2)
    wrong_first = tuple("a small one left of a large two".split())
    assert digit_pointing(wrong_first, maps, scene_words, boxes, word_digit, (112, 112)) == (1, 1)
    assert digit_pointing(("a", "small", "seven"), maps, scene_words, boxes, word_digit, (112, 112)) == (1, 1)
    # the count word is not a digit: "three" at 0 is skipped, "three" at 4 is the first digit
    words = tuple("three digits : small three , large five , small one".split())
    assert digit_word_positions(words) == [4, 7, 10]
    with pytest.raises(ValueError):
        digit_pointing(scene_words, maps[:3], scene_words, boxes, word_digit, (112, 112))


def test_a_scene_that_never_fits_falls_back_to_a_row_of_small_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CaptionScenes, "_place", lambda self, rng, sides, ink_boxes: None)
    dataset = CaptionScenes("train", 40)
    for i in range(len(dataset)):
        scene = dataset[i]
        assert set(scene.sizes) == {"small"}
        centres = (scene.boxes[:, :2] + scene.boxes[:, 2:]) / 2
        assert len(centres) == 1 or np.diff(centres[:, 0]).min() >= 6
        assert len(centres) != 2 or "left" in scene.words
