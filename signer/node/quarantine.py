"""Quarantine (attacks.md A03): a failed session is a security event, never a retryable error.

The parties it names are quarantined, and a cryptographic failure that names nobody freezes its
party set, in this node's own database — so no coordinator can turn failures into an oracle by
retrying.  Entries are lifted only by this node's operator (`tessera node quarantine clear`),
never over the API.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from signer.errors import Check
from signer.node.api import join_indices
from signer.node.audit import AuditKind, NodeAudit
from signer.node.errors import NodeError
from signer.node.exclusion import first_blocking
from signer.node.spec import SessionSpec
from signer.node.store import NodeStore, QuarantineRow
from signer.problems import ErrorCode
from signer.protocol.base import ProtocolAbort

#: Failures that name nobody and freeze nothing: round-1 session contexts that differ (e.g. a
#: node on an older key version) are found before any secret is used, so their outcome cannot
#: depend on a secret.  (A message from outside the party set no longer aborts anything: the
#: party refuses it and the session goes on, `MessageRefused`.)
NOT_SECURITY_EVENTS = frozenset({Check.MISMATCH})


class Quarantine:
    """This node's quarantine entries: recording them and refusing work they block."""

    def __init__(self, store: NodeStore, index: int, audit: NodeAudit | None = None) -> None:
        self.store = store
        self.index = index
        self.audit = audit

    def blocking(
        self, parties: Sequence[int], active: list[QuarantineRow] | None = None
    ) -> str | None:
        """What blocks work with `parties` (an entry's description), or None; `active` is the
        active entries when the caller has just read them."""
        members = tuple(parties)
        row = self.store.blocking(members) if active is None else first_blocking(active, members)
        return None if row is None else row.describe()

    def refuse(self, parties: Sequence[int], active: list[QuarantineRow] | None = None) -> None:
        """`QUARANTINED` if an active entry blocks `parties`."""
        blocked = self.blocking(parties, active)
        if blocked is not None:
            raise NodeError(
                ErrorCode.QUARANTINED,
                f"{blocked}; only this node's operator can clear it "
                "(tessera node quarantine clear)",
            )

    def record(
        self,
        kind: str,
        parties: Sequence[int],
        spec: SessionSpec,
        session: bytes,
        code: str,
        detail: str,
    ) -> None:
        row = self.store.quarantine(
            QuarantineRow(
                kind=kind,
                parties=join_indices(tuple(sorted(parties))),
                key_id=spec.key_id.hex(),
                protocol=spec.protocol,
                session=session.hex(),
                code=code,
                detail=detail[:1000],
                created_at=time.time(),
            )
        )
        if self.audit is not None:
            # Quarantine and blame go into the node's audit log too (docs/nodes.md).
            self.audit.record(
                AuditKind.NODE_QUARANTINE,
                {
                    "entry": row.id,
                    "kind": kind,
                    "parties": sorted(parties),
                    "key_id": spec.key_id.hex(),
                    "protocol": str(spec.protocol),
                    "session": session.hex(),
                    "code": code,
                },
            )

    def record_abort(self, instance: bytes, spec: SessionSpec, abort: ProtocolAbort) -> None:
        """Named parties are quarantined; a failure that names nobody freezes the party set
        (unless it cannot depend on a secret, NOT_SECURITY_EVENTS)."""
        culprits = sorted(abort.culprits - {self.index})
        code = abort.code.value
        for culprit in culprits:
            self.record("party", [culprit], spec, instance, code, abort.detail)
        if not culprits and abort.code not in NOT_SECURITY_EVENTS:
            self.record("signer_set", spec.parties, spec, instance, code, abort.detail)
