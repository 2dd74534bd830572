"""What the CLI shows: a prediction and the model listing, as text or as the ``--json`` summary.

Shared by `attnserve predict`, `attnserve models` and `attnserve demo`. The ``--json`` form is
a summary for people and scripts (tensors and PNGs are left out, their presence is not); the
lossless JSON of an answer is `attnserve.codec.prediction_to_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from attnserve._io import atomic_open
from attnserve.clients import AnyClient
from attnserve.codec import kind_from_proto
from attnserve.errors import SetupError
from attnserve.prediction import AttentionMap, MapForm, Prediction

ENCODINGS_BY_SUFFIX = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".png": "png"}


def encoding_for(*paths: Path | None) -> str:
    """The image encoding a picture's file name asks for (its suffix; PNG when none says)."""
    for path in paths:
        if path is not None and path.suffix.lower() in ENCODINGS_BY_SUFFIX:
            return ENCODINGS_BY_SUFFIX[path.suffix.lower()]
    return "png"


@dataclass(frozen=True)
class PictureRequest:
    """Which map to draw (a name or "primary") and where to write its overlay and heatmap."""

    map: str = "primary"
    overlay: Path | None = None
    heatmap: Path | None = None
    draw: bool = False
    """Draw the overlay even when it is not written to a file (the caller uses it)."""

    @property
    def wanted(self) -> bool:
        return self.overlay is not None or self.heatmap is not None or self.draw


def predict_to_console(
    client: AnyClient,
    image: Path,
    *,
    model: str | None = None,
    top_k: int | None = None,
    target_class: int | None = None,
    pictures: PictureRequest = PictureRequest(),
    as_json: bool = False,
    image_encoding: str = "png",
) -> Prediction:
    """Predicts ``image`` with every map raw, writes the asked pictures (encoded as
    ``image_encoding``: png, jpeg or webp), prints the result."""
    forms = [MapForm.RAW]
    if pictures.overlay or pictures.draw:
        forms.append(MapForm.OVERLAY_PNG)
    if pictures.heatmap:
        forms.append(MapForm.HEATMAP_PNG)
    prediction = client.predict(
        image,
        model=model,
        top_k=top_k,
        forms=forms,
        render=[pictures.map] if pictures.wanted else [],
        target_class=target_class,
        image_encoding=image_encoding,
    )
    rendered = next((a for a in prediction.attention if a.overlay_png or a.heatmap_png), None)
    if rendered is not None:
        if pictures.overlay:
            write_file(pictures.overlay, rendered.overlay_png)
        if pictures.heatmap:
            write_file(pictures.heatmap, rendered.heatmap_png)
    if as_json:
        document = summary_json(prediction)
        if rendered is not None:
            document["overlay"] = {
                "map": rendered.name,
                "path": str(pictures.overlay) if pictures.overlay else None,
            }
        print(json.dumps(document, indent=2))
        return prediction
    primary = client.get_model(prediction.model).primary_attention
    print_prediction(prediction, str(image), primary)
    if rendered is not None:
        for path in (pictures.overlay, pictures.heatmap):
            if path:
                print(f"  wrote {path} ({rendered.name})")
    t = prediction.timings
    print(
        f"  timings: preprocess {t.preprocess_ms:.1f} ms, inference {t.inference_ms:.1f} ms, "
        f"postprocess {t.postprocess_ms:.1f} ms, total {t.total_ms:.1f} ms"
    )
    return prediction


def print_prediction(prediction: Prediction, source: str, primary: str) -> None:
    image = prediction.image
    size = f"{image.width}×{image.height} {image.format}"
    print(f"{source}: {size} → model {prediction.model} v{prediction.model_version}")
    print("  " + ", ".join(f"{c.label} {c.score:.3f}" for c in prediction.predictions))
    for a in prediction.attention:
        where = _where(a)
        tags = [t for t, on in (("primary", a.name == primary), ("flat", a.flat)) if on]
        cls = f" class {a.class_label}" if a.class_label else ""
        suffix = f"  [{', '.join(tags)}]" if tags else ""
        print(f"  {a.name:<16} {a.kind.value:<16} {'×'.join(map(str, a.shape)):<10}{cls} {where}{suffix}")


def _where(a: AttentionMap) -> str:
    if a.boxes:
        x0, y0, x1, y1 = a.boxes[-1]
        count = f"{len(a.boxes)} box" if len(a.boxes) == 1 else f"{len(a.boxes)} boxes, last"
        return f"{count} ({x0:.0f}, {y0:.0f})–({x1:.0f}, {y1:.0f}) px"
    if a.path:
        x, y = a.path[-1].center
        return f"{len(a.path)} glimpses, ending at ({x:.1f}, {y:.1f}) px"
    if a.peak:
        return f"peak at ({a.peak[0]:.1f}, {a.peak[1]:.1f}) px"
    return f"max {a.peak_value:.3f}"


def _located(a: AttentionMap) -> dict[str, Any]:
    """Boxes and paths, present only for the kinds that have them."""
    located: dict[str, Any] = {}
    if a.boxes:
        located["boxes"] = [[round(v, 2) for v in box] for box in a.boxes]
    if a.path:
        located["path"] = [
            {
                "center": [round(g.center[0], 2), round(g.center[1], 2)],
                "patches": [[round(v, 2) for v in box] for box in g.patches],
            }
            for g in a.path
        ]
    return located


def summary_json(prediction: Prediction) -> dict[str, Any]:
    """The ``predict --json`` document: tensors and PNGs are left out, their presence is not."""
    return {
        "model": prediction.model,
        "model_version": prediction.model_version,
        "image": vars(prediction.image),
        "predictions": [
            {"index": c.index, "label": c.label, "score": round(c.score, 6)} for c in prediction.predictions
        ],
        "attention": [
            {
                "name": a.name,
                "kind": a.kind.value,
                "axes": list(a.axes),
                "shape": list(a.shape),
                "peak": None if a.peak is None else [round(a.peak[0], 2), round(a.peak[1], 2)],
                "peak_value": a.peak_value,
                "class_index": a.class_index,
                "class_label": a.class_label or None,
                "normalization": a.normalization,
                "flat": a.flat,
                "contrast": round(a.contrast, 4),
                "forms": [form.value for form in a.forms],
                **({"block": a.block} if a.block else {}),
                **_located(a),
            }
            for a in prediction.attention
        ],
        "timings": vars(prediction.timings),
        "request_id": prediction.request_id,
    }


def models_to_console(client: AnyClient, as_json: bool = False) -> None:
    listing = client.list_models()
    if as_json:
        print(json.dumps(MessageToDict(listing, preserving_proto_field_name=True), indent=2))
        return
    for model in listing.models:
        default = "  (default)" if model.name == listing.default_model else ""
        if not model.ready:
            print(f"{model.name} v{model.version or '?'}{default}: not ready — {model.reason}")
            if not model.HasField("preprocess"):
                continue
        p = model.preprocess
        print(f"{model.name} v{model.version}{default}: {model.description}")
        print(f"  input {p.height}×{p.width} {p.color_mode}, {p.resize_mode}; {len(model.labels)} classes")
        for a in model.attention:
            tag = "  [primary]" if a.name == model.primary_attention else ""
            quality = ", ".join(f"{k} {v:.3f}" for k, v in sorted(a.quality.items()))
            shape = "×".join(map(str, a.shape))
            block = f"({a.block}) " if a.block else ""
            kind = kind_from_proto(a.kind).value
            line = f"  {a.name:<16} {kind:<16} {shape:<10} {block}{quality}{tag}"
            print(line.rstrip())
        if model.primary_reason:
            print(f"  primary: {model.primary_attention} — {model.primary_reason}")


def write_file(path: Path, data: bytes) -> None:
    """Writes ``data`` atomically; a failure is one `SetupError` line."""
    try:
        with atomic_open(path, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise SetupError(f"cannot write {path}: {exc.strerror}") from None
