"""Captioning's answer from graph outputs (pure functions, no model): the words before the end
token, their scores and peaks in original pixels, the word stack cut to them, the drawn tiles; the
model's own options resolved against its spec; the wire forms of the caption and the options."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from attnserve import codec
from attnserve.errors import InvalidInput
from attnserve.export.models import get_spec
from attnserve.prediction import Caption, ImageInfo, MapForm, Prediction, PredictionRequest, Word
from attnserve.server.gateway.pipeline import resolve_model_options, resolve_task_options
from attnserve.server.gateway.postprocess import AttentionRequest, TaskOptions, postprocess, task_inputs
from attnserve.server.gateway.postprocess.captions import TILE_GAP, TILE_SIDE, TILES_PER_ROW
from attnserve.spec import InputOption, ModelSpec
from attnserve.transform import ResizeGeometry

SPEC: ModelSpec = get_spec("show_attend_tell")
STEPS, GRID = 16, 14


def _outputs(words: list[str], peaks: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Graph outputs of one image saying ``words`` (then the end token, then padding), word t
    looking at grid cell ``peaks[t]`` (row, column)."""
    ids = [SPEC.labels.index(w) for w in words] + [SPEC.labels.index("<end>")]
    tokens = np.zeros(STEPS, dtype=np.float32)
    tokens[: len(ids)] = ids
    scores = np.zeros(STEPS, dtype=np.float32)
    scores[: len(ids)] = -0.1 * np.arange(1, len(ids) + 1)
    maps = np.full((STEPS, GRID, GRID), 1e-3, dtype=np.float32)
    for t, (row, column) in enumerate(peaks):
        maps[t, row, column] = 1.0
    return {"tokens": tokens, "word_scores": scores, "word_attention": maps, "word_gates": np.ones(STEPS)}


def _answer(outputs: dict[str, np.ndarray], forms: frozenset[MapForm], overlay: bool, size: int = 224):
    geometry = ResizeGeometry.for_spec(size, size, SPEC.preprocess)
    request = AttentionRequest(("word_attention",), forms)
    options = TaskOptions(overlay=overlay, model_options={"beam_size": 3, "max_length": 15})
    image = Image.new("RGB", (size, size)) if overlay or MapForm.OVERLAY_PNG in forms else None
    return postprocess(outputs, SPEC, geometry, options, request, image)


def test_the_caption_is_the_words_before_the_end_token_with_their_peaks_in_original_pixels() -> None:
    words = ["a", "small", "seven", "left", "of", "a", "large", "two"]
    peaks = [(7, 7), (3, 2), (3, 2), (7, 7), (7, 7), (7, 7), (10, 11), (10, 11)]
    answer = _answer(_outputs(words, peaks), frozenset({MapForm.RAW}), overlay=False)
    caption = answer.task.caption
    assert caption is not None and caption.text == " ".join(words) and not caption.max_length_reached
    assert [w.index for w in caption.words] == [SPEC.labels.index(w) for w in words]
    assert caption.words[0].log_prob == pytest.approx(-0.1) and caption.words[0].score == pytest.approx(
        np.exp(-0.1)
    )
    assert caption.log_prob == pytest.approx(-0.1 * sum(range(1, len(words) + 2)))  # the end token's too
    # a 224 px image is 2× the 112 px input: grid cell (row 3, column 2) is centred at (40, 56) px
    assert caption.words[2].peak == pytest.approx((2.5 * 16, 3.5 * 16))
    (stack,) = answer.attention
    assert stack.raw is not None and stack.raw.shape == (len(words), GRID, GRID)  # cut to the words
    assert stack.shape == (STEPS, GRID, GRID)  # the native shape stays declared


def test_the_drawn_caption_is_a_tile_per_word_and_the_map_forms_a_tile_per_word() -> None:
    words = ["three", "digits", ":", "small", "one", ",", "large", "two", ",", "small", "nine"]
    forms = frozenset({MapForm.RAW, MapForm.OVERLAY_PNG})
    answer = _answer(_outputs(words, [(1, 1)] * len(words)), forms, overlay=True, size=448)
    with Image.open(io.BytesIO(answer.task.overlay)) as drawn:
        rows = -(-len(words) // TILES_PER_ROW)
        assert drawn.size[0] == TILES_PER_ROW * (TILE_SIDE + TILE_GAP) - TILE_GAP
        assert drawn.size[1] > rows * TILE_SIDE  # a label strip under every row of tiles
    with Image.open(io.BytesIO(answer.attention[0].overlay_png)) as tiles:
        assert tiles.size == (len(words) * 448 + (len(words) - 1) * 4, 448)


def test_an_empty_caption_is_an_answer_not_an_error() -> None:
    answer = _answer(_outputs([], []), frozenset({MapForm.RAW, MapForm.OVERLAY_PNG}), overlay=True)
    assert answer.task.caption is not None and answer.task.caption.words == []
    assert answer.attention[0].raw is not None and answer.attention[0].raw.shape == (0, GRID, GRID)
    assert answer.task.overlay[:4] == b"\x89PNG"


def test_a_caption_cut_by_max_length_says_so() -> None:
    outputs = _outputs(["a", "large"], [(0, 0), (0, 0)])
    geometry = ResizeGeometry.for_spec(112, 112, SPEC.preprocess)
    options = TaskOptions(model_options={"beam_size": 1, "max_length": 2})
    answer = postprocess(outputs, SPEC, geometry, options, AttentionRequest((), frozenset()))
    assert answer.task.caption is not None and answer.task.caption.max_length_reached


def test_token_ids_outside_the_vocabulary_are_a_model_fault() -> None:
    outputs = _outputs(["a"], [(0, 0)])
    outputs["tokens"][0] = len(SPEC.labels) + 3
    with pytest.raises(ValueError, match="outside its vocabulary"):
        _answer(outputs, frozenset(), overlay=False)


def test_the_captioner_reads_its_word_maps_whatever_maps_are_asked() -> None:
    assert task_inputs(SPEC) == ("tokens", "word_scores", "word_attention")
    assert task_inputs(get_spec("cbam")) == ("logits",)


def test_model_options_default_and_are_checked_by_name_and_range() -> None:
    assert resolve_model_options((), SPEC) == {"beam_size": 3, "max_length": 15}
    assert resolve_model_options((("beam_size", 1),), SPEC) == {"beam_size": 1, "max_length": 15}
    with pytest.raises(InvalidInput, match=r"option beam_size must be 1–5 .*got 6"):
        resolve_model_options((("beam_size", 6),), SPEC)
    with pytest.raises(InvalidInput, match=r"no option 'beam'; its options: beam_size \(1–5\), max_length"):
        resolve_model_options((("beam", 2),), SPEC)
    with pytest.raises(InvalidInput, match="no option 'beam_size'; it takes none"):
        resolve_task_options(PredictionRequest(model_options=(("beam_size", 2),)), get_spec("cbam"), 100)


def test_an_option_default_must_lie_within_its_bounds() -> None:
    with pytest.raises(ValueError, match="outside 1..5"):
        InputOption(name="beam_size", description="", default=7, minimum=1, maximum=5)
    dumped = SPEC.model_dump()
    with pytest.raises(ValueError, match="input names repeat"):
        ModelSpec.model_validate({**dumped, "options": [*dumped["options"], dumped["options"][0]]})


def test_a_captioners_vocabulary_starts_with_its_special_tokens() -> None:
    with pytest.raises(ValueError, match="starts with"):
        ModelSpec.model_validate({**SPEC.model_dump(), "labels": ("a", "b", "c")})


def test_captions_and_options_survive_the_wire() -> None:
    request = PredictionRequest(model="show_attend_tell", model_options=(("beam_size", 1), ("max_length", 4)))
    assert codec.request_from_proto(codec.request_to_proto(request)).model_options == request.model_options
    assert codec.request_from_json(codec.request_to_json(request)).model_options == request.model_options
    assert not codec.request_to_proto(PredictionRequest()).HasField("task")  # a classifier's as it was
    caption = Caption([Word("a", 3, -0.01, (4.0, 5.0)), Word("one", 15, -0.5, None)], -0.6, True)
    prediction = Prediction("m", "1", [], [], ImageInfo(10, 10, "PNG"), task="captioning", caption=caption)
    for back in (
        codec.prediction_from_proto(codec.prediction_to_proto(prediction)),
        codec.prediction_from_json(codec.prediction_to_json(prediction)),
    ):
        assert back.caption is not None and back.caption.text == "a one" and back.caption.max_length_reached
        assert back.caption.words[0].peak == (4.0, 5.0) and back.caption.words[1].peak is None
        assert back.caption.words[1].log_prob == pytest.approx(-0.5)
