"""The coordinator's screen of a withdrawal as a pure function (`dry_run`): the policy's
sanctions list, the officers' approvals checked, and the evaluator (policies/evaluator.py) with an
empty velocity ledger — the nodes count the limits themselves, on their own ledger.  What
`WithdrawalService._screen` decides a status from, and what `POST /v1/policy/evaluate` answers
(coordinator/api/evaluate.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.api.lifecycle import Status
from policies.approvals import Approval, check_approvals
from policies.document import BlacklistEntry, PolicyDocument
from policies.evaluator import Decision, evaluate
from policies.intent import TransactionIntent
from policies.velocity import LedgerView


@dataclass(frozen=True)
class DryRun:
    """What the screen decides from: the sanctions list's entries for the destination (any:
    REJECTED by the screen) and the evaluator's decision."""

    policy_hash: str
    hits: tuple[BlacklistEntry, ...]
    decision: Decision

    @property
    def screening_status(self) -> Status:
        if self.hits:
            return Status.REJECTED
        if self.decision.outcome == "REQUIRE_APPROVAL":
            return Status.PENDING_APPROVAL
        # ALLOW — and DENY or BLOCK too: the nodes are the authority and refuse it themselves
        return Status.QUEUED


def dry_run(
    policy: PolicyDocument,
    intent: TransactionIntent,
    approvals: Sequence[Approval],
    *,
    now: datetime,
) -> DryRun:
    """The screen's decision for `intent` under `policy` with these officers' `approvals`
    (each checked first); pure."""
    checked = check_approvals(policy, intent, approvals, now=now)
    decision = evaluate(
        policy,
        intent,
        approvals=checked.accepted,
        ledger=LedgerView.empty(now),
        now=now,
    )
    return DryRun(
        policy_hash=policy.policy_hash(),
        hits=policy.blacklist_hits(intent.destination, intent.chain_id),
        decision=decision,
    )
