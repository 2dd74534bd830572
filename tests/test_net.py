"""`attnserve._net`: ports for the servers a run starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from attnserve import _net
from attnserve._net import free_port


def test_free_ports_lie_below_the_ephemeral_range_differ_and_can_be_bound() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(low - 12_000 <= port < low for port in ports)  # no outgoing connection takes them
    for port in ports[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", port))


def test_without_the_range_the_os_picks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_net, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert free_port() not in {free_port() for _ in range(5)}
    (tmp_path / "narrow").write_text("1500\t60999\n")  # no room below: the OS picks
    monkeypatch.setattr(_net, "EPHEMERAL_RANGE", tmp_path / "narrow")
    assert free_port() >= 1500
