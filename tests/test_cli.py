"""The CLI against the real gateway: the round trip a user makes, and its failures."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from attnserve._net import free_port
from attnserve.cli import main
from attnserve.settings import SAMPLE_IMAGE

from .conftest import GatewayThread

pytestmark = pytest.mark.triton


def sample_size() -> tuple[int, int]:
    assert SAMPLE_IMAGE is not None, "the tests run from a source checkout"
    with Image.open(SAMPLE_IMAGE) as image:
        return image.size


def test_predict_writes_an_overlay_and_prints_the_result(
    gateway: GatewayThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = tmp_path / "out" / "overlay.png"
    code = main(["predict", str(SAMPLE_IMAGE), "--server", gateway.address, "--overlay", str(overlay)])
    out = capsys.readouterr().out
    assert code == 0
    assert "→ model cbam v1" in out and "[primary]" in out and f"wrote {overlay}" in out
    with Image.open(overlay) as image:
        assert image.format == "PNG" and image.size == sample_size()
    assert out.splitlines()[1].strip().startswith("6 ")  # the sample is a six


@pytest.mark.parametrize(
    ("name", "flags", "expected"),
    [
        ("overlay.jpg", [], "JPEG"),
        ("overlay.webp", [], "WEBP"),
        ("overlay.img", ["--image-encoding", "jpeg"], "JPEG"),
    ],
)
def test_predict_writes_the_overlay_in_the_encoding_asked(
    gateway: GatewayThread, tmp_path: Path, name: str, flags: list[str], expected: str
) -> None:
    """The file name's suffix chooses the encoding (or --image-encoding): the gateway encodes it,
    the CLI writes the bytes it gets."""
    overlay = tmp_path / name
    code = main(
        ["predict", str(SAMPLE_IMAGE), "--server", gateway.address, "--overlay", str(overlay), *flags]
    )
    assert code == 0
    with Image.open(overlay) as image:
        assert image.format == expected and image.size == sample_size()


def test_predict_json_has_the_documented_fields(
    gateway: GatewayThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heatmap = tmp_path / "heat.png"
    code = main(
        ["predict", str(SAMPLE_IMAGE), "--server", gateway.address, "--json", "--heatmap", str(heatmap)]
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and heatmap.is_file()
    assert document["model"] == "cbam"
    assert {"label", "score"} <= set(document["predictions"][0])
    width, height = sample_size()
    for attention in document["attention"]:
        assert {"name", "kind", "shape", "peak"} <= set(attention)
        if attention["kind"] != "channel":
            x, y = attention["peak"]
            assert 0 <= x < width and 0 <= y < height


def test_models_lists_attention_outputs(gateway: GatewayThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--server", gateway.address]) == 0
    out = capsys.readouterr().out
    assert "cbam v1  (default)" in out and "spatial_stage3" in out and "[primary]" in out
    assert main(["models", "--server", gateway.address, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["default_model"] == "cbam" and "cbam" in [m["name"] for m in listed["models"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["predict", str(SAMPLE_IMAGE), "--server", "127.0.0.1:{free}"],
            "cannot reach the attnserve gateway",
        ),
        (["predict", "/no/such/image.png", "--server", "{gateway}"], "cannot read /no/such/image.png"),
        (["predict", str(SAMPLE_IMAGE), "--server", "{gateway}", "--model", "nope"], "unknown model 'nope'"),
        (["predict", str(SAMPLE_IMAGE), "--server", "{gateway}", "--top-k", "0"], "top_k must be at least 1"),
        (
            ["predict", str(SAMPLE_IMAGE), "--server", "{gateway}", "--overlay", "/proc/forbidden.png"],
            "cannot write",
        ),
    ],
)
def test_failures_are_one_line_on_stderr_and_a_nonzero_exit(
    gateway: GatewayThread, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [a.format(free=free_port(), gateway=gateway.address) for a in args]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_the_sample_image_is_a_real_png() -> None:
    data = SAMPLE_IMAGE.read_bytes()
    assert Image.open(io.BytesIO(data)).size == (320, 256)
