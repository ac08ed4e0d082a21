"""Withdrawal requests in the store: officers' signed approvals and rejections, and simulating a
request as a node would.

`decide_withdrawal` runs as named steps inside one transaction: the request must be open, the
officer must not have decided on it yet, the new statement is signed and checked as a node checks
it, the request is evaluated with every approval that counts, an approval that cannot help
(outside the rule's approver group, or on a request the policy refuses) is refused before
anything is written, then the request, the statement, the spent nonces and the audit records are
written together.

Nonces: the approvals of a finished request are recorded as spent (`SeenNonceRow`) so that none
is ever accepted for another request.  They are not replays of themselves: when the store
re-checks a request's own recorded approvals (simulate, status) it leaves that request's own
spent nonces out of the replay set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlmodel import Session, col, select

from policies.approvals import (
    DEFAULT_APPROVAL_LIFETIME,
    Approval,
    ApprovalCheck,
    check_approvals,
    parse_approval,
    sign_approval,
    verify_approval,
)
from policies.document import PolicyDocument
from policies.errors import OutsideApproverGroupError, StoreError
from policies.evaluator import Decision, evaluate, rejected
from policies.governance import active_policy
from policies.intent import TransactionIntent, parse_intent
from policies.keys import OfficerSigner
from policies.store_core import StoreCore, VersionRef, from_us, stored_json, to_json, us
from policies.store_freezes import freeze_state_of
from policies.tables import ApprovalRow, RequestRow, SeenNonceRow
from policies.velocity import LedgerView

RequestStatus = Literal["pending", "approved", "rejected"]


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


@dataclass(frozen=True)
class _Open:
    """An open request as the store knows it before the new statement."""

    row: RequestRow | None  # None: first statement on this request
    earlier: tuple[Approval, ...]
    check: ApprovalCheck  # the earlier statements checked against the policy in force
    seen: frozenset[str]  # nonces spent by other requests


class WithdrawalOps(StoreCore):
    """The withdrawal operations of `PolicyStore`."""

    # --- reading ---

    def _request_approvals(self, session: Session, request_id: str) -> tuple[Approval, ...]:
        rows = session.exec(
            select(ApprovalRow)
            .where(col(ApprovalRow.request_id) == request_id)
            .order_by(col(ApprovalRow.recorded_at_us), col(ApprovalRow.nonce))
        ).all()
        return tuple(
            parse_approval(
                stored_json(row.approval, f"approval {row.nonce}"), f"stored {row.nonce}"
            )
            for row in rows
        )

    def _seen_nonces(self, session: Session, *, other_than: str | None = None) -> frozenset[str]:
        """Spent nonces; ``other_than``: leave out those the request itself spent (its own
        approvals checked again are not replays)."""
        query = select(SeenNonceRow.nonce)
        if other_than is not None:
            query = query.where(col(SeenNonceRow.request_id) != other_than)
        return frozenset(session.exec(query).all())

    def requests(self) -> list[StoredRequest]:
        with self._tx() as session:
            rows = session.exec(select(RequestRow).order_by(col(RequestRow.created_at_us))).all()
            return [
                StoredRequest(
                    intent=parse_intent(
                        stored_json(row.intent, f"request {row.request_id}"),
                        f"stored {row.request_id}",
                    ),
                    status=row.status,
                    approvals=self._request_approvals(session, row.request_id),
                    created_at=from_us(row.created_at_us),
                )
                for row in rows
            ]

    # --- simulate ---

    def simulate(
        self,
        intent: TransactionIntent,
        *,
        now: datetime,
        version: VersionRef | None = None,
        ledger: LedgerView | None = None,
    ) -> Decision:
        """Evaluate ``intent`` as a node would, with the approvals already recorded for it; a
        request an officer rejected is DENY (reason ``rejected``)."""
        with self._tx() as session:
            chain = self._chain(session)
            policy = self._version_of(chain, version, now)
            frozen = freeze_state_of(session, chain).frozen_wallets()
            row = session.get(RequestRow, intent.request_id)
            recorded: tuple[Approval, ...] = ()
            accepted: frozenset[str] = frozenset()
            closed_by_rejection = False
            if row is not None and row.intent_digest == intent.digest().hex():
                closed_by_rejection = row.status == "rejected"
                recorded = self._request_approvals(session, intent.request_id)
                accepted = check_approvals(
                    policy,
                    intent,
                    recorded,
                    now=now,
                    seen_nonces=self._seen_nonces(session, other_than=intent.request_id),
                ).accepted
        view = ledger if ledger is not None else LedgerView.empty(now)
        decision = evaluate(
            policy,
            intent,
            approvals=accepted,
            ledger=view,
            now=now,
            frozen_wallets=frozen,
        )
        if closed_by_rejection:
            # Closed by the store when the rejection was recorded (its signature was checked
            # then); who rejected is read from the record, valid window or not.
            return rejected(decision, {a.officer for a in recorded if a.decision == "reject"})
        return decision

    # --- deciding ---

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
        force, then evaluate the request with every approval that counts.

        Refused, with nothing written: a request that is closed or registered with another
        transaction, a second statement by the same officer, a statement a node would not
        accept (non-officer, self-approval, …), an approval by an officer outside the approver
        group the matching rule asks for, an approval of a request the policy refuses."""
        view = ledger if ledger is not None else LedgerView.empty(now)
        with self._tx() as session:
            chain = self._chain(session)
            policy = active_policy(chain, now=now).document
            state = self._open_request(session, policy, intent, now)
            if signer.officer_id in state.check.accepted | state.check.rejected_by:
                raise StoreError(
                    f"officer {signer.officer_id!r}",
                    f"already decided on request {intent.request_id!r}",
                )
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
            verify_approval(policy, intent, approval, now=now, seen_nonces=state.seen)
            accepted = state.check.accepted | (
                {signer.officer_id} if decision == "approve" else set()
            )
            result = evaluate(
                policy,
                intent,
                approvals=frozenset(accepted),
                ledger=view,
                now=now,
                frozen_wallets=freeze_state_of(session, chain).frozen_wallets(),
            )
            if decision == "approve":
                _refuse_useless_approval(policy, intent, signer.officer_id, result)
                status: RequestStatus = "approved" if result.outcome == "ALLOW" else "pending"
            else:
                status = "rejected"
                result = rejected(result, {signer.officer_id}, reason)
            self._record_request(session, state.row, policy, intent, status, now)
            self._record_statement(session, intent, approval, now)
            if status != "pending":
                self._spend_nonces(session, intent.request_id, (*state.earlier, approval), now)
            session.flush()
            self._audit_statement(session, policy, intent, approval, result, now)
            return WithdrawalResult(approval, result, status, tuple(sorted(accepted)))

    def _open_request(
        self, session: Session, policy: PolicyDocument, intent: TransactionIntent, now: datetime
    ) -> _Open:
        """The request's row and earlier statements; refuses a closed request or a request id
        registered with another transaction."""
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
        # A pending request has spent no nonce, so "other than itself" changes nothing here; it
        # keeps the rule the same as simulate's.
        seen = self._seen_nonces(session, other_than=intent.request_id)
        earlier = self._request_approvals(session, intent.request_id)
        check = check_approvals(policy, intent, earlier, now=now, seen_nonces=seen)
        return _Open(row, earlier, check, seen)

    def _record_request(
        self,
        session: Session,
        row: RequestRow | None,
        policy: PolicyDocument,
        intent: TransactionIntent,
        status: RequestStatus,
        now: datetime,
    ) -> None:
        """Create the request on its first statement (audited), else update its status."""
        if row is None:
            digest = intent.digest().hex()
            row = RequestRow(
                request_id=intent.request_id,
                intent=to_json(intent.model_dump(mode="json")),
                intent_digest=digest,
                status=status,
                created_at_us=us(now),
                updated_at_us=us(now),
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
        row.updated_at_us = us(now)
        session.add(row)

    @staticmethod
    def _record_statement(
        session: Session, intent: TransactionIntent, approval: Approval, now: datetime
    ) -> None:
        session.add(
            ApprovalRow(
                nonce=approval.nonce,
                request_id=intent.request_id,
                officer=approval.officer,
                decision=approval.decision,
                approval=to_json(approval.to_json_object()),
                recorded_at_us=us(now),
            )
        )

    @staticmethod
    def _spend_nonces(
        session: Session, request_id: str, statements: tuple[Approval, ...], now: datetime
    ) -> None:
        """The request is finished: every nonce of its statements is spent for good."""
        for used in statements:
            if session.get(SeenNonceRow, used.nonce) is None:
                session.add(
                    SeenNonceRow(nonce=used.nonce, request_id=request_id, consumed_at_us=us(now))
                )

    def _audit_statement(
        self,
        session: Session,
        policy: PolicyDocument,
        intent: TransactionIntent,
        approval: Approval,
        result: Decision,
        now: datetime,
    ) -> None:
        self._append(
            session,
            "approval" if approval.decision == "approve" else "rejection",
            {
                "request_id": intent.request_id,
                "policy_hash": policy.policy_hash(),
                "officer": approval.officer,
                "approval": approval.to_json_object(),
            },
            now,
        )
        self._append(session, "decision", result.to_record(), now)


def _refuse_useless_approval(
    policy: PolicyDocument, intent: TransactionIntent, officer: str, result: Decision
) -> None:
    """An approval that can never count is refused rather than recorded: it would read as
    progress to whoever signed it while the request waits exactly as before."""
    if result.outcome in ("BLOCK", "DENY"):
        raise StoreError(
            f"request {intent.request_id!r}",
            f"the policy refuses it ({result.outcome}: {result.explanation[-1]}); "
            "an approval cannot change that, nothing recorded",
        )
    status = result.approval
    if status is not None:
        members = policy.group_members(status.group)
        if officer not in members:
            raise OutsideApproverGroupError(
                officer,
                intent.request_id,
                group=status.group,
                members=tuple(members),
                rule=result.rule,
            )
