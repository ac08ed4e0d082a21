"""The signer API's tables, in the coordinator's own database (migration coordinator_0008):
API clients and their keys, the nonces of signed requests, withdrawals with their lifecycle
events, and `Idempotency-Key` records."""

from __future__ import annotations

from sqlalchemy import UniqueConstraint
from sqlmodel import Field

from coordinator.store import _CoordinatorTable


class ApiClientRow(_CoordinatorTable, table=True):
    """One integrating service (the exchange's withdrawal service, an officer's desk)."""

    __tablename__ = "api_clients"
    client_id: str = Field(primary_key=True)
    name: str = Field(unique=True)
    scopes: str  # JSON list of coordinator.api.auth.Scope values
    rate_per_minute: int
    created_at: float
    revoked_at: float | None = None


class ApiKeyRow(_CoordinatorTable, table=True):
    """An Ed25519 public key a client signs its requests with; at most two are active per
    client (rotation), a revoked one never verifies again."""

    __tablename__ = "api_keys"
    key_id: str = Field(primary_key=True)
    client_id: str = Field(index=True)
    public_key: bytes  # 32 bytes, raw Ed25519
    created_at: float
    revoked_at: float | None = None


class ApiNonceRow(_CoordinatorTable, table=True):
    """A request nonce seen under a key, kept past the timestamp window so a replay inside it
    is refused."""

    __tablename__ = "api_nonces"
    key_id: str = Field(primary_key=True)
    nonce: str = Field(primary_key=True)
    seen_at: float = Field(index=True)


class WithdrawalRow(_CoordinatorTable, table=True):
    """A withdrawal asked for over the API; its payout (coordinator/payouts.py) has the same
    id.  `client_request_id` is unique forever per client."""

    __tablename__ = "withdrawals"
    __table_args__ = (
        UniqueConstraint("client_id", "client_request_id", name="uq_withdrawals_client_request"),
    )
    withdrawal_id: str = Field(primary_key=True)
    client_id: str = Field(index=True)
    client_request_id: str
    request_hash: str  # SHA-256 of the canonical request: a replay must match it
    wallet: str = Field(index=True)
    chain_id: int
    asset: str = Field(index=True)
    destination: str = Field(index=True)
    amount: str
    fee_level: str
    note: str
    status: str = Field(index=True)  # coordinator.api.lifecycle.Status
    sub_status: str
    reason_code: str | None = None
    reason: str | None = None
    rule_id: str | None = None
    policy_hash: str | None = None
    tx_hash: str | None = Field(default=None, index=True)
    approvals: str = "[]"  # JSON list of signed officer approvals (policies.approvals)
    created_at: float = Field(index=True)
    updated_at: float


class WithdrawalEventRow(_CoordinatorTable, table=True):
    """One transition of a withdrawal: the audit record of it, and the event webhooks carry.
    `event_id` grows with every event of the service."""

    __tablename__ = "withdrawal_events"
    event_id: int | None = Field(default=None, primary_key=True)
    withdrawal_id: str = Field(index=True)
    status: str
    sub_status: str
    detail: str  # JSON object
    created_at: float


class IdempotencyRow(_CoordinatorTable, table=True):
    """A response kept for an `Idempotency-Key` (at least 24 h): the same key with the same
    body gets it again, with another body a 409."""

    __tablename__ = "api_idempotency"
    client_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    request_hash: str
    status_code: int
    response: str
    created_at: float = Field(index=True)


class WebhookEndpointRow(_CoordinatorTable, table=True):
    """A receiver of withdrawal events; `sequence` is the last sequence number given to one of
    its deliveries (each endpoint numbers its own, with no gap)."""

    __tablename__ = "webhook_endpoints"
    endpoint_id: str = Field(primary_key=True)
    url: str
    created_at: float
    sequence: int = 0
    disabled_at: float | None = None


class WebhookDeliveryRow(_CoordinatorTable, table=True):
    """One event to one endpoint: pending until a 2xx (delivered), retried with exponential
    back-off, dead after the last attempt (resent on request)."""

    __tablename__ = "webhook_deliveries"
    endpoint_id: str = Field(primary_key=True)
    sequence: int = Field(primary_key=True)
    event_id: int = Field(index=True)
    state: str = Field(index=True)  # pending | delivered | dead
    attempts: int = 0
    next_attempt_at: float = Field(index=True)
    last_error: str | None = None
    delivered_at: float | None = None
