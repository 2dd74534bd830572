"""What the sync and asyncio clients share: request building and error mapping."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from attnserve.errors import (
    AttnserveError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    Unavailable,
    UpstreamError,
)
from attnserve.prediction import MapForm, form_to_proto, tensor_to_proto
from attnserve.v1 import attnserve_pb2 as pb

ImageLike = bytes | str | Path | np.ndarray
"""Encoded image bytes, a path to an image file, or a preprocessed float32 tensor (C, H, W)."""

_ERRORS: dict[grpc.StatusCode, type[AttnserveError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def error_from_rpc(error: grpc.RpcError, address: str) -> AttnserveError:
    code = error.code()
    details = error.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "refused" in details.lower()):
        return Unavailable(f"cannot reach the attnserve gateway at {address} (is `attnserve serve` running?)")
    return _ERRORS.get(code, UpstreamError)(f"{code.name}: {details}")


def error_from_status(code: int, message: str) -> AttnserveError:
    status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
    return _ERRORS.get(status, UpstreamError)(f"{status.name}: {message}")


def build_request(
    image: ImageLike,
    *,
    model: str | None = None,
    model_version: str = "",
    top_k: int | None = None,
    maps: Iterable[str] = (),
    forms: Iterable[MapForm | str] = (),
    render: Iterable[str] = (),
    target_class: int | None = None,
    omit_attention: bool = False,
    request_id: str = "",
) -> pb.PredictRequest:
    request = pb.PredictRequest(model=model or "", model_version=model_version, request_id=request_id)
    if isinstance(image, np.ndarray):
        request.tensor.CopyFrom(tensor_to_proto(image))
    elif isinstance(image, bytes):
        request.image = image
    else:
        path = Path(image)
        try:
            request.image = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if top_k is not None:
        request.top_k = top_k
    request.attention.maps.extend(maps)
    request.attention.render.extend(render)
    try:
        request.attention.formats.extend(form_to_proto(MapForm(form)) for form in forms)
    except ValueError as exc:
        raise InvalidInput(f"{exc}; forms are {', '.join(f.value for f in MapForm)}") from None
    if target_class is not None:
        request.attention.target_class = target_class
    request.attention.omit = omit_attention
    return request


def stream_requests(images: Iterable[ImageLike], **options: Any) -> Iterable[pb.PredictRequest]:
    """One request per image; request ids are the images' positions in the sequence."""
    for index, image in enumerate(images):
        yield build_request(image, request_id=str(index), **options)
