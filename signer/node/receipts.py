"""Velocity receipts: how t signers of an n-node committee enforce a limit none of them sees whole.

Each signature involves only t nodes.  If every node counted only what it signed itself, a
coordinator spreading requests over different signer sets would get up to (n/t)·L through a
limit L.  So before a node releases a partial for a velocity-limited intent it requires receipts
from q committee nodes, itself included: each receipt is one node's statement, signed with its
identity key, that it durably reserved the amount under the request id in its own ledger
(`policies.velocity.VelocityLedger`) and that its own window totals stay within the limits.
The coordinator relays receipts but cannot forge one, and an honest node never issues two
reservations for one request id.

With f compromised nodes, every signed request is reserved by at least q − f honest nodes, and
each honest node's reservations stay within L per window, so the amount signed in one window is
at most (n − f)/(q − f) · L (docs/policies.md, "Enforcement in the nodes").  q = n (the
default) gives exactly L with no compromised node.

A receipt binds the cluster, the request id, the intent digest (so the destination and chain
too), the wallet, asset and amount, the policy version and the limits it was checked against.
A reservation stays until its longest window has passed even when the request fails (fail
safe): a failed request can never hand its budget to a later one within the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hsm.identity import verify_identity
from policies.canonical import canonical_json
from policies.document import VelocityLimit, amount_str
from policies.intent import TransactionIntent
from signer.node.api import VelocityReceipt
from signer.node.envelope import Endpoint, EnvelopeRejected, Roster

RECEIPT_DOMAIN = "tessera.velocity-receipt/1"


def receipt_quorum(limits: Sequence[VelocityLimit], committee: int, threshold: int) -> int:
    """Receipts a signer needs: the largest `receipt_quorum` the applicable limits ask for, each
    defaulting to the whole committee; never fewer than the signing threshold t (so q − f ≥
    t − f ≥ 1 and the bound holds for any f < t) and never more than the committee."""
    asked = [limit.receipt_quorum or committee for limit in limits]
    return max(threshold, min(committee, max(asked, default=committee)))


def statement(receipt: VelocityReceipt) -> bytes:
    """The bytes a receipt's signature covers: every member but the signature, domain-tagged."""
    body: dict[str, Any] = receipt.model_dump(mode="json", exclude={"signature"})
    body["domain"] = RECEIPT_DOMAIN
    return canonical_json(body)


def issue(
    endpoint: Endpoint,
    intent: TransactionIntent,
    *,
    policy_hash: str,
    limits: Sequence[VelocityLimit],
) -> VelocityReceipt:
    """This node's signed receipt for a reservation it has already made durable."""
    draft = VelocityReceipt(
        node=endpoint.me,
        cluster=endpoint.roster.cluster_id.hex(),
        request_id=intent.request_id,
        intent_digest=intent.digest_hex(),
        wallet=intent.wallet,
        asset=intent.asset,
        amount=amount_str(intent.amount),
        policy_hash=policy_hash,
        limits=sorted(limit.id for limit in limits),
        window_seconds=max((limit.window_seconds for limit in limits), default=0),
        signature="00" * 64,
    )
    signature = endpoint.signer.sign_identity(statement(draft))
    return draft.model_copy(update={"signature": signature.hex()})


def problem_of(
    receipt: VelocityReceipt,
    roster: Roster,
    committee: Iterable[int],
    intent: TransactionIntent,
    *,
    policy_hash: str,
    limits: Sequence[VelocityLimit],
) -> str | None:
    """Why `receipt` does not count for `intent` (None: it counts)."""
    who = f"receipt of node {receipt.node}"
    if receipt.node not in set(committee):
        return f"{who}: not a member of the key's committee"
    if receipt.cluster != roster.cluster_id.hex():
        return f"{who}: made in another cluster"
    expected = {
        "request_id": intent.request_id,
        "intent_digest": intent.digest_hex(),
        "wallet": intent.wallet,
        "asset": intent.asset,
        "amount": amount_str(intent.amount),
        "policy_hash": policy_hash,
        "limits": sorted(limit.id for limit in limits),
    }
    differing = [name for name, value in expected.items() if getattr(receipt, name) != value]
    if differing:
        return f"{who}: bound to another {', '.join(differing)}"
    try:
        card = roster.card(receipt.node)
    except EnvelopeRejected:
        return f"{who}: no pinned node has this index"
    if not verify_identity(card.identity, statement(receipt), bytes.fromhex(receipt.signature)):
        return f"{who}: the signature does not verify under the node's pinned identity key"
    return None


def count(
    receipts: Iterable[VelocityReceipt],
    roster: Roster,
    committee: Sequence[int],
    intent: TransactionIntent,
    *,
    policy_hash: str,
    limits: Sequence[VelocityLimit],
) -> tuple[frozenset[int], tuple[str, ...]]:
    """The distinct committee nodes whose receipts count, and why each other one does not."""
    counted: set[int] = set()
    problems: list[str] = []
    for receipt in receipts:
        why = problem_of(receipt, roster, committee, intent, policy_hash=policy_hash, limits=limits)
        if why is None:
            counted.add(receipt.node)
        else:
            problems.append(why)
    return frozenset(counted), tuple(problems)
