"""The local policy store the officer CLI works on until the coordinator API exists.

One SQLite file (WAL) holds proposals, officers' governance signatures, the activated policy
chain, freeze orders, withdrawal requests with their approvals, consumed approval nonces and the
audit log.  Every operation is one ``BEGIN IMMEDIATE`` transaction that re-reads the state,
checks everything (the same `governance`, `approvals` and `evaluator` code a node runs), writes
its rows and its audit records, and commits; any error rolls the whole operation back, so bad
input stores nothing.

Reading the chain re-verifies it (`governance.verify_chain`) and every stored document must
re-hash to its recorded hash, so an edited database is reported, not trusted.  The store keeps
no velocity ledger: limits are enforced by each node's own ledger; `simulate` and withdrawal
decisions take an optional `LedgerView` (e.g. a node's) and otherwise assume an empty one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, UniqueConstraint
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select

from policies.approvals import (
    DEFAULT_APPROVAL_LIFETIME,
    Approval,
    check_approvals,
    parse_approval,
    sign_approval,
    verify_approval,
)
from policies.audit import (
    AuditRecord,
    AuditReport,
    Checkpoint,
    TrustedHead,
    TrustedKey,
    next_record,
    sign_checkpoint,
    verify_log,
)
from policies.canonical import canonical_json
from policies.diff import diff_policies
from policies.document import PolicyDocument, parse_policy, timestamp_str
from policies.errors import (
    AuditFormatError,
    GovernanceError,
    PolicyError,
    QuorumNotReachedError,
    StoreError,
)
from policies.evaluator import Decision, evaluate
from policies.governance import (
    ActivatedVersion,
    FreezeOrder,
    FreezeState,
    GovernanceSignature,
    PolicyProposal,
    activate,
    active_policy,
    apply_freeze_order,
    cancel_pending,
    cancel_statement,
    count_signatures,
    deciding_version,
    freeze_order,
    freeze_quorum_for,
    pending_version,
    sign_activation,
    sign_governance,
    verify_chain,
    verify_signature,
)
from policies.intent import TransactionIntent, parse_intent
from policies.keys import OfficerSigner, Purpose
from policies.sqlite import sqlite_engine
from policies.velocity import LedgerView

DEFAULT_STORE = Path("tessera-policy.db")
STORE_ENV = "TESSERA_POLICY_STORE"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise StoreError("time", f"{moment.isoformat()} has no time zone")
    return (moment - _EPOCH) // _MICROSECOND


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _json(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


# --- tables ------------------------------------------------------------------------------------


class ProposalRow(SQLModel, table=True):
    __tablename__ = "policy_proposals"

    policy_hash: str = Field(primary_key=True)
    version: int = Field(index=True)
    previous: str | None = None
    document: str  # canonical JSON of PolicyDocument.canonical_object()
    source: str
    proposed_at_us: int


class SignatureRow(SQLModel, table=True):
    """A verified officer signature: activation or cancel (subject: policy hash) or freeze
    order (subject: order id)."""

    __tablename__ = "policy_governance_signatures"
    __table_args__ = (UniqueConstraint("purpose", "subject", "officer"),)

    id: int | None = Field(default=None, primary_key=True)
    purpose: str
    subject: str = Field(index=True)
    officer: str
    signature: str  # GovernanceSignature as canonical JSON
    signed_at_us: int


class ActivationRow(SQLModel, table=True):
    __tablename__ = "policy_activations"

    position: int = Field(primary_key=True)  # 1, 2, … in chain order
    policy_hash: str = Field(unique=True)
    activated_at_us: int
    effective_at_us: int
    loosening: str  # JSON list
    signed_by: str  # JSON list
    cancelled_at_us: int | None = None
    cancelled_by: str | None = None  # JSON list


class FreezeOrderRow(SQLModel, table=True):
    __tablename__ = "policy_freeze_orders"

    order_id: str = Field(primary_key=True)
    wallet: str = Field(index=True)
    action: str
    counter: int
    policy_hash: str
    order: str  # FreezeOrder as canonical JSON
    created_at_us: int
    applied_at_us: int | None = None
    signed_by: str | None = None  # JSON list, once applied


class RequestRow(SQLModel, table=True):
    __tablename__ = "policy_withdrawal_requests"

    request_id: str = Field(primary_key=True)
    intent: str  # canonical JSON of the intent
    intent_digest: str
    status: str  # pending | approved | rejected
    created_at_us: int
    updated_at_us: int


class ApprovalRow(SQLModel, table=True):
    __tablename__ = "policy_withdrawal_approvals"

    nonce: str = Field(primary_key=True)
    request_id: str = Field(index=True)
    officer: str
    decision: str
    approval: str  # Approval as canonical JSON
    recorded_at_us: int


class SeenNonceRow(SQLModel, table=True):
    """Nonces of approvals consumed by a finished request: never accepted again."""

    __tablename__ = "policy_seen_nonces"

    nonce: str = Field(primary_key=True)
    request_id: str
    consumed_at_us: int


class AuditRow(SQLModel, table=True):
    __tablename__ = "policy_audit_log"

    seq: int = Field(primary_key=True)
    timestamp: str
    kind: str
    payload: str  # canonical JSON
    prev_hash: str
    hash: str


_TABLES = [
    model.__table__  # type: ignore[union-attr]
    for model in (
        ProposalRow,
        SignatureRow,
        ActivationRow,
        FreezeOrderRow,
        RequestRow,
        ApprovalRow,
        SeenNonceRow,
        AuditRow,
    )
]


# --- results -----------------------------------------------------------------------------------

ProposalState = Literal["proposed", "stale", "active", "time-locked", "superseded", "cancelled"]


@dataclass(frozen=True)
class StoredProposal:
    proposal: PolicyProposal
    source: str
    proposed_at: datetime
    state: ProposalState
    signatures: tuple[GovernanceSignature, ...]

    @property
    def signed_by(self) -> tuple[str, ...]:
        return tuple(sorted({s.officer for s in self.signatures}))


@dataclass(frozen=True)
class SignResult:
    """An officer's signature recorded, and where its quorum stands."""

    signature: GovernanceSignature
    counted: tuple[str, ...]
    needed: int


@dataclass(frozen=True)
class FreezeResult:
    order: FreezeOrder
    counted: tuple[str, ...]
    needed: int
    applied: bool


@dataclass(frozen=True)
class CancelResult:
    pending: ActivatedVersion
    counted: tuple[str, ...]
    needed: int
    cancelled: bool


@dataclass(frozen=True)
class WithdrawalResult:
    approval: Approval
    decision: Decision
    status: str
    counted: tuple[str, ...]


@dataclass(frozen=True)
class StoredRequest:
    intent: TransactionIntent
    status: str
    approvals: tuple[Approval, ...]
    created_at: datetime


# --- the store ---------------------------------------------------------------------------------


class PolicyStore:
    """Operations of the officer CLI on one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = path
        if path.is_dir():
            raise StoreError(str(path), "is a directory, not a store file")
        if not path.parent.is_dir():
            raise StoreError(str(path), f"directory {path.parent} does not exist")
        try:
            self._engine: Engine = sqlite_engine(
                path, immediate=True, busy_timeout_seconds=busy_timeout_seconds
            )
            SQLModel.metadata.create_all(self._engine, tables=_TABLES)
        except SQLAlchemyError as exc:
            raise StoreError(
                str(path), f"cannot open the store ({exc.__class__.__name__})"
            ) from exc

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

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
        previous = None if last_row is None else _record(last_row)
        record = next_record(previous, kind, payload, now)
        session.add(
            AuditRow(
                seq=record.seq,
                timestamp=record.timestamp,
                kind=record.kind,
                payload=_json(record.payload),
                prev_hash=record.prev_hash,
                hash=record.hash,
            )
        )
        session.flush()
        return record

    def audit_records(self) -> list[AuditRecord]:
        with self._tx() as session:
            rows = session.exec(select(AuditRow).order_by(col(AuditRow.seq))).all()
            return [_record(row) for row in rows]

    def trusted_keys(self) -> frozenset[TrustedKey]:
        """Officer keys of every activated version: the keys whose checkpoints count."""
        with self._tx() as session:
            chain = self._chain(session)
        return frozenset(
            TrustedKey(officer.id, officer.algorithm, officer.public_key)
            for link in chain
            for officer in link.document.officers
        )

    def verify_audit(self, *, head: Checkpoint | TrustedHead | None = None) -> AuditReport:
        return verify_log(self.audit_records(), trusted_keys=self.trusted_keys(), head=head)

    def checkpoint(self, signer: OfficerSigner, *, now: datetime) -> Checkpoint:
        """Sign the newest record and append the checkpoint; keep the returned checkpoint outside
        the store to detect truncation later."""
        with self._tx() as session:
            chain = self._chain(session)
            known = {
                (o.id, o.algorithm, o.public_key) for link in chain for o in link.document.officers
            }
            if (signer.officer_id, signer.algorithm, signer.public_key_hex) not in known:
                raise StoreError(
                    f"officer {signer.officer_id!r}",
                    "this key is not an officer key of any activated policy version",
                )
            last_row = session.exec(select(AuditRow).order_by(col(AuditRow.seq).desc())).first()
            if last_row is None:
                raise StoreError("audit log", "is empty: nothing to checkpoint")
            checkpoint = sign_checkpoint(signer, _record(last_row))
            self._append(session, "checkpoint", checkpoint.model_dump(), now)
            return checkpoint

    # --- policy chain ---

    def _proposal(self, session: Session, policy_hash: str) -> PolicyProposal:
        row = session.get(ProposalRow, policy_hash)
        if row is None:
            raise StoreError(f"proposal {policy_hash}", "no such proposal in the store")
        return _proposal_of(row)

    def _signatures(
        self, session: Session, purpose: Purpose, subject: str
    ) -> tuple[GovernanceSignature, ...]:
        rows = session.exec(
            select(SignatureRow)
            .where(col(SignatureRow.purpose) == purpose.value)
            .where(col(SignatureRow.subject) == subject)
            .order_by(col(SignatureRow.id))
        ).all()
        return tuple(
            _stored_model(GovernanceSignature, row.signature, f"signature {row.id}") for row in rows
        )

    def _chain(self, session: Session) -> list[ActivatedVersion]:
        rows = session.exec(select(ActivationRow).order_by(col(ActivationRow.position))).all()
        chain = []
        for row in rows:
            subject = f"activation {row.position}"
            proposal = self._proposal(session, row.policy_hash)
            cancelled_by = (
                () if row.cancelled_by is None else tuple(_stored_json(row.cancelled_by, subject))
            )
            chain.append(
                ActivatedVersion(
                    document=proposal.document,
                    policy_hash=proposal.policy_hash,
                    signatures=self._signatures(
                        session, Purpose.POLICY_ACTIVATION, row.policy_hash
                    ),
                    signed_by=tuple(_stored_json(row.signed_by, subject)),
                    activated_at=_from_us(row.activated_at_us),
                    effective_at=_from_us(row.effective_at_us),
                    loosening=tuple(_stored_json(row.loosening, subject)),
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

    def version(self, version: int | None, *, now: datetime) -> PolicyDocument:
        """An activated version by number (None: the one in force)."""
        return self._version_of(self.chain(), version, now)

    def proposals(self, *, now: datetime) -> list[StoredProposal]:
        with self._tx() as session:
            chain = self._chain(session)
            rows = session.exec(
                select(ProposalRow).order_by(
                    col(ProposalRow.version), col(ProposalRow.proposed_at_us)
                )
            ).all()
            return [self._stored(session, row, chain, now) for row in rows]

    def _stored(
        self, session: Session, row: ProposalRow, chain: list[ActivatedVersion], now: datetime
    ) -> StoredProposal:
        proposal = _proposal_of(row)
        links = {link.policy_hash: link for link in chain}
        state: ProposalState
        link = links.get(row.policy_hash)
        if link is not None:
            if link.cancelled:
                state = "cancelled"
            elif link.effective_at > now:
                state = "time-locked"
            elif active_policy(chain, now=now).policy_hash == row.policy_hash:
                state = "active"
            else:
                state = "superseded"
        else:
            live = [c for c in chain if not c.cancelled]
            head_version = live[-1].version if live else 0
            state = "proposed" if proposal.version > head_version else "stale"
        return StoredProposal(
            proposal=proposal,
            source=row.source,
            proposed_at=_from_us(row.proposed_at_us),
            state=state,
            signatures=self._signatures(session, Purpose.POLICY_ACTIVATION, row.policy_hash),
        )

    def find_proposal(
        self, *, now: datetime, version: int | None = None, policy_hash: str | None = None
    ) -> StoredProposal:
        """A proposal by hash (or unique hash prefix), by version, or the only open one."""
        candidates = self.proposals(now=now)
        if policy_hash is not None:
            found = [c for c in candidates if c.proposal.policy_hash.startswith(policy_hash)]
            what = f"proposal {policy_hash}"
        elif version is not None:
            found = [
                c
                for c in candidates
                if c.proposal.version == version and c.state not in ("stale", "cancelled")
            ]
            what = f"proposal for version {version}"
        else:
            found = [c for c in candidates if c.state == "proposed"]
            what = "open proposal"
        if not found:
            raise StoreError(what, "not found in the store")
        if len(found) > 1:
            hashes = ", ".join(c.proposal.policy_hash[:16] for c in found)
            raise StoreError(what, f"ambiguous ({hashes}); give --hash")
        return found[0]

    def propose(self, document: PolicyDocument, *, source: str, now: datetime) -> StoredProposal:
        """Record ``document`` as a proposal extending the chain."""
        proposal = PolicyProposal.of(document)
        # The stored form must read back as the same document, or nobody could verify it.
        again = parse_policy(document.canonical_object(), source=source)
        if again.policy_hash() != proposal.policy_hash:
            raise StoreError(source, "the canonical form does not re-read to the same hash")
        with self._tx() as session:
            if session.get(ProposalRow, proposal.policy_hash) is not None:
                raise StoreError(f"proposal {proposal.policy_hash}", "already proposed")
            chain = self._chain(session)
            deciding = deciding_version(chain, proposal, now=now)
            changes: dict[str, Any] = {"lines": [], "loosening": []}
            if deciding is not None:
                diff = diff_policies(deciding, document)
                changes = {"lines": list(diff.lines), "loosening": list(diff.loosening)}
            row = ProposalRow(
                policy_hash=proposal.policy_hash,
                version=document.version,
                previous=document.previous,
                document=_json(document.canonical_object()),
                source=source,
                proposed_at_us=_us(now),
            )
            session.add(row)
            session.flush()
            self._append(
                session,
                "policy_proposed",
                {
                    "policy_hash": proposal.policy_hash,
                    "version": document.version,
                    "previous": document.previous,
                    "source": source,
                    **changes,
                },
                now,
            )
            return self._stored(session, row, chain, now)

    def sign_policy(self, signer: OfficerSigner, *, policy_hash: str, now: datetime) -> SignResult:
        """``signer``'s activation vote for a proposal, checked against the officers who decide."""
        with self._tx() as session:
            proposal = self._proposal(session, policy_hash)
            chain = self._chain(session)
            if any(link.policy_hash == policy_hash for link in chain):
                raise StoreError(f"proposal {policy_hash}", "already activated")
            deciding = deciding_version(chain, proposal, now=now)
            signers = proposal.document if deciding is None else deciding
            signature = sign_activation(signer, proposal)
            statement = proposal.statement()
            verify_signature(signers, Purpose.POLICY_ACTIVATION, statement, signature)
            self._add_signature(session, signature, policy_hash, now)
            counted, _ = count_signatures(
                signers,
                Purpose.POLICY_ACTIVATION,
                statement,
                self._signatures(session, Purpose.POLICY_ACTIVATION, policy_hash),
            )
            self._append(
                session,
                "policy_signed",
                {
                    "purpose": Purpose.POLICY_ACTIVATION.value,
                    "policy_hash": policy_hash,
                    "version": proposal.version,
                    "officer": signer.officer_id,
                    "signature": signature.signature,
                },
                now,
            )
            return SignResult(signature, counted, signers.governance.quorum)

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
                signature=_json(signature.model_dump(mode="json")),
                signed_at_us=_us(now),
            )
        )
        session.flush()

    def activate(self, *, policy_hash: str, now: datetime) -> ActivatedVersion:
        """Activate a proposal once the deciding quorum signed it."""
        with self._tx() as session:
            proposal = self._proposal(session, policy_hash)
            chain = self._chain(session)
            if any(link.policy_hash == policy_hash for link in chain):
                raise StoreError(f"proposal {policy_hash}", "already activated")
            signatures = self._signatures(session, Purpose.POLICY_ACTIVATION, policy_hash)
            link = activate(chain, proposal, signatures, now=now)
            session.add(
                ActivationRow(
                    position=len(chain) + 1,
                    policy_hash=policy_hash,
                    activated_at_us=_us(now),
                    effective_at_us=_us(link.effective_at),
                    loosening=_json(list(link.loosening)),
                    signed_by=_json(list(link.signed_by)),
                )
            )
            session.flush()
            self._append(
                session,
                "policy_activated",
                {
                    "policy_hash": policy_hash,
                    "version": link.version,
                    "previous": link.document.previous,
                    "signed_by": list(link.signed_by),
                    "effective_at": timestamp_str(link.effective_at),
                    "loosening": list(link.loosening),
                },
                now,
            )
            return link

    def sign_cancel(self, signer: OfficerSigner, *, now: datetime) -> CancelResult:
        """``signer``'s vote to cancel the time-locked version; cancels it at freeze quorum."""
        with self._tx() as session:
            chain = self._chain(session)
            pending = pending_version(chain, now=now)
            if pending is None:
                raise StoreError("policy chain", "no time-locked version is pending")
            in_force = active_policy(chain, now=now).document
            statement = cancel_statement(pending)
            signature = sign_governance(signer, Purpose.POLICY_CANCEL, statement)
            verify_signature(in_force, Purpose.POLICY_CANCEL, statement, signature)
            self._add_signature(session, signature, pending.policy_hash, now)
            signatures = self._signatures(session, Purpose.POLICY_CANCEL, pending.policy_hash)
            needed = in_force.governance.freeze_quorum
            counted, _ = count_signatures(in_force, Purpose.POLICY_CANCEL, statement, signatures)
            payload = {
                "purpose": Purpose.POLICY_CANCEL.value,
                "policy_hash": pending.policy_hash,
                "version": pending.version,
                "officer": signer.officer_id,
                "signature": signature.signature,
            }
            self._append(session, "policy_signed", payload, now)
            if len(counted) < needed:
                return CancelResult(pending, counted, needed, cancelled=False)
            cancelled = cancel_pending(chain, signatures, now=now)
            row = session.exec(
                select(ActivationRow).where(col(ActivationRow.policy_hash) == pending.policy_hash)
            ).one()
            row.cancelled_at_us = _us(now)
            row.cancelled_by = _json(list(cancelled.cancelled_by))
            session.add(row)
            session.flush()
            self._append(
                session,
                "policy_cancelled",
                {
                    "policy_hash": pending.policy_hash,
                    "version": pending.version,
                    "cancelled_by": list(cancelled.cancelled_by),
                },
                now,
            )
            return CancelResult(cancelled, counted, needed, cancelled=True)

    # --- freezes ---

    def _freeze_state(self, session: Session, chain: Sequence[ActivatedVersion]) -> FreezeState:
        documents = {link.policy_hash: link.document for link in chain}
        rows = session.exec(
            select(FreezeOrderRow)
            .where(col(FreezeOrderRow.applied_at_us).is_not(None))
            .order_by(col(FreezeOrderRow.applied_at_us), col(FreezeOrderRow.counter))
        ).all()
        state = FreezeState()
        for row in rows:
            order = _stored_model(FreezeOrder, row.order, f"freeze order {row.order_id}")
            policy = documents.get(order.policy_hash)
            if policy is None:
                raise StoreError(f"freeze order {row.order_id}", "names an unknown policy version")
            signatures = self._signatures(session, order.purpose, row.order_id)
            try:
                state, _ = apply_freeze_order(state, policy, order, signatures)
            except PolicyError as exc:
                raise StoreError(
                    f"freeze order {row.order_id}", f"stored order does not verify: {exc}"
                ) from exc
        return state

    def freeze_state(self) -> FreezeState:
        with self._tx() as session:
            return self._freeze_state(session, self._chain(session))

    def open_freeze_orders(self) -> list[tuple[FreezeOrder, tuple[str, ...]]]:
        """Orders still collecting signatures, with who signed so far."""
        with self._tx() as session:
            rows = session.exec(
                select(FreezeOrderRow)
                .where(col(FreezeOrderRow.applied_at_us).is_(None))
                .order_by(col(FreezeOrderRow.created_at_us))
            ).all()
            out = []
            for row in rows:
                order = _stored_model(FreezeOrder, row.order, f"freeze order {row.order_id}")
                officers = tuple(
                    s.officer for s in self._signatures(session, order.purpose, row.order_id)
                )
                out.append((order, officers))
            return out

    def sign_freeze(
        self,
        signer: OfficerSigner,
        action: Literal["freeze", "unfreeze"],
        wallet: str,
        *,
        reason: str | None,
        now: datetime,
    ) -> FreezeResult:
        """``signer``'s signature on the wallet's next freeze/unfreeze order; the order applies
        at once when its quorum is reached (freeze_quorum to freeze, quorum to unfreeze)."""
        with self._tx() as session:
            chain = self._chain(session)
            policy = active_policy(chain, now=now).document
            state = self._freeze_state(session, chain)
            order = freeze_order(state, policy, action, wallet, reason)
            open_row = session.exec(
                select(FreezeOrderRow)
                .where(col(FreezeOrderRow.wallet) == wallet)
                .where(col(FreezeOrderRow.action) == action)
                .where(col(FreezeOrderRow.counter) == order.counter)
                .where(col(FreezeOrderRow.policy_hash) == order.policy_hash)
                .where(col(FreezeOrderRow.applied_at_us).is_(None))
            ).first()
            if open_row is not None:
                order = _stored_model(
                    FreezeOrder, open_row.order, f"freeze order {open_row.order_id}"
                )  # join it
            else:
                open_row = FreezeOrderRow(
                    order_id=order.order_id(),
                    wallet=wallet,
                    action=action,
                    counter=order.counter,
                    policy_hash=order.policy_hash,
                    order=_json(order.statement()),
                    created_at_us=_us(now),
                )
                session.add(open_row)
                session.flush()
            signature = sign_governance(signer, order.purpose, order.statement())
            verify_signature(policy, order.purpose, order.statement(), signature)
            self._add_signature(session, signature, open_row.order_id, now)
            signatures = self._signatures(session, order.purpose, open_row.order_id)
            needed = freeze_quorum_for(policy, order)
            try:
                _state, counted = apply_freeze_order(state, policy, order, signatures)
            except QuorumNotReachedError as exc:
                self._append(
                    session,
                    "freeze_signed",
                    {
                        **order.statement(),
                        "officer": signer.officer_id,
                        "counted": list(exc.counted),
                        "needed": needed,
                    },
                    now,
                )
                return FreezeResult(order, exc.counted, needed, applied=False)
            open_row.applied_at_us = _us(now)
            open_row.signed_by = _json(list(counted))
            session.add(open_row)
            session.flush()
            self._append(session, action, {**order.statement(), "signed_by": list(counted)}, now)
            return FreezeResult(order, counted, needed, applied=True)

    # --- withdrawals ---

    def _request_approvals(self, session: Session, request_id: str) -> tuple[Approval, ...]:
        rows = session.exec(
            select(ApprovalRow)
            .where(col(ApprovalRow.request_id) == request_id)
            .order_by(col(ApprovalRow.recorded_at_us), col(ApprovalRow.nonce))
        ).all()
        return tuple(
            parse_approval(
                _stored_json(row.approval, f"approval {row.nonce}"), f"stored {row.nonce}"
            )
            for row in rows
        )

    def _seen_nonces(self, session: Session) -> frozenset[str]:
        return frozenset(session.exec(select(SeenNonceRow.nonce)).all())

    def simulate(
        self,
        intent: TransactionIntent,
        *,
        now: datetime,
        version: int | None = None,
        ledger: LedgerView | None = None,
    ) -> Decision:
        """Evaluate ``intent`` as a node would, with the approvals already recorded for it."""
        with self._tx() as session:
            chain = self._chain(session)
            policy = self._version_of(chain, version, now)
            frozen = self._freeze_state(session, chain).frozen_wallets()
            row = session.get(RequestRow, intent.request_id)
            approvals: frozenset[str] = frozenset()
            if row is not None and row.intent_digest == intent.digest().hex():
                approvals = check_approvals(
                    policy,
                    intent,
                    self._request_approvals(session, intent.request_id),
                    now=now,
                    seen_nonces=self._seen_nonces(session),
                ).accepted
        view = ledger if ledger is not None else LedgerView.empty(now)
        return evaluate(
            policy, intent, approvals=approvals, ledger=view, now=now, frozen_wallets=frozen
        )

    @staticmethod
    def _version_of(
        chain: Sequence[ActivatedVersion], version: int | None, now: datetime
    ) -> PolicyDocument:
        if version is None:
            return active_policy(chain, now=now).document
        for link in reversed(chain):
            if link.version == version and not link.cancelled:
                return link.document
        raise StoreError(f"policy version {version}", "no such activated version in the store")

    def decide_withdrawal(
        self,
        signer: OfficerSigner,
        intent: TransactionIntent,
        *,
        decision: Literal["approve", "reject"],
        now: datetime,
        lifetime: timedelta = DEFAULT_APPROVAL_LIFETIME,
        reason: str | None = None,
        ledger: LedgerView | None = None,
    ) -> WithdrawalResult:
        """Sign and record ``signer``'s approval or rejection of ``intent`` under the policy in
        force, then evaluate the request with every approval that counts."""
        view = ledger if ledger is not None else LedgerView.empty(now)
        with self._tx() as session:
            chain = self._chain(session)
            policy = active_policy(chain, now=now).document
            row = session.get(RequestRow, intent.request_id)
            digest = intent.digest().hex()
            subject = f"request {intent.request_id!r}"
            if row is not None:
                if row.intent_digest != digest:
                    raise StoreError(
                        subject,
                        "already registered with a different transaction (intent digest "
                        f"{row.intent_digest[:16]}…, this file {digest[:16]}…)",
                    )
                if row.status != "pending":
                    raise StoreError(subject, f"is already {row.status}")
            seen = self._seen_nonces(session)
            earlier = self._request_approvals(session, intent.request_id)
            before = check_approvals(policy, intent, earlier, now=now, seen_nonces=seen)
            if signer.officer_id in before.accepted | before.rejected_by:
                raise StoreError(f"officer {signer.officer_id!r}", f"already decided on {subject}")
            approval = sign_approval(
                signer,
                intent,
                policy,
                now=now,
                lifetime=lifetime,
                decision=decision,
                reason=reason,
            )
            # The same check a node makes: a self-approval or a non-officer fails here.
            verify_approval(policy, intent, approval, now=now, seen_nonces=seen)
            accepted = before.accepted | ({signer.officer_id} if decision == "approve" else set())
            frozen = self._freeze_state(session, chain).frozen_wallets()
            result = evaluate(
                policy,
                intent,
                approvals=frozenset(accepted),
                ledger=view,
                now=now,
                frozen_wallets=frozen,
            )
            if decision == "approve" and result.outcome in ("BLOCK", "DENY"):
                raise StoreError(
                    subject,
                    f"the policy refuses it ({result.outcome}: {result.explanation[-1]}); "
                    "an approval cannot change that, nothing recorded",
                )
            if decision == "reject":
                status = "rejected"
            else:
                status = "approved" if result.outcome == "ALLOW" else "pending"
            if row is None:
                row = RequestRow(
                    request_id=intent.request_id,
                    intent=_json(intent.model_dump(mode="json")),
                    intent_digest=digest,
                    status=status,
                    created_at_us=_us(now),
                    updated_at_us=_us(now),
                )
                self._append(
                    session,
                    "withdrawal_requested",
                    {
                        "request_id": intent.request_id,
                        "intent_digest": digest,
                        "intent": intent.canonical_object(),
                        "policy_hash": policy.policy_hash(),
                    },
                    now,
                )
            row.status = status
            row.updated_at_us = _us(now)
            session.add(row)
            session.add(
                ApprovalRow(
                    nonce=approval.nonce,
                    request_id=intent.request_id,
                    officer=approval.officer,
                    decision=approval.decision,
                    approval=_json(approval.to_json_object()),
                    recorded_at_us=_us(now),
                )
            )
            if status != "pending":
                # Finished: every approval nonce of the request is spent.
                for used in (*earlier, approval):
                    if session.get(SeenNonceRow, used.nonce) is None:
                        session.add(
                            SeenNonceRow(
                                nonce=used.nonce,
                                request_id=intent.request_id,
                                consumed_at_us=_us(now),
                            )
                        )
            session.flush()
            self._append(
                session,
                "approval" if decision == "approve" else "rejection",
                {
                    "request_id": intent.request_id,
                    "policy_hash": policy.policy_hash(),
                    "officer": approval.officer,
                    "approval": approval.to_json_object(),
                },
                now,
            )
            self._append(session, "decision", result.to_record(), now)
            counted = tuple(sorted(accepted))
            return WithdrawalResult(approval, result, status, counted)

    def requests(self) -> list[StoredRequest]:
        with self._tx() as session:
            rows = session.exec(select(RequestRow).order_by(col(RequestRow.created_at_us))).all()
            return [
                StoredRequest(
                    intent=parse_intent(
                        _stored_json(row.intent, f"request {row.request_id}"),
                        f"stored {row.request_id}",
                    ),
                    status=row.status,
                    approvals=self._request_approvals(session, row.request_id),
                    created_at=_from_us(row.created_at_us),
                )
                for row in rows
            ]


_Model = TypeVar("_Model", bound=BaseModel)


def _stored_json(text: str, subject: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreError(subject, f"stored JSON is corrupt ({exc})") from exc


def _stored_model(model: type[_Model], text: str, subject: str) -> _Model:
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise StoreError(subject, f"stored record is invalid ({exc.errors()[0]['msg']})") from exc


def _proposal_of(row: ProposalRow) -> PolicyProposal:
    try:
        document = parse_policy(
            _stored_json(row.document, f"proposal {row.policy_hash}"),
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


def _record(row: AuditRow) -> AuditRecord:
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
