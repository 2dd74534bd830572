"""The `attnserve.v1.AttentionService` servicer: a thin front over the gateway core.

Each method decodes the request (`attnserve.codec`), calls the core, and encodes the answer.
The gRPC message limit is this front's, so it is passed to the pipeline as the answer's budget.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from attnserve import codec
from attnserve.errors import describe, log_failure
from attnserve.queueing import queued_s
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from ..gateway.core import GatewayCore
from .interceptors import retry_after_ms, status_for

log = logging.getLogger(__name__)


def _remaining(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


class AttentionService(pb_grpc.AttentionServiceServicer):
    def __init__(self, core: GatewayCore, max_message_bytes: int) -> None:
        self.core = core
        self.max_message_bytes = max_message_bytes

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        remaining = _remaining(context)
        queued = queued_s(context.invocation_metadata(), remaining)
        prediction = await self.core.predict(
            codec.request_from_proto(request), remaining, self.max_message_bytes, queued
        )
        return codec.prediction_to_proto(prediction)

    async def PredictStream(
        self, request_iterator: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        async for request in request_iterator:
            try:
                prediction = await self.core.predict(
                    codec.request_from_proto(request), _remaining(context), self.max_message_bytes
                )
            except Exception as exc:  # one item's failure, declared or not, is that item's error
                log_failure(log, "PredictStream item", exc)
                error = pb.Error(
                    code=status_for(exc).value[0],
                    message=describe(exc),
                    retry_after_ms=retry_after_ms(exc) or 0,  # 0: not to be sent again
                )
                yield pb.PredictStreamResponse(request_id=request.request_id, error=error)
                continue
            yield pb.PredictStreamResponse(
                request_id=request.request_id, response=codec.prediction_to_proto(prediction)
            )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return codec.model_list_to_proto(self.core.list_models(), self.core.default_model)

    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return codec.model_info_to_proto(self.core.get_model(request.name or None))
