"""The HTTP/JSON front: the same core as gRPC, the proto messages' JSON mapping, a web page."""

from .server import HttpFront

__all__ = ["HttpFront"]
