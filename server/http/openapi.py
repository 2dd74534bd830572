"""The OpenAPI 3.1 document of the HTTP front, generated from the proto descriptors.

The JSON bodies are the proto messages' JSON mapping (`attnserve.codec`), so their schemas are
derived from the same descriptors: a field added to the proto appears here, in the requests
the front accepts and in the answers it gives, with no change in this module.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from attnserve import __version__
from attnserve.errors import RETRY_AFTER_MS_HEADER
from attnserve.v1 import attnserve_pb2 as pb

from .errors import STATUS_MEANING
from .requests import PUBLIC_OPTIONS, OptionField

_INTEGER_32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
}
_INTEGER_64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """Component schemas for messages and enums, each added once."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def enum(self, descriptor: EnumDescriptor) -> dict[str, str]:
        if descriptor.name not in self.components:
            self.components[descriptor.name] = {"type": "string", "enum": [v.name for v in descriptor.values]}
        return _ref(descriptor.name)

    def message(self, descriptor: Descriptor) -> dict[str, str]:
        if descriptor.name in self.components:
            return _ref(descriptor.name)
        self.components[descriptor.name] = {}  # placeholder: messages may nest themselves
        properties = {field.name: self.field(field) for field in descriptor.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]  # "_x": proto3 optional
        if oneofs:
            schema["description"] = "; ".join(
                f"at most one of {', '.join(f.name for f in o.fields)}" for o in oneofs
            )
        self.components[descriptor.name] = schema
        return _ref(descriptor.name)

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        if field.label == FieldDescriptor.LABEL_REPEATED:
            return {"type": "array", "items": self.single(field)}
        return self.single(field)

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.message(field.message_type)
        if kind == FieldDescriptor.TYPE_ENUM:
            return self.enum(field.enum_type)
        if kind in _INTEGER_32:
            return {"type": "integer", "format": "int32"}
        if kind in _INTEGER_64:  # the JSON mapping writes 64-bit integers as strings
            return {"type": ["string", "integer"], "format": "int64"}
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return {"type": "number"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}


def _query_parameter(name: str, option: OptionField, schemas: _Schemas) -> dict[str, Any]:
    schema = schemas.single(option.field)
    if option.repeated:
        schema = {"type": "array", "items": schema}
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if option.repeated:
        parameter["style"], parameter["explode"] = "form", True
    if "." in name:
        parameter["description"] = f"the field {name} of PredictRequest"
    return parameter


_RETRY_HEADERS = {
    "Retry-After": {
        "description": "when to retry, in whole seconds (at least 1)",
        "schema": {"type": "integer", "minimum": 1},
    },
    RETRY_AFTER_MS_HEADER: {
        "description": "the gateway's retry hint in milliseconds (as gRPC's grpc-retry-pushback-ms)",
        "schema": {"type": "integer", "minimum": 0},
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {
            "description": STATUS_MEANING[status],
            "content": {"application/json": {"schema": _ref("HttpError")}},
        }
        for status in statuses
    }
    if "429" in responses:
        responses["429"]["headers"] = _RETRY_HEADERS
    return responses


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    schemas = _Schemas()
    predict_request = schemas.message(pb.PredictRequest.DESCRIPTOR)
    predict_response = schemas.message(pb.PredictResponse.DESCRIPTOR)
    models = schemas.message(pb.ListModelsResponse.DESCRIPTOR)
    model_info = schemas.message(pb.ModelInfo.DESCRIPTOR)
    schemas.components["HttpError"] = {
        "type": "object",
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        "required": ["code", "message"],
    }
    options = [_query_parameter(name, option, schemas) for name, option in sorted(PUBLIC_OPTIONS.items())]
    timeout = {
        "name": "X-Request-Timeout",
        "in": "header",
        "required": False,
        "description": "deadline in seconds; past it the answer is 504",
        "schema": {"type": "number", "exclusiveMinimum": 0},
    }
    body = {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                    "additionalProperties": {"type": "string"},
                }
            },
            "application/json": {"schema": predict_request},
        },
    }
    predict = {
        "summary": "Predict one image, with the attention that explains it",
        "description": (
            "The image as the raw body (image/*), an 'image' file (multipart/form-data; other "
            "fields are options), or a PredictRequest in JSON with the image base64. Options as "
            "query parameters (the PredictRequest fields; repeated ones repeat or use commas)."
        ),
        "parameters": [*options, timeout],
        "requestBody": body,
        "responses": {
            "200": _json(predict_response, "the prediction and its attention, in original pixels"),
            **_errors(400, 404, 413, 415, 429, 503, 504),
        },
    }
    model_path = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    plain = {"200": {"description": "yes", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "attnserve",
            "version": __version__,
            "description": "Predictions with the attention maps that explain them. The JSON bodies "
            "are the attnserve.v1 proto messages' JSON mapping (field names as in the proto).",
        },
        "paths": {
            "/v1/models": {
                "get": {"summary": "The served models", "responses": {"200": _json(models, "the models")}}
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model: its labels, preprocessing and attention outputs",
                    "parameters": [model_path],
                    "responses": {"200": _json(model_info, "the model"), **_errors(404)},
                }
            },
            "/v1/models/{model}:predict": {
                "post": {**predict, "parameters": [model_path, *predict["parameters"]]}
            },
            "/v1/predict": {"post": {**predict, "summary": "Predict with the default model"}},
            "/live": {"get": {"summary": "The gateway process is up", "responses": plain}},
            "/ready": {
                "get": {
                    "summary": "Triton is ready and the default model is servable",
                    "responses": {**plain, "503": {"description": "not serving yet, or no longer"}},
                }
            },
        },
        "components": {"schemas": schemas.components},
    }
