"""Small network helpers."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_BELOW = 12_000
"""How many ports below the kernel's ephemeral range `free_port` draws from."""


def _listening_range() -> range | None:
    """Ports below the kernel's ephemeral range, which outgoing connections never take; None
    where the range cannot be read or leaves no room below it."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    start = max(1024, low - _BELOW)
    return range(start, low) if low - start >= 1000 else None


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, never one this process was given before: the OS
    may hand a just-closed port out again, and two of a server's ports must differ (Triton
    refuses to start when its HTTP and metrics ports collide).

    It is drawn below the kernel's ephemeral range where there is room: a port the OS picks
    (bind to 0) lies inside that range, and a client's outgoing connection could take it before
    the server binds it (a test's gateway once found its metrics port so taken)."""
    ports = _listening_range()
    if ports is not None:
        for _ in range(100):
            port = random.choice(ports)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
