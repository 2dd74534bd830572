"""Bring your own model: any classifier ``nn.Module`` (timm, torchvision, your own) served with
its attention maps.

The exporter finds attention modules by type (a registry users extend with
`register_attention_module`), hooks their gate submodules so that their tensors become named
graph outputs without editing the model's code, adds the in-graph CAM where the head is proven
to be global average pooling + linear, and exports through the same parity check and atomic
install as attnserve's own models. timm and torchvision are imported only by `timm_source` and
`torchvision_source` (the byo extra); the rest needs neither. See docs/byo.md.
"""

from ._agreement import CamAgreement, cam_agreement
from ._capture import CapturedGraph, CapturedMap, GapLinearHead, capture_attention
from ._export import ModuleExportResult, export_module, measure_cam_agreement
from ._registry import AttentionTap, register_attention_module, registered_attention_modules
from ._sources import (
    RANDOM_WEIGHTS_NOTE,
    ModelSource,
    PreprocessOverrides,
    load_weights,
    read_labels,
    read_state_dict,
    timm_source,
    torchvision_source,
)

__all__ = [
    "RANDOM_WEIGHTS_NOTE",
    "AttentionTap",
    "CamAgreement",
    "CapturedGraph",
    "CapturedMap",
    "GapLinearHead",
    "ModelSource",
    "ModuleExportResult",
    "PreprocessOverrides",
    "cam_agreement",
    "capture_attention",
    "export_module",
    "load_weights",
    "measure_cam_agreement",
    "read_labels",
    "read_state_dict",
    "register_attention_module",
    "registered_attention_modules",
    "timm_source",
    "torchvision_source",
]
