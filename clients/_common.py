"""What the sync and asyncio clients share: request building, error mapping, a stream's items."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

import grpc
import numpy as np

from attnserve import codec
from attnserve.errors import (
    AttnserveError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UpstreamError,
)
from attnserve.prediction import ImageEncoding, MapDType, MapForm, Prediction, PredictionRequest
from attnserve.v1 import attnserve_pb2 as pb

from .retry import OverloadRetry

ImageLike = bytes | str | Path | np.ndarray
E = TypeVar("E", bound=StrEnum)
"""Encoded image bytes, a path to an image file, or a preprocessed float32 tensor (C, H, W)."""


class PredictOptions(TypedDict, total=False):
    """The options of `predict` and `predict_stream`, on every client."""

    model: str | None
    """Model name; None: the gateway's default model."""
    model_version: str
    """Empty: the version Triton serves."""
    top_k: int | None
    """How many classes; None: min(5, number of classes)."""
    maps: Iterable[str]
    """Attention maps by output name, or "primary"; empty: every map."""
    forms: Iterable[MapForm | str]
    """raw, upsampled, heatmap_png, overlay_png; empty: raw."""
    render: Iterable[str]
    """Maps to draw in the image forms; empty: every selected map."""
    target_class: int | None
    """The class a class activation map explains; None: the top-1 class."""
    omit_attention: bool
    """Predictions only."""
    request_id: str
    """Echoed back (predict_stream numbers the requests itself)."""
    render_max_side: int
    """Longest side of the image forms, in pixels; 0: the gateway's default (1024)."""
    image_encoding: ImageEncoding | str
    """png (the default), jpeg or webp: how heatmap_png and overlay_png are encoded (a map's
    ``image_encoding`` says which it carries)."""
    score_threshold: float | None
    """Instance segmentation: the lowest score kept; None: 0.5."""
    max_instances: int
    """Instance segmentation: at most this many instances; 0: the gateway's limit (100)."""
    task_overlay: bool
    """Segmentation, instances and captions: also return the answer drawn on the image
    (``task_overlay``; a caption's is one tile per word)."""
    model_options: Mapping[str, int]
    """The model's own options by name (its ``ModelInfo.options``), e.g. a captioner's
    ``{"beam_size": 1, "max_length": 8}``; left out: the model's defaults."""
    image_quality: int | None
    """Quality of jpeg or webp, 1–100; None: 85 for jpeg, 80 for webp."""
    map_dtype: MapDType | str
    """float32 (the default), float16 (raw and upsampled) or uint8 (upsampled only, levels
    0–255): the numpy dtype the tensor forms come back in."""


@dataclass(frozen=True)
class Credentials:
    """How a client proves itself to the gateway and checks the gateway's certificate."""

    api_key: str | None = None
    """Sent as ``authorization: Bearer KEY``."""
    tls_ca: Path | None = None
    """PEM CA that signed the gateway's certificate; given (or with a client certificate), gRPC
    uses TLS. Over HTTP, TLS follows the URL (https://) and this CA verifies it."""
    tls_cert: Path | None = None
    """Mutual TLS: the client's PEM certificate chain ..."""
    tls_key: Path | None = None
    """... and its private key."""

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return None if self.api_key is None else (("authorization", f"Bearer {self.api_key}"),)

    def channel(self, api: Any, address: str, extra_options: Sequence[tuple[str, Any]] = ()) -> Any:
        """A channel to ``address`` from ``api`` (`grpc` or `grpc.aio`): TLS when asked;
        ``extra_options`` beside the clients' own `CHANNEL_OPTIONS`."""
        options = [*CHANNEL_OPTIONS, *extra_options]
        if self.uses_tls:
            return api.secure_channel(address, self.grpc_credentials(), options=options)
        return api.insecure_channel(address, options=options)

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None

        return grpc.ssl_channel_credentials(read(self.tls_ca), read(self.tls_key), read(self.tls_cert))


NO_CREDENTIALS = Credentials()

_ERRORS: dict[grpc.StatusCode, type[AttnserveError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def error_from_rpc(error: grpc.RpcError, address: str) -> AttnserveError:
    code = error.code()
    details = error.details() or code.name
    if code == grpc.StatusCode.CANCELLED:  # this client never cancels: the gateway did (stopping)
        return Unavailable(f"the gateway cancelled the call (it may be stopping); retry ({details})")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return TooLarge(f"the request is larger than the gateway accepts ({details})")
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "refused" in details.lower()):
        return Unavailable(f"cannot reach the attnserve gateway at {address} (is `attnserve serve` running?)")
    return _ERRORS.get(code, UpstreamError)(f"{code.name}: {details}")


def error_from_status(code: int, message: str) -> AttnserveError:
    status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
    return _ERRORS.get(status, UpstreamError)(f"{status.name}: {message}")


def prediction_request(
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
    render_max_side: int = 0,
    image_encoding: ImageEncoding | str = ImageEncoding.PNG,
    image_quality: int | None = None,
    map_dtype: MapDType | str = MapDType.FLOAT32,
    score_threshold: float | None = None,
    max_instances: int = 0,
    task_overlay: bool = False,
    model_options: Mapping[str, int] | None = None,
) -> PredictionRequest:
    """The domain request for one image; a file that cannot be read, an unknown form, encoding
    or dtype is `InvalidInput` (ranges are the gateway's to check)."""
    tensor, data = None, None
    if isinstance(image, np.ndarray):
        tensor = image
    elif isinstance(image, bytes):
        data = image
    else:
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        chosen = frozenset(MapForm(form) for form in forms)
    except ValueError as exc:
        raise InvalidInput(f"{exc}; forms are {', '.join(f.value for f in MapForm)}") from None
    encoding = _option(ImageEncoding, image_encoding, "image_encoding")
    dtype = _option(MapDType, map_dtype, "map_dtype")
    return PredictionRequest(
        image=data,
        tensor=tensor,
        model=model,
        model_version=model_version,
        top_k=top_k,
        maps=tuple(maps),
        forms=chosen,
        render=tuple(render),
        target_class=target_class,
        omit_attention=omit_attention,
        request_id=request_id,
        render_max_side=render_max_side,
        image_encoding=encoding,
        image_quality=image_quality,
        map_dtype=dtype,
        score_threshold=score_threshold,
        max_instances=max_instances,
        task_overlay=task_overlay,
        model_options=tuple(sorted((str(k), int(v)) for k, v in (model_options or {}).items())),
    )


def _option(choices: type[E], value: object, name: str) -> E:
    """``value`` (a member or its name, any case) as a member of ``choices``; else `InvalidInput`."""
    try:
        return choices(str(value).lower())
    except ValueError:
        raise InvalidInput(f"unknown {name} {value!r}; use {', '.join(choices)}") from None


def build_request(image: ImageLike, **options: Unpack[PredictOptions]) -> pb.PredictRequest:
    """The wire request for one image."""
    return codec.request_to_proto(prediction_request(image, **options))


def stream_requests(
    images: Iterable[ImageLike], **options: Unpack[PredictOptions]
) -> Iterator[pb.PredictRequest]:
    """One request per image; request ids are the images' positions in the sequence."""
    for index, image in enumerate(images):
        request = prediction_request(image, **options)
        yield codec.request_to_proto(dataclasses.replace(request, request_id=str(index)))


class SentItems:
    """A stream's requests by ``request_id`` until their results arrive, so that an item refused
    with a retry hint can be sent again on its own (`retry.resend_refused`)."""

    def __init__(self) -> None:
        self._requests: dict[str, pb.PredictRequest] = {}

    def recording(self, requests: Iterable[pb.PredictRequest]) -> Iterator[pb.PredictRequest]:
        for request in requests:
            self._requests[request.request_id] = request
            yield request

    def settle(
        self, item: pb.PredictStreamResponse, overload: OverloadRetry
    ) -> tuple[Prediction | AttnserveError, pb.PredictRequest | None, float | None]:
        """An item's result; and its request and the retry hint (s) when admission refused it
        with one, to send it again first (else None, None)."""
        request = self._requests.pop(item.request_id, None)
        if not item.HasField("error"):
            overload.answered()
            return codec.prediction_from_proto(item.response), None, None
        error = item.error
        refused = error_from_status(error.code, error.message)
        if (
            request is None
            or error.code != grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            or not error.retry_after_ms
        ):
            return refused, None, None
        return refused, request, error.retry_after_ms / 1e3
