"""What the CLI shows: a prediction and the model listing, as text or as the ``--json`` summary.

Shared by `attnserve predict`, `attnserve models` and `attnserve demo`. The ``--json`` form is
a summary for people and scripts (tensors and PNGs are left out, their presence is not); the
lossless JSON of an answer is `attnserve.codec.prediction_to_json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    """Which map to draw (a name or "primary") and where to write the pictures.

    ``overlay`` is the answer drawn on the image: for a classifier its attention map's overlay,
    for segmentation and instances the task's own drawing (classes, masks and boxes), whose map
    overlay then goes to ``map_overlay``."""

    map: str = "primary"
    overlay: Path | None = None
    heatmap: Path | None = None
    draw: bool = False
    """Draw the overlay even when it is not written to a file (the caller uses it)."""
    map_overlay: Path | None = None

    @property
    def wanted(self) -> bool:
        return any(path is not None for path in (self.overlay, self.heatmap, self.map_overlay)) or self.draw


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
    model_options: Mapping[str, int] | None = None,
) -> Prediction:
    """Predicts ``image`` with every map raw, writes the asked pictures (encoded as
    ``image_encoding``: png, jpeg or webp), prints the result."""
    info = client.get_model(model or "")
    classifies = info.task in ("", "classification")
    drawn_answer = not classifies and (pictures.overlay is not None or pictures.draw)
    map_overlay = pictures.map_overlay or (pictures.overlay if classifies else None)
    forms = [MapForm.RAW]
    if map_overlay or pictures.draw:
        forms.append(MapForm.OVERLAY_PNG)
    if pictures.heatmap:
        forms.append(MapForm.HEATMAP_PNG)
    prediction = client.predict(
        image,
        model=model,
        top_k=top_k if classifies else None,
        forms=forms,
        render=[pictures.map] if pictures.wanted else [],
        target_class=target_class,
        image_encoding=image_encoding,
        task_overlay=drawn_answer,
        model_options=model_options or {},
    )
    rendered = next((a for a in prediction.attention if a.overlay_png or a.heatmap_png), None)
    written: list[tuple[Path, str]] = []
    if rendered is not None:
        for path, data in ((map_overlay, rendered.overlay_png), (pictures.heatmap, rendered.heatmap_png)):
            if path is not None and data:
                write_file(path, data)
                written.append((path, rendered.name))
    if drawn_answer and pictures.overlay is not None and prediction.task_overlay:
        write_file(pictures.overlay, prediction.task_overlay)
        written.append((pictures.overlay, f"the {prediction.task.replace('_', ' ')}"))
    if as_json:
        document = summary_json(prediction)
        if rendered is not None:
            document["overlay"] = {
                "map": rendered.name,
                "path": str(map_overlay) if map_overlay else None,
            }
        if drawn_answer:
            document["task_overlay"] = {"path": str(pictures.overlay) if pictures.overlay else None}
        print(json.dumps(document, indent=2))
        return prediction
    print_prediction(prediction, str(image), info.primary_attention)
    for path, what in written:
        print(f"  wrote {path} ({what})")
    t = prediction.timings
    print(
        f"  timings: preprocess {t.preprocess_ms:.1f} ms, inference {t.inference_ms:.1f} ms, "
        f"postprocess {t.postprocess_ms:.1f} ms, total {t.total_ms:.1f} ms"
        + ("" if t.queued_ms is None else f" (after waiting {t.queued_ms:.1f} ms to be taken up)")
    )
    return prediction


def print_prediction(prediction: Prediction, source: str, primary: str) -> None:
    image = prediction.image
    size = f"{image.width}×{image.height} {image.format}"
    print(f"{source}: {size} → model {prediction.model} v{prediction.model_version}")
    if prediction.predictions:
        print("  " + ", ".join(f"{c.label} {c.score:.3f}" for c in prediction.predictions))
    if (segmentation := prediction.segmentation) is not None:
        print(
            f"  segmentation {segmentation.width}×{segmentation.height}: "
            + ", ".join(f"{a.label} {a.share:.1%}" for a in segmentation.areas)
        )
    if (caption := prediction.caption) is not None:
        ended = " (max_length reached)" if caption.max_length_reached else ""
        print(f'  caption: "{caption.text}"{ended}  log-probability {caption.log_prob:.3f}')
        for word in caption.words:
            where = f"  looked at ({word.peak[0]:.1f}, {word.peak[1]:.1f}) px" if word.peak else ""
            print(f"    {word.text:<8} {word.score:.3f}{where}")
    if prediction.task == "instance_segmentation":
        print(f"  {len(prediction.instances)} instance{'' if len(prediction.instances) == 1 else 's'}")
        for instance in prediction.instances:
            x0, y0, x1, y1 = instance.box
            box = f"({x0:.0f}, {y0:.0f})–({x1:.0f}, {y1:.0f}) px"
            print(f"    {instance.label:<6} {instance.score:.3f}  box {box}  mask {instance.area} px")
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
    document: dict[str, Any] = {
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
    if prediction.task != "classification":  # a classifier's summary stays as it always was
        document["task"] = prediction.task
    if (segmentation := prediction.segmentation) is not None:
        document["segmentation"] = {
            "width": segmentation.width,
            "height": segmentation.height,
            "areas": [
                {"index": a.index, "label": a.label, "pixels": a.pixels, "share": round(a.share, 6)}
                for a in segmentation.areas
            ],
        }
    if (caption := prediction.caption) is not None:
        document["caption"] = {
            "text": caption.text,
            "log_prob": round(caption.log_prob, 6),
            "max_length_reached": caption.max_length_reached,
            "words": [
                {
                    "text": w.text,
                    "index": w.index,
                    "score": round(w.score, 6),
                    "peak": None if w.peak is None else [round(w.peak[0], 2), round(w.peak[1], 2)],
                }
                for w in caption.words
            ],
        }
    if prediction.task == "instance_segmentation":
        document["instances"] = [
            {
                "class_index": i.class_index,
                "label": i.label,
                "score": round(i.score, 6),
                "box": [round(v, 2) for v in i.box],
                "area": i.area,
                "mask_origin": list(i.mask_origin),
                "polygons": [[[round(x, 2), round(y, 2)] for x, y in polygon] for polygon in i.polygons],
            }
            for i in prediction.instances
        ]
    return document


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
        task = "" if model.task in ("", "classification") else f"{model.task.replace('_', ' ')}, "
        labels = (
            f"{len(model.labels)} words" if model.task == "captioning" else f"{len(model.labels)} classes"
        )
        print(f"  {task}input {p.height}×{p.width} {p.color_mode}, {p.resize_mode}; {labels}")
        if model.release_error:
            print(f"  its last release failed to load (this one serves): {model.release_error}")
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
        for o in model.options:
            print(f"  option {o.name} = {o.default_value} ({o.minimum}–{o.maximum}): {o.description}")


def write_file(path: Path, data: bytes) -> None:
    """Writes ``data`` atomically; a failure is one `SetupError` line."""
    try:
        with atomic_open(path, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise SetupError(f"cannot write {path}: {exc.strerror}") from None
