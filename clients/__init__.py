"""Clients of the attnserve gateway.

    from attnserve.clients import Client
    with Client("127.0.0.1:8500") as client:
        prediction = client.predict("digit.png", forms=["overlay_png"], maps=["primary"])
        print(prediction.predictions[0].label, prediction.attention[0].peak)

`AsyncClient` has the same methods as coroutines. Results are `attnserve.prediction.Prediction`.
`HttpClient` / `AsyncHttpClient` are the same over the HTTP/JSON API; `connect(address)` picks
the transport from the address ("http://HOST:PORT" or "HOST:PORT" for gRPC).
"""

from attnserve.errors import AttnserveError, InvalidInput, ModelNotFound, Overloaded, Unavailable
from attnserve.prediction import AttentionMap, ClassScore, MapForm, Prediction

from ._common import Credentials, ImageLike, PredictOptions
from .grpc import AsyncClient, Client
from .http import AsyncHttpClient, HttpClient

AnyClient = Client | HttpClient
"""A blocking client of either transport."""


def connect(
    address: str, timeout_s: float | None = 30.0, credentials: Credentials | None = None
) -> AnyClient:
    """A blocking client for ``address``: HTTP for http(s):// URLs, gRPC for HOST:PORT."""
    credentials = credentials or Credentials()
    if address.startswith(("http://", "https://")):
        return HttpClient(address, timeout_s, credentials)
    return Client(address, timeout_s, credentials)


__all__ = [
    "AnyClient",
    "AsyncClient",
    "AsyncHttpClient",
    "AttentionMap",
    "AttnserveError",
    "ClassScore",
    "Credentials",
    "Client",
    "HttpClient",
    "ImageLike",
    "InvalidInput",
    "MapForm",
    "ModelNotFound",
    "Overloaded",
    "PredictOptions",
    "Prediction",
    "Unavailable",
    "connect",
]
