"""The serving graph: what is exported, ``images, *options -> (task outputs, *attention maps)``,
every output named as in the model's spec; ``options`` are the spec's input options (a
captioner's beam size and longest caption), one (N, 1) int64 tensor each, passed to the model.

It wraps any registered model. A model whose head is global average pooling + linear gets the
in-graph class activation map (`_cam`) as one more output; any other model returns its outputs
by name itself.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnserve.spec import ModelSpec

from ._cam import (
    CAM_OUTPUT,
    CAM_SPEC,
    GapLinearClassifier,
    class_activation_maps,
    has_gap_linear_head,
    pooled_logits,
)


def serving_spec(spec: ModelSpec, model: nn.Module) -> ModelSpec:
    """The registry spec plus the outputs export adds (the CAM, for GAP + linear heads)."""
    if has_gap_linear_head(model) and CAM_OUTPUT not in {a.name for a in spec.attention}:
        return spec.model_copy(update={"attention": (*spec.attention, CAM_SPEC)})
    return spec


class ServingGraph(nn.Module):
    """What is exported: ``images -> (logits, *attention maps)`` in ``spec.output_names`` order."""

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = serving_spec(spec, model)
        self.with_cam = CAM_OUTPUT in {a.name for a in self.spec.attention}

    def forward(self, images: Tensor, *options: Tensor) -> tuple[Tensor, ...]:
        outputs = self.named_outputs(images, *options)
        return tuple(outputs[name] for name in self.spec.output_names)

    def named_outputs(self, images: Tensor, *options: Tensor) -> dict[str, Tensor]:
        model = self.model
        if not has_gap_linear_head(model):
            result = model(images, *options)
            if not isinstance(result, dict):
                raise TypeError("a model without a GAP + linear head must return a dict of outputs")
            return result
        assert isinstance(model, GapLinearClassifier)
        features, attention = model.forward_features(images)
        logits = pooled_logits(features, model.classifier)
        outputs = {self.spec.logits_name: logits, **attention}
        if self.with_cam:
            outputs[CAM_OUTPUT] = class_activation_maps(features, model.classifier)
        return outputs
