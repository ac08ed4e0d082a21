"""Loopback ports for the processes Tessera starts on one machine (node processes, Hardhat,
`tessera serve` in the demo), found free at the moment they are asked for.

They are taken below the kernel's ephemeral range (`ip_local_port_range`): a port found free
there can still be handed out as the source port of an outgoing connection before the process
binds it — with hundreds of connections opened per second by a running cluster, that race was
seen in CI as a node that never came up (its bind refused, EADDRINUSE).  The kernel never gives
a port below that range to a connection, so nothing but another listener can take it.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path
from typing import Final

_EPHEMERAL: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LINUX_DEFAULT: Final = (32768, 60999)
_LOWEST: Final = 20000  # above the registered services a test machine may run


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux's default where it
    cannot be read)."""
    try:
        low, high = (int(v) for v in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return _LINUX_DEFAULT
    return low, high


def _candidates(n: int) -> tuple[int, int]:
    """The bases b to draw from so that b+1 … b+n lie outside the ephemeral range."""
    low, high = ephemeral_range()
    if low - n - 1 > _LOWEST:
        return _LOWEST, low - n - 1
    return high + 1, 65535 - n  # a range reconfigured low: above it instead


def free_port_block(n: int, attempts: int = 200) -> int:
    """A base b with b+1 … b+n all free on loopback now (the layout of `LocalCluster`)."""
    first, last = _candidates(n)
    if first > last:
        low, high = ephemeral_range()
        raise OSError(f"no room for {n} ports outside the ephemeral range {low}–{high}")
    for _ in range(attempts):
        base = first + secrets.randbelow(last - first + 1)  # no `random` (attacks.md T11g)
        probes: list[socket.socket] = []
        try:
            for k in range(1, n + 1):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise OSError(f"no {n} consecutive free loopback ports in {first + 1}–{last + n}")


def free_port() -> int:
    """One port free on loopback now, outside the ephemeral range."""
    return free_port_block(1) + 1
