"""The pure policy evaluator every key-share node runs before it contributes to a signature.

`evaluate(policy, intent, approvals=…, ledger=…, now=…)` reads nothing but its arguments (no I/O,
no clock, no randomness) and returns the same `Decision` for the same inputs.  Order:

1. the intent must make sense for the policy (known wallet, a chain the wallet allows, a known
   asset, no more decimal places than the asset has) — otherwise DENY;
2. a frozen wallet — DENY;
3. the rules in order; the first whose every criterion matches decides (explanation: for each
   earlier rule, the first criterion that failed); no match — DENY (default deny);
4. a blacklisted destination is BLOCKed whatever rule matched: the blacklist overrides the rules;
5. for ALLOW and REQUIRE_APPROVAL, every velocity limit of the wallet and asset must still fit
   with this request added (its own reservation is not counted twice) — otherwise DENY naming
   the limit; approvals never lift a limit;
6. REQUIRE_APPROVAL(k of group) becomes ALLOW once k officers of the group other than the
   initiator have approved (`approvals` holds ids whose signatures were already verified).

A batch (`intent.legs`) is decided on every leg and on the total (`_evaluate_batch`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from policies.document import (
    PolicyDocument,
    Rule,
    Wallet,
    amount_str,
    fraction_digits,
    timestamp_str,
)
from policies.intent import TransactionIntent
from policies.velocity import LedgerView, LimitCheck, check_limits, require_aware

Outcome = Literal["ALLOW", "BLOCK", "REQUIRE_APPROVAL", "DENY"]

# Why the outcome is what it is, for programs (API error codes, metrics, audit queries).
Reason = Literal[
    "unknown_wallet",
    "chain_not_allowed",
    "unknown_asset",
    "amount_precision",
    "frozen",
    "no_rule",
    "rule_block",
    "blacklisted",
    "limit_exceeded",
    "rule_allow",
    "approvals_pending",
    "approved",
    "rejected",
]


@dataclass(frozen=True)
class ApprovalStatus:
    """Where a REQUIRE_APPROVAL rule's k-of-group stands."""

    group: str
    k: int
    counted: tuple[str, ...]  # officers whose approval counts, sorted
    ignored: tuple[tuple[str, str], ...]  # (officer, why it does not count), sorted

    @property
    def satisfied(self) -> bool:
        return len(self.counted) >= self.k

    @property
    def missing(self) -> int:
        return max(0, self.k - len(self.counted))

    def to_record(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "k": self.k,
            "counted": list(self.counted),
            "ignored": [{"officer": officer, "why": why} for officer, why in self.ignored],
        }


@dataclass(frozen=True)
class Decision:
    """The evaluator's answer and its explanation."""

    outcome: Outcome
    reason: Reason
    rule: str | None  # the rule that decided, None for checks before/without a rule
    rule_action: str | None  # the matched rule's own action (may differ from the outcome)
    explanation: tuple[str, ...]
    request_id: str
    intent_digest: str
    policy_hash: str
    policy_version: int
    evaluated_at: datetime
    approval: ApprovalStatus | None = None
    limits: tuple[LimitCheck, ...] = ()
    intent: TransactionIntent | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "ALLOW"

    def to_record(self) -> dict[str, Any]:
        """Canonical-JSON-ready record for the audit log."""
        return {
            "request_id": self.request_id,
            "intent_digest": self.intent_digest,
            "intent": None if self.intent is None else self.intent.canonical_object(),
            "policy_hash": self.policy_hash,
            "policy_version": self.policy_version,
            "outcome": self.outcome,
            "reason": self.reason,
            "rule": self.rule,
            "rule_action": self.rule_action,
            "approval": None if self.approval is None else self.approval.to_record(),
            "limits": [check.to_record() for check in self.limits],
            "explanation": list(self.explanation),
            "evaluated_at": timestamp_str(self.evaluated_at),
        }


def evaluate(
    policy: PolicyDocument,
    intent: TransactionIntent,
    *,
    approvals: frozenset[str],
    ledger: LedgerView,
    now: datetime,
    frozen_wallets: frozenset[str] = frozenset(),
) -> Decision:
    """Decide `intent` under `policy`; pure and deterministic (see the module docstring)."""
    require_aware("now", now)
    run = _Run(policy, intent, now)
    wallet = policy.wallet(intent.wallet)
    if wallet is None:
        return run.finish("DENY", "unknown_wallet", f"wallet {intent.wallet} is not in the policy")
    run.note(run.summary(wallet))
    if wallet.chains is not None and intent.chain_id not in wallet.chains:
        return run.finish(
            "DENY",
            "chain_not_allowed",
            f"wallet {wallet.id} may only send on chains {_list(wallet.chains)},"
            f" not chain {intent.chain_id}",
        )
    asset = policy.assets.get(intent.asset)
    if asset is None:
        return run.finish("DENY", "unknown_asset", f"asset {intent.asset} is not in the policy")
    if fraction_digits(intent.amount) > asset.decimals:
        return run.finish(
            "DENY",
            "amount_precision",
            f"amount {amount_str(intent.amount)} has more decimal places than {intent.asset}"
            f" ({asset.decimals})",
        )
    if intent.wallet in frozen_wallets:
        return run.finish("DENY", "frozen", f"wallet {wallet.id} is frozen")

    if intent.legs is not None:
        return _evaluate_batch(run, wallet, approvals, ledger)
    notes, verdict = _rules_verdict(policy, intent, wallet, now)
    for line in notes:
        run.note(line)
    if isinstance(verdict, _Final):
        return run.finish(verdict.outcome, verdict.reason, verdict.last, rule=verdict.rule)
    run.note(f"rule {verdict.id} matched: {verdict.action}")
    return _conclude(run, wallet, verdict, _requirements([verdict]), approvals, ledger)


@dataclass(frozen=True)
class _Final:
    """How the rules end an evaluation before limits and approvals: a BLOCK or a DENY."""

    outcome: Outcome
    reason: Reason
    last: str
    rule: Rule | None


def _rules_verdict(
    policy: PolicyDocument, intent: TransactionIntent, wallet: Wallet, now: datetime
) -> tuple[list[str], Rule | _Final]:
    """Steps 3 and 4 for one destination and amount: the explanation lines, and the matched
    ALLOW or REQUIRE_APPROVAL rule — or the BLOCK or DENY that ends the evaluation."""
    notes: list[str] = []
    matched: Rule | None = None
    for rule in policy.rules:
        mismatch = _mismatch(policy, rule, intent, wallet, now)
        if mismatch is None:
            matched = rule
            break
        notes.append(f"rule {rule.id}: no match — {mismatch}")

    hits = policy.blacklist_hits(intent.destination, intent.chain_id)
    if hits:
        labels = ", ".join(entry.label or "unlabelled entry" for entry in hits)
        listed = f"destination {intent.destination} is blacklisted ({labels})"
        if matched is not None and matched.action == "BLOCK":
            notes.append(f"rule {matched.id} matched: BLOCK")
            return notes, _Final("BLOCK", "blacklisted", listed, matched)
        if matched is not None:
            notes.append(
                f"rule {matched.id} matched: {matched.action}, overridden by the blacklist"
            )
        return notes, _Final(
            "BLOCK", "blacklisted", f"{listed}; the blacklist overrides every rule", None
        )
    if matched is None:
        return notes, _Final("DENY", "no_rule", "no rule matched: default deny", None)
    if matched.action == "BLOCK":
        return notes, _Final("BLOCK", "rule_block", f"rule {matched.id} matched: BLOCK", matched)
    return notes, matched


def _requirements(rules: Iterable[Rule]) -> list[tuple[str, int]]:
    """The distinct k-of-group approvals that the REQUIRE_APPROVAL rules among `rules` ask."""
    found: list[tuple[str, int]] = []
    for rule in rules:
        if rule.action != "REQUIRE_APPROVAL":
            continue
        # Validation guarantees approvals on such a rule; without them, k = 1 of an empty
        # group can never be met, so the request can never be allowed by accident.
        requirement = rule.approvals
        wanted = ("", 1) if requirement is None else (requirement.group, requirement.k)
        if wanted not in found:
            found.append(wanted)
    return found


def _conclude(
    run: _Run,
    wallet: Wallet,
    rule: Rule,
    requirements: list[tuple[str, int]],
    approvals: frozenset[str],
    ledger: LedgerView,
) -> Decision:
    """Steps 5 and 6 once the rules let the request through under `rule`: every velocity
    limit with its whole amount added, then every approval requirement."""
    policy, intent = run.policy, run.intent
    limits = check_limits(
        policy.limits_for(wallet.id, intent.asset),
        ledger.entries,
        wallet=wallet.id,
        asset=intent.asset,
        amount=intent.amount,
        at=run.now,
        exclude_request=intent.request_id,
    )
    run.limits = limits
    for check in limits:
        run.note(check.describe())
    statuses = [_approval_status(policy, group, k, intent, approvals) for group, k in requirements]
    for status in statuses:
        run.note(_describe_approvals(status))
    if statuses:
        # the one shown: the first still waiting, or (all met) the last
        run.approval = next((s for s in statuses if not s.satisfied), statuses[-1])
    exceeded = [check.limit_id for check in limits if not check.fits]
    if exceeded:
        return run.finish(
            "DENY",
            "limit_exceeded",
            f"velocity limit {_list(exceeded)} would be exceeded",
            rule=rule,
        )
    if not statuses:
        return run.finish("ALLOW", "rule_allow", f"allowed by rule {rule.id}", rule=rule)
    waiting = [status for status in statuses if not status.satisfied]
    if not waiting:
        met = "; ".join(
            f"approved by {_list(s.counted)} ({s.k} needed from group {s.group})" for s in statuses
        )
        return run.finish("ALLOW", "approved", met, rule=rule)
    return run.finish(
        "REQUIRE_APPROVAL",
        "approvals_pending",
        "; ".join(
            f"waiting for {s.missing} more approval(s) from group {s.group}" for s in waiting
        ),
        rule=rule,
    )


_SEVERITY: dict[Outcome, int] = {"ALLOW": 0, "REQUIRE_APPROVAL": 1, "DENY": 2, "BLOCK": 3}


def _evaluate_batch(
    run: _Run, wallet: Wallet, approvals: frozenset[str], ledger: LedgerView
) -> Decision:
    """Steps 3–6 for a batch (`intent.legs`): one transaction, so one decision, and it must
    hold for every leg *and* for the total.

    Each leg is decided twice by the rules and the blacklist: as a withdrawal of its own amount
    to its destination, and as a withdrawal of the whole batch's amount to it — a batch moves
    its total under one signature, so an amount threshold (auto-sign below 1 ETH, approvals
    above) applies to the total, and splitting a large payout into small legs buys nothing.
    The strictest verdict wins: one leg blocked or denied refuses the batch whole (BLOCK before
    DENY, the first such leg named); otherwise every approval requirement met by any leg must
    be satisfied by the officers' approvals of the batch.  The velocity limits count the total,
    that is every leg."""
    policy, intent, now = run.policy, run.intent, run.now
    legs = intent.legs or ()
    worst: tuple[int, int, _Final] | None = None  # (severity, leg, the verdict)
    matched: list[Rule] = []
    groups: dict[tuple[str, str], list[int]] = {}
    for index, leg in enumerate(legs):
        single = intent.model_copy(
            update={"destination": leg.destination, "amount": leg.amount, "legs": None}
        )
        whole = single.model_copy(update={"amount": intent.amount})
        names: list[str] = []
        for view in (single, whole):
            _notes, verdict = _rules_verdict(policy, view, wallet, now)
            if isinstance(verdict, _Final):
                severity = _SEVERITY[verdict.outcome]
                if worst is None or severity > worst[0]:
                    worst = (severity, index, verdict)
                names.append(verdict.outcome)
            else:
                matched.append(verdict)
                names.append(f"rule {verdict.id} {verdict.action}")
        groups.setdefault((names[0], names[1]), []).append(index)
    total = amount_str(intent.amount)
    run.note(f"batch of {len(legs)} legs, {total} {intent.asset} in all")
    for (alone, as_total), indices in groups.items():
        shown = ", ".join(str(i) for i in indices[:5]) + (", …" if len(indices) > 5 else "")
        run.note(f"{len(indices)} leg(s) ({shown}): {alone}; at the total {total}: {as_total}")
    if worst is not None:
        _severity, index, verdict = worst
        leg = legs[index]
        return run.finish(
            verdict.outcome,
            verdict.reason,
            f"leg {index} ({amount_str(leg.amount)} to {leg.destination}): {verdict.last};"
            " the batch is refused whole",
            rule=verdict.rule,
        )
    # the rule shown: the first that asks for approvals, else the first leg's
    deciding = next((r for r in matched if r.action == "REQUIRE_APPROVAL"), matched[0])
    return _conclude(run, wallet, deciding, _requirements(matched), approvals, ledger)


class _Run:
    """Accumulates the explanation of one evaluation."""

    def __init__(self, policy: PolicyDocument, intent: TransactionIntent, now: datetime) -> None:
        self.policy = policy
        self.intent = intent
        self.now = now
        self.lines: list[str] = []
        self.limits: tuple[LimitCheck, ...] = ()
        self.approval: ApprovalStatus | None = None

    def note(self, line: str) -> None:
        self.lines.append(line)

    def summary(self, wallet: Wallet) -> str:
        intent = self.intent
        return (
            f"request {intent.request_id}: {amount_str(intent.amount)} {intent.asset} from"
            f" {wallet.id} ({wallet.tier}) to {intent.destination} on chain {intent.chain_id},"
            f" initiated by {intent.initiator}; policy v{self.policy.version}"
        )

    def finish(
        self, outcome: Outcome, reason: Reason, last: str, *, rule: Rule | None = None
    ) -> Decision:
        self.lines.append(f"{outcome}: {last}")
        return Decision(
            outcome=outcome,
            reason=reason,
            rule=None if rule is None else rule.id,
            rule_action=None if rule is None else rule.action,
            explanation=tuple(self.lines),
            request_id=self.intent.request_id,
            intent_digest=self.intent.digest_hex(),
            policy_hash=self.policy.policy_hash(),
            policy_version=self.policy.version,
            evaluated_at=self.now,
            approval=self.approval,
            limits=self.limits,
            intent=self.intent,
        )


def rejected(decision: Decision, officers: Iterable[str], reason: str | None = None) -> Decision:
    """``decision`` for a request an officer rejected: DENY, whatever the rules said.

    A rejection closes the request for good (the store refuses further statements on it), so
    showing the rules' "waiting for k more approvals" would invite approvals that can never
    count; the rules' reasoning (rule matched, approvals counted) is kept above the closing
    line."""
    who = ", ".join(sorted(officers))
    why = f": {reason}" if reason else ""
    # The last line is the rules' own verdict ("REQUIRE_APPROVAL: waiting for …"); it no longer
    # holds, so the rejection replaces it instead of contradicting it.
    return replace(
        decision,
        outcome="DENY",
        reason="rejected",
        explanation=(*decision.explanation[:-1], f"DENY: rejected by {who}{why}"),
    )


def _list(values: Any) -> str:
    return ", ".join(str(value) for value in values)


def _mismatch(
    policy: PolicyDocument, rule: Rule, intent: TransactionIntent, wallet: Wallet, now: datetime
) -> str | None:
    """The first criterion of `rule` that `intent` fails, in words; None when all match."""
    match = rule.match
    if match.wallets is not None and wallet.id not in match.wallets:
        return f"wallet {wallet.id} is not one of {_list(match.wallets)}"
    if match.tiers is not None and wallet.tier not in match.tiers:
        return f"wallet {wallet.id} is {wallet.tier}, the rule is for {_list(match.tiers)}"
    if match.chains is not None and intent.chain_id not in match.chains:
        return f"chain {intent.chain_id} is not one of {_list(match.chains)}"
    if match.assets is not None and intent.asset not in match.assets:
        return f"asset {intent.asset} is not one of {_list(match.assets)}"
    destination = _destination_mismatch(policy, match.destination, intent, now)
    if destination is not None:
        return destination
    if match.amount is not None and not match.amount.contains(intent.amount):
        bounds = match.amount
        if bounds.min is not None and intent.amount < bounds.min:
            return f"amount {amount_str(intent.amount)} is below min {amount_str(bounds.min)}"
        maximum = "" if bounds.max is None else amount_str(bounds.max)
        return f"amount {amount_str(intent.amount)} is above max {maximum}"
    if match.initiators is not None and intent.initiator not in match.initiators:
        return f"initiator {intent.initiator} is not one of {_list(match.initiators)}"
    return None


def _destination_mismatch(
    policy: PolicyDocument, destination: str, intent: TransactionIntent, now: datetime
) -> str | None:
    if destination == "any":
        return None
    if destination == "blacklist":
        if policy.blacklist_hits(intent.destination, intent.chain_id):
            return None
        return f"destination {intent.destination} is not blacklisted"
    group = destination.removeprefix("whitelist:")
    entries = policy.whitelist_entries(group, intent.destination)
    if not entries:
        return f"destination {intent.destination} is not on whitelist {group}"
    on_chain = [entry for entry in entries if entry.chain_id == intent.chain_id]
    if not on_chain:
        chains = sorted(entry.chain_id for entry in entries)
        return (
            f"destination {intent.destination} is on whitelist {group} only for chain"
            f" {_list(chains)}, not chain {intent.chain_id}"
        )
    pending = []
    for entry in on_chain:
        active_from = entry.active_from()
        if active_from is None or active_from <= now:
            return None
        pending.append(active_from)
    return (
        f"whitelist {group} entry for {intent.destination} on chain {intent.chain_id} is"
        f" active only from {timestamp_str(min(pending))} (activation delay)"
    )


def _approval_status(
    policy: PolicyDocument, group: str, k: int, intent: TransactionIntent, approvals: frozenset[str]
) -> ApprovalStatus:
    members = frozenset(policy.group_members(group))
    counted: list[str] = []
    ignored: list[tuple[str, str]] = []
    for officer in sorted(approvals):
        if officer == intent.initiator:
            ignored.append((officer, "the initiator cannot approve its own request"))
        elif officer not in members:
            ignored.append((officer, f"not in group {group}"))
        else:
            counted.append(officer)
    return ApprovalStatus(group=group, k=k, counted=tuple(counted), ignored=tuple(ignored))


def _describe_approvals(status: ApprovalStatus) -> str:
    text = f"approvals: {len(status.counted)} counted, {status.k} needed from group {status.group}"
    if status.counted:
        text += f" ({_list(status.counted)})"
    for officer, why in status.ignored:
        text += f"; {officer} ignored: {why}"
    return text
