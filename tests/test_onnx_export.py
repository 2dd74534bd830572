import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from attnserve.export.models import ServingGraph, create_model, get_spec, list_models
from attnserve.export.onnx_export import PARITY_TOLERANCE, ParityError, check_parity, export_onnx


@pytest.fixture(scope="module", params=list_models())
def exported(request: pytest.FixtureRequest) -> tuple[ServingGraph, bytes]:
    torch.manual_seed(0)
    graph = ServingGraph(create_model(request.param).eval(), get_spec(request.param))
    return graph, export_onnx(graph)


def test_every_output_is_named_and_the_batch_is_dynamic(exported: tuple[ServingGraph, bytes]) -> None:
    graph, model_bytes = exported
    model = onnx.load_from_string(model_bytes)
    assert [o.name for o in model.graph.output] == list(graph.spec.output_names)
    assert [i.name for i in model.graph.input] == list(graph.spec.input_names)  # the image, then options
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    for output in model.graph.output:  # detections: as many as each image has
        dims = output.type.tensor_type.shape.dim
        for axis in graph.spec.dynamic_axes(output.name):
            assert dims[1 + axis].dim_param, (output.name, axis)


def test_parity_with_pytorch_on_logits_and_every_attention_map(exported: tuple[ServingGraph, bytes]) -> None:
    graph, model_bytes = exported
    report = check_parity(graph, model_bytes)
    assert report.passed, "\n".join(report.lines())
    assert set(report.max_abs_diff) == set(graph.spec.output_names)
    assert max(report.max_abs_diff.values()) <= PARITY_TOLERANCE


def test_parity_detects_a_graph_that_differs(exported: tuple[ServingGraph, bytes]) -> None:
    graph, model_bytes = exported
    parameters = list(graph.model.parameters())
    with torch.no_grad():  # perturb the PyTorch side after export: the check must notice
        for parameter in parameters:
            parameter.mul_(1.01)
    try:
        report = check_parity(graph, model_bytes)
    finally:
        with torch.no_grad():
            for parameter in parameters:
                parameter.div_(1.01)
    assert not report.passed
    assert max(report.max_abs_diff.values()) > PARITY_TOLERANCE


def test_batch_sizes_give_the_same_per_image_answer(exported: tuple[ServingGraph, bytes]) -> None:
    graph, model_bytes = exported
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    prep = graph.spec.preprocess
    images = np.random.default_rng(1).normal(size=(5, prep.channels, *prep.input_size)).astype(np.float32)
    options = {o.name: np.full((5, 1), o.default, dtype=np.int64) for o in graph.spec.options}
    together = session.run(None, {graph.spec.input_name: images, **options})
    alone = session.run(None, {graph.spec.input_name: images[2:3], **{k: v[2:3] for k, v in options.items()}})
    for name, batch_output, single_output in zip(graph.spec.output_names, together, alone, strict=True):
        if graph.spec.dynamic_axes(name):  # detections padded to the batch's largest count
            rows = single_output.shape[1]
            assert batch_output.shape[1] >= rows
            batch_output = batch_output[:, :rows]
        np.testing.assert_allclose(batch_output[2:3], single_output, atol=1e-5)


def test_parity_error_is_a_domain_error() -> None:
    from attnserve.errors import AttnserveError

    assert issubclass(ParityError, AttnserveError)
