"""Bring your own model (`attnserve.export.byo`) without timm or torchvision: a hand-written
classifier whose attention blocks are registered by the user, as a user would."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from attnserve.cli import main
from attnserve.errors import InvalidInput
from attnserve.export.byo import (
    AttentionTap,
    capture_attention,
    export_module,
    load_weights,
    measure_cam_agreement,
    read_state_dict,
    register_attention_module,
    registered_attention_modules,
)
from attnserve.export.byo._capture import output_name
from attnserve.export.onnx_export import ParityError
from attnserve.export.repository import read_config
from attnserve.spec import (
    SPEC_PARAMETER,
    AttentionKind,
    ColorMode,
    Interpolation,
    ModelSpec,
    Normalization,
    PreprocessSpec,
    ResizeMode,
)

LABELS = ("cat", "dog", "fox", "owl")
PREPROCESS = PreprocessSpec(
    input_size=(32, 32),
    color_mode=ColorMode.RGB,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    resize_mode=ResizeMode.CENTER_CROP,
    crop_pct=0.875,
    interpolation=Interpolation.BICUBIC,
)


class ChannelGate(nn.Module):
    """A user's squeeze-and-excitation block: ``x * gate(fc(mean(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]


class PositionGate(nn.Module):
    """A user's spatial gate: ``x * gate(conv(mean over channels))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.conv(x.mean(dim=1, keepdim=True)))


class UnusedGate(nn.Module):
    """Registered, with a tap on a submodule its forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))


register_attention_module(ChannelGate, channel=AttentionTap(AttentionKind.CHANNEL, "gate", "user SE gate"))
register_attention_module(
    f"{__name__}.PositionGate",  # by qualified name, as timm's types are registered
    spatial=AttentionTap(AttentionKind.SPATIAL, "gate", "user spatial gate"),
)
register_attention_module(UnusedGate, channel=AttentionTap(AttentionKind.CHANNEL, "gate"))


class Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.se = ChannelGate(out_channels)
        self.spatial = PositionGate()

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.spatial(self.se(self.norm(self.conv(x)))))


class ToyNet(nn.Module):
    """Two gated blocks, then a head: GAP + linear, or one that is not (for the refusals)."""

    def __init__(self, head: str = "gap", classes: int = len(LABELS)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.stages = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
        self.head = head
        self.pool: nn.Module = nn.AdaptiveMaxPool2d(1) if head == "max" else nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(16)
        self.hidden = nn.Linear(16, 16)
        self.fc = nn.Linear(16, classes)

    def forward(self, images: Tensor) -> Tensor:
        pooled = self.pool(self.stages(torch.relu(self.stem(images)))).flatten(1)
        if self.head == "mlp":
            pooled = torch.relu(self.hidden(pooled))
        if self.head == "norm":
            pooled = self.norm(pooled)
        return self.fc(pooled)


def toy(head: str = "gap", seed: int = 0) -> ToyNet:
    torch.manual_seed(seed)
    model = ToyNet(head)
    for module in model.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_registered_modules_become_named_outputs_and_the_cam_is_added() -> None:
    graph = capture_attention(toy(), PREPROCESS, LABELS, name="toy")
    spec = graph.spec
    assert spec.output_names == (
        "logits",
        "stages_0_se_channel",
        "stages_0_spatial_spatial",
        "stages_1_se_channel",
        "stages_1_spatial_spatial",
        "cam",
    )
    assert spec.architecture == f"{__name__}.ToyNet"
    assert spec.preprocess.interpolation is Interpolation.BICUBIC
    channel = spec.attention_by_name("stages_1_se_channel")
    assert channel.kind is AttentionKind.CHANNEL and channel.axes == ("channel",)
    assert (
        channel.block == "stages.1.se" and "user SE gate at stages.1.se (16 channels)" in channel.description
    )
    assert channel.normalization == Normalization(method="above_median", range=(0.0, 1.0))
    assert spec.primary_attention == "stages_1_spatial_spatial" and "deepest spatial" in spec.primary_reason
    with torch.no_grad():
        outputs = dict(zip(spec.output_names, graph(torch.randn(3, 3, 32, 32)), strict=True))
    assert outputs["stages_0_se_channel"].shape == (3, 8)
    assert outputs["stages_1_spatial_spatial"].shape == (3, 8, 8)
    assert outputs["cam"].shape == (3, len(LABELS), 8, 8)
    # the CAM sums over positions to the logit minus the bias, as in the registered models
    fc = graph.model.fc
    assert torch.allclose(outputs["cam"].sum(dim=(2, 3)) + fc.bias, outputs["logits"], atol=1e-5)
    assert any("confirmed as average pooling + linear" in note for note in graph.notes)


def test_the_users_model_keeps_no_hooks(tmp_path: Path) -> None:
    model = toy()
    export_module(model, name="toy", preprocess=PREPROCESS, labels=LABELS, repository=tmp_path / "repo")
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_export_writes_a_servable_model_with_its_spec(tmp_path: Path) -> None:
    result = export_module(
        toy(),
        name="toy",
        preprocess=PREPROCESS,
        labels=LABELS,
        repository=tmp_path / "repo",
        description="a toy",
        quality={"cam": {"pointing": 0.5}},
    )
    assert result.parity.passed and set(result.parity.max_abs_diff) == set(result.spec.output_names)  # type: ignore[union-attr]
    config = read_config(result.model_dir / "config.pbtxt")
    assert {o.name: list(o.dims) for o in config.output}["cam"] == [len(LABELS), 8, 8]
    spec = ModelSpec.from_json(config.parameters[SPEC_PARAMETER].string_value)
    assert spec.description == "a toy" and spec.labels == LABELS
    assert spec.attention_by_name("cam").quality == {"pointing": 0.5}
    assert (result.model_dir / "labels.txt").read_text().split() == list(LABELS)
    report = "\n".join(result.report_lines())
    assert (
        "CAM vs Grad-CAM" in report
        and "parity" in report
        and "primary map: stages_1_spatial_spatial" in report
    )


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        ("mlp", "does more than average pooling + one linear layer"),
        ("max", "no global average pooling"),
        ("norm", "does more than average pooling + one linear layer"),
    ],
)
def test_a_head_that_is_not_gap_linear_gets_no_cam_and_says_why(head: str, reason: str) -> None:
    graph = capture_attention(toy(head), PREPROCESS, LABELS, name="toy")
    assert "cam" not in graph.spec.output_names and graph.head is None
    assert any(note.startswith("no CAM:") and reason in note for note in graph.notes), graph.notes
    with pytest.raises(InvalidInput, match=re.escape(reason)):
        capture_attention(toy(head), PREPROCESS, LABELS, name="toy", cam=True)


def test_cam_can_be_left_out() -> None:
    graph = capture_attention(toy(), PREPROCESS, LABELS, name="toy", cam=False)
    assert "cam" not in graph.spec.output_names and graph.spec.primary_attention == "stages_1_spatial_spatial"


def test_the_cam_equals_grad_cam_at_the_pooled_features() -> None:
    agreement = measure_cam_agreement(capture_attention(toy(), PREPROCESS, LABELS, name="toy"))
    assert agreement.pooled_max_abs_diff < 1e-5
    assert agreement.pooled_correlation > 0.999 or math.isnan(agreement.pooled_correlation)
    assert agreement.pooled_layer == "pool" and agreement.conv_layer == "stages.1.conv"
    assert "CAM vs Grad-CAM on 8 images" in agreement.lines()[0]


class BatchDependent(nn.Module):
    """Traced at batch 2, run at 1, 3 and 8: the ONNX graph keeps one branch, parity fails."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, images: Tensor) -> Tensor:
        logits = self.fc(images.mean(dim=(2, 3)))
        return logits * 2 if images.shape[0] > 2 else logits


def test_a_parity_failure_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ParityError, match="export refused"):
        export_module(
            BatchDependent(),
            name="bad",
            preprocess=PREPROCESS,
            labels=("a", "b"),
            repository=tmp_path / "repo",
        )
    assert not (tmp_path / "repo" / "bad").exists()


def test_taps_that_do_not_run_are_left_out_with_a_note() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), UnusedGate(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    graph = capture_attention(model, PREPROCESS, ("a", "b"), name="seq")
    assert graph.spec.output_names == ("logits", "cam")
    assert any("UnusedGate channel skipped at 1: it does not run" in note for note in graph.notes)
    assert graph.spec.primary_attention == "cam" and "no attention module" in graph.spec.primary_reason


def test_a_shared_gate_is_left_out_with_a_note() -> None:
    shared = ChannelGate(4)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), shared, shared, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    graph = capture_attention(model, PREPROCESS, ("a", "b"), name="seq")
    assert graph.spec.output_names == ("logits", "cam")
    assert any("runs more than once" in note for note in graph.notes)


def test_what_the_model_returns_must_fit_the_labels() -> None:
    with pytest.raises(InvalidInput, match="4 outputs but 2 labels"):
        capture_attention(toy(), PREPROCESS, ("a", "b"), name="toy")
    with pytest.raises(InvalidInput, match="labels must be distinct: 'a' appear"):
        capture_attention(toy(), PREPROCESS, ("a", "a", "b", "c"), name="toy")
    with pytest.raises(InvalidInput, match="at least 2 labels"):
        capture_attention(toy(), PREPROCESS, ("a",), name="toy")
    with pytest.raises(InvalidInput, match="the model returns"):
        capture_attention(nn.Conv2d(3, 2, 1), PREPROCESS, ("a", "b"), name="conv")


def test_choices_are_checked(tmp_path: Path) -> None:
    common = {"name": "toy", "preprocess": PREPROCESS, "labels": LABELS, "repository": tmp_path / "repo"}
    with pytest.raises(InvalidInput, match="is not one of the outputs"):
        export_module(toy(), primary_attention="nonesuch", **common)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="outputs the model lacks"):
        export_module(toy(), quality={"nonesuch": {"pointing": 1.0}}, **common)  # type: ignore[arg-type]
    assert not (tmp_path / "repo").exists()
    result = export_module(toy(), primary_attention="cam", **common)  # type: ignore[arg-type]
    assert result.spec is not None and result.spec.primary_attention == "cam"
    assert "chosen by whoever exported" in result.spec.primary_reason


def test_output_names_are_safe_unique_and_stable() -> None:
    taken = {"logits", "cam"}
    assert output_name("layer1.0.se", "channel", taken) == "layer1_0_se_channel"
    assert output_name("layer1.0.se", "channel", taken) == "layer1_0_se_channel_2"
    assert output_name("0.attn", "spatial", taken) == "module_0_attn_spatial"
    assert output_name("blocks.a-b", "channel", taken) == "blocks_a_b_channel"


def test_the_registry_refuses_duplicates_and_unsafe_names() -> None:
    assert "timm.layers.squeeze_excite.SEModule" in registered_attention_modules()
    assert "torchvision.ops.misc.SqueezeExcitation" in registered_attention_modules()
    with pytest.raises(ValueError, match="already registered"):
        register_attention_module(ChannelGate, channel=AttentionTap(AttentionKind.CHANNEL, "gate"))
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        register_attention_module("x.Y", **{"bad name": AttentionTap(AttentionKind.CHANNEL)})
    with pytest.raises(ValueError, match="CHANNEL or SPATIAL"):
        AttentionTap(AttentionKind.BOXES)


def test_state_dicts_load_from_local_files_and_misfits_are_one_line(tmp_path: Path) -> None:
    source = toy(seed=1)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ok.pth"
    )
    target = toy(seed=2)
    load_weights(target, read_state_dict(tmp_path / "ok.pth"), tmp_path / "ok.pth", "ToyNet")
    loaded = target.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in source.state_dict().items())

    torch.save(ToyNet(classes=7).state_dict(), tmp_path / "seven.pth")
    with pytest.raises(InvalidInput) as refused:
        load_weights(toy(), read_state_dict(tmp_path / "seven.pth"), tmp_path / "seven.pth", "ToyNet")
    message = str(refused.value)
    assert (
        "does not fit ToyNet" in message and "fc.weight: (7, 16) in the file, (4, 16) in the model" in message
    )
    assert "pass --labels FILE with 7 lines" in message and "\n" not in message

    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    with pytest.raises(InvalidInput, match="not a readable torch file"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(InvalidInput, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(InvalidInput, match="holds no state_dict"):
        read_state_dict(tmp_path / "nostate.pth")


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed here")
def test_timm_without_the_extra_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "--timm", "seresnet18", "--repository", str(tmp_path / "repo")])
    err = capsys.readouterr().err
    assert code != 0 and "pip install 'attnserve[byo]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export"], "name one model"),
        (["export", "cbam", "--torchvision", "resnet18"], "name one model"),
        (["export", "cbam"], "needs --checkpoint"),
    ],
)
def test_the_export_command_names_one_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main([*args, "--repository", str(tmp_path / "repo")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
