"""The loopback ports Tessera's own processes listen on are outside the kernel's ephemeral
range, where no outgoing connection can take them between the check and the bind."""

from __future__ import annotations

import socket

import pytest

from coordinator import ports
from coordinator.ports import ephemeral_range, free_port, free_port_block


def test_the_ports_are_free_and_below_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    assert 1024 <= low <= high <= 65535
    for _ in range(50):
        base = free_port_block(4)
        ports = [base + k for k in range(1, 5)]
        assert all(not (low <= p <= high) for p in ports)
        probes = []
        try:
            for port in ports:  # free: each can be bound
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        finally:
            for probe in probes:
                probe.close()
        assert not (low <= free_port() <= high)


def test_a_taken_port_is_never_given(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        # only two bases to draw from: b = port - 1 covers the taken port, b = port does not
        monkeypatch.setattr(ports, "_candidates", lambda n: (port - 1, port))
        assert {free_port_block(2) for _ in range(20)} == {port}
        monkeypatch.setattr(ports, "_candidates", lambda n: (port - 1, port - 1))
        with pytest.raises(OSError, match="no 2 consecutive free loopback ports"):
            free_port_block(2, attempts=5)


def test_an_ephemeral_range_that_leaves_no_room_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    with pytest.raises(OSError, match="no room for 3 ports outside the ephemeral range 1024–65535"):
        free_port_block(3)
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 40000))  # room above it
    assert free_port_block(3) > 40000
