"""The HTTP front: the Starlette app served by uvicorn on the gateway's own event loop.

One process, one core: the catalog, the in-flight cap and the metrics are shared with gRPC, and
nothing is copied. uvicorn is embedded (the gateway owns the signals and the drain): `start`
binds the port, `stop` refuses new connections and lets in-flight requests finish within the
grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from attnserve.errors import SetupError
from attnserve.settings import GatewaySettings

from ..gateway.core import GatewayCore
from ..gateway.security import OPEN, Security
from .routes import HttpApi

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway's event loop handles SIGINT/SIGTERM and calls `HttpFront.stop`


class HttpFront:
    def __init__(
        self,
        core: GatewayCore,
        settings: GatewaySettings,
        samples_dir: Path | None = None,
        security: Security = OPEN,
    ) -> None:
        self.core = core
        self.settings = settings
        self.security = security
        self.api = HttpApi(core, settings, samples_dir, security.keys)
        self.port: int | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, grace_s: float) -> int:
        """Binds ``host:http_port`` (0: a free port), starts serving; returns the port."""
        host, port = self.settings.host, self.settings.http_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (with proto 0 it
        # does not, and every keep-alive answer waits ~40 ms for the client's delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise SetupError(f"the HTTP API cannot listen on {host}:{port}: {exc.strerror}") from None
        tls = self.security.tls
        config = uvicorn.Config(
            self.api.app(),
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=max(math.ceil(grace_s), 1),
            server_header=False,
            # connections and tasks beyond this get 503 from uvicorn before any body is read;
            # the core's in-flight cap (429) applies first in normal overload
            limit_concurrency=4 * self.settings.max_in_flight,
            ssl_certfile=None if tls is None else tls.cert_file,
            ssl_keyfile=None if tls is None else tls.key_file,
            ssl_ca_certs=None if tls is None or tls.client_ca_file is None else str(tls.client_ca_file),
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls is not None and tls.client_ca_file else ssl.CERT_NONE,
        )
        server = _EmbeddedServer(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="http-front")
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise SetupError(f"the HTTP API on {host}:{port} stopped while starting")
            await asyncio.sleep(0.01)
        self._server = server
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server, self._task = None, None
