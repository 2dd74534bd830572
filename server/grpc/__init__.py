"""The gRPC front of the gateway (`attnserve.v1.AttentionService`, health, reflection)."""

from .interceptors import ErrorMapping, describe, status_for
from .server import SERVICE_NAME, GrpcFront
from .servicer import AttentionService

__all__ = ["SERVICE_NAME", "AttentionService", "ErrorMapping", "GrpcFront", "describe", "status_for"]
