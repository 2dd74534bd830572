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
from attnserve.export.onnx_export import option_tensors
from attnserve.spec import AttentionKind, Task

CLASSIFIERS = [n for n in list_models() if get_spec(n).task is Task.CLASSIFICATION]
"""The dense models' own tests check their outputs and training (test_attention_to_scale.py,
test_mask_rcnn.py, test_partitioned_fcn.py); their export parity is checked with everyone's."""


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
def test_every_model_answers_as_its_spec_says(name: str) -> None:
    graph = _graph(name)
    spec = graph.spec
    images = torch.randn(2, spec.preprocess.channels, *spec.preprocess.input_size)
    with torch.no_grad():
        outputs = graph.named_outputs(images, *option_tensors(spec, 2))
    assert set(outputs) == set(spec.output_names)
    assert all(value.shape[0] == 2 for value in outputs.values())
    spec.check_output_dims({name: tuple(value.shape[1:]) for name, value in outputs.items()})


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_outputs_match_the_spec(name: str) -> None:
    graph = _graph(name)
    spec = graph.spec
    prep = spec.preprocess
    images = torch.randn(3, prep.channels, *prep.input_size)
    with torch.no_grad():
        outputs = graph.named_outputs(images)
    assert set(outputs) == set(spec.output_names)
    assert outputs[spec.logits_name].shape == (3, len(spec.labels))
    spec.check_output_dims({name: tuple(value.shape[1:]) for name, value in outputs.items()})
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


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_one_training_step_gives_a_finite_loss_and_gradients(name: str) -> None:
    from attnserve.export.train import training_step

    torch.manual_seed(0)
    model = create_model(name).train()
    prep = get_spec(name).preprocess
    images, labels = torch.randn(4, prep.channels, *prep.input_size), torch.arange(4)
    for progress, step in ((0.05, 0), (0.3, 1), (0.6, 2), (0.6, 3)):
        result = training_step(model, images, labels, progress, step, 0.1)
        assert torch.isfinite(result.loss)
        model.zero_grad()
        result.loss.backward()
        allowed = list(model.parameters()) if result.update is None else list(result.update)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in allowed), (name, progress, step)


def test_racnn_alternates_classification_and_ranking_and_composes_boxes() -> None:
    from attnserve.export.models.racnn import RACNN, proposal_to_box

    torch.manual_seed(0)
    model = create_model("racnn").train()
    assert isinstance(model, RACNN)
    images, labels = torch.randn(4, 1, 128, 128), torch.arange(4)
    proposals = {id(p) for p in model.proposal_parameters()}
    classify = model.training_loss(images, labels, 0.6, 3)
    rank = model.training_loss(images, labels, 0.6, 2)
    assert classify.update is not None and not proposals & {id(p) for p in classify.update}
    assert rank.update is not None and {id(p) for p in rank.update} == proposals and "rank" in rank.logs
    # a box inside a box: (0.5, 0.5, half 0.25) of the parent (0.2, 0.2)-(0.6, 0.6) is (0.3, 0.3)-(0.5, 0.5)
    box = proposal_to_box(torch.tensor([[0.5, 0.5, 0.25]]), torch.tensor([[0.2, 0.2, 0.6, 0.6]]))
    assert torch.allclose(box, torch.tensor([[0.3, 0.3, 0.5, 0.5]]))


def test_ram_glimpses_are_ordered_squares_of_growing_size_starting_at_the_centre() -> None:
    torch.manual_seed(0)
    model = create_model("ram").eval()
    with torch.no_grad():
        path = model(torch.randn(2, 1, 128, 128))["glimpses"]  # B×steps×patches×4
    assert path.shape == (2, 6, 4, 4)
    sides = path[..., 2] - path[..., 0]
    assert torch.allclose(sides, path[..., 3] - path[..., 1])  # square
    assert torch.allclose(sides[0, 0], torch.tensor([0.125, 0.25, 0.5, 1.0]))
    centres = (path[..., :2] + path[..., 2:]) / 2
    assert torch.allclose(centres[:, 0], torch.full((2, 4, 2), 0.5))  # the first glimpse is central
    assert torch.allclose(centres[..., :1, :], centres)  # a glimpse's patches share their centre
