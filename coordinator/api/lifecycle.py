"""A withdrawal's status lifecycle (docs/api.md, "Lifecycle"): the statuses, which are
terminal, and the transitions allowed.  Statuses only move forward — each has a rank and a
transition goes to a higher one — so an exchange's ledger can be driven by the events alone.

    SUBMITTED → SCREENING → PENDING_APPROVAL → QUEUED → SIGNING → BROADCASTING → CONFIRMING
                                                                                   → COMPLETED
    terminal: COMPLETED, REJECTED (policy, screening, the nodes), CANCELLED, FAILED

PENDING_APPROVAL is skipped when the policy asks for no approval.  CANCELLED is reached by a
client's cancel before signing, or on chain (a cancellation mined instead of the payout).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Status(StrEnum):
    SUBMITTED = "SUBMITTED"
    SCREENING = "SCREENING"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    QUEUED = "QUEUED"
    SIGNING = "SIGNING"
    BROADCASTING = "BROADCASTING"
    CONFIRMING = "CONFIRMING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


TERMINAL: Final = frozenset({Status.COMPLETED, Status.REJECTED, Status.CANCELLED, Status.FAILED})
#: A client may cancel until the withdrawal is handed to the nodes for signing.
CANCELLABLE: Final = frozenset(
    {Status.SUBMITTED, Status.SCREENING, Status.PENDING_APPROVAL, Status.QUEUED}
)
_ORDER: Final = (
    Status.SUBMITTED,
    Status.SCREENING,
    Status.PENDING_APPROVAL,
    Status.QUEUED,
    Status.SIGNING,
    Status.BROADCASTING,
    Status.CONFIRMING,
)
RANK: Final = {status: rank for rank, status in enumerate(_ORDER)} | {
    status: len(_ORDER) for status in TERMINAL
}
#: Where each status may go.  Terminal statuses go nowhere; REJECTED only from a status where
#: a decision is taken (screening, approval, the nodes' signing); FAILED from any live status
#: (a chain refusal, a revert); CANCELLED by the client before signing, or on chain after.
NEXT: Final[dict[Status, frozenset[Status]]] = {
    Status.SUBMITTED: frozenset({Status.SCREENING, Status.CANCELLED, Status.FAILED}),
    Status.SCREENING: frozenset(
        {Status.PENDING_APPROVAL, Status.QUEUED, Status.REJECTED, Status.CANCELLED, Status.FAILED}
    ),
    Status.PENDING_APPROVAL: frozenset(
        {Status.QUEUED, Status.REJECTED, Status.CANCELLED, Status.FAILED}
    ),
    Status.QUEUED: frozenset({Status.SIGNING, Status.CANCELLED, Status.FAILED}),
    Status.SIGNING: frozenset(
        {Status.BROADCASTING, Status.REJECTED, Status.FAILED, Status.CANCELLED}
    ),
    Status.BROADCASTING: frozenset(
        {Status.CONFIRMING, Status.COMPLETED, Status.FAILED, Status.CANCELLED}
    ),
    Status.CONFIRMING: frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.REJECTED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.FAILED: frozenset(),
}


def allowed(old: Status, new: Status) -> bool:
    """Whether `old` → `new` is a transition of the lifecycle (always forward in rank)."""
    return new in NEXT[old] and RANK[new] > RANK[old]


class SubStatus(StrEnum):
    """The machine-readable detail of a status, what an exchange alerts on."""

    RECEIVED = "received"
    SCREENING_POLICY = "screening_policy"
    SCREENING_EXTERNAL = "screening_external"  # asking the external screen (persisted first)
    SCREENING_DEFERRED = "screening_deferred"  # the external screen deferred: asked again later
    AWAITING_APPROVALS = "awaiting_approvals"
    READY = "ready"
    SIGNING_BY_NODES = "signing_by_nodes"
    RETRYING = "retrying"  # a transient failure (a node or the chain away): tried again
    SENDING = "sending"
    AWAITING_CONFIRMATIONS = "awaiting_confirmations"
    CONFIRMED = "confirmed"
    SCREENING_DENIED = "screening_denied"
    POLICY_DENIED = "policy_denied"
    NODES_REFUSED = "nodes_refused"
    CANCELLED_BY_CLIENT = "cancelled_by_client"
    CANCELLED_ON_CHAIN = "cancelled_on_chain"
    CHAIN_FAILED = "chain_failed"
