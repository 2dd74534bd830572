"""HTTP requests → `attnserve.v1.PredictRequest`: the body (raw image, multipart, JSON) within
a size limit, and options from query parameters or form fields.

Options are read generically from the proto descriptor, so a field added to `PredictRequest` or
`AttentionOptions` is a query parameter with no change here: a scalar field of the request is
named as in the proto (``top_k``, ``request_id``), a field of a nested message by its own name
when that is unambiguous (``maps``, ``formats``, ``target_class``) or by its dotted path
(``attention.maps``). Repeated fields repeat the parameter or separate values with commas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from starlette.datastructures import UploadFile
from starlette.requests import Request

from attnserve import codec
from attnserve.errors import InvalidInput, TooLarge, UnsupportedMedia
from attnserve.v1 import attnserve_pb2 as pb

# Fields that are not options: the input itself, and the model (it is in the path).
_NOT_OPTIONS = frozenset({"image", "tensor", "model"})
IMAGE_FIELD = "image"


@dataclass(frozen=True)
class OptionField:
    """One option of `PredictRequest` as a flat parameter."""

    name: str  # the parameter's name
    path: tuple[str, ...]  # where it sits in the message
    field: FieldDescriptor

    @property
    def repeated(self) -> bool:
        return bool(self.field.label == FieldDescriptor.LABEL_REPEATED) and not self.mapping

    @property
    def mapping(self) -> bool:
        """A map field (a model's own options): given as ``NAME=VALUE`` pairs, comma-separated
        or one parameter each (``options=beam_size=1&options=max_length=8``)."""
        return _is_map(self.field)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _leaf_fields(descriptor: Descriptor, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    leaves: list[tuple[tuple[str, ...], Any]] = []
    for field in descriptor.fields:
        if not prefix and field.name in _NOT_OPTIONS:
            continue
        path = (*prefix, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
            leaves.extend(_leaf_fields(field.message_type, path))
        else:
            leaves.append((path, field))
    return leaves


def option_fields(descriptor: Descriptor = pb.PredictRequest.DESCRIPTOR) -> dict[str, OptionField]:
    """Every option of the request by parameter name (short names where unambiguous)."""
    leaves = _leaf_fields(descriptor)
    counts: dict[str, int] = {}
    for path, _ in leaves:
        counts[path[-1]] = counts.get(path[-1], 0) + 1
    options: dict[str, OptionField] = {}
    for path, field in leaves:
        option = OptionField(".".join(path), path, field)
        options[option.name] = option
        if len(path) > 1 and counts[path[-1]] == 1:
            options[path[-1]] = option
    return options


OPTIONS = option_fields()
"""Every accepted parameter name, dotted paths included."""
PUBLIC_OPTIONS = {n: o for n, o in OPTIONS.items() if "." not in n or n.rsplit(".", 1)[-1] not in OPTIONS}
"""The names to document: short ones where they exist."""


def _enum_prefix(field: FieldDescriptor) -> str:
    """What every value name of the field's enum starts with ("MAP_FORMAT_")."""
    names = [value.name for value in field.enum_type.values]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[: prefix.rfind("_") + 1]


def _scalar(option: OptionField, value: str) -> Any:
    if option.field.type == FieldDescriptor.TYPE_ENUM:
        # short names as the gRPC client takes them: "overlay_png" for MAP_FORMAT_OVERLAY_PNG
        name = value.strip().upper()
        values = option.field.enum_type.values_by_name
        return name if name in values else _enum_prefix(option.field) + name
    if option.field.type == FieldDescriptor.TYPE_BOOL:
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", ""):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise InvalidInput(f"option {option.name!r} is true or false, not {value!r}")
    return value.strip()  # the JSON mapping parses numbers and enum names from strings


def options_from_params(params: list[tuple[str, str]]) -> dict[str, Any]:
    """Query or form parameters → the request's JSON mapping (a nested dict)."""
    data: dict[str, Any] = {}
    for name, value in params:
        option = OPTIONS.get(name)
        if option is None:
            known = ", ".join(sorted(PUBLIC_OPTIONS))
            raise InvalidInput(f"unknown option {name!r}; the options are: {known}")
        node = data
        for part in option.path[:-1]:
            node = node.setdefault(part, {})
        leaf = option.path[-1]
        if option.mapping:
            entries = node.setdefault(leaf, {})
            for pair in (p for p in value.split(",") if p.strip()):
                key, separator, item = pair.partition("=")
                if not separator or not key.strip():
                    raise InvalidInput(
                        f"option {name!r} takes NAME=VALUE pairs (e.g. beam_size=1), not {pair!r}"
                    )
                entries[key.strip()] = item.strip()
        elif option.repeated:
            node.setdefault(leaf, []).extend(_scalar(option, v) for v in value.split(",") if v.strip())
        elif leaf in node:
            raise InvalidInput(f"option {name!r} is given more than once")
        else:
            node[leaf] = _scalar(option, value)
    return data


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused as soon as it passes ``limit`` bytes, declared or not (chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInput(f"Content-Length is not a number: {declared!r}") from None
        if length > limit:
            raise TooLarge(f"the body is {length:,} bytes; the limit is {limit:,}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body passed the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _merge_options(message: pb.PredictRequest, params: list[tuple[str, str]]) -> None:
    if params:
        message.MergeFrom(codec.message_from_json(options_from_params(params), pb.PredictRequest))


async def predict_request(request: Request, model: str, limit: int) -> pb.PredictRequest:
    """Decodes any accepted body into a request for ``model`` ("" = the default model)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)
    params = list(request.query_params.multi_items())
    if content_type == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}") from None
        message = codec.message_from_json(data, pb.PredictRequest)
        if message.model and model and message.model != model:
            raise InvalidInput(f"the body names model {message.model!r} but the path names {model!r}")
    elif content_type == "multipart/form-data":
        message = await _from_multipart(request, body, limit)
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        message = pb.PredictRequest(image=body)
    else:
        raise UnsupportedMedia(
            f"Content-Type {content_type or '(none)'!r} is not accepted; send the image as image/* "
            "(or application/octet-stream), multipart/form-data with an 'image' file, or "
            "application/json (a PredictRequest, the image base64)"
        )
    _merge_options(message, params)
    if model:
        message.model = model
    if message.WhichOneof("input") is None:
        raise InvalidInput("the request has no image: send its bytes, an 'image' file, or 'image' in JSON")
    return message


async def _from_multipart(request: Request, body: bytes, limit: int) -> pb.PredictRequest:
    # Starlette parses a form from the body it has read; ours is already read within the limit.
    request._body = body
    try:
        form = await request.form(max_files=1, max_fields=64, max_part_size=limit)
    except Exception as exc:  # starlette raises its own and python-multipart's errors
        raise InvalidInput(f"the multipart body cannot be read: {exc}") from None
    image: bytes | None = None
    params: list[tuple[str, str]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != IMAGE_FIELD:
                    raise InvalidInput(f"unexpected file field {name!r}; send the image as {IMAGE_FIELD!r}")
                image = await value.read()
            elif name == IMAGE_FIELD:
                raise InvalidInput(f"the {IMAGE_FIELD!r} field must be a file")
            else:
                params.append((name, value))
    finally:
        await form.close()
    if image is None:
        raise InvalidInput(f"the multipart body has no {IMAGE_FIELD!r} file")
    message = pb.PredictRequest(image=image)
    _merge_options(message, params)
    return message
