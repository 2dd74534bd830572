"""Captioned digit scenes: a few real handwritten digits, small and large, and a sentence that
says where each one is, for captioning with visual attention (Xu et al., "Show, Attend and
Tell", ICML 2015).

The digits are the same real scans as `cluttered_digits` (scikit-learn's `load_digits`), split
by *source scan* with the same `SPLITS` (scans 1497–1796 are the final test split, never used for
training or selection). A scene places 1–4 digits that never overlap, each either *small*
(14–20 px) or *large* (28–38 px), and its caption is written from the layout:

- one digit: ``a large seven``;
- two: ``a small seven left of a large two`` or ``a large two above a small seven``, by which of
  the centres' horizontal and vertical distances dominates;
- three or four: ``three digits : small four , large five , small one``, left to right.

So the words depend on where the digits are and how big, not only on which are present, and
every digit word names one digit whose box is known: the ground truth for where attention
should be while that word is generated. Layouts whose caption would be ambiguous (two digits
about as far apart across as down, or two of several digits nearly in one column) are placed
again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import ColorMode, PreprocessSpec, ResizeMode

from .cluttered_digits import _SPLIT_CODES, INK_THRESHOLD, SPLITS, Split, _distorted, _scans, _upscaled

PAD, START, END = "<pad>", "<start>", "<end>"
DIGIT_WORDS: tuple[str, ...] = tuple("zero one two three four five six seven eight nine".split())
COUNT_WORDS = {3: "three", 4: "four"}
VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        (PAD, START, END, "a", "small", "large", "left", "of", "above", "three", "four", "digits", ":", ",")
        + DIGIT_WORDS
    )
)
"""Token ids: ``<pad>`` 0, ``<start>`` 1, ``<end>`` 2, then every word a caption can hold."""
_IDS = {word: i for i, word in enumerate(VOCABULARY)}
MAX_CAPTION_TOKENS = 14
"""``four digits : small four , large five , small one , large two``."""

SMALL_SIDES = (14, 20)
LARGE_SIDES = (28, 38)
"""Inclusive ranges of a small and a large digit's side (px); each digit is one or the other."""
GAP = 2
"""Least gap (px) between two digits' squares."""
AMBIGUOUS_RATIO = (0.6, 1.6)
"""Two digits whose centres' |dx|/|dy| lies strictly inside this range are placed again."""
MIN_COLUMN_GAP = 6.0
"""Three or four digits' centres must lie at least this far apart in x."""
_TRIES = 50
_REDRAWS = 10

CAPTION_MEAN = 0.058
CAPTION_STD = 0.166
"""Pixel statistics of 112 px training scenes (mean 0.0579, std 0.1661 over 2,000 scenes)."""


@dataclass(frozen=True)
class CaptionScene:
    image: NDArray[np.float32]
    """H×W, values in [0, 1], white ink on black."""
    words: tuple[str, ...]
    boxes: NDArray[np.float32]
    """n×4 (x0, y0, x1, y1), end-exclusive canvas pixels of each digit's ink, in caption order."""
    labels: NDArray[np.int64]
    """n digit classes 0..9, in caption order."""
    sizes: tuple[str, ...]
    """n of ``"small"`` / ``"large"``, in caption order."""
    word_digit: tuple[int, ...]
    """For each word, the index into ``boxes`` of the digit it names, or -1."""
    scan_indices: NDArray[np.int64]
    """n source scans, in caption order."""


class CaptionScenes:
    """A deterministic, indexable set of captioned digit scenes.

    Scene ``i`` depends only on ``(seed, split, i)`` and the constructor's parameters.
    """

    def __init__(
        self,
        split: Split,
        num_samples: int,
        *,
        seed: int = 0,
        canvas_size: int = 112,
        digits_range: tuple[int, int] = (1, 4),
        noise_std: float = 0.04,
        distort: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
        if not 1 <= digits_range[0] <= digits_range[1] <= 4:
            raise ValueError(f"digits range {digits_range} must lie in [1, 4]")
        if canvas_size < 112:
            raise ValueError(f"a {canvas_size} px canvas is too small; layouts need at least 112 px")
        self.split = split
        self.num_samples = num_samples
        self.seed = seed
        self.canvas_size = canvas_size
        self.digits_range = digits_range
        self.noise_std = noise_std
        self.distort = distort
        self.scan_indices = np.arange(SPLITS[split].start, SPLITS[split].stop)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> CaptionScene:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, _SPLIT_CODES[self.split], index))
        count = int(rng.integers(self.digits_range[0], self.digits_range[1] + 1))
        scans = rng.choice(self.scan_indices, size=count)
        for redraw in range(_REDRAWS + 1):
            # The last draw is all small, spread along one row: a layout that always fits.
            large = rng.uniform(size=count) < 0.5 if redraw < _REDRAWS else np.zeros(count, dtype=bool)
            sides = np.where(
                large,
                rng.integers(LARGE_SIDES[0], LARGE_SIDES[1] + 1, size=count),
                rng.integers(SMALL_SIDES[0], SMALL_SIDES[1] + 1, size=count),
            )
            digits = [
                self._render(int(scan), int(side), rng) for scan, side in zip(scans, sides, strict=True)
            ]
            ink_boxes = np.array([_ink_box(digit) for digit in digits], dtype=np.float32)
            corners = self._place(rng, sides, ink_boxes) if redraw < _REDRAWS else self._row(sides)
            if corners is not None:
                break
        assert corners is not None

        canvas = np.zeros((self.canvas_size, self.canvas_size), dtype=np.float32)
        for digit, (left, top), side in zip(digits, corners, sides, strict=True):
            canvas[top : top + side, left : left + side] = digit
        if self.noise_std > 0:
            canvas += rng.normal(0.0, self.noise_std, size=canvas.shape).astype(np.float32)
        np.clip(canvas, 0.0, 1.0, out=canvas)

        boxes = ink_boxes + np.tile(corners, 2)
        labels = _scans()[1][scans]
        order, words, word_digit = _caption(boxes, labels, large)
        return CaptionScene(
            image=canvas,
            words=words,
            boxes=boxes[order],
            labels=labels[order],
            sizes=tuple("large" if large[k] else "small" for k in order),
            word_digit=word_digit,
            scan_indices=scans[order].astype(np.int64),
        )

    def _render(self, scan: int, side: int, rng: np.random.Generator) -> NDArray[np.float32]:
        return _distorted(scan, side, rng) if self.distort else _upscaled(scan, side)

    def _place(
        self, rng: np.random.Generator, sides: NDArray[np.int64], ink_boxes: NDArray[np.float32]
    ) -> NDArray[np.int64] | None:
        """Top-left corners (x, y) of each digit's square: squares at least `GAP` apart, placed
        one after another from `_TRIES` random corners each, and a layout whose caption is
        unambiguous; None if none of `_TRIES` layouts is."""
        for _ in range(_TRIES):
            corners = np.zeros((len(sides), 2), dtype=np.int64)
            for k, side in enumerate(sides):
                candidates = rng.integers(0, self.canvas_size - side + 1, size=(_TRIES, 1, 2))
                placed, placed_sides = corners[None, :k], sides[None, :k, None]
                apart = (candidates >= placed + placed_sides + GAP) | (candidates + side + GAP <= placed)
                clear = apart.any(axis=2).all(axis=1)
                if not clear.any():
                    break
                corners[k] = candidates[int(clear.argmax()), 0]
            else:
                if _unambiguous(ink_boxes + np.tile(corners, 2)):
                    return corners
        return None

    def _row(self, sides: NDArray[np.int64]) -> NDArray[np.int64]:
        """Small digits spread evenly along the middle row. On a canvas of 112 px or more their
        squares are ≥ 10 px apart, centres ≥ 11 px apart in x, and two digits ≥ 73 px apart
        across but < 20 px down: unambiguous, whatever the ink."""
        lefts = np.round(np.linspace(0, self.canvas_size - SMALL_SIDES[1], len(sides))).astype(np.int64)
        tops = (self.canvas_size - sides) // 2
        return np.stack([lefts, tops], axis=1)


def _ink_box(digit: NDArray[np.float32]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(digit >= INK_THRESHOLD)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _centres(boxes: NDArray[np.float32]) -> NDArray[np.float32]:
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0


def _unambiguous(boxes: NDArray[np.float32]) -> bool:
    centres = _centres(boxes)
    if len(boxes) == 2:
        dx, dy = np.abs(centres[1] - centres[0])
        return not AMBIGUOUS_RATIO[0] * dy < dx < AMBIGUOUS_RATIO[1] * dy
    if len(boxes) > 2:
        return bool(np.diff(np.sort(centres[:, 0])).min() >= MIN_COLUMN_GAP)
    return True


def _caption(
    boxes: NDArray[np.float32], labels: NDArray[np.int64], large: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], tuple[str, ...], tuple[int, ...]]:
    """The digits' caption order, the caption, and for each word the caption-order index of
    the digit it names (-1 for other words)."""
    centres = _centres(boxes)
    count = len(boxes)
    horizontal = True
    if count == 2:
        dx, dy = np.abs(centres[1] - centres[0])
        horizontal = bool(dx > dy)  # placement made one of them dominate
    order = np.argsort(centres[:, 0 if horizontal else 1], kind="stable")
    mentions = [
        [("large" if large[digit] else "small", -1), (DIGIT_WORDS[int(labels[digit])], k)]
        for k, digit in enumerate(order)
    ]
    if count == 1:
        tagged = [("a", -1), *mentions[0]]
    elif count == 2:
        relation = [("left", -1), ("of", -1)] if horizontal else [("above", -1)]
        tagged = [("a", -1), *mentions[0], *relation, ("a", -1), *mentions[1]]
    else:
        tagged = [(COUNT_WORDS[count], -1), ("digits", -1), (":", -1), *mentions[0]]
        for mention in mentions[1:]:
            tagged += [(",", -1), *mention]
    words, word_digit = zip(*tagged, strict=True)
    return order, words, word_digit


def digit_word_positions(words: Sequence[str]) -> list[int]:
    """Where a caption names a digit: the digit words, except a count (``three digits``)."""
    return [
        t
        for t, word in enumerate(words)
        if word in DIGIT_WORDS and (t + 1 == len(words) or words[t + 1] != "digits")
    ]


def encode(words: Sequence[str], max_length: int) -> NDArray[np.int64]:
    """``[ids..., <end>, <pad>...]`` of length `max_length`; raises if the caption is too long."""
    if len(words) + 1 > max_length:
        raise ValueError(f"{len(words)} words and <end> do not fit in {max_length} tokens")
    ids = np.zeros(max_length, dtype=np.int64)
    ids[: len(words)] = [_IDS[word] for word in words]
    ids[len(words)] = _IDS[END]
    return ids


def decode(ids: Sequence[int] | NDArray[np.integer]) -> tuple[str, ...]:
    """The words up to the first ``<end>`` or ``<pad>``, ``<start>`` skipped."""
    words = []
    for token in ids:
        word = VOCABULARY[int(token)]
        if word in (END, PAD):
            break
        if word != START:
            words.append(word)
    return tuple(words)


def caption_batch(
    dataset: CaptionScenes, indices: Sequence[int] | NDArray[np.integer], max_length: int = 16
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Scenes ``indices`` as N×1×H×W images in [0, 1] (not normalized) and N×`max_length`
    encoded captions."""
    size = dataset.canvas_size
    images = np.empty((len(indices), 1, size, size), dtype=np.float32)
    tokens = np.empty((len(indices), max_length), dtype=np.int64)
    for row, index in enumerate(indices):
        scene = dataset[int(index)]
        images[row, 0] = scene.image
        tokens[row] = encode(scene.words, max_length)
    return images, tokens


def caption_preprocess(input_size: tuple[int, int] = (112, 112)) -> PreprocessSpec:
    """How every captioning model reads an image: gray, letterboxed on black, the scenes' statistics."""
    return PreprocessSpec(
        input_size=input_size,
        color_mode=ColorMode.GRAY,
        mean=(CAPTION_MEAN,),
        std=(CAPTION_STD,),
        resize_mode=ResizeMode.LETTERBOX,
        pad_value=0.0,
    )
