"""Clients of the attnserve gateway.

    from attnserve.clients import Client
    with Client("127.0.0.1:8500") as client:
        prediction = client.predict("digit.png", forms=["overlay_png"], maps=["primary"])
        print(prediction.predictions[0].label, prediction.attention[0].peak)

`AsyncClient` has the same methods as coroutines. Results are `attnserve.prediction.Prediction`.
"""

from attnserve.errors import AttnserveError, InvalidInput, ModelNotFound, Overloaded, Unavailable
from attnserve.prediction import AttentionMap, ClassScore, MapForm, Prediction

from ._common import ImageLike, PredictOptions
from .grpc import AsyncClient, Client

__all__ = [
    "AsyncClient",
    "AttentionMap",
    "AttnserveError",
    "ClassScore",
    "Client",
    "ImageLike",
    "InvalidInput",
    "MapForm",
    "ModelNotFound",
    "Overloaded",
    "PredictOptions",
    "Prediction",
    "Unavailable",
]
