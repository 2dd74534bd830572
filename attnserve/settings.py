"""Typed settings, built once in `main()` and passed down; tests construct them directly.

Every field can be set from the environment with the ``ATTNSERVE_`` prefix and ``__`` between
sections, e.g. ``ATTNSERVE_GATEWAY__PORT=9000`` or ``ATTNSERVE_TRITON__GRPC_PORT=9001``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from attnserve.transform import ImageLimits


def _source_checkout() -> Path | None:
    """The repository this package runs from, when it runs from a source checkout (editable)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "model_repository").is_dir() else None


SOURCE_CHECKOUT = _source_checkout()
DEFAULT_MODEL_REPOSITORY = (SOURCE_CHECKOUT or Path()) / "model_repository"
"""The checkout's committed repository; installed from a wheel, ./model_repository."""
SAMPLES_DIR: Path | None = None if SOURCE_CHECKOUT is None else SOURCE_CHECKOUT / "docs" / "samples"
"""Sample images offered by the web page (a source checkout's; a wheel ships no images)."""
SAMPLE_IMAGE: Path | None = None if SAMPLES_DIR is None else SAMPLES_DIR / "digit.png"
"""The quick start's sample image."""

DEFAULT_GATEWAY_ADDRESS = "127.0.0.1:8500"


class TritonSettings(BaseModel):
    """The Triton Inference Server the gateway talks to, and how to run one locally."""

    host: str = Field("127.0.0.1", description="address the local Triton binds to (loopback)")
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=1, le=65535)
    metrics_port: int = Field(8002, ge=1, le=65535)
    url: str | None = Field(
        None,
        description="gRPC address of a Triton to use instead of host:grpc_port (remote Triton)",
    )
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    runtime_dir: Path = Field(
        Path(sys.prefix) / "var" / "attnserve" / "triton",
        description="where the Triton binary, its Python-backend environment and backends live",
    )
    pytriton_version: str = Field("0.7.0", description="nvidia-pytriton wheel carrying Triton 2.51")
    backend_requirements: tuple[str, ...] = Field(
        ("numpy==1.26.4", "onnxruntime==1.32.0"),
        description="the Python backend stub's environment; its numpy must be < 2",
    )
    startup_timeout_s: float = Field(120.0, gt=0)
    restart_backoff_s: tuple[float, ...] = Field(
        (1.0, 2.0, 4.0, 8.0, 16.0),
        description="`attnserve serve` restarts a Triton that died after these waits, one per "
        "attempt in a row; when they are used up it exits non-zero (a supervisor takes over)",
    )
    log_verbose: int = Field(0, ge=0)
    watch_repository: bool = Field(
        False,
        description="`attnserve serve` loads models added to the repository, reloads changed ones "
        "and unloads removed ones while serving, without a restart (Triton's model control, on "
        "loopback, driven by the gateway; local users can then load models too); off: the "
        "repository is read once at start",
    )
    watch_interval_s: float = Field(
        1.0,
        gt=0,
        description="how often the repository is scanned; a change is acted on once two scans agree",
    )

    @property
    def grpc_target(self) -> str:
        return self.url or f"{self.host}:{self.grpc_port}"


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8500, ge=0, le=65535)
    http_port: int = Field(8501, ge=0, le=65535, description="HTTP/JSON API and web page; 0: a free port")
    http: bool = Field(True, description="serve the HTTP/JSON API and the web page")
    max_http_body_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="largest HTTP request body (a base64 JSON image included)"
    )
    metrics_port: int = Field(8502, ge=0, le=65535, description="Prometheus /metrics; 0 disables")
    default_model: str | None = Field(
        None,
        description="model used when a request names none; default: cbam when served, else the first by name",
    )
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard")
    max_image_side: int = Field(16_384, gt=0, description="each side of an image, in pixels")
    max_decoded_image_bytes: int = Field(
        256 * 2**20, gt=0, description="an image's decoded raster (16-bit and float images cost more)"
    )
    max_in_flight: int = Field(64, gt=0, description="requests beyond this get RESOURCE_EXHAUSTED")
    adaptive_concurrency: bool = Field(
        False,
        description="admit only as many cheap predictions at once as keep their latency within "
        "latency_tolerance × their no-load latency (learnt; between min_in_flight and max_in_flight): "
        "latency before throughput (see docs/overload.md)",
    )
    latency_tolerance: float = Field(2.0, gt=1, description="see adaptive_concurrency")
    max_queued_ms: float | None = Field(
        None,
        ge=0,
        description="refuse (RESOURCE_EXHAUSTED, retry hint) a cheap prediction that waited longer "
        "than this between arriving and the gateway taking it up, as told by clients "
        "that send x-attnserve-timeout-ms with a deadline (attnserve's own do); default: with "
        "adaptive_concurrency, what latency_tolerance × the model's no-load latency leaves once "
        "the call is served, at its recent latency and at least at no-load plus its own wait "
        "(unloaded: (latency_tolerance - 1) × no-load / 2; at least 2 ms), else never",
    )
    min_in_flight: int | None = Field(
        None,
        gt=0,
        description="the adaptive limit's floor (it starts at twice this); default: the cores this "
        "process may use, at least 2",
    )
    model_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description="the share one model may hold of the cheap in-flight limit (adaptive or "
        "max_in_flight) and of max_heavy_in_flight (1: no per-model cap)",
    )
    max_heavy_in_flight: int = Field(
        8,
        gt=0,
        description="heavy requests (that render image forms or decode a large image) in flight; "
        "they run on their own threads so cheap predictions are not queued behind them",
    )
    heavy_request_bytes: int = Field(
        32 * 2**20, gt=0, description="a request whose decode and render need more memory is heavy"
    )
    memory_budget_bytes: int = Field(
        256 * 2**20,
        gt=0,
        description="decode and render memory of all requests in flight, estimated from image "
        "headers before decoding; a request that does not fit waits for nothing: RESOURCE_EXHAUSTED",
    )
    render_max_side: int = Field(
        1024,
        gt=0,
        description="longest side of image forms (overlays, heatmaps, upsampled maps) unless a "
        "request asks otherwise; larger originals are rendered scaled down",
    )
    max_top_k: int = Field(100, gt=0)
    max_message_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest gRPC request or response")
    triton_timeout_s: float = Field(30.0, gt=0, description="per inference, unless the deadline is shorter")
    health_interval_s: float = Field(1.0, gt=0, description="how often Triton's readiness is checked")
    grace_s: float = Field(5.0, ge=0, description="graceful-stop window for in-flight requests")
    worker_threads: int = Field(2, gt=0, description="threads for decoding and postprocessing")
    inline_preprocess_bytes: int = Field(
        256 * 1024,
        ge=0,
        description="an image of at most this many bytes whose decode needs at most this much "
        "(estimated from its header) and that nothing is drawn on is preprocessed on the event loop, "
        "not handed to a worker thread (a hand-off costs more; under a burst it waits behind every "
        "refusal); 0: never",
    )
    freeze_startup_objects: bool = Field(
        True,
        description="once started, keep every object then alive out of Python's full garbage "
        "collections (gc.freeze), which otherwise stop the event loop for tens of milliseconds "
        "(attnserve_gc_pause_seconds)",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the gateway's event loop: uvloop (libuv) takes up and refuses each call with "
        "about a tenth less CPU than asyncio's own loop (docs/overload.md); asyncio where uvloop "
        "has no wheel",
    )
    render_threads: int = Field(1, gt=0, description="threads for heavy requests (see max_heavy_in_flight)")
    render_processes: int = Field(
        0,
        ge=0,
        description="heavy requests' decoding and rendering in this many worker processes of their "
        "own instead of render_threads, so that the event loop never waits for their GIL: on 2 "
        "shared cores, overlays 12–16 % faster in bursts and 16 % more of them answered beside "
        "cheap calls, whose latency did not change (docs/overload.md), for a copy of each heavy "
        "call's image through a pipe and one interpreter's memory per worker; 0: render threads "
        "in the gateway's process",
    )
    render_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="the render threads' niceness (Linux, per thread): while a render runs, the "
        "event loop, cheap requests' threads and a Triton in the same session are served first; "
        "0: the same priority",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain: gRPC and HTTP over TLS")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle: clients must present a certificate it signed (mutual TLS)"
    )
    api_keys_file: Path | None = Field(
        None,
        description="one API key per line: every request but health checks must carry one "
        "(`authorization: Bearer KEY` or `x-api-key: KEY`)",
    )

    @model_validator(mode="after")
    def _tls_files_come_together(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    @property
    def image_limits(self) -> ImageLimits:
        """The limits an image is checked against, from its header, before decoding."""
        from attnserve.transform import ImageLimits  # not at import: numpy loads after server/blas.py

        return ImageLimits(
            self.max_image_bytes, self.max_image_pixels, self.max_image_side, self.max_decoded_image_bytes
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATTNSERVE_", env_nested_delimiter="__", extra="ignore")

    triton: TritonSettings = TritonSettings()
    gateway: GatewaySettings = GatewaySettings()
    log_level: str = "INFO"
