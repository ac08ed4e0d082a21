"""A key-share node's own audit log: `policies.audit` records in the node's database, checkpoints
signed with the node's HSM identity key.

The chain format, the checkpoint statement and the verifier are `policies.audit`'s (one format,
one verifier for officers' stores and nodes alike); this module only persists records in the
`audit_log` table (`signer.node.policy_tables.AuditRecordRow`) and signs checkpoints.

* `NodeAudit.append` writes a record inside the caller's open session, so the record commits or
  rolls back with the decision it records (a refusal logged but not enforced, or a signature
  enforced but not logged, cannot happen).
* A checkpoint is a record of kind ``node_checkpoint`` whose payload is the `Checkpoint` over the
  record just before it, so `policies.audit.verify_log` checks its signature in place; a copy of
  the newest one is also kept in the ``audit_checkpoint`` setting, the head `verify` holds the
  log to (a cut tail that reaches back past that checkpoint's head is then caught too).  A tail cut
  after the newest checkpoint is visible only against a checkpoint kept outside the node
  (`verify(head=…)`, ``tessera node audit verify --head``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, text
from sqlmodel import Session, col, select

from hsm.identity import IdentityPublicKey
from policies.audit import (
    AuditRecord,
    AuditReport,
    ChainLink,
    Checkpoint,
    Link,
    TrustedHead,
    TrustedKey,
    next_record,
    parse_checkpoint,
    sign_checkpoint,
    verify_log,
)
from policies.canonical import canonical_json
from policies.errors import AuditFormatError, AuditLogError
from policies.keys import Algorithm
from signer.node.envelope import IdentitySigner as IdentityKey
from signer.node.policy_tables import AuditRecordRow
from signer.node.store import SETTING_VALUE, NodeStore, SettingRow, StoreError

CHECKPOINT_SETTING = "audit_checkpoint"
DEFAULT_CHECKPOINT_EVERY = 1000


class AuditKind(StrEnum):
    """What a node record is about (the ``node_*`` kinds of `policies.audit.AuditKind`)."""

    NODE_SIGNED = "node_signed"
    NODE_CANCELLED = "node_cancelled"
    NODE_ALLOWANCE = "node_allowance"
    NODE_INTERNAL = "node_internal"
    NODE_REFUSED = "node_refused"
    NODE_RECEIPT = "node_receipt"
    NODE_QUARANTINE = "node_quarantine"
    NODE_GOVERNANCE = "node_governance"
    NODE_KEY = "node_key"
    NODE_CHECKPOINT = "node_checkpoint"


def signer_name(node_id: str) -> str:
    """The checkpoint signer name of a node: prefixed so it can never pass for an officer id."""
    return f"node:{node_id}"


def trusted_key(node_id: str, identity: IdentityPublicKey) -> TrustedKey:
    """The key whose checkpoints a node's log is verified against (from its card)."""
    return TrustedKey(signer_name(node_id), identity.algorithm, identity.public_bytes.hex())


class IdentitySigner:
    """The node's HSM identity key as a `policies.keys.OfficerSigner`, so that
    `policies.audit.sign_checkpoint` signs node checkpoints the one way checkpoints are signed
    (domain-separated ``audit-checkpoint`` statements).  Node identity keys already use the
    encodings `policies.keys` verifies: Ed25519 raw 32 bytes, P-256 SEC1 compressed with low-s
    ``r ‖ s`` signatures (`hsm.identity`)."""

    def __init__(self, keystore: IdentityKey, node_id: str) -> None:
        self._keystore = keystore
        self._identity = keystore.identity_public_key()
        self._name = signer_name(node_id)
        self.node_id = node_id

    @property
    def officer_id(self) -> str:
        return self._name

    @property
    def algorithm(self) -> Algorithm:
        return self._identity.algorithm

    @property
    def public_key_hex(self) -> str:
        return self._identity.public_bytes.hex()

    def sign(self, message: bytes) -> bytes:
        return self._keystore.sign_identity(message)

    def trusted_key(self) -> TrustedKey:
        return trusted_key(self.node_id, self._identity)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _row_of(record: AuditRecord) -> dict[str, object]:
    """The `AuditRecordRow` columns of a record."""
    return {
        "seq": record.seq,
        "timestamp": record.timestamp,
        "kind": record.kind,
        "payload": canonical_json(record.payload).decode("utf-8"),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _record_of(row: AuditRecordRow, position: int) -> AuditRecord:
    """The record a row holds; a row that no longer parses is a broken log at that position
    (so `verify` names its seq instead of failing on a decoding error)."""
    try:
        payload = json.loads(row.payload)
        return AuditRecord.model_validate(
            {
                "seq": row.seq,
                "timestamp": row.timestamp,
                "kind": row.kind,
                "payload": payload,
                "prev_hash": row.prev_hash,
                "hash": row.hash,
            }
        )
    except json.JSONDecodeError as exc:
        raise AuditLogError(position, row.seq, f"payload is not JSON ({exc.msg})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise AuditLogError(
            position, row.seq, f"malformed record ({where}: {first['msg']})"
        ) from exc


class NodeAudit:
    """The node's audit log in its `NodeStore`.  ``signer`` None: read and verify only (offline
    commands); no checkpoints are written then."""

    def __init__(
        self,
        store: NodeStore,
        signer: IdentitySigner | None,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.store = store
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.clock = clock

    # -- writing ---------------------------------------------------------------------------

    def append(self, session: Session, kind: AuditKind, payload: Mapping[str, Any]) -> AuditRecord:
        """Append a record in the caller's open session (the caller commits).  Once
        ``checkpoint_every`` records follow the newest checkpoint, a signed checkpoint over the
        new record follows it in the same session."""
        if kind is AuditKind.NODE_CHECKPOINT:
            raise StoreError("audit record", "checkpoints are written by checkpoint() only")
        self._lock(session)
        record = self._append(session, self._head_link(session), kind, payload)
        if (
            self.signer is not None
            and self._since_checkpoint(session, record) >= self.checkpoint_every
        ):
            # Signed inside the same transaction: a token that cannot sign fails the decision
            # too (it could not sign a transaction either), rather than leaving a gap in the
            # checkpoints that widens what a rewrite could hide.
            self._checkpoint(session, record, self.signer)
        return record

    def record(self, kind: AuditKind, payload: Mapping[str, Any]) -> AuditRecord:
        """Append a record in a transaction of its own (for events with no other write)."""
        with self.store.session() as session:
            record = self.append(session, kind, payload)
            session.commit()
        return record

    def checkpoint(self) -> Checkpoint:
        """Sign the newest record with the identity key and append the checkpoint record after
        it.  Keep the returned checkpoint outside the node to detect a cut tail later."""
        if self.signer is None:
            raise StoreError("audit checkpoint", "no identity signer: this log is read-only")
        with self.store.session() as session:
            self._lock(session)
            head = self._head(session)
            if head is None:
                raise StoreError("audit log", "is empty: nothing to checkpoint")
            checkpoint = self._checkpoint(session, head, self.signer)
            session.commit()
        return checkpoint

    @staticmethod
    def _lock(session: Session) -> None:
        """Take SQLite's write lock before reading the head (pysqlite begins the transaction
        only at the first write): two writers then cannot both chain to the same head.  A
        caller that already read in this transaction under an older snapshot gets a busy error
        here instead of a forked chain; the seq primary key refuses a fork in any case."""
        session.execute(text("UPDATE audit_log SET seq = seq WHERE seq = 0"))

    @staticmethod
    def _since_checkpoint(session: Session, record: AuditRecord) -> int:
        """Records after the newest checkpoint record, up to and including ``record``: counted
        from the stored checkpoint's seq (one key lookup, not a scan of the log; only the count
        depends on it, so its seq is read without re-validating the whole checkpoint)."""
        found = session.execute(SETTING_VALUE, {"name": CHECKPOINT_SETTING}).first()
        if found is None:
            return record.seq
        try:
            last = json.loads(found[0])["seq"]
        except (ValueError, TypeError, KeyError):
            return record.seq  # unreadable: checkpoint early rather than late
        if not isinstance(last, int) or isinstance(last, bool):
            return record.seq
        return record.seq - (last + 1)

    @staticmethod
    def _head_link(session: Session) -> Link | None:
        """The newest record's seq and hash: all an append chains to (its payload unread)."""
        found = session.execute(
            text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        ).first()
        return None if found is None else Link(int(found[0]), str(found[1]))

    @staticmethod
    def _head(session: Session) -> AuditRecord | None:
        row = session.exec(
            select(AuditRecordRow).order_by(col(AuditRecordRow.seq).desc()).limit(1)
        ).first()
        return None if row is None else _record_of(row, row.seq - 1)

    def _append(
        self,
        session: Session,
        previous: ChainLink | None,
        kind: AuditKind,
        payload: Mapping[str, Any],
    ) -> AuditRecord:
        try:
            record = next_record(previous, kind.value, payload, self.clock())
        except AuditFormatError as exc:
            raise StoreError("audit record", str(exc)) from exc
        # A Core insert, not the ORM's unit of work (an append is on every signature's path);
        # it runs now, so the seq primary key refuses a second record at this seq here.
        session.execute(insert(AuditRecordRow).values(**_row_of(record)))
        return record

    def _checkpoint(
        self, session: Session, head: AuditRecord, signer: IdentitySigner
    ) -> Checkpoint:
        checkpoint = sign_checkpoint(signer, head)
        self._append(session, head, AuditKind.NODE_CHECKPOINT, checkpoint.model_dump())
        value = canonical_json(checkpoint.model_dump())
        session.merge(SettingRow(name=CHECKPOINT_SETTING, value=value))
        return checkpoint

    # -- reading ---------------------------------------------------------------------------

    def records(self, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """Records with seq > ``after_seq`` in seq order, at most ``limit`` of them."""
        query = (
            select(AuditRecordRow)
            .where(col(AuditRecordRow.seq) > after_seq)
            .order_by(col(AuditRecordRow.seq))
        )
        if limit is not None:
            query = query.limit(limit)
        with self.store.session() as session:
            rows = session.exec(query).all()
        return [_record_of(row, position) for position, row in enumerate(rows, start=after_seq)]

    def head(self) -> AuditRecord | None:
        with self.store.session() as session:
            return self._head(session)

    def last_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint as the node last wrote it (the ``audit_checkpoint`` setting)."""
        value = self.store.setting(CHECKPOINT_SETTING)
        if value is None:
            return None
        try:
            doc = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AuditFormatError(CHECKPOINT_SETTING, None, f"not JSON ({exc})") from exc
        return parse_checkpoint(doc, f"setting {CHECKPOINT_SETTING}")

    def verify(
        self,
        trusted_keys: Collection[TrustedKey],
        *,
        head: Checkpoint | TrustedHead | None = None,
    ) -> AuditReport:
        """`policies.audit.verify_log` over the whole log and every checkpoint in it, held to
        ``head`` if given, else to the node's newest stored checkpoint; `AuditLogError` names
        the first broken position."""
        records = self.records()
        if head is None:
            head = self.last_checkpoint()
        return verify_log(records, trusted_keys=trusted_keys, head=head)
