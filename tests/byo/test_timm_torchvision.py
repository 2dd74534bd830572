"""timm and torchvision classifiers exported with their attention modules' maps and the in-graph
CAM, parity-checked, then served by the real tritonserver and gateway: what comes back equals
the PyTorch model on the gateway's own transform of the same image."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from attnserve.cli import main
from attnserve.errors import InvalidInput
from attnserve.export.repository import read_config
from attnserve.spec import SPEC_PARAMETER, AttentionKind, Interpolation, ModelSpec

from ..conftest import GatewayThread, gateway_settings, triton_settings
from .conftest import INPUT_SIZE, LABELS, MODELS, timm_model, triton_runtime_dir

EXPECTED = {
    # repository name: (attention outputs by kind, CAM)
    "seresnet18": ({"channel": 8}, True),
    "cbam_resnet": ({"channel": 4, "spatial": 4}, True),
    "eca_resnet": ({"channel": 4}, True),
    # extent 2: a gate per channel and position on stages 1-3 (their mean over channels shown),
    # a gate per channel on stage 4, whose 2×2 map pools to 1×1
    "ge_resnet": ({"channel": 1, "spatial": 3}, True),
    "tv_resnet18": ({}, True),
    "tv_mobilenet_v3_small": ({"channel": 9}, False),  # an MLP head: no CAM
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every model of `MODELS` exported into one repository, with its source and timings."""
    from attnserve.export.byo import export_module

    repository = tmp_path_factory.mktemp("byo-repository")
    results: dict[str, Any] = {"repository": repository}
    for name, build in MODELS.items():
        started = time.perf_counter()
        source = build()
        result = export_module(
            source.model,
            name=name,
            preprocess=source.preprocess,
            labels=source.labels,
            repository=repository,
            architecture=source.architecture,
            notes=source.notes,
        )
        result.seconds["total"] = time.perf_counter() - started
        results[name] = (source, result)
        print(f"\n== {name}\n" + "\n".join(result.report_lines()))  # the figures in docs/byo.md
    return results


@pytest.mark.parametrize("name", list(MODELS))
def test_export_captures_the_attention_modules_and_proves_parity(exported: dict[str, Any], name: str) -> None:
    source, result = exported[name]
    spec: ModelSpec = result.spec
    kinds, with_cam = EXPECTED[name]
    counted: dict[str, int] = {}
    for attention in spec.attention:
        if attention.kind is not AttentionKind.CLASS_ACTIVATION:
            counted[attention.kind.value] = counted.get(attention.kind.value, 0) + 1
            assert attention.block and attention.name.startswith(attention.block.replace(".", "_"))
    assert counted == kinds
    assert ("cam" in spec.output_names) is with_cam
    assert result.parity.passed and max(result.parity.max_abs_diff.values()) < 1e-4
    assert spec.labels == LABELS and spec.preprocess.input_size == (INPUT_SIZE, INPUT_SIZE)
    assert any("RANDOM weights" in note for note in result.notes)
    if with_cam:
        agreement = result.cam_agreement
        assert agreement.pooled_max_abs_diff < 1e-5 and agreement.pooled_correlation > 0.999
        assert agreement.conv_layer is not None and not math.isnan(agreement.conv_correlation)
    else:
        assert any("no CAM:" in note and "lie between them" in note for note in result.notes)
    config = read_config(result.model_dir / "config.pbtxt")
    served = ModelSpec.from_json(config.parameters[SPEC_PARAMETER].string_value)
    assert served == spec


def test_the_spec_comes_from_the_pretrained_configuration(exported: dict[str, Any]) -> None:
    timm_spec = exported["seresnet18"][1].spec.preprocess
    assert timm_spec.interpolation is Interpolation.BICUBIC and timm_spec.crop_pct == 0.875
    assert timm_spec.mean == (0.485, 0.456, 0.406)
    torchvision_spec = exported["tv_resnet18"][1].spec.preprocess
    assert torchvision_spec.interpolation is Interpolation.BILINEAR and torchvision_spec.crop_pct == 224 / 256
    cbam = exported["cbam_resnet"][1].spec
    assert cbam.primary_attention == "layer4_0_se_spatial" and "deepest spatial" in cbam.primary_reason
    assert exported["tv_resnet18"][1].spec.primary_attention == "cam"


def test_labels_come_from_the_packages_offline() -> None:
    from attnserve.export.byo import timm_source, torchvision_source

    imagenet = timm_source("resnet18")
    assert len(imagenet.labels) == 1000 and imagenet.labels[0].startswith("tench")
    # ImageNet-1k names two classes "crane" (the bird, the machine): told apart by synset, as
    # a served answer must be (found exporting seresnet50 with its own labels: it was refused)
    assert len(set(imagenet.labels)) == 1000
    assert [label for label in imagenet.labels if label.startswith("crane")] == [
        "crane (n02012849)",
        "crane (n03126707)",
    ]
    torchvision = torchvision_source("resnet18")
    assert len(torchvision.labels) == 1000 and torchvision.labels[0] == "tench"
    with pytest.raises(InvalidInput, match="did you mean seresnet18"):
        timm_source("seresnet1")
    with pytest.raises(InvalidInput, match="no classification model 'resnet1'"):
        torchvision_source("resnet1")


def test_a_max_pooled_head_gets_no_cam_and_says_why() -> None:
    from attnserve.export.byo import capture_attention

    source = timm_model("seresnet18", global_pool="max")
    graph = capture_attention(source.model, source.preprocess, source.labels, name="max")
    assert "cam" not in graph.spec.output_names
    assert any(note.startswith("no CAM: no global average pooling") for note in graph.notes)
    assert len(graph.spec.attention) == 8  # its SE gates are still there


def _labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def test_the_command_exports_a_timm_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort
    from safetensors.torch import save_file

    source = timm_model("seresnet18")
    save_file(source.model.state_dict(), str(tmp_path / "weights.safetensors"))
    code = main(
        [
            "export",
            "--timm",
            "seresnet18",
            "--checkpoint",
            str(tmp_path / "weights.safetensors"),
            "--labels",
            str(_labels_file(tmp_path)),
            "--input-size",
            str(INPUT_SIZE),
            "--repository",
            str(tmp_path / "repo"),
            "--name",
            "mine",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "weights: " in out and "RANDOM" not in out and "CAM vs Grad-CAM" in out and "FAIL" not in out
    session = ort.InferenceSession(str(tmp_path / "repo" / "mine" / "1" / "model.onnx"))
    images = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    (logits,) = session.run(["logits"], {"image": images.numpy()})
    with torch.no_grad():
        expected = source.model(images).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a 5-class checkpoint, exported as timm's 1000-class default
        (["--timm", "seresnet18", "--checkpoint", "{tmp}/five.pth"], "pass --labels FILE with 5 lines"),
        (["--timm", "seresnet18", "--checkpoint", "{tmp}/junk.pth"], "not a readable torch file"),
        (["--torchvision", "mobilenet_v3_small", "--cam", "--labels", "{tmp}/labels.txt"], "no CAM for"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    torch.save(timm_model("seresnet18").model.state_dict(), tmp_path / "five.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    _labels_file(tmp_path)
    arguments = [a.format(tmp=tmp_path) for a in args]
    size = ["--input-size", str(INPUT_SIZE)]
    code = main(["export", *arguments, *size, "--repository", str(tmp_path / "repo")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo").exists()


# --- served end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(exported: dict[str, Any]) -> Iterator[GatewayThread]:
    from attnserve.clients import Client
    from attnserve.server.triton import TritonProcess

    overrides = {"runtime_dir": runtime} if (runtime := triton_runtime_dir()) is not None else {}
    settings = triton_settings(exported["repository"], **overrides)
    with TritonProcess(settings):
        thread = GatewayThread(gateway_settings(settings)).start()
        with Client(thread.address) as client:
            client.wait_until_serving(120)
        yield thread
        thread.stop()


def _photo(seed: int = 3, size: tuple[int, int] = (96, 72)) -> tuple[bytes, Image.Image]:
    """A smooth random RGB picture (blobs of colour), not square: the centre crop matters."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), image


@pytest.mark.triton
@pytest.mark.parametrize("name", list(MODELS))
def test_served_answers_equal_pytorch_on_the_same_pixels(
    exported: dict[str, Any], served: GatewayThread, name: str
) -> None:
    from attnserve.clients import Client
    from attnserve.export.byo import capture_attention
    from attnserve.transform import to_model_input

    source, result = exported[name]
    spec: ModelSpec = result.spec
    png, image = _photo()
    with Client(served.address, timeout_s=60) as client:
        prediction = client.predict(png, model=name, top_k=len(LABELS), forms=["raw"])
    graph = capture_attention(source.model, spec.preprocess, spec.labels, name=name)
    tensor = torch.from_numpy(to_model_input(image, spec.preprocess).tensor)[None]
    with torch.no_grad():
        expected = graph.named_outputs(tensor)
    probabilities = torch.softmax(expected["logits"][0], dim=0)
    assert [p.index for p in prediction.predictions] == probabilities.argsort(descending=True).tolist()
    for scored in prediction.predictions:
        assert scored.label == LABELS[scored.index]
        assert scored.score == pytest.approx(float(probabilities[scored.index]), abs=1e-4)
    assert {m.name for m in prediction.attention} == {a.name for a in spec.attention}
    for attention in spec.attention:
        shown = prediction.attention_map(attention.name)
        want = expected[attention.name][0]
        if attention.kind is AttentionKind.CLASS_ACTIVATION:  # the top-1 class's map
            want = want[int(probabilities.argmax())]
            assert shown.class_index == int(probabilities.argmax())
        assert shown.raw is not None
        np.testing.assert_allclose(shown.raw, want.numpy(), atol=1e-4)
