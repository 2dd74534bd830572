"""Every Prometheus metric of the gateway, defined in one place.

Each gateway owns a `CollectorRegistry` (several gateways can live in one test process).
Requests are counted by transport: gRPC codes are status names (``OK``, ``INVALID_ARGUMENT``),
HTTP codes are statuses (``200``, ``400``). Errors are
``sum by (transport, code) (rate(attnserve_requests_total{code!~"OK|200"}[5m]))``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("preprocess", "inference", "postprocess")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "attnserve_requests",
            "Requests handled, by transport (grpc, http), method, model and status code",
            ["transport", "method", "model", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "attnserve_request_seconds",
            "Request latency, by transport, method and model",
            ["transport", "method", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "attnserve_stage_seconds",
            "Latency of each pipeline stage (preprocess, inference, postprocess), by model",
            ["model", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queued_seconds = Histogram(
            "attnserve_queued_seconds",
            "How long predictions waited between reaching the server and the gateway taking them "
            "up, admitted or refused (only calls whose client states its timeout, as attnserve's "
            "clients do), by model",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gc_pause_seconds = Histogram(
            "attnserve_gc_pause_seconds",
            "Pauses of the gateway process for Python's cyclic garbage collector, by generation "
            "(2: a full collection); the event loop serves nothing meanwhile",
            ["generation"],
            buckets=(0.0001, 0.00025, 0.0005, *_LATENCY_BUCKETS),
            registry=self.registry,
        )
        self.gc_frozen_objects = Gauge(
            "attnserve_gc_frozen_objects",
            "Objects kept out of the garbage collector's full collections since startup "
            "(freeze_startup_objects)",
            registry=self.registry,
        )
        self.predictions = Counter(
            "attnserve_predictions",
            "Images predicted (unary and streamed), by model",
            ["model"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "attnserve_rejected",
            "Predictions refused by admission before any work (RESOURCE_EXHAUSTED / 429; too_large: "
            "the request could never fit the memory budget, INVALID_ARGUMENT / 413), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.memory_reserved = Gauge(
            "attnserve_memory_reserved_bytes",
            "Decode and render memory reserved by the requests in flight (estimated from headers)",
            registry=self.registry,
        )
        self.concurrency_limit = Gauge(
            "attnserve_concurrency_limit",
            "Cheap predictions admitted at once now: the adaptive limit (adaptive_concurrency), "
            "else max_in_flight",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "attnserve_in_flight_requests",
            "Requests being handled now (every transport)",
            registry=self.registry,
        )
        self.triton_ready = Gauge(
            "attnserve_triton_ready", "1 when Triton answers ready, else 0", registry=self.registry
        )
        self.triton_restarts = Counter(
            "attnserve_triton_restarts",
            "Times `attnserve serve` restarted its local Triton after it died",
            registry=self.registry,
        )
        self.model_loads = Counter(
            "attnserve_model_loads",
            "Models loaded (new), reloaded (changed) or unloaded (removed) as the watched repository "
            "changed, by model, action and outcome (ok, failed: the previous release keeps serving)",
            ["model", "action", "outcome"],
            registry=self.registry,
        )
        self.models_ready = Gauge(
            "attnserve_models_ready", "Models the gateway can serve now", registry=self.registry
        )
