"""Show, Attend and Tell, trained and served: the committed decoding graph against PyTorch, and
captions through the real `tritonserver` and the real gateway (gRPC and HTTP) against PyTorch's
eager decoding of the very tensor the gateway sends, on test scenes (scans 1497–1796) and on the
ways users send them: enlarged, turned by EXIF, on a wider canvas, blank, very large."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.prediction import Prediction
from attnserve.spec import ModelSpec

from .conftest import REPO_ROOT, GatewayThread, png_turned

MODEL = "show_attend_tell"
REPOSITORY = REPO_ROOT / "model_repository"
CHECKPOINT = REPO_ROOT / "checkpoints" / MODEL / "checkpoint.pt"
ONNX = REPOSITORY / MODEL / "1" / "model.onnx"

pytestmark = pytest.mark.skipif(
    not (ONNX.exists() and CHECKPOINT.exists()), reason="show_attend_tell is not trained and exported here"
)


@pytest.fixture(scope="module")
def trained() -> tuple[object, ModelSpec]:
    import torch

    from attnserve.export.checkpoint import load_checkpoint
    from attnserve.export.models import ServingGraph

    torch.set_num_threads(2)
    checkpoint = load_checkpoint(CHECKPOINT)
    graph = ServingGraph(checkpoint.model.eval(), checkpoint.spec).eval()
    return graph, graph.spec


def _scene(index: int):  # type: ignore[no-untyped-def]
    from attnserve.export.data.captions import CaptionScenes

    return CaptionScenes("test", index + 1, seed=11)[index]


def _image(index: int) -> Image.Image:
    return Image.fromarray(np.round(_scene(index).image * 255).astype(np.uint8), mode="L")


def _eager(trained: tuple[object, ModelSpec], image: Image.Image, beam_size: int, max_length: int = 15):  # type: ignore[no-untyped-def]
    """PyTorch's eager decoding of the tensor the gateway makes of ``image``."""
    import torch

    from attnserve.transform import pixels_to_input, to_input_pixels

    graph, spec = trained
    pixels, _ = to_input_pixels(image, spec.preprocess)
    inputs = torch.from_numpy(pixels_to_input(pixels[None], spec.preprocess))
    with torch.no_grad():
        outputs = graph.named_outputs(  # type: ignore[attr-defined]
            inputs, torch.tensor([[beam_size]]), torch.tensor([[max_length]])
        )
    return {name: value[0].numpy() for name, value in outputs.items()}


def _words(outputs: dict[str, np.ndarray]) -> list[str]:
    from attnserve.export.data.captions import decode

    return list(decode(outputs["tokens"].astype(np.int64)))


def test_the_committed_graph_decodes_exactly_as_pytorch(trained: tuple[object, ModelSpec]) -> None:
    """Export parity of the decoding graph on fixed inputs (test scenes, a blank image, noise) at
    every beam size and two maximum lengths: the same token sequence, maps within 1e-4."""
    import onnxruntime as ort
    import torch

    from attnserve.transform import pixels_to_input, to_input_pixels

    graph, spec = trained
    session = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    pixels = np.stack([to_input_pixels(_image(i), spec.preprocess)[0] for i in range(6)])
    inputs = np.concatenate(
        [
            pixels_to_input(pixels, spec.preprocess),
            pixels_to_input(np.zeros((1, 112, 112, 1), dtype=np.uint8), spec.preprocess),
            np.random.default_rng(0).normal(size=(1, 1, 112, 112)).astype(np.float32),
        ]
    )
    count = len(inputs)
    for beam, longest in ((1, 15), (3, 15), (5, 15), (3, 4), (1, 1)):
        options = {
            "beam_size": np.full((count, 1), beam, dtype=np.int64),
            "max_length": np.full((count, 1), longest, dtype=np.int64),
        }
        got = dict(
            zip(
                spec.output_names,
                session.run(list(spec.output_names), {"image": inputs, **options}),
                strict=True,
            )
        )
        with torch.no_grad():
            want = graph(torch.from_numpy(inputs), *(torch.from_numpy(v) for v in options.values()))  # type: ignore[operator]
        want = dict(zip(spec.output_names, (w.numpy() for w in want), strict=True))
        assert np.array_equal(got["tokens"], want["tokens"]), (beam, longest)
        for name in ("word_scores", "word_attention", "word_gates"):
            assert np.max(np.abs(got[name] - want[name])) <= 1e-4, (name, beam, longest)
        lengths = [len(_words({"tokens": t})) for t in got["tokens"]]
        assert max(lengths) <= longest


def test_beam_one_is_greedy_decoding_step_by_step(trained: tuple[object, ModelSpec]) -> None:
    """The in-graph search at beam size 1 is the plain argmax loop over the decoder's steps."""
    import torch

    from attnserve.export.models.show_attend_tell import END_ID, START_ID
    from attnserve.transform import pixels_to_input, to_input_pixels

    graph, spec = trained
    model = graph.model  # type: ignore[attr-defined]
    for index in range(4):
        pixels, _ = to_input_pixels(_image(index), spec.preprocess)
        images = torch.from_numpy(pixels_to_input(pixels[None], spec.preprocess))
        with torch.no_grad():
            annotations = model.encoder(images)
            projected = model.decoder.attend_features(annotations)
            state = model.decoder.initial_state(annotations)
            previous, greedy = torch.tensor([START_ID]), []
            for _ in range(15):
                logits, state, _, _ = model.decoder.step(previous, state, annotations, projected)
                previous = logits.argmax(1)
                if int(previous) == END_ID:
                    break
                greedy.append(spec.labels[int(previous)])
        assert _words(_eager(trained, _image(index), 1)) == greedy


def test_the_captioner_reads_test_scenes(trained: tuple[object, ModelSpec]) -> None:
    """Quality on data it never saw (200 test scenes, another seed than training's report): a
    floor well under what metrics.json reports, so that a broken model or pipeline fails it."""
    from attnserve.export.data.captions import CaptionScenes
    from attnserve.export.train_captions import evaluate, served_scenes

    graph, spec = trained
    scenes = CaptionScenes("test", 200, seed=5)
    scores = evaluate(graph, served_scenes([scenes[i] for i in range(200)], spec), beam_size=3)  # type: ignore[arg-type]
    assert scores["bleu4"] > 0.6 and scores["exact_match"] > 0.3 and scores["digit_pointing"] > 0.4, scores


def _predict(address: str, image: bytes, http: bool = False, **options: object) -> Prediction:
    from attnserve.clients import Client, HttpClient

    with HttpClient(address) if http else Client(address, timeout_s=60) as client:  # type: ignore[attr-defined]
        return client.predict(image, model=MODEL, **options)  # type: ignore[no-any-return]


@pytest.mark.parametrize("front", ["grpc", "http"])
@pytest.mark.parametrize("beam", [1, 3])
def test_a_served_caption_equals_pytorchs_for_the_same_image(
    gateway: GatewayThread, trained: tuple[object, ModelSpec], front: str, beam: int
) -> None:
    graph, spec = trained
    address = gateway.http_url if front == "http" else gateway.address
    for index in range(3):
        image = _image(index)
        served = _predict(address, png_turned(image), front == "http", model_options={"beam_size": beam})
        reference = _eager(trained, image, beam)
        words = _words(reference)
        caption = served.caption
        assert served.task == "captioning" and caption is not None and served.predictions == []
        assert [w.text for w in caption.words] == words and caption.text == " ".join(words)
        assert np.allclose(
            [w.log_prob for w in caption.words], reference["word_scores"][: len(words)], atol=1e-3
        )
        stack = served.attention_map("word_attention")
        assert stack.raw is not None and stack.raw.shape == (len(words), 14, 14)  # one map a word
        assert np.allclose(stack.raw, reference["word_attention"][: len(words)], atol=1e-4)
        for word in caption.words:  # peaks in the image's own pixels
            assert word.peak is not None and 0 <= word.peak[0] <= 112 and 0 <= word.peak[1] <= 112


def test_max_length_and_bad_options_through_the_fronts(gateway: GatewayThread) -> None:
    from attnserve.clients import Client, HttpClient

    image = png_turned(_image(3))  # a scene of several digits: a long caption
    with Client(gateway.address) as grpc_client, HttpClient(gateway.http_url) as http_client:
        for client in (grpc_client, http_client):
            short = client.predict(image, model=MODEL, model_options={"max_length": 2})
            assert short.caption is not None and len(short.caption.words) <= 2
            assert short.caption.max_length_reached == (len(short.caption.words) == 2)
            for options, message in (
                ({"beam_size": 9}, "option beam_size must be 1–5"),
                ({"max_length": 0}, "option max_length must be 1–15"),
                ({"temperature": 1}, "no option 'temperature'"),
            ):
                with pytest.raises(InvalidInput, match=message):
                    client.predict(image, model=MODEL, model_options=options)
            with pytest.raises(InvalidInput, match="no option 'beam_size'; it takes none"):
                client.predict(image, model="cbam", model_options={"beam_size": 1})
        described = grpc_client.get_model(MODEL)
        assert described.task == "captioning" and described.labels[:3] == ["<pad>", "<start>", "<end>"]
        assert [(o.name, o.default_value, o.minimum, o.maximum) for o in described.options] == [
            ("beam_size", 3, 1, 5),
            ("max_length", 15, 1, 15),
        ]


def test_an_enlarged_turned_letterboxed_scene_gets_the_same_caption_in_its_own_pixels(
    gateway: GatewayThread,
) -> None:
    """A scene on a wider canvas (the gateway letterboxes it), and the same picture 1.5× larger
    stored turned with EXIF orientation 6: the model sees the same input, so the caption is the
    same and each word's peak moves by the ×1.5 between the pictures' pixels."""
    wide = Image.new("L", (336, 224), 0)
    wide.paste(_image(2).resize((224, 224), Image.Resampling.BILINEAR), (56, 0))
    plain = _predict(gateway.address, png_turned(wide))
    larger = wide.resize((504, 336), Image.Resampling.BILINEAR)
    moved = _predict(gateway.address, png_turned(larger, exif_orientation=6))
    assert (moved.image.width, moved.image.height) == (504, 336)
    assert plain.caption is not None and moved.caption is not None
    assert moved.caption.text == plain.caption.text and plain.caption.words
    plain_maps = plain.attention_map("word_attention").raw
    moved_maps = moved.attention_map("word_attention").raw
    assert plain_maps is not None and moved_maps is not None
    from attnserve.export.data.captions import digit_word_positions

    named = digit_word_positions([w.text for w in plain.caption.words])
    same_cell = 0
    for t, (ours, theirs) in enumerate(zip(moved.caption.words, plain.caption.words, strict=True)):
        assert ours.peak is not None and theirs.peak is not None
        assert 0 <= ours.peak[0] <= 504 and 0 <= ours.peak[1] <= 336  # in the picture's pixels
        # a digit word looks at its digit, inside the picture (others may look at the letterbox
        # padding, whose cells are no peak's candidates); the same cell: exactly ×1.5
        if t in named and np.argmax(moved_maps[t]) == np.argmax(plain_maps[t]):
            same_cell += 1
            assert np.allclose(ours.peak, np.array(theirs.peak) * 1.5, atol=1.0)
    assert named and same_cell >= len(named) / 2  # resampling may move a flat map's peak


def test_a_blank_image_gets_an_answer_not_an_error(gateway: GatewayThread) -> None:
    answer = _predict(
        gateway.address, png_turned(Image.new("L", (200, 150), 0)), forms=["raw", "overlay_png"]
    )
    assert answer.caption is not None and answer.task == "captioning"
    stack = answer.attention_map("word_attention")
    assert stack.raw is not None and stack.raw.shape == (len(answer.caption.words), 14, 14)


def test_a_large_image_is_drawn_as_bounded_tiles(gateway: GatewayThread) -> None:
    from attnserve.server.gateway.postprocess.captions import TILE_GAP, TILE_SIDE, TILES_PER_ROW

    large = _image(3).resize((4096, 4096), Image.Resampling.BILINEAR)
    answer = _predict(gateway.address, png_turned(large), task_overlay=True, image_encoding="jpeg")
    assert answer.caption is not None and (answer.image.width, answer.image.height) == (4096, 4096)
    count = len(answer.caption.words)
    with Image.open(io.BytesIO(answer.task_overlay)) as drawn:
        columns = min(count, TILES_PER_ROW)
        assert drawn.format == "JPEG" and drawn.size[0] == columns * (TILE_SIDE + TILE_GAP) - TILE_GAP
    for word in answer.caption.words:
        assert word.peak is not None and 0 <= word.peak[0] <= 4096


def test_the_cli_prints_the_caption_and_writes_a_tile_per_word(
    gateway: GatewayThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from attnserve.cli import main

    image = tmp_path / "scene.png"
    image.write_bytes(png_turned(_image(1)))
    tiles = tmp_path / "tiles.png"
    assert (
        main(["predict", str(image), "--model", MODEL, "--server", gateway.address, "--overlay", str(tiles)])
        == 0
    )
    printed = capsys.readouterr().out
    assert 'caption: "' in printed and f"wrote {tiles} (the captioning)" in printed
    with Image.open(tiles) as drawn:
        assert drawn.size[0] >= 112 and drawn.size[1] > 112
    assert (
        main(
            [
                "predict",
                str(image),
                "--model",
                MODEL,
                "--server",
                gateway.address,
                "--json",
                "--option",
                "beam_size=1",
            ]
        )
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    caption = document["caption"]
    assert document["task"] == "captioning" and caption["text"] == " ".join(
        w["text"] for w in caption["words"]
    )
    assert all(len(w["peak"]) == 2 for w in caption["words"])
    assert (
        main(["predict", str(image), "--model", MODEL, "--server", gateway.address, "--option", "beam"]) == 1
    )
    assert "--option wants NAME=INTEGER" in capsys.readouterr().err


def test_options_as_query_parameters_of_an_uploaded_image(gateway: GatewayThread) -> None:
    """The page's and curl's way: the image as the body, the model's options as NAME=VALUE pairs."""
    import httpx

    url = f"{gateway.http_url}/v1/models/{MODEL}:predict"
    image = png_turned(_image(3))
    headers = {"Content-Type": "image/png"}
    answer = httpx.post(url, params=[("options", "beam_size=1,max_length=2")], content=image, headers=headers)
    assert answer.status_code == 200, answer.text
    caption = answer.json()["caption"]
    assert 1 <= len(caption["words"]) <= 2 and caption["text"].count(" ") < 2
    for params, status in (([("options", "beam_size")], 400), ([("options", "beam_size=7")], 400)):
        refused = httpx.post(url, params=params, content=image, headers=headers)
        assert refused.status_code == status and "beam_size" in refused.json()["message"]
