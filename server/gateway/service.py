"""The `attnserve.v1.AttentionService` servicer: wire messages ↔ the pipeline's domain types."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from attnserve.errors import AttnserveError, InvalidInput
from attnserve.prediction import form_from_proto, kind_to_proto, tensor_from_proto
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .catalog import ModelCatalog, ServedModel
from .interceptors import describe, status_for
from .pipeline import Pipeline, PredictCall


def call_from_proto(request: pb.PredictRequest) -> PredictCall:
    """Decodes the request; malformed fields are `InvalidInput`."""
    which = request.WhichOneof("input")
    tensor = None
    if which == "tensor":
        try:
            tensor = tensor_from_proto(request.tensor)
        except ValueError as exc:
            raise InvalidInput(f"the input tensor is malformed: {exc}") from None
    forms = []
    for value in request.attention.formats:
        try:
            forms.append(form_from_proto(value))
        except KeyError:
            raise InvalidInput(
                f"unknown attention format {value}; use RAW, UPSAMPLED, HEATMAP_PNG or OVERLAY_PNG"
            ) from None
    attention = request.attention
    return PredictCall(
        image=request.image if which == "image" else None,
        tensor=tensor,
        model=request.model or None,
        model_version=request.model_version,
        top_k=request.top_k if request.HasField("top_k") else None,
        maps=tuple(attention.maps),
        forms=frozenset(forms),
        render=tuple(attention.render),
        target_class=attention.target_class if attention.HasField("target_class") else None,
        omit_attention=attention.omit,
        request_id=request.request_id,
    )


def model_info(model: ServedModel) -> pb.ModelInfo:
    spec = model.spec
    prep = spec.preprocess
    info = pb.ModelInfo(
        name=model.name,
        version=model.version,
        ready=True,
        architecture=spec.architecture,
        description=spec.description,
        task=spec.task,
        labels=list(spec.labels),
        inputs=[pb.TensorInfo(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in model.inputs],
        outputs=[pb.TensorInfo(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in model.outputs],
        preprocess=pb.PreprocessInfo(
            height=prep.input_size[0],
            width=prep.input_size[1],
            color_mode=prep.color_mode.value,
            mean=list(prep.mean),
            std=list(prep.std),
            resize_mode=prep.resize_mode.value,
            pad_value=prep.pad_value,
            crop_pct=prep.crop_pct,
        ),
        primary_attention=spec.primary_attention or "",
        primary_reason=spec.primary_reason,
        max_batch_size=model.max_batch_size,
    )
    for attention in spec.attention:
        norm = attention.normalization
        info.attention.append(
            pb.AttentionInfo(
                name=attention.name,
                kind=kind_to_proto(attention.kind),
                axes=list(attention.axes),
                shape=list(model.output_shape(attention.name)[1 if model.max_batch_size > 0 else 0 :]),
                description=attention.description,
                value_range=attention.value_range,
                normalization=pb.Normalization(
                    method=norm.method, range=list(norm.range or ()), flat_below=norm.flat_below
                ),
                quality=attention.quality,
            )
        )
    return info


def _remaining(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


class AttentionService(pb_grpc.AttentionServiceServicer):
    def __init__(self, pipeline: Pipeline, catalog: ModelCatalog) -> None:
        self.pipeline = pipeline
        self.catalog = catalog

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        prediction = await self.pipeline.predict(call_from_proto(request), _remaining(context))
        return prediction.to_proto()

    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        async for request in request_iterator:
            try:
                prediction = await self.pipeline.predict(call_from_proto(request), _remaining(context))
            except AttnserveError as exc:
                error = pb.Error(code=status_for(exc).value[0], message=describe(exc))
                yield pb.PredictStreamResponse(request_id=request.request_id, error=error)
                continue
            yield pb.PredictStreamResponse(request_id=request.request_id, response=prediction.to_proto())

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        models = [model_info(self.catalog.models[name]) for name in sorted(self.catalog.models)]
        return pb.ListModelsResponse(models=models, default_model=self.catalog.default_model or "")

    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return model_info(self.catalog.get(request.name or None))
