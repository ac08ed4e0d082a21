"""What every part of the policy store shares: the transaction, the audit append, reading the
policy chain back (re-verified), and the codecs between rows and models.

`StoreCore` is the base of the operation mixins (`store_audit`, `store_governance`,
`store_freezes`, `store_withdrawals`) that `policies.store.PolicyStore` puts together; it holds
no state of its own beyond the path and the engine that `PolicyStore.__init__` sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from policies.audit import AuditRecord, next_record
from policies.canonical import canonical_json
from policies.document import PolicyDocument, parse_policy
from policies.errors import AuditFormatError, GovernanceError, PolicyError, StoreError
from policies.governance import (
    ActivatedVersion,
    GovernanceSignature,
    PolicyProposal,
    active_policy,
    verify_chain,
)
from policies.keys import Purpose
from policies.tables import ActivationRow, AuditRow, ProposalRow, SignatureRow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise StoreError("time", f"{moment.isoformat()} has no time zone")
    return (moment - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def to_json(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


VersionRef = int | str
"""A policy version as the officers name it: its number, or its hash (or a unique prefix)."""


class StoreCore:
    """Transactions, the audit append and the chain, for the operation mixins."""

    path: Path
    _engine: Engine

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        try:
            with Session(self._engine) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(
                str(self.path), f"database error ({exc.__class__.__name__}: {exc})"
            ) from exc

    # --- audit ---

    def _append(
        self, session: Session, kind: str, payload: dict[str, Any], now: datetime
    ) -> AuditRecord:
        last_row = session.exec(select(AuditRow).order_by(col(AuditRow.seq).desc())).first()
        previous = None if last_row is None else record_of(last_row)
        record = next_record(previous, kind, payload, now)
        session.add(
            AuditRow(
                seq=record.seq,
                timestamp=record.timestamp,
                kind=record.kind,
                payload=to_json(record.payload),
                prev_hash=record.prev_hash,
                hash=record.hash,
            )
        )
        session.flush()
        return record

    def _add_signature(
        self, session: Session, signature: GovernanceSignature, subject: str, now: datetime
    ) -> None:
        existing = session.exec(
            select(SignatureRow)
            .where(col(SignatureRow.purpose) == signature.purpose.value)
            .where(col(SignatureRow.subject) == subject)
            .where(col(SignatureRow.officer) == signature.officer)
        ).first()
        if existing is not None:
            raise StoreError(
                f"officer {signature.officer!r}",
                f"already signed this {signature.purpose.value} ({subject[:16]}…)",
            )
        session.add(
            SignatureRow(
                purpose=signature.purpose.value,
                subject=subject,
                officer=signature.officer,
                signature=to_json(signature.model_dump(mode="json")),
                signed_at_us=us(now),
            )
        )
        session.flush()

    # --- policy chain ---

    def _proposal(self, session: Session, policy_hash: str) -> PolicyProposal:
        row = session.get(ProposalRow, policy_hash)
        if row is None:
            raise StoreError(f"proposal {policy_hash}", "no such proposal in the store")
        return proposal_of(row)

    def _signatures(
        self, session: Session, purpose: Purpose, subject: str
    ) -> tuple[GovernanceSignature, ...]:
        return signatures_of(session, purpose, subject)

    def _chain(self, session: Session) -> list[ActivatedVersion]:
        rows = session.exec(select(ActivationRow).order_by(col(ActivationRow.position))).all()
        chain = []
        for row in rows:
            subject = f"activation {row.position}"
            proposal = self._proposal(session, row.policy_hash)
            cancelled_by = (
                () if row.cancelled_by is None else tuple(stored_json(row.cancelled_by, subject))
            )
            chain.append(
                ActivatedVersion(
                    document=proposal.document,
                    policy_hash=proposal.policy_hash,
                    signatures=self._signatures(
                        session, Purpose.POLICY_ACTIVATION, row.policy_hash
                    ),
                    signed_by=tuple(stored_json(row.signed_by, subject)),
                    activated_at=from_us(row.activated_at_us),
                    effective_at=from_us(row.effective_at_us),
                    loosening=tuple(stored_json(row.loosening, subject)),
                    cancel_signatures=self._signatures(
                        session, Purpose.POLICY_CANCEL, row.policy_hash
                    )
                    if cancelled_by
                    else (),
                    cancelled_by=cancelled_by,
                )
            )
        try:
            verify_chain(chain)
        except GovernanceError as exc:
            raise StoreError(
                str(self.path), f"the stored policy chain does not verify: {exc}"
            ) from exc
        return chain

    def chain(self) -> list[ActivatedVersion]:
        """The activated versions in order, re-verified."""
        with self._tx() as session:
            return self._chain(session)

    def in_force(self, *, now: datetime) -> ActivatedVersion:
        return active_policy(self.chain(), now=now)

    def version(self, version: VersionRef | None, *, now: datetime) -> PolicyDocument:
        """An activated version by number or hash prefix (None: the one in force)."""
        return self._version_of(self.chain(), version, now)

    @staticmethod
    def _version_of(
        chain: Sequence[ActivatedVersion], version: VersionRef | None, now: datetime
    ) -> PolicyDocument:
        if version is None:
            return active_policy(chain, now=now).document
        live = [link for link in reversed(chain) if not link.cancelled]
        if isinstance(version, int):
            found = [link for link in live if link.version == version]
        else:
            prefix = version.lower()
            found = [link for link in live if link.policy_hash.startswith(prefix)]
        if not found:
            raise StoreError(f"policy version {version}", "no such activated version in the store")
        if len(found) > 1:  # only a short hash prefix can match several
            hashes = ", ".join(link.policy_hash[:16] for link in found)
            raise StoreError(f"policy version {version}", f"ambiguous ({hashes}); give more")
        return found[0].document


def signatures_of(
    session: Session, purpose: Purpose, subject: str
) -> tuple[GovernanceSignature, ...]:
    """The recorded signatures of one statement (``purpose`` over ``subject``), oldest first."""
    rows = session.exec(
        select(SignatureRow)
        .where(col(SignatureRow.purpose) == purpose.value)
        .where(col(SignatureRow.subject) == subject)
        .order_by(col(SignatureRow.id))
    ).all()
    return tuple(
        stored_model(GovernanceSignature, row.signature, f"signature {row.id}") for row in rows
    )


_Model = TypeVar("_Model", bound=BaseModel)


def stored_json(text: str, subject: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreError(subject, f"stored JSON is corrupt ({exc})") from exc


def stored_model(model: type[_Model], text: str, subject: str) -> _Model:
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise StoreError(subject, f"stored record is invalid ({exc.errors()[0]['msg']})") from exc


def proposal_of(row: ProposalRow) -> PolicyProposal:
    try:
        document = parse_policy(
            stored_json(row.document, f"proposal {row.policy_hash}"),
            source=f"stored {row.policy_hash}",
        )
    except PolicyError as exc:
        raise StoreError(
            f"proposal {row.policy_hash}", f"stored document is invalid: {exc}"
        ) from exc
    proposal = PolicyProposal.of(document)
    if proposal.policy_hash != row.policy_hash:
        raise StoreError(
            f"proposal {row.policy_hash}", "stored document does not hash to its recorded hash"
        )
    return proposal


def record_of(row: AuditRow) -> AuditRecord:
    try:
        return AuditRecord.model_validate(
            {
                "seq": row.seq,
                "timestamp": row.timestamp,
                "kind": row.kind,
                "payload": json.loads(row.payload),
                "prev_hash": row.prev_hash,
                "hash": row.hash,
            }
        )
    except (ValidationError, ValueError) as exc:
        raise AuditFormatError("audit log", row.seq, f"stored record is malformed: {exc}") from exc
