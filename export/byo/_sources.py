"""Models from timm and torchvision by name, weights from local files, and the spec's
preprocessing and labels from the model's own pretrained configuration (offline).

timm and torchvision are imported here only, inside the functions that need them: the default
install has neither. Nothing is downloaded: models are built with ``pretrained=False`` /
``weights=None``; their pretrained configuration (input size, mean/std, interpolation, crop,
ImageNet class names) ships inside the packages. Weights come from ``--checkpoint`` (a
state_dict in a .pth/.pt, read with ``weights_only=True``, or a .safetensors file).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from attnserve.errors import InvalidInput, SetupError
from attnserve.spec import ColorMode, Interpolation, PreprocessSpec, ResizeMode

RANDOM_WEIGHTS_NOTE = (
    "NO CHECKPOINT: the model has RANDOM weights; its predictions and maps mean nothing "
    "(pass --checkpoint FILE with your trained state_dict)"
)
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")


@dataclass(frozen=True)
class PreprocessOverrides:
    """Flags that replace the pretrained configuration's values."""

    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None
    interpolation: Interpolation | None = None


@dataclass
class ModelSource:
    """A model ready for `export_module`, with where its spec came from."""

    architecture: str
    model: nn.Module
    preprocess: PreprocessSpec
    labels: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def import_extra(module: str, flag: str) -> ModuleType:
    """``module``, or a `SetupError` saying how to install the byo extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SetupError(
            f"{flag} needs {module}, which is not importable here ({exc}): pip install 'attnserve[byo]'"
        ) from None


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line (blank lines ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read labels file {path}: {exc}") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) < 2:
        raise InvalidInput(f"labels file {path} has {len(labels)} labels; a classifier needs at least 2")
    return labels


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state_dict from a local .pth/.pt (``weights_only=True``) or .safetensors file; a
    training checkpoint's ``state_dict``/``model`` entry and a ``module.`` prefix are unwrapped."""
    if not path.is_file():
        raise InvalidInput(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        payload: Any = _read_safetensors(path)
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's parsers fail on foreign bytes with exceptions of any type
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InvalidInput(f"checkpoint {path} is not a readable torch file: {first_line}") from None
    if isinstance(payload, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise InvalidInput(f"checkpoint {path} holds no state_dict (a mapping of names to tensors)")
    if payload and all(k.startswith("module.") for k in payload):  # saved from DataParallel
        payload = {k.removeprefix("module."): v for k, v in payload.items()}
    return dict(payload)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    safetensors_torch = import_extra("safetensors.torch", "a .safetensors checkpoint")
    try:
        state: dict[str, Tensor] = safetensors_torch.load_file(str(path), device="cpu")
    except Exception as exc:  # the parser raises its own error types on foreign bytes
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidInput(f"checkpoint {path} is not a readable safetensors file: {first_line}") from None
    return state


def load_weights(model: nn.Module, state: Mapping[str, Tensor], path: Path, what: str) -> None:
    """Loads ``state`` strictly; a checkpoint that does not fit is one `InvalidInput` line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if not (missing or unexpected or mismatched):
        model.load_state_dict(state)
        return
    problems = []
    if mismatched:
        key = mismatched[0]
        problems.append(
            f"{len(mismatched)} shape mismatches (e.g. {key}: {tuple(state[key].shape)} in the file, "
            f"{tuple(own[key].shape)} in the model)"
        )
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    hint = _classes_hint(model, state, mismatched)
    raise InvalidInput(f"checkpoint {path} does not fit {what}: {'; '.join(problems)}{hint}")


def _classes_hint(model: nn.Module, state: Mapping[str, Tensor], mismatched: Sequence[str]) -> str:
    linears = [path for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linears and f"{linears[-1]}.weight" in mismatched:
        classes = state[f"{linears[-1]}.weight"].shape[0]
        return f" (the file has {classes} classes: pass --labels FILE with {classes} lines)"
    return ""


def _interpolation(name: str, notes: list[str]) -> Interpolation:
    try:
        return Interpolation(name.lower())
    except ValueError:
        notes.append(f"the model was trained with {name!r} resampling; served with bilinear")
        return Interpolation.BILINEAR


def build_preprocess(
    channels: int,
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float,
    interpolation: Interpolation,
    overrides: PreprocessOverrides,
) -> PreprocessSpec:
    """The gateway's transform: shorter side to input/crop_pct, centre crop (timm's and
    torchvision's evaluation transform), then normalisation; flags win over the config."""
    try:
        return PreprocessSpec(
            input_size=overrides.input_size or input_size,
            color_mode=ColorMode.RGB if channels == 3 else ColorMode.GRAY,
            mean=tuple(overrides.mean or mean),
            std=tuple(overrides.std or std),
            resize_mode=ResizeMode.CENTER_CROP,
            crop_pct=overrides.crop_pct or min(crop_pct, 1.0),
            interpolation=overrides.interpolation or interpolation,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"invalid preprocessing ({where}): {first['msg']}") from None


def _load_or_note(model: nn.Module, checkpoint: Path | None, what: str, notes: list[str]) -> None:
    if checkpoint is None:
        notes.append(RANDOM_WEIGHTS_NOTE)
    else:
        load_weights(model, read_state_dict(checkpoint), checkpoint, what)
        notes.append(f"weights: {checkpoint}")
    model.eval()


def _numbered(count: int, notes: list[str]) -> tuple[str, ...]:
    notes.append(f"no label names known: labelled class_0 … class_{count - 1} (pass --labels FILE)")
    return tuple(f"class_{i}" for i in range(count))


def timm_source(
    name: str,
    *,
    checkpoint: Path | None = None,
    labels: Sequence[str] | None = None,
    overrides: PreprocessOverrides = PreprocessOverrides(),  # noqa: B008  # frozen
    **model_kwargs: Any,
) -> ModelSource:
    """A timm model by name (``pretrained=False``), its spec from ``model.pretrained_cfg``."""
    timm = import_extra("timm", "--timm")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidInput(f"timm has no model {name!r}{suggestion}")
    if labels is not None:
        model_kwargs = {"num_classes": len(labels), **model_kwargs}
    model = timm.create_model(name, pretrained=False, **model_kwargs)
    notes: list[str] = []
    _load_or_note(model, checkpoint, f"timm {name} ({model.num_classes} classes)", notes)
    cfg = dict(model.pretrained_cfg)
    channels, height, width = cfg.get("input_size", (3, 224, 224))
    preprocess = build_preprocess(
        channels,
        (height, width),
        cfg.get("mean", (0.485, 0.456, 0.406)),
        cfg.get("std", (0.229, 0.224, 0.225)),
        float(cfg.get("crop_pct", 0.875)),
        _interpolation(str(cfg.get("interpolation", "bilinear")), notes),
        overrides,
    )
    if cfg.get("crop_mode", "center") != "center":
        notes.append(f"timm's crop_mode {cfg['crop_mode']!r} is served as a centre crop")
    return ModelSource(f"timm/{name}", model, preprocess, tuple(labels or _timm_labels(model, notes)), notes)


def _timm_labels(model: nn.Module, notes: list[str]) -> tuple[str, ...]:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if subset is None:
        return _numbered(int(getattr(model, "num_classes", 0)), notes)
    notes.append(f"labels: {subset} class names from timm's pretrained configuration")
    info = ImageNetInfo(subset)
    names = [info.index_to_description(i) for i in range(info.num_classes())]
    repeated = {name for name in names if names.count(name) > 1}  # ImageNet-1k: two "crane"s
    return tuple(
        f"{name} ({info.index_to_label_name(i)})" if name in repeated else name
        for i, name in enumerate(names)
    )


def torchvision_source(
    name: str,
    *,
    checkpoint: Path | None = None,
    labels: Sequence[str] | None = None,
    overrides: PreprocessOverrides = PreprocessOverrides(),  # noqa: B008  # frozen
    **model_kwargs: Any,
) -> ModelSource:
    """A torchvision classification model by name (``weights=None``), its spec from its default
    weights' metadata (categories) and evaluation transform (resize, crop, mean/std)."""
    import_extra("torchvision", "--torchvision")
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)  # classification models only
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
        raise InvalidInput(f"torchvision has no classification model {name!r}{suggestion}")
    notes: list[str] = []
    weights = tvm.get_model_weights(name).DEFAULT
    categories = tuple(weights.meta.get("categories") or ())
    transform = weights.transforms()
    chosen = tuple(labels) if labels is not None else categories
    model = tvm.get_model(name, weights=None, num_classes=len(chosen) or 1000, **model_kwargs)
    if not chosen:
        chosen = _numbered(1000, notes)
    elif labels is None:
        notes.append(f"labels: the {len(chosen)} categories of torchvision's {weights}")
    _load_or_note(model, checkpoint, f"torchvision {name} ({len(chosen)} classes)", notes)
    crop = int(transform.crop_size[0])
    resize = int(transform.resize_size[0]) if transform.resize_size else crop
    preprocess = build_preprocess(
        3,
        (crop, crop),
        transform.mean,
        transform.std,
        crop / resize,
        _interpolation(str(transform.interpolation.value), notes),
        overrides,
    )
    return ModelSource(f"torchvision/{name}", model, preprocess, chosen, notes)
