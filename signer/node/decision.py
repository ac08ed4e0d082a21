"""The one policy decision every wallet signature goes through on this node.

`PolicyGate.decide` runs for `POST /v1/sign` (one round from a presignature: the only code path
that produces a partial signature, whether the coordinator took the presignature from its pool
or ran a fresh presign interactively for this request) and for `POST /v1/receipts`.  In order,
each step refusing with its own code (docs/errors.md):

1. the key is bound to a wallet of the policy (`KeyBindingRow`, written with the key at its DKG);
   a raw key never signs a transaction, a wallet key never signs raw bytes (RAW_SIGNING_REFUSED);
2. a policy version is in force on this node (NO_GENESIS, NO_POLICY; signer/node/governance.py);
3. the node decodes the unsigned transaction itself (`signer.chains`: TRANSACTION_INVALID,
   UNSUPPORTED_TRANSACTION) and builds the `TransactionIntent` from it, the key's wallet and
   the request id and initiator that travel with the request; its price per gas is at most the
   policy's ceiling on its chain (FEE_ABOVE_CEILING, signer/chains/fees.py);
4. what the coordinator claims the request is must be exactly that intent (INTENT_MISMATCH;
   SENDER_MISMATCH when it claims another wallet);
5. every officer approval is checked by the node itself (`policies.approvals`: signature by an
   officer of this version, bound to this request, intent digest and policy hash, inside its
   validity window, nonce never used by this node for another request); a bad one is never
   counted and never fatal;
6. `policies.evaluator.evaluate` on this node's active version, freeze state and velocity
   ledger; anything but ALLOW is POLICY_DENIED naming the rule, the reason and the policy hash;
7. a request id that already signed another transaction is REQUEST_REUSED (one approval, one
   payout).

Signing then adds the receipt quorum and the sender check (signer/node/signing.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, select

from policies.approvals import Approval, ApprovalCheck, check_approvals, parse_approval
from policies.document import VelocityLimit
from policies.errors import IntentSchemaError, PolicyError
from policies.evaluator import Decision, evaluate
from policies.governance import ActivatedVersion
from policies.intent import TransactionIntent, parse_intent
from policies.velocity import LedgerView, VelocityLedger
from signer.chains.errors import TransactionRefused
from signer.chains.fees import check_fee_ceiling
from signer.chains.intent import DecodedTransaction, compare_claim, intent_of
from signer.node.api import TransactionRequest
from signer.node.errors import NodeError
from signer.node.governance import NodeGovernance, utc_now
from signer.node.policy_tables import KeyBindingRow, UsedApprovalRow
from signer.node.store import NodeStore
from signer.problems import ErrorCode


@dataclass(frozen=True)
class Decided:
    """A request this node's policy allows, with everything the signing step records."""

    link: ActivatedVersion
    decoded: DecodedTransaction
    decision: Decision
    approvals: ApprovalCheck
    limits: tuple[VelocityLimit, ...]
    now: datetime

    @property
    def policy_hash(self) -> str:
        return self.link.policy_hash


class PolicyGate:
    """Decides wallet requests for one node (see the module docstring)."""

    def __init__(
        self,
        store: NodeStore,
        governance: NodeGovernance,
        ledger: VelocityLedger,
        *,
        raw_keys: bool,
        clock: Callable[[], datetime] = utc_now,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.store = store
        self.governance = governance
        self.ledger = ledger
        self.raw_keys = raw_keys
        self.clock = clock
        self.observe = observe  # told how long each decision took (the node's metrics)
        self._bindings: dict[str, KeyBindingRow] = {}

    # --- keys and their wallets -----------------------------------------------------------------
    def binding(self, key_id: str) -> KeyBindingRow | None:
        # A binding is written once, with the key, and never changes: kept in memory once read.
        cached = self._bindings.get(key_id)
        if cached is not None:
            return cached
        with self.store.session() as session:
            row = session.get(KeyBindingRow, key_id)
        if row is not None:
            self._bindings[key_id] = row
        return row

    def require_raw(self, key_id: str) -> None:
        """Raw bytes are signed only with a raw key on a node made with `--raw-keys`."""
        binding = self.binding(key_id)
        if not self.raw_keys or binding is None or binding.wallet is not None:
            what = "is bound to a policy wallet" if binding and binding.wallet else "is no raw key"
            raise NodeError(
                ErrorCode.RAW_SIGNING_REFUSED,
                f"key {key_id[:16]} {what}: it signs decoded transactions only",
                check="raw_key",
            )

    def wallet_of(self, key_id: str) -> str:
        binding = self.binding(key_id)
        if binding is None:
            raise NodeError(
                ErrorCode.UNKNOWN_KEY, f"key {key_id[:16]} is not bound here", check="wallet"
            )
        if binding.wallet is None:
            raise NodeError(
                ErrorCode.POLICY_DENIED,
                f"key {key_id[:16]} is a raw key: it belongs to no wallet of the policy",
                check="wallet",
            )
        return binding.wallet

    # --- the decision ---------------------------------------------------------------------------
    def decide(self, request: TransactionRequest, action: str = "sign") -> Decided:
        started = time.perf_counter()
        try:
            return self._decide(request)
        finally:
            if self.observe is not None:
                self.observe(action, time.perf_counter() - started)

    def _decide(self, request: TransactionRequest) -> Decided:
        now = self.clock()
        wallet = self.wallet_of(request.key_id)
        link = self.governance.require_policy(now)
        policy = link.document
        try:
            decoded = intent_of(
                bytes.fromhex(request.transaction),
                policy,
                wallet=wallet,
                request_id=request.request_id,
                initiator=request.initiator,
            )
            check_fee_ceiling(decoded.transfer, policy)
            claimed = self._claimed(request)
            if claimed.wallet != wallet:
                raise NodeError(
                    ErrorCode.SENDER_MISMATCH,
                    f"the request claims wallet {claimed.wallet!r}; key {request.key_id[:16]} "
                    f"belongs to wallet {wallet!r}",
                    check="wallet",
                    policy_hash=link.policy_hash,
                )
            compare_claim(decoded.intent, claimed)
        except TransactionRefused as exc:
            raise NodeError(
                exc.code, exc.detail, check=exc.check, policy_hash=link.policy_hash
            ) from exc
        intent = decoded.intent
        approvals = check_approvals(
            policy,
            intent,
            self._approvals(request.approvals),
            now=now,
            seen_nonces=self._used_elsewhere(request.approvals, intent.request_id),
        )
        limits = policy.limits_for(wallet, intent.asset)
        # Velocity is not evaluated on a ledger snapshot here: the limits are enforced by the
        # reservation, checked and inserted atomically in this node's ledger when it issues its
        # receipt (`reserve`), and the signing path requires this node's own live reservation
        # and receipt under the version in force (signing.py).  The evaluator still refuses an
        # amount that alone exceeds a limit; reading the window here would cost O(entries) on
        # every request for a check the reservation already made.
        decision = evaluate(
            policy,
            intent,
            approvals=approvals.accepted,
            ledger=LedgerView.empty(now),
            now=now,
            frozen_wallets=self.governance.freezes.frozen_wallets(),
        )
        if not decision.allowed:
            raise NodeError(
                ErrorCode.POLICY_DENIED,
                decision.explanation[-1],
                check=decision.reason,
                rule=decision.rule,
                policy_hash=link.policy_hash,
            )
        # A request id that already signed another transaction is refused in the transaction
        # that would consume the presignature (signing.py): checked there, once, under the lock.
        return Decided(link, decoded, decision, approvals, tuple(limits), now)

    @staticmethod
    def _claimed(request: TransactionRequest) -> TransactionIntent:
        try:
            return parse_intent(request.intent, source="claimed intent")
        except IntentSchemaError as exc:
            problems = "; ".join(f"{path}: {reason}" for path, _value, reason in exc.problems)
            raise TransactionRefused(ErrorCode.VALIDATION, "intent", problems) from exc

    @staticmethod
    def _approvals(documents: Iterable[object]) -> list[Approval]:
        """The approvals that parse; a malformed one is dropped like any invalid approval (a
        coordinator must not be able to block a request by attaching junk)."""
        parsed = []
        for index, doc in enumerate(documents):
            try:
                parsed.append(parse_approval(doc, source=f"approval {index}"))
            except PolicyError:
                continue
        return parsed

    def _used_elsewhere(self, documents: Iterable[object], request_id: str) -> frozenset[str]:
        """Nonces among `documents` this node already counted for another request."""
        nonces = [
            doc["nonce"]
            for doc in documents
            if isinstance(doc, dict) and isinstance(doc.get("nonce"), str)
        ]
        if not nonces:
            return frozenset()
        with self.store.session() as session:
            rows = session.exec(
                select(UsedApprovalRow).where(col(UsedApprovalRow.nonce).in_(nonces))
            ).all()
        return frozenset(row.nonce for row in rows if row.request_id != request_id)

    # --- velocity reservations ------------------------------------------------------------------
    def reserve(self, decided: Decided) -> None:
        """Reserve the intent's amount in this node's ledger until its longest window has
        passed (receipts.py: a failed request keeps its reservation, fail safe)."""
        window = max((limit.window_seconds for limit in decided.limits), default=0)
        try:
            self.ledger.reserve_intent(
                decided.link.document,
                decided.decoded.intent,
                now=decided.now,
                expires_at=decided.now + timedelta(seconds=max(window, 1)),
            )
        except PolicyError as exc:
            raise NodeError(
                ErrorCode.POLICY_DENIED,
                str(exc),
                check="limit_exceeded",
                policy_hash=decided.policy_hash,
            ) from exc

    def holds_reservation(self, decided: Decided) -> bool:
        entry = self.ledger.entry(decided.decoded.intent.request_id)
        intent = decided.decoded.intent
        return (
            entry is not None
            and entry.state in ("reserved", "committed")
            and entry.wallet == intent.wallet
            and entry.asset == intent.asset
            and entry.amount == intent.amount
        )


def audit_fields(decided: Decided) -> dict[str, object]:
    """What a signed or receipted record says of the decision (no secrets, no payload)."""
    intent = decided.decoded.intent
    return {
        "request_id": intent.request_id,
        "intent_digest": intent.digest_hex(),
        "intent": intent.canonical_object(),
        "payload_hash": decided.decoded.payload_hash.hex(),
        "policy_hash": decided.policy_hash,
        "policy_version": decided.link.version,
        "rule": decided.decision.rule,
        "reason": decided.decision.reason,
        "approvals": sorted(decided.approvals.accepted),
        "approval_nonces": sorted(decided.approvals.nonces),
    }
