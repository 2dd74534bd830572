"""The gRPC front of the gateway (`attnserve.v1.AttentionService`, health, reflection)."""

from .interceptors import ErrorInterceptor, describe, status_for
from .server import SERVICE_NAME, GrpcFront
from .servicer import AttentionService

__all__ = ["SERVICE_NAME", "AttentionService", "ErrorInterceptor", "GrpcFront", "describe", "status_for"]
