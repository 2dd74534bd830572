"""tests/byo: timm and torchvision models through `attnserve.export.byo`, served end to end.

They need the byo extra (torch 2.14.1 + torchvision 0.29.1 + timm: ``make byo-setup`` builds
.venv-byo); in the default install, which has neither, every test here is skipped with that
reason. Models are small (64×64 inputs, 5 classes) with random weights made lively: norm layers
get random affine parameters and running statistics measured on noise (no training), so gates
and maps vary from image to image (timm initialises each block's last norm to zero: its gates
would otherwise be constant and Grad-CAM inside the block zero).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ..conftest import REPO_ROOT

_MISSING = [name for name in ("timm", "torchvision") if importlib.util.find_spec(name) is None]
SKIP_REASON = (
    f"tests/byo need the byo extra ({', '.join(_MISSING)} not importable here): "
    "run them in .venv-byo (make byo-setup; make test-byo)"
)

INPUT_SIZE = 64
LABELS = ("apple", "bread", "cheese", "dates", "eggs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _MISSING:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random norm affine parameters and running statistics from three noise batches (no
    gradients, no training); eval mode."""
    generator = torch.Generator().manual_seed(seed)
    # each residual block's last norm small, as in trained ResNets: at 1 the residual sums grow
    # ×2 in variance per block (a ResNet-50's logits reach 1e4 and float32 parity fails at 1e-4)
    blocks = [block for block in model.modules() if hasattr(block, "downsample")]
    last_norms = {id(getattr(block, "bn3", None) or block.bn2) for block in blocks}
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            low, high = (0.1, 0.3) if id(module) in last_norms else (0.5, 1.5)
            with torch.no_grad():
                module.weight.uniform_(low, high, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, INPUT_SIZE, INPUT_SIZE, generator=generator))
    return model.eval()


def _overrides() -> Any:
    from attnserve.export.byo import PreprocessOverrides

    return PreprocessOverrides(input_size=(INPUT_SIZE, INPUT_SIZE))


def timm_model(name: str, **kwargs: Any) -> Any:
    from attnserve.export.byo import timm_source

    torch.manual_seed(0)
    source = timm_source(name, labels=LABELS, overrides=_overrides(), **kwargs)
    lively(source.model)
    return source


def tiny_timm_resnet(attn_layer: Any, what: str) -> Any:
    """timm's ResNet with one basic block per stage and ``attn_layer`` in every block; the spec
    as timm's resnet18's."""
    from timm.models.resnet import BasicBlock, ResNet

    source = timm_model("resnet18")
    torch.manual_seed(0)
    source.model = lively(
        ResNet(BasicBlock, [1, 1, 1, 1], num_classes=len(LABELS), block_args={"attn_layer": attn_layer})
    )
    source.architecture = f"timm ResNet(BasicBlock, [1, 1, 1, 1], attn_layer={what})"
    return source


def gather_excite() -> Any:
    # timm 1.0.31 cannot build GatherExcite with its MLP (ConvMlp gets act_layer twice): without it
    from timm.layers import GatherExcite

    return partial(GatherExcite, use_mlp=False, extent=2)


def torchvision_model(name: str) -> Any:
    from attnserve.export.byo import torchvision_source

    torch.manual_seed(0)
    source = torchvision_source(name, labels=LABELS, overrides=_overrides())
    lively(source.model)
    return source


MODELS: dict[str, Callable[[], Any]] = {
    "seresnet18": lambda: timm_model("seresnet18"),
    "cbam_resnet": lambda: tiny_timm_resnet("cbam", "'cbam'"),
    "eca_resnet": lambda: tiny_timm_resnet("eca", "'eca'"),
    "ge_resnet": lambda: tiny_timm_resnet(gather_excite(), "GatherExcite(extent=2)"),
    "tv_resnet18": lambda: torchvision_model("resnet18"),
    "tv_mobilenet_v3_small": lambda: torchvision_model("mobilenet_v3_small"),
}
"""The models exported and served here, by repository name."""


def triton_runtime_dir() -> Path | None:
    """This venv's Triton runtime if provisioned, else the default venv's (.venv, provisioned by
    `make setup`): one Triton binary and backend environment serves both."""
    import sys

    for root in (Path(sys.prefix), REPO_ROOT / ".venv"):
        runtime = root / "var" / "attnserve" / "triton"
        if (runtime / "env.complete").is_file():
            return runtime
    return None
