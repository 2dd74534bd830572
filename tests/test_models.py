import pytest
import torch
from torch import nn

from attnserve.errors import ModelNotFound
from attnserve.export.gradcam import grad_cam, grad_cam_at_pooled_features
from attnserve.export.models import (
    CAM_OUTPUT,
    ServingGraph,
    create_model,
    get_spec,
    has_gap_linear_head,
    list_models,
    register_model,
)
from attnserve.spec import AttentionKind


def _graph(name: str) -> ServingGraph:
    torch.manual_seed(0)
    return ServingGraph(create_model(name).eval(), get_spec(name))


def test_the_registry_lists_cbam_and_refuses_duplicates_and_unknown_names() -> None:
    assert "cbam" in list_models()
    with pytest.raises(ValueError, match="must equal"):

        def other() -> nn.Module:
            return nn.Identity()

        register_model(get_spec("cbam"))(other)
    with pytest.raises(ValueError, match="registered already"):

        def cbam() -> nn.Module:
            return nn.Identity()

        register_model(get_spec("cbam"))(cbam)
    with pytest.raises(ModelNotFound, match="unknown architecture"):
        create_model("no-such-model")


@pytest.mark.parametrize("name", list_models())
def test_outputs_match_the_spec(name: str) -> None:
    graph = _graph(name)
    spec = graph.spec
    prep = spec.preprocess
    images = torch.randn(3, prep.channels, *prep.input_size)
    with torch.no_grad():
        outputs = graph.named_outputs(images)
    assert set(outputs) == set(spec.output_names)
    assert outputs[spec.logits_name].shape == (3, len(spec.labels))
    for attention in spec.attention:
        value = outputs[attention.name]
        assert value.shape[0] == 3 and value.dim() == 1 + len(attention.axes), attention.name
        if attention.kind is AttentionKind.CLASS_ACTIVATION:
            assert value.shape[1] == len(spec.labels)
        if attention.normalization.method == "fixed":
            lo, hi = attention.normalization.range  # type: ignore[misc]
            assert lo <= value.min() and value.max() <= hi, attention.name
    # the tuple the exporter sees is the same outputs, in spec order
    with torch.no_grad():
        as_tuple = graph(images)
    for name_, value in zip(spec.output_names, as_tuple, strict=True):
        assert torch.equal(value, outputs[name_])


def test_cbam_maps_have_their_documented_ranges() -> None:
    graph = _graph("cbam")
    with torch.no_grad():
        outputs = graph.named_outputs(torch.randn(2, 1, 64, 64))
    stage3 = outputs["spatial_stage3"]
    assert stage3.shape == (2, 8, 8)
    assert torch.allclose(stage3.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)  # softmax over positions
    assert outputs["spatial_stage1"].shape == (2, 32, 32) and outputs["spatial_product"].shape == (2, 32, 32)
    assert outputs["channel_stage3"].shape == (2, 128)


@pytest.mark.parametrize("name", [n for n in list_models() if has_gap_linear_head(create_model(n))])
def test_in_graph_cam_sums_to_the_logit_and_equals_grad_cam(name: str) -> None:
    graph = _graph(name)
    model = graph.model
    prep = graph.spec.preprocess
    images = torch.randn(4, prep.channels, *prep.input_size)
    with torch.no_grad():
        outputs = graph.named_outputs(images)
    cam, logits = outputs[CAM_OUTPUT], outputs[graph.spec.logits_name]
    bias = model.classifier.bias  # type: ignore[union-attr]
    assert torch.allclose(cam.sum(dim=(2, 3)) + bias, logits, atol=1e-4)
    predicted = logits.argmax(dim=1)
    reference = grad_cam_at_pooled_features(model, images)
    ours = torch.relu(cam[torch.arange(4), predicted])
    assert torch.allclose(ours, reference, atol=1e-5)
    # asking for another class explains that class
    other = (predicted + 1) % logits.shape[1]
    assert torch.allclose(
        torch.relu(cam[torch.arange(4), other]), grad_cam_at_pooled_features(model, images, other), atol=1e-5
    )


def test_grad_cam_at_a_layer_correlates_with_cam_on_the_same_layer() -> None:
    graph = _graph("cbam")
    model = graph.model
    images = torch.randn(4, 1, 64, 64)
    pooled_layer = model.stages[-1]  # type: ignore[index]
    via_hook = grad_cam(model, pooled_layer, images)
    direct = grad_cam_at_pooled_features(model, images)
    assert torch.allclose(via_hook, direct, atol=1e-5)
    at_last_conv = grad_cam(model, model.last_conv, images)  # type: ignore[arg-type]
    assert at_last_conv.shape == (4, 8, 8) and (at_last_conv >= 0).all()
