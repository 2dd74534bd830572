"""Captioning's answer: the caption, each word with its score and where its attention peaks.

The graph returns `MAX` words (padding after the end token), each word's log-probability, and a
stack of per-word maps (the primary attention, axes ``("word", "y", "x")``). The caption is the
words before the first end (or padding) token; the attention stack is cut to them
(`TaskResult.extent`), so every form of the map (raw, upsampled, tiles) has one entry per word.
The drawn answer (``TaskOptions.overlay``) is one tile per word: the image with that word's map
blended on it and the word written under it, in rows of `TILES_PER_ROW`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from attnserve.prediction import Caption, Word
from attnserve.spec import CAPTION_SPECIAL_TOKENS, WORD_AXIS, ModelSpec, Normalization, Task
from attnserve.transform import ResizeGeometry, peak_in_original, stack_to_size

from ..render import overlay
from .display import to_display
from .tasks import Outputs, TaskContext, TaskResult, register_task

END_TOKENS = (CAPTION_SPECIAL_TOKENS.index("<pad>"), CAPTION_SPECIAL_TOKENS.index("<end>"))
TILE_SIDE = 224
"""The longest side of one word's tile in the drawn answer (smaller images keep their size)."""
TILES_PER_ROW = 5
LABEL_ROWS = 26
"""Pixels under each tile for its word."""
TILE_GAP = 4
PER_WORD = Normalization(method="minmax")


def caption_length(tokens: NDArray[np.int64]) -> int:
    """Words before the first end or padding token (all of them when there is none)."""
    ends = np.flatnonzero(np.isin(tokens, END_TOKENS))
    return int(ends[0]) if ends.size else len(tokens)


@register_task(Task.CAPTIONING, reads_primary=True)
def captioning(outputs: Outputs, spec: ModelSpec, context: TaskContext) -> TaskResult:
    """Token ids → the caption's words with scores and peaks; the word stack cut to them."""
    raw_tokens = outputs[spec.task_output("tokens")]
    if not (np.all(raw_tokens >= 0) and np.all(raw_tokens < len(spec.labels))):
        raise ValueError(f"{spec.architecture}: token ids outside its vocabulary of {len(spec.labels)}")
    tokens = np.rint(raw_tokens).astype(np.int64)
    log_probs = outputs[spec.task_output("word_scores")].astype(np.float64)
    count = caption_length(tokens)
    maps = outputs.get(spec.primary_attention or "")
    peaks = _peaks(maps[:count], context.geometry) if maps is not None else [None] * count
    words = [
        Word(spec.labels[token], int(token), float(log_probs[t]), peaks[t])
        for t, token in enumerate(tokens[:count])
    ]
    limit = context.options.model_options.get("max_length")
    caption = Caption(
        words=words,
        log_prob=float(log_probs[: count + 1].sum()),
        max_length_reached=limit is not None and count >= limit,
    )
    result = TaskResult(caption=caption, extent={WORD_AXIS: count})
    if context.options.overlay:
        if context.image is None:
            raise ValueError("a drawn caption needs the original image (preprocess with keep_image=True)")
        if maps is None:
            raise ValueError("a drawn caption needs the word attention output")
        drawn = draw_caption(context.image, [w.text for w in words], maps[:count], context.geometry)
        result.overlay, result.overlay_encoding = context.encoder.encode(drawn), context.encoder.encoding
    return result


def _peaks(maps: NDArray[np.float32], geometry: ResizeGeometry) -> list[tuple[float, float] | None]:
    peaks: list[tuple[float, float] | None] = []
    for values in maps:
        x, y, _ = peak_in_original(values, geometry)
        peaks.append((x, y))
    return peaks


def draw_caption(
    image: Image.Image, words: list[str], maps: NDArray[np.float32], geometry: ResizeGeometry
) -> NDArray[np.uint8]:
    """One tile per word: the image (at most `TILE_SIDE` on its longer side) with the word's
    map blended on it (each map normalised on its own: every word shows where *it* looked),
    the word written under it; `TILES_PER_ROW` tiles a row. No words: the image, labelled so."""
    scale = min(1.0, TILE_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    tile_image = (
        image.convert("RGB").resize(size, Image.Resampling.BILINEAR) if scale < 1.0 else image.convert("RGB")
    )
    tiles: list[tuple[NDArray[np.uint8], str]] = []
    if len(words) == 0:
        tiles.append((np.asarray(tile_image, dtype=np.uint8), "(no words)"))
    else:
        display = np.stack([to_display(values, PER_WORD).values for values in maps])
        upsampled = np.clip(stack_to_size(display, geometry, size), 0.0, 1.0)
        tiles.extend((overlay(tile_image, shown), word) for shown, word in zip(upsampled, words, strict=True))
    columns = min(TILES_PER_ROW, len(tiles))
    rows = -(-len(tiles) // columns)
    width, height = size
    cell_w, cell_h = width + TILE_GAP, height + LABEL_ROWS + TILE_GAP
    canvas = Image.new("RGB", (columns * cell_w - TILE_GAP, rows * cell_h - TILE_GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, min(18, LABEL_ROWS - 8)))
    for index, (pixels, word) in enumerate(tiles):
        left, top = (index % columns) * cell_w, (index // columns) * cell_h
        canvas.paste(Image.fromarray(pixels), (left, top))
        draw.text(
            (left + width / 2, top + height + LABEL_ROWS / 2), word, fill=(0, 0, 0), font=font, anchor="mm"
        )
    return np.asarray(canvas, dtype=np.uint8)
