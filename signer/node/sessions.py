"""The session records a node keeps while a protocol runs, and their wire replies.

A session is created from a `SessionSpec` (what to run, with whom) and then fed envelopes;
each call returns a `SessionReply`: the envelopes to relay next and the session's status
(running | done | aborted).  The lifecycle itself — start, deliver, finish, expire — is
`signer.node.service.NodeService`; this module holds what it works on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from signer.errors import TesseraError
from signer.node.api import AbortReport, SessionResult
from signer.node.envelope import Envelope, EnvelopeRejected
from signer.node.spec import SessionSpec
from signer.protocol.base import MessageRefused, Party, ProtocolAbort
from signer.protocol.presign_identify import IdentificationRequired

#: A session that made no progress for this long is forgotten (the coordinator retries).
SESSION_TTL_SECONDS = 600.0
MAX_SESSIONS = 256


@dataclass
class SessionReply:
    session: bytes
    status: str  # running | done | aborted
    envelopes: list[Envelope] = field(default_factory=list)
    result: SessionResult | None = None
    abort: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session.hex(),
            "status": self.status,
            "envelopes": [e.to_dict() for e in self.envelopes],
            "result": None if self.result is None else self.result.model_dump(),
            "abort": self.abort,
        }


@dataclass
class Session:
    spec: SessionSpec
    party: Party[Any]
    finish: Callable[[Any], SessionResult]
    lock: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)  # for the session-seconds metric
    status: str = "running"
    result: SessionResult | None = None
    abort: dict[str, Any] | None = None
    halted: str | None = None  # set when a new quarantine entry blocks this running session


def abort_json(abort: ProtocolAbort) -> dict[str, Any]:
    """The abort's wire report (`signer.node.api.AbortReport`, checked as it is built)."""
    report = AbortReport(
        protocol=abort.protocol,
        round=abort.round,
        code=abort.code.value,
        culprits=sorted(abort.culprits),
        detail=abort.detail,
        # the request id of the identification session every signer is now ready to run
        identification=(
            abort.identification.request().hex()
            if isinstance(abort, IdentificationRequired)
            else None
        ),
    )
    return report.model_dump(exclude_none=True, exclude={"rejected"})


def rejection(envelope: Envelope, exc: TesseraError) -> dict[str, Any]:
    """The report of an envelope a session dropped (it goes on without it)."""
    if isinstance(exc, EnvelopeRejected):
        return {"sender": exc.sender, "check": exc.check, "detail": exc.detail}
    if isinstance(exc, MessageRefused):
        return {"sender": exc.sender, "check": exc.check.value, "detail": exc.detail}
    return {"sender": envelope.sender, "check": "MISDIRECTED", "detail": str(exc)}
