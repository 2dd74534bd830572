"""Which module types are attention, and where their attention tensor is.

An entry maps a module type (a class, or its qualified name so that timm need not be imported)
to *taps*: each names a submodule below the matched module whose output is an attention tensor
(timm's ``SEModule.gate``, torchvision's ``SqueezeExcitation.scale_activation``) and what kind of
attention it is. Export hooks those submodules; the user's model code is never edited.

Matching walks a module's class hierarchy (most specific first), and the outermost match wins:
the modules inside a matched one are not searched again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import Tensor, nn

from attnserve.spec import AttentionKind, Normalization

SIGMOID_GATE = "(0, 1), sigmoid gate"
GATE_NORMALIZATION = Normalization(method="above_median", range=(0.0, 1.0))
_TAP_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class AttentionTap:
    """One attention tensor of a module type.

    Attributes:
        kind: CHANNEL (B×C, B×C×1×1, B×1×C → B×C) or SPATIAL (B×1×H×W, B×H×W → B×H×W; a
            B×C×H×W gate becomes its mean over channels).
        submodule: dotted path below the matched module whose output is the attention ("" = the
            matched module's own output).
        description: what the tensor is, in words (the module path and size are appended).
        value_range: what the raw values are, in words.
        normalization: how the gateway turns values into display intensities.
        transform: applied in the graph to the hooked tensor before it is shaped (e.g. a softmax
            over positions when the hooked tensor is a score map).
    """

    kind: AttentionKind
    submodule: str = ""
    description: str = ""
    value_range: str = SIGMOID_GATE
    normalization: Normalization = GATE_NORMALIZATION
    transform: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.kind not in (AttentionKind.CHANNEL, AttentionKind.SPATIAL):
            raise ValueError(f"a tap is CHANNEL or SPATIAL attention, not {self.kind.value}")


@dataclass(frozen=True)
class AttentionSite:
    """A tap found in a model: the matched module's path, its type, the tap and its target."""

    path: str
    module_type: str
    tap_name: str
    tap: AttentionTap
    target: nn.Module

    @property
    def label(self) -> str:
        return f"{self.path or '<model>'} ({self.module_type.rsplit('.', 1)[-1]}) {self.tap_name}"


_REGISTRY: dict[str, dict[str, AttentionTap]] = {}


def qualified_name(module_type: type) -> str:
    return f"{module_type.__module__}.{module_type.__qualname__}"


def register_attention_module(module_type: type | str, **taps: AttentionTap) -> None:
    """Registers a module type as attention: ``taps`` by output-name suffix.

    ``module_type`` is a class or its qualified name ("timm.layers.squeeze_excite.SEModule").
    A type registered twice raises ``ValueError``, as does a tap name that is not
    ``[A-Za-z0-9_]+`` (it becomes part of a graph output's name).
    """
    key = module_type if isinstance(module_type, str) else qualified_name(module_type)
    if not taps:
        raise ValueError(f"{key}: name at least one tap, e.g. channel=AttentionTap(...)")
    for name, tap in taps.items():
        if not _TAP_NAME.match(name):
            raise ValueError(f"{key}: tap name {name!r} must be letters, digits and underscores")
        if not isinstance(tap, AttentionTap):
            raise TypeError(f"{key}: tap {name!r} is a {type(tap).__name__}, not an AttentionTap")
    if key in _REGISTRY:
        raise ValueError(f"attention module type {key} is already registered")
    _REGISTRY[key] = dict(taps)


def registered_attention_modules() -> dict[str, dict[str, AttentionTap]]:
    """Every registered type's taps, by qualified name."""
    return {key: dict(taps) for key, taps in _REGISTRY.items()}


def _taps_of(module: nn.Module) -> tuple[str, dict[str, AttentionTap]] | None:
    for cls in type(module).__mro__:
        key = qualified_name(cls)
        if key in _REGISTRY:
            return key, _REGISTRY[key]
    return None


def find_attention_sites(model: nn.Module) -> tuple[list[AttentionSite], list[str]]:
    """Every tap of every registered module in ``model`` (module order), and notes on the taps
    that name a submodule the module lacks."""
    sites: list[AttentionSite] = []
    notes: list[str] = []
    matched: list[str] = []
    for path, module in _named_modules_below_root(model):
        if any(path.startswith(f"{outer}.") for outer in matched):
            continue
        found = _taps_of(module)
        if found is None:
            continue
        module_type, taps = found
        matched.append(path)
        for tap_name, tap in taps.items():
            try:
                target = module.get_submodule(tap.submodule) if tap.submodule else module
            except AttributeError:
                notes.append(f"{path}: {module_type} has no submodule {tap.submodule!r}; {tap_name} skipped")
                continue
            sites.append(AttentionSite(path, module_type, tap_name, tap, target))
    return sites, notes


def _named_modules_below_root(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for path, module in model.named_modules():
        if path:
            yield path, module


def _softmax_over_positions(scores: Tensor) -> Tensor:
    return scores.flatten(-2).softmax(dim=-1).reshape(scores.shape)


def _register_builtins() -> None:
    """timm's and torchvision's attention modules, by qualified name (neither is imported)."""
    se = "squeeze-and-excitation gate per channel"
    register_attention_module(
        "timm.layers.squeeze_excite.SEModule", channel=AttentionTap(AttentionKind.CHANNEL, "gate", se)
    )
    register_attention_module(
        "timm.layers.squeeze_excite.EffectiveSEModule",
        channel=AttentionTap(AttentionKind.CHANNEL, "gate", f"effective {se}", "(0, 1), hard sigmoid"),
    )
    register_attention_module(
        "timm.layers.squeeze_excite.SqueezeExciteCl", channel=AttentionTap(AttentionKind.CHANNEL, "gate", se)
    )
    register_attention_module(
        "timm.models._efficientnet_blocks.SqueezeExcite",
        channel=AttentionTap(AttentionKind.CHANNEL, "gate", se),
    )
    register_attention_module(
        "timm.models.senet.SEModule", channel=AttentionTap(AttentionKind.CHANNEL, "sigmoid", se)
    )
    eca = "efficient channel attention gate (1-D conv over pooled channels)"
    register_attention_module(
        "timm.layers.eca.EcaModule", channel=AttentionTap(AttentionKind.CHANNEL, "gate", eca)
    )
    register_attention_module(
        "timm.layers.eca.CecaModule",
        channel=AttentionTap(AttentionKind.CHANNEL, "gate", f"circular {eca}"),
    )
    cbam_channel = AttentionTap(AttentionKind.CHANNEL, "channel.gate", "CBAM channel gate")
    cbam_spatial = AttentionTap(AttentionKind.SPATIAL, "spatial.gate", "CBAM spatial gate")
    register_attention_module("timm.layers.cbam.CbamModule", channel=cbam_channel, spatial=cbam_spatial)
    # LightChannelAttn applies F.sigmoid itself: its `gate` never runs, the tap is dropped at capture
    register_attention_module("timm.layers.cbam.LightCbamModule", channel=cbam_channel, spatial=cbam_spatial)
    register_attention_module(
        "timm.layers.gather_excite.GatherExcite",
        # global extent: a gate per channel; a local extent: per channel and position (shown as
        # its mean over channels). The tap that does not fit the gate's shape is dropped.
        channel=AttentionTap(AttentionKind.CHANNEL, "gate", "gather-excite gate per channel"),
        spatial=AttentionTap(AttentionKind.SPATIAL, "gate", "gather-excite gate, mean over channels"),
    )
    register_attention_module(
        "timm.layers.global_context.GlobalContext",
        channel=AttentionTap(AttentionKind.CHANNEL, "gate", "global-context scale gate per channel"),
        spatial=AttentionTap(
            AttentionKind.SPATIAL,
            "conv_attn",
            "global-context attention pooling weights (softmax over positions)",
            "(0, 1), sums to 1 over positions",
            Normalization(method="minmax"),
            transform=_softmax_over_positions,
        ),
    )
    register_attention_module(
        "torchvision.ops.misc.SqueezeExcitation",
        channel=AttentionTap(AttentionKind.CHANNEL, "scale_activation", se, "(0, 1), (hard) sigmoid gate"),
    )


_register_builtins()
