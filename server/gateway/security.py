"""Who may call the gateway: API keys and TLS material, read once (`Security.load`), used by
every front.

Keys come from a file (one per line, ``#`` comments; a secret does not belong in an argument
list or an image layer). A request presents one as ``authorization: Bearer KEY`` or
``x-api-key: KEY``; keys are compared in constant time. Health checks stay open, so that an
orchestrator's probes need no secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attnserve.errors import SetupError, Unauthenticated
from attnserve.settings import GatewaySettings

HeaderLookup = Callable[[str], str | None]
"""A request's header (gRPC metadata key or HTTP header, lower case) → its value."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SetupError(f"cannot read the {what} {path}: {exc.strerror}") from None


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        lines = _read(path, "API keys file").decode().splitlines()
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise SetupError(f"the API keys file {path} holds no key")
        if any(len(key) < 16 for key in keys):
            raise SetupError(f"every API key in {path} must have at least 16 characters")
        return cls(keys)

    def check(self, header: HeaderLookup) -> None:
        """Raises `Unauthenticated` unless the request presents a known key."""
        presented = header("x-api-key")
        authorization = header("authorization")
        if presented is None and authorization is not None:
            scheme, _, token = authorization.partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
        if presented is None:
            raise Unauthenticated("this gateway needs an API key: send `authorization: Bearer KEY`")
        candidate = presented.encode()
        # every key is compared, so the time taken says nothing about which one nearly matched
        if not any([hmac.compare_digest(candidate, key) for key in self._keys]):
            raise Unauthenticated("the API key is not valid")


@dataclass(frozen=True)
class TlsMaterial:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    """Mutual TLS: clients must present a certificate this CA signed."""
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None


@dataclass(frozen=True)
class Security:
    keys: ApiKeys | None = None
    """None: no key needed."""
    tls: TlsMaterial | None = None
    """None: plaintext."""

    @classmethod
    def load(cls, settings: GatewaySettings) -> Security:
        """Reads the key file and the TLS files named in ``settings``; unreadable ones are `SetupError`."""
        keys = None if settings.api_keys_file is None else ApiKeys.from_file(settings.api_keys_file)
        tls = None
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            client_ca = settings.tls_client_ca_file
            tls = TlsMaterial(
                _read(settings.tls_cert_file, "TLS certificate"),
                _read(settings.tls_key_file, "TLS private key"),
                None if client_ca is None else _read(client_ca, "client CA bundle"),
                settings.tls_cert_file,
                settings.tls_key_file,
                client_ca,
            )
        return cls(keys, tls)


OPEN = Security()
"""No keys, no TLS."""
