"""The rows of the local policy store (`policies.store`): one SQLModel table per kind of record.

Timestamps are integer microseconds since the Unix epoch (`*_us`), documents and signatures are
canonical JSON text, so a row re-reads to exactly what was hashed and signed.  `TABLES` lists
them for the schema set-up of `PolicyStore`.
"""

from __future__ import annotations

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


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


TABLES = [
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
