"""The rows of what a node enforces (docs/policies.md, "Enforcement in the nodes"), in the node's
own database next to its shares — so a presignature's consumption and the request, approvals and
audit record that allowed it are written in one transaction.

* `PolicyVersionRow` — the policy chain as *this* node accepted it: each version with the officer
  signatures that activated it, the node's own clock at acceptance (`activated_at`) and the end of
  its loosening time lock (`effective_at`); a cancelled pending version keeps its row.
* `FreezeOrderRow` — every freeze and unfreeze order applied, by (wallet, counter).
* `KeyBindingRow` — the policy wallet a key was created for (None: a raw key), bound for good.
* `SignedRequestRow` — each request id this node signed for, with the transaction it signed:
  a request id never signs a second transaction (no doubled payout through one approval).
* `UsedApprovalRow` — every officer approval (by nonce) this node counted, and for which request.
* `AuditRecordRow` — the node's hash-chained audit log (`policies.audit` records).

JSON columns hold canonical JSON (`policies.canonical`); times are UNIX seconds (float) of the
node's clock, except audit timestamps, which are the records' own RFC 3339 text.
"""

from __future__ import annotations

from sqlmodel import Field

from signer.node.tables import NodeTable


class PolicyVersionRow(NodeTable, table=True):
    __tablename__ = "policy_versions"
    # The link's place in the chain: a cancelled version keeps its row, and the next version
    # the officers activate takes the same version number (policies.governance).
    position: int = Field(primary_key=True)
    version: int
    policy_hash: str = Field(unique=True)
    document: str  # canonical JSON of the PolicyDocument
    signatures: str  # JSON list of GovernanceSignature objects that activated it
    signed_by: str  # JSON list of the officers counted
    # Microseconds since the UNIX epoch (integers: the chain is re-verified from these on every
    # start, and a float's rounding could move the end of a time lock by a microsecond).
    activated_at_us: int  # this node's clock when it accepted the quorum
    effective_at_us: int  # activated_at_us, or the end of the loosening time lock
    loosening: str  # JSON list of the loosening changes (policies.diff)
    cancel_signatures: str = "[]"  # JSON list: freeze-quorum signatures that cancelled it
    cancelled_by: str = "[]"  # JSON list of officers; non-empty: the version never took effect


class FreezeOrderRow(NodeTable, table=True):
    __tablename__ = "freeze_orders"
    wallet: str = Field(primary_key=True)
    counter: int = Field(primary_key=True)  # the wallet's order number (FreezeOrder.counter)
    action: str  # freeze | unfreeze
    policy_hash: str  # the version whose officers signed it
    order_json: str  # canonical JSON of the FreezeOrder
    signatures: str  # JSON list of GovernanceSignature objects
    signed_by: str  # JSON list of officers
    applied_at: float


class KeyBindingRow(NodeTable, table=True):
    __tablename__ = "key_bindings"
    key_id: str = Field(primary_key=True)  # hex
    wallet: str | None = Field(default=None, unique=True)  # None: a raw key (--raw-keys nodes)
    policy_hash: str | None = None  # the version in force when the wallet's DKG started
    bound_at: float


class SignedRequestRow(NodeTable, table=True):
    __tablename__ = "signed_requests"
    request_id: str = Field(primary_key=True)
    intent_digest: str  # hex TransactionIntent.digest()
    payload_hash: str  # hex SHA-256 of the unsigned transaction signed
    key_id: str
    signed_at: float
    # the unsigned transaction last signed for the request (a replacement is compared with it;
    # NULL for requests signed before node_0003)
    payload: bytes | None = None
    # the sending address it was signed from (EIP-55; a replacement or cancellation must be from
    # the same one; NULL for requests signed before node_0004)
    sender: str | None = None


class UsedApprovalRow(NodeTable, table=True):
    __tablename__ = "approvals_used"
    nonce: str = Field(primary_key=True)  # the approval's 16-byte nonce, hex
    officer: str
    request_id: str = Field(index=True)
    used_at: float


class AuditRecordRow(NodeTable, table=True):
    __tablename__ = "audit_log"
    seq: int = Field(primary_key=True)
    timestamp: str  # RFC 3339 UTC with microseconds (policies.audit.format_timestamp)
    kind: str
    payload: str  # canonical JSON
    prev_hash: str
    hash: str
