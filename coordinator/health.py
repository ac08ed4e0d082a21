"""Which nodes the coordinator may choose right now.

A node that failed operationally — it did not answer (`NodeUnavailable`), or refused because
it cannot serve (`BUSY`, `HSM`) — is left out of every new signer set until a health check
(`GET /v1/health`) sees it back.  Without this, every request tries the dead node again, and
each try spends a presignature on its live co-signers (their partials are requested
concurrently, so they consume before the dead node's failure is known).

Checks back off exponentially (`base`, doubling up to `cap`) so a node that stays down costs
one probe per interval, not one per request.  The clock is injectable: tests move it instead
of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from signer.problems import ErrorCode

#: Refusals that say the node cannot serve now (not that the request was wrong).
OPERATIONAL_CODES = frozenset({ErrorCode.BUSY, ErrorCode.HSM})


class HealthProbe(Protocol):
    """What the tracker needs of a node client (`NodeClient`, the tests' `LocalClient`)."""

    def health(self) -> Awaitable[Any]: ...


@dataclass
class _Down:
    reason: str
    delay: float  # seconds until the next check, doubled after each failed one
    next_check: float


class NodeHealth:
    def __init__(
        self,
        clients: Mapping[int, HealthProbe],
        *,
        clock: Callable[[], float] = time.monotonic,
        base: float = 1.0,
        cap: float = 60.0,
    ) -> None:
        self.clients = clients
        self.clock = clock
        self.base = base
        self.cap = cap
        self._down: dict[int, _Down] = {}

    def down(self) -> frozenset[int]:
        """Nodes not to choose until a health check sees them back."""
        return frozenset(self._down)

    def reason(self, index: int) -> str | None:
        entry = self._down.get(index)
        return None if entry is None else entry.reason

    def mark_down(self, index: int, reason: str) -> None:
        """Record an operational failure; the first check is `base` seconds from now (a node
        already down keeps its back-off)."""
        if index not in self._down:
            self._down[index] = _Down(reason, self.base, self.clock() + self.base)

    def mark_up(self, index: int) -> None:
        self._down.pop(index, None)

    async def refresh(self, *, force: bool = False) -> frozenset[int]:
        """Check every down node whose back-off has elapsed (concurrently; `force`: every down
        node now); a node that answers its health check is chosen again, one that does not
        waits twice as long.  Returns the nodes still down."""
        now = self.clock()
        due = [i for i, entry in self._down.items() if force or entry.next_check <= now]
        if due:
            outcomes = await asyncio.gather(
                *(self.clients[i].health() for i in due), return_exceptions=True
            )
            for index, outcome in zip(due, outcomes, strict=True):
                entry = self._down.get(index)
                if entry is None:
                    continue
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome  # cancellation and the like are not a node's health
                    entry.delay = min(entry.delay * 2, self.cap)
                    entry.next_check = self.clock() + entry.delay
                else:
                    self.mark_up(index)
        return self.down()
