"""Driving one protocol session across node processes: the coordinator only relays.

Each node returns signed envelopes; a broadcast goes to every other party of the session, a
point-to-point envelope (encrypted to its recipient) to its recipient only.  Deliveries to
different nodes run concurrently; the session ends when every node reports "done" or any
reports "aborted" (the others' reports are then collected too), or when nobody can make
progress (a node is down or withheld a message): `SessionFailed` says which nodes blamed whom
for what, and which nodes never answered.

`traffic` (optional) records every envelope the coordinator handled — exactly the view a
compromised coordinator would have, which the security tests inspect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from coordinator.client import NodeClient, NodeRefused, NodeReplyInvalid, NodeUnavailable
from signer.errors import TesseraError
from signer.logs import Timer, log_event
from signer.node.api import SessionResult, SessionState
from signer.node.spec import SessionSpec
from signer.problems import ErrorCode

logger = logging.getLogger("tessera.coordinator.driver")


class SessionFailed(TesseraError):
    """A session without output: `aborts` maps each reporting node to its abort (code,
    culprits, detail), `unavailable` the nodes that did not answer or refused (`refused`: their
    error codes), `stalled` the nodes still waiting for messages that never came.
    `identified` is filled in when a presign identification ran after the failure: each
    reporting node's culprits."""

    def __init__(
        self,
        protocol: str,
        aborts: dict[int, dict[str, Any]],
        unavailable: dict[int, str],
        stalled: tuple[int, ...],
        refused: dict[int, ErrorCode] | None = None,
    ) -> None:
        self.protocol = protocol
        self.aborts = aborts
        self.unavailable = unavailable
        self.stalled = stalled
        self.refused = refused or {}
        self.identified: dict[int, frozenset[int]] = {}
        super().__init__(self.describe())

    @property
    def blamed(self) -> frozenset[int]:
        """Parties named as culprits by at least one node (by an abort or an identification)."""
        named = {c for a in self.aborts.values() for c in a.get("culprits", [])}
        return frozenset(named.union(*self.identified.values()))

    def describe(self) -> str:
        parts = [f"{self.protocol} failed"]
        for reporter, abort in sorted(self.aborts.items()):
            parts.append(
                f"node {reporter}: {abort.get('code')} culprits {abort.get('culprits')} "
                f"({abort.get('detail')})"
            )
        if self.unavailable:
            parts.append(f"unavailable {dict(sorted(self.unavailable.items()))}")
        if self.stalled:
            parts.append(f"stalled {list(self.stalled)}")
        if self.identified:
            named = {i: sorted(c) for i, c in sorted(self.identified.items())}
            parts.append(f"identification named {named}")
        return "; ".join(parts)


class SessionDriver:
    def __init__(
        self, clients: Mapping[int, NodeClient], traffic: list[dict[str, Any]] | None = None
    ) -> None:
        self.clients = clients
        self.traffic = traffic

    def _route(
        self, parties: tuple[int, ...], envelopes: list[dict[str, Any]]
    ) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for envelope in envelopes:
            if self.traffic is not None:
                self.traffic.append(envelope)
            sender = envelope.get("sender")
            recipient = envelope.get("recipient")
            targets = [j for j in parties if j != sender] if recipient is None else [recipient]
            for j in targets:
                if j in parties:
                    out.setdefault(j, []).append(envelope)
        return out

    async def run(self, spec: SessionSpec) -> dict[int, SessionResult]:
        """Run the session `spec` on its parties; every party's result.  One log record when
        the session ends, with its node session id, request id, parties and outcome."""
        parties = spec.parties
        protocol = str(spec.protocol)
        body = spec.to_json()
        timer = Timer()
        aborts: dict[int, dict[str, Any]] = {}
        unavailable: dict[int, str] = {}
        refused: dict[int, ErrorCode] = {}
        status: dict[int, str] = {}
        results: dict[int, SessionResult] = {}
        session = ""

        def absorb(index: int, reply: SessionState | BaseException) -> list[dict[str, Any]]:
            nonlocal session
            if isinstance(reply, NodeUnavailable | NodeRefused | NodeReplyInvalid):
                # (a reply that is not a SessionState is as good as no reply: operational)
                unavailable[index] = str(reply)
                if isinstance(reply, NodeRefused):
                    refused[index] = reply.code
                status[index] = "failed"
                return []
            if isinstance(reply, BaseException):
                raise reply
            session = reply.session
            status[index] = reply.status
            if reply.result is not None:
                results[index] = reply.result
            if reply.abort is not None and reply.status == "aborted":
                aborts[index] = reply.abort.model_dump(exclude_none=True)
            return reply.envelopes

        started = await asyncio.gather(
            *(self.clients[i].start(body) for i in parties), return_exceptions=True
        )
        pending: dict[int, list[dict[str, Any]]] = {}
        for index, reply in zip(parties, started, strict=True):
            for j, batch in self._route(parties, absorb(index, reply)).items():
                pending.setdefault(j, []).extend(batch)

        while True:
            deliverable = {
                j: batch for j, batch in pending.items() if batch and status.get(j) == "running"
            }
            if not deliverable:
                break
            pending = {}
            order = sorted(deliverable)
            replies = await asyncio.gather(
                *(self.clients[j].deliver(session, deliverable[j]) for j in order),
                return_exceptions=True,
            )
            for index, reply in zip(order, replies, strict=True):
                for j, batch in self._route(parties, absorb(index, reply)).items():
                    pending.setdefault(j, []).extend(batch)

        fields: dict[str, Any] = {
            "protocol": protocol,
            "request": spec.request,
            "parties": parties,
            "session": session,
        }
        if all(status.get(j) == "done" for j in parties):
            log_event(logger, "session.done", outcome="done", seconds=timer.seconds, **fields)
            return results
        stalled = tuple(j for j in parties if status.get(j) == "running")
        if session:  # free the nodes still waiting, so stalled sessions cannot pile up
            await asyncio.gather(
                *(self.clients[j].cancel(session) for j in stalled), return_exceptions=True
            )
        failure = SessionFailed(protocol, aborts, unavailable, stalled, refused)
        log_event(
            logger,
            "session.failed",
            level=logging.WARNING,
            outcome="failed",
            seconds=timer.seconds,
            culprit=sorted(failure.blamed),
            node=sorted(unavailable),
            detail=failure.describe(),
            **fields,
        )
        raise failure
