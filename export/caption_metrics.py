"""How good a generated caption is, and whether its attention looked at the digit it named.

- *BLEU-4* (Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation",
  ACL 2002) and *exact match* score the words.
- *Digit pointing* scores the attention: while a digit word is generated, does the map's peak
  lie on the digit that word names?
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from .attention_quality import inside_boxes
from .data.captions import digit_word_positions

POINTING_MARGIN = 2.0
"""Pixels by which a digit's box is grown on every side before the peak is tested."""


def _ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu4(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 with one reference per hypothesis: the geometric mean of the clipped 1- to
    4-gram precisions pooled over the corpus (uniform weights, no smoothing), times the brevity
    penalty ``exp(1 - r / c)`` when the hypotheses' total length c is below the references' r.
    0.0 when any precision is 0."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    matches, totals = np.zeros(4), np.zeros(4)
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        for n in range(1, 5):
            counts = _ngrams(hypothesis, n)
            matches[n - 1] += sum((counts & _ngrams(reference, n)).values())
            totals[n - 1] += sum(counts.values())
    if not matches.all():
        return 0.0
    hypothesis_length = sum(len(h) for h in hypotheses)
    reference_length = sum(len(r) for r in references)
    brevity = min(1.0, float(np.exp(1.0 - reference_length / hypothesis_length)))
    return brevity * float(np.exp(np.mean(np.log(matches / totals))))


def exact_match(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """The share of hypotheses identical to their reference."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    return float(np.mean([tuple(r) == tuple(h) for r, h in zip(references, hypotheses, strict=True)]))


def digit_pointing(
    words: Sequence[str],
    maps: NDArray[np.floating],
    scene_words: Sequence[str],
    boxes: NDArray[np.floating],
    word_digit: Sequence[int],
    input_size: tuple[int, int],
) -> tuple[int, int]:
    """Whether a generated caption's attention, at each digit word it names correctly, peaks on
    that digit.

    The k-th digit word of ``words`` (``digit_word_positions``: a digit name that is not the
    count of ``three digits``), at position t, is *counted* when the scene has a k-th digit
    (scene order = caption order: the k-th digit word of ``scene_words``, whose box is
    ``boxes[word_digit[...]]``) and both words name the same class. It is a *hit* when the peak
    cell (i, j) of ``maps[t]`` (an h×w map over the model input's field of view; the first peak
    if several), mapped to input pixels as its centre ``((j + 0.5) * W / w, (i + 0.5) * H / h)``
    with ``input_size = (H, W)``, lies inside that digit's box (x0, y0, x1, y1, end-exclusive,
    in input pixels) grown by ``POINTING_MARGIN`` = 2 px on every side.

    Args:
        maps: T×h×w, row t the attention while word t was generated; T ≥ len(words).

    Returns:
        (hits, counted).
    """
    if len(maps) < len(words):
        raise ValueError(f"{len(maps)} attention maps for {len(words)} words")
    scene_digits = [(scene_words[t], word_digit[t]) for t in digit_word_positions(scene_words)]
    height, width = input_size
    cells_y, cells_x = maps.shape[1:]
    hits = counted = 0
    # zip pairs the k-th generated digit word with the scene's k-th digit, as far as both go.
    for t, (scene_word, digit) in zip(digit_word_positions(words), scene_digits, strict=False):
        if words[t] != scene_word:
            continue
        i, j = np.unravel_index(int(np.argmax(maps[t])), (cells_y, cells_x))
        peak = np.array([[(j + 0.5) * width / cells_x, (i + 0.5) * height / cells_y]])
        grown = boxes[digit][None] + np.array([-1.0, -1.0, 1.0, 1.0]) * POINTING_MARGIN
        counted += 1
        hits += int(inside_boxes(peak, grown)[0])
    return hits, counted
