"""Human-readable difference between two policy versions, with every loosening change singled out.

Governance time-locks loosening changes (`Governance.loosening_timelock_seconds`), so the
classification errs on the side of "loosening": a change is called tightening only when it can
never let through anything the old version refused — a rule that matches less while it could
only allow, a new blacklist entry, a lower limit, a longer window.  Everything that could turn a
refusal into an allowance, or could cut the approvals needed, is loosening: new whitelist
entries (or earlier activation), removed blacklist entries, higher or removed limits, rules made
more permissive, rules reordered, new wallets and assets, more approvers, and — listed too,
whatever their direction — every change to the officers and the governance quorums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from policies.document import (
    AmountRange,
    BlacklistEntry,
    PolicyDocument,
    Rule,
    RuleMatch,
    VelocityLimit,
    WhitelistEntry,
    amount_str,
    timestamp_str,
)

Kind = Literal["loosening", "tightening", "neutral"]
_RANK = {"BLOCK": 0, "REQUIRE_APPROVAL": 1, "ALLOW": 2}
Relation = Literal["same", "broader", "narrower", "other"]


@dataclass(frozen=True)
class PolicyDiff:
    """`lines`: the whole difference for people; `loosening` / `tightening`: the changes of each
    kind (a change in neither is neutral, e.g. a label)."""

    old_version: int
    new_version: int
    old_hash: str
    new_hash: str
    lines: tuple[str, ...]
    loosening: tuple[str, ...]
    tightening: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.old_hash != self.new_hash

    def to_record(self) -> dict[str, Any]:
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "old_hash": self.old_hash,
            "new_hash": self.new_hash,
            "lines": list(self.lines),
            "loosening": list(self.loosening),
            "tightening": list(self.tightening),
        }


@dataclass
class _Changes:
    items: list[tuple[str, str, Kind]] = field(default_factory=list)

    def add(self, sign: str, text: str, kind: Kind) -> None:
        self.items.append((sign, text, kind))


def diff_policies(old: PolicyDocument, new: PolicyDocument) -> PolicyDiff:
    """Every difference between `old` and `new`, classified."""
    changes = _Changes()
    if old.description != new.description:
        changes.add("~", f"description: {old.description!r} → {new.description!r}", "neutral")
    _diff_officers(old, new, changes)
    _diff_groups(old, new, changes)
    _diff_assets(old, new, changes)
    _diff_wallets(old, new, changes)
    _diff_whitelists(old, new, changes)
    _diff_blacklist(old, new, changes)
    _diff_rules(old, new, changes)
    _diff_limits(old, new, changes)
    _diff_disperse(old, new, changes)
    _diff_fee_ceilings(old, new, changes)
    old_hash, new_hash = old.policy_hash(), new.policy_hash()
    header = f"policy v{old.version} ({old_hash[:12]}) → v{new.version} ({new_hash[:12]})"
    lines = [header]
    if not changes.items:
        lines.append("  no changes" if old_hash == new_hash else "  only the version header")
    for sign, text, kind in changes.items:
        tag = "" if kind == "neutral" else f"  [{kind}]"
        lines.append(f"{sign} {text}{tag}")
    return PolicyDiff(
        old_version=old.version,
        new_version=new.version,
        old_hash=old_hash,
        new_hash=new_hash,
        lines=tuple(lines),
        loosening=tuple(text for _s, text, kind in changes.items if kind == "loosening"),
        tightening=tuple(text for _s, text, kind in changes.items if kind == "tightening"),
    )


# --- sections ----------------------------------------------------------------------------------


def _diff_officers(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    before = {officer.id: officer for officer in old.officers}
    after = {officer.id: officer for officer in new.officers}
    for officer_id in sorted(after.keys() - before.keys()):
        officer = after[officer_id]
        changes.add("+", f"officer {officer_id} ({officer.algorithm}) added", "loosening")
    for officer_id in sorted(before.keys() - after.keys()):
        changes.add("-", f"officer {officer_id} removed", "loosening")
    for officer_id in sorted(before.keys() & after.keys()):
        if before[officer_id] != after[officer_id]:
            changes.add(
                "~",
                f"officer {officer_id}: key changed ({before[officer_id].algorithm} →"
                f" {after[officer_id].algorithm} {after[officer_id].public_key[:16]}…)",
                "loosening",
            )
    for name in ("quorum", "freeze_quorum", "loosening_timelock_seconds"):
        was, now = getattr(old.governance, name), getattr(new.governance, name)
        if was != now:
            # A shorter time lock loosens; a longer one only delays future loosening.
            longer_lock = name == "loosening_timelock_seconds" and now > was
            kind: Kind = "tightening" if longer_lock else "loosening"
            changes.add("~", f"governance.{name}: {was} → {now}", kind)


def _diff_groups(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    for name in sorted(new.groups.keys() - old.groups.keys()):
        changes.add("+", f"approver group {name}: {_join(new.groups[name])}", "loosening")
    for name in sorted(old.groups.keys() - new.groups.keys()):
        changes.add("-", f"approver group {name} removed", "tightening")
    for name in sorted(old.groups.keys() & new.groups.keys()):
        was, now = set(old.groups[name]), set(new.groups[name])
        for member in sorted(now - was):
            changes.add("+", f"approver group {name}: {member} added", "loosening")
        for member in sorted(was - now):
            changes.add("-", f"approver group {name}: {member} removed", "tightening")


def _diff_assets(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    for symbol in sorted(new.assets.keys() - old.assets.keys()):
        changes.add("+", f"asset {symbol} ({new.assets[symbol].decimals} decimals)", "loosening")
    for symbol in sorted(old.assets.keys() - new.assets.keys()):
        changes.add("-", f"asset {symbol} removed", "tightening")
    for symbol in sorted(old.assets.keys() & new.assets.keys()):
        was, now = old.assets[symbol].decimals, new.assets[symbol].decimals
        if was != now:
            kind: Kind = "loosening" if now > was else "tightening"
            changes.add("~", f"asset {symbol}: decimals {was} → {now}", kind)
        was_native, now_native = old.assets[symbol].native_chains, new.assets[symbol].native_chains
        if set(was_native) != set(now_native):
            # Loosening in either direction: which coin a plain value transfer's amount means
            # decides which rules and limits it meets, so any change can let more through.
            changes.add(
                "~",
                f"asset {symbol}: native on chains {_join(sorted(was_native))} →"
                f" {_join(sorted(now_native))}",
                "loosening",
            )
        was_tokens = {(c.chain_id, c.address) for c in old.assets[symbol].contracts}
        now_tokens = {(c.chain_id, c.address) for c in new.assets[symbol].contracts}
        for chain_id, address in sorted(now_tokens - was_tokens):
            # Loosening: a token transfer on that contract is now read as this asset.
            changes.add("+", f"asset {symbol}: contract {address} on chain {chain_id}", "loosening")
        for chain_id, address in sorted(was_tokens - now_tokens):
            changes.add(
                "-", f"asset {symbol}: contract {address} on chain {chain_id} removed", "tightening"
            )


def _diff_disperse(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    was = {(c.chain_id, c.address) for c in old.disperse_contracts}
    now = {(c.chain_id, c.address) for c in new.disperse_contracts}
    for chain_id, address in sorted(now - was):
        # Loosening: the nodes now sign batches through that contract (a changed address on a
        # chain is a removal and an addition: the addition is what needs the timelock).
        changes.add("+", f"disperse contract {address} on chain {chain_id}", "loosening")
    for chain_id, address in sorted(was - now):
        changes.add("-", f"disperse contract {address} on chain {chain_id} removed", "tightening")


def _diff_fee_ceilings(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    was = {c.chain_id: c.max_fee_per_gas_wei for c in old.fee_ceilings}
    now = {c.chain_id: c.max_fee_per_gas_wei for c in new.fee_ceilings}
    for chain_id in sorted(was.keys() | now.keys()):
        before, after = was.get(chain_id), now.get(chain_id)
        if before == after:
            continue
        if after is None:
            # no bound any more: the nodes sign any fee there
            changes.add("-", f"fee ceiling on chain {chain_id} removed", "loosening")
        elif before is None:
            changes.add("+", f"fee ceiling {after} wei per gas on chain {chain_id}", "tightening")
        else:
            text = f"fee ceiling on chain {chain_id}: {before} → {after} wei per gas"
            changes.add("~", text, "loosening" if after > before else "tightening")


def _diff_wallets(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    before = {wallet.id: wallet for wallet in old.wallets}
    after = {wallet.id: wallet for wallet in new.wallets}
    for wallet_id in sorted(after.keys() - before.keys()):
        wallet = after[wallet_id]
        changes.add(
            "+", f"wallet {wallet_id} ({wallet.tier}, chains {_chains(wallet.chains)})", "loosening"
        )
    for wallet_id in sorted(before.keys() - after.keys()):
        changes.add("-", f"wallet {wallet_id} removed", "tightening")
    for wallet_id in sorted(before.keys() & after.keys()):
        was, now = before[wallet_id], after[wallet_id]
        if was.tier != now.tier:
            changes.add("~", f"wallet {wallet_id}: tier {was.tier} → {now.tier}", "loosening")
        if was.chains != now.chains:
            relation = _set_relation(was.chains, now.chains)
            kind: Kind = "tightening" if relation == "narrower" else "loosening"
            changes.add(
                "~",
                f"wallet {wallet_id}: chains {_chains(was.chains)} → {_chains(now.chains)}",
                kind,
            )
        if was.label != now.label:
            changes.add("~", f"wallet {wallet_id}: label {was.label!r} → {now.label!r}", "neutral")


def _whitelist_users(policy: PolicyDocument, group: str) -> set[str]:
    return {rule.action for rule in policy.rules if rule.match.destination == f"whitelist:{group}"}


def _diff_whitelists(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    for group in sorted(old.whitelists.keys() | new.whitelists.keys()):
        # An entry that appears (or activates earlier) loosens unless only BLOCK rules use the
        # group; one that disappears tightens unless a BLOCK or REQUIRE_APPROVAL rule used it
        # (its destinations then fall through to later rules).
        users_after = _whitelist_users(new, group)
        users_before = _whitelist_users(old, group)
        more: Kind = "tightening" if users_after == {"BLOCK"} else "loosening"
        less: Kind = "loosening" if users_before - {"ALLOW"} else "tightening"
        before = _entries(old.whitelists.get(group, ()))
        after = _entries(new.whitelists.get(group, ()))
        for key in sorted(after.keys() - before.keys()):
            changes.add("+", f"whitelist {group}: {_whitelist_text(after[key])}", more)
        for key in sorted(before.keys() - after.keys()):
            changes.add("-", f"whitelist {group}: {_whitelist_text(before[key])}", less)
        for key in sorted(before.keys() & after.keys()):
            was, now = before[key], after[key]
            where = f"whitelist {group}: {was.address} on chain {was.chain_id}"
            if _activation(was.active_from()) != _activation(now.active_from()):
                earlier = _activation(now.active_from()) < _activation(was.active_from())
                changes.add(
                    "~",
                    f"{where}: active from {_when(was.active_from())} → {_when(now.active_from())}",
                    more if earlier else less,
                )
            elif was != now:
                changes.add("~", f"{where}: label {was.label!r} → {now.label!r}", "neutral")


def _diff_blacklist(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    before = _entries(old.blacklist)
    after = _entries(new.blacklist)
    for key in sorted(after.keys() - before.keys()):
        changes.add("+", f"blacklist: {_blacklist_text(after[key])}", "tightening")
    for key in sorted(before.keys() - after.keys()):
        changes.add("-", f"blacklist: {_blacklist_text(before[key])}", "loosening")
    for key in sorted(before.keys() & after.keys()):
        if before[key] != after[key]:
            changes.add(
                "~",
                f"blacklist: {before[key].address}: label {before[key].label!r} →"
                f" {after[key].label!r}",
                "neutral",
            )


def _diff_rules(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    before = {rule.id: rule for rule in old.rules}
    after = {rule.id: rule for rule in new.rules}
    common_old = [rule.id for rule in old.rules if rule.id in after]
    common_new = [rule.id for rule in new.rules if rule.id in before]
    if common_old != common_new:
        changes.add(
            "~",
            f"rule order: {_join(common_old)} → {_join(common_new)} (first match wins)",
            "loosening",
        )
    for position, rule in enumerate(new.rules):
        if rule.id not in before:
            kind: Kind = "tightening" if rule.action == "BLOCK" else "loosening"
            changes.add("+", f"rule #{position + 1} {_rule_text(rule)}", kind)
    for rule in old.rules:
        if rule.id not in after:
            kind = "tightening" if rule.action == "ALLOW" else "loosening"
            changes.add("-", f"rule {_rule_text(rule)}", kind)
    for rule in old.rules:
        if rule.id in after and after[rule.id] != rule:
            _diff_rule(rule, after[rule.id], changes)


def _diff_rule(was: Rule, now: Rule, changes: _Changes) -> None:
    where = f"rule {was.id}"
    if was.action != now.action:
        kind: Kind = "loosening" if _RANK[now.action] > _RANK[was.action] else "tightening"
        changes.add("~", f"{where}: action {was.action} → {now.action}", kind)
    if was.approvals != now.approvals and was.approvals is not None and now.approvals is not None:
        was_k, now_k = was.approvals.k, now.approvals.k
        if was.approvals.group != now.approvals.group:
            changes.add(
                "~",
                f"{where}: approvals {was_k} of {was.approvals.group} →"
                f" {now_k} of {now.approvals.group}",
                "loosening",
            )
        else:
            kind = "loosening" if now_k < was_k else "tightening"
            changes.add("~", f"{where}: approvals {was_k} → {now_k} of {now.approvals.group}", kind)
    relation = _match_relation(was.match, now.match)
    if relation != "same":
        # Matching more lets the rule's action reach intents later rules refused; matching
        # less lets intents fall through to later rules, which may allow them.
        looser = (relation in ("broader", "other") and now.action != "BLOCK") or (
            relation in ("narrower", "other") and was.action != "ALLOW"
        )
        changes.add(
            "~",
            f"{where}: match {_match_text(was.match)} → {_match_text(now.match)} ({relation})",
            "loosening" if looser else "tightening",
        )
    if was.description != now.description:
        changes.add("~", f"{where}: description changed", "neutral")


def _diff_limits(old: PolicyDocument, new: PolicyDocument, changes: _Changes) -> None:
    before = {limit.id: limit for limit in old.velocity_limits}
    after = {limit.id: limit for limit in new.velocity_limits}
    for limit_id in sorted(after.keys() - before.keys()):
        changes.add("+", f"velocity limit {_limit_text(after[limit_id])}", "tightening")
    for limit_id in sorted(before.keys() - after.keys()):
        changes.add("-", f"velocity limit {_limit_text(before[limit_id])}", "loosening")
    for limit_id in sorted(before.keys() & after.keys()):
        was, now = before[limit_id], after[limit_id]
        where = f"velocity limit {limit_id}"
        if (was.wallet, was.tier, was.asset) != (now.wallet, now.tier, now.asset):
            changes.add("~", f"{where}: scope {_scope(was)} → {_scope(now)}", "loosening")
        if was.max_amount != now.max_amount:
            kind: Kind = "loosening" if now.max_amount > was.max_amount else "tightening"
            changes.add(
                "~",
                f"{where}: max {amount_str(was.max_amount)} → {amount_str(now.max_amount)}"
                f" {now.asset}",
                kind,
            )
        if was.window_seconds != now.window_seconds:
            kind = "loosening" if now.window_seconds < was.window_seconds else "tightening"
            changes.add(
                "~", f"{where}: window {was.window_seconds} s → {now.window_seconds} s", kind
            )
        if was.receipt_quorum != now.receipt_quorum:
            changes.add(
                "~",
                f"{where}: receipt quorum {_quorum(was.receipt_quorum)} →"
                f" {_quorum(now.receipt_quorum)}",
                _quorum_kind(was.receipt_quorum, now.receipt_quorum),
            )
        if was.description != now.description:
            changes.add("~", f"{where}: description changed", "neutral")


def _quorum_kind(was: int | None, now: int | None) -> Kind:
    """None means every node of the committee, the most receipts there can be: setting a
    number where there was none, or a smaller one, lets a node sign having seen fewer."""
    if now is None:
        return "tightening"
    if was is None or now < was:
        return "loosening"
    return "tightening"


def _quorum(value: int | None) -> str:
    return "every node" if value is None else str(value)


# --- relations and text ------------------------------------------------------------------------


def _set_relation(was: Iterable[Any] | None, now: Iterable[Any] | None) -> Relation:
    """How the set matched by `now` relates to `was` (None: everything)."""
    if was is None and now is None:
        return "same"
    if now is None:
        return "broader"
    if was is None:
        return "narrower"
    before, after = set(was), set(now)
    if before == after:
        return "same"
    if after > before:
        return "broader"
    if after < before:
        return "narrower"
    return "other"


def _destination_relation(was: str, now: str) -> Relation:
    if was == now:
        return "same"
    if now == "any":
        return "broader"
    if was == "any":
        return "narrower"
    return "other"


def _amount_relation(was: AmountRange | None, now: AmountRange | None) -> Relation:
    def bounds(value: AmountRange | None) -> tuple[Any, Any]:
        if value is None:
            return (None, None)
        return (value.min, value.max)

    (old_min, old_max), (new_min, new_max) = bounds(was), bounds(now)
    if (old_min, old_max) == (new_min, new_max):
        return "same"
    # Compare each bound: lower min / higher max widen the range (None is open).
    low = _bound_relation(old_min, new_min, lower=True)
    high = _bound_relation(old_max, new_max, lower=False)
    return _combine((low, high))


def _bound_relation(was: Any, now: Any, *, lower: bool) -> Relation:
    if was == now:
        return "same"
    if now is None:
        return "broader"
    if was is None:
        return "narrower"
    wider = now < was if lower else now > was
    return "broader" if wider else "narrower"


def _combine(relations: Iterable[Relation]) -> Relation:
    seen = set(relations) - {"same"}
    if not seen:
        return "same"
    if len(seen) == 1:
        return next(iter(seen))
    return "other"


def _match_relation(was: RuleMatch, now: RuleMatch) -> Relation:
    return _combine(
        (
            _set_relation(was.wallets, now.wallets),
            _set_relation(was.tiers, now.tiers),
            _set_relation(was.chains, now.chains),
            _set_relation(was.assets, now.assets),
            _destination_relation(was.destination, now.destination),
            _amount_relation(was.amount, now.amount),
            _set_relation(was.initiators, now.initiators),
        )
    )


def _join(values: Iterable[Any]) -> str:
    return ", ".join(str(value) for value in values) or "(none)"


def _chains(chains: tuple[int, ...] | None) -> str:
    return "any" if chains is None else _join(sorted(chains))


def _entries(
    entries: Iterable[WhitelistEntry] | Iterable[BlacklistEntry],
) -> Mapping[tuple[str, int], Any]:
    return {(entry.address.lower(), entry.chain_id or 0): entry for entry in entries}


def _activation(moment: datetime | None) -> float:
    return float("-inf") if moment is None else moment.timestamp()


def _when(moment: datetime | None) -> str:
    return "always" if moment is None else timestamp_str(moment)


def _whitelist_text(entry: WhitelistEntry) -> str:
    text = f"{entry.address} on chain {entry.chain_id} ({entry.label})"
    active = entry.active_from()
    if active is not None:
        text += f", active from {timestamp_str(active)}"
    return text


def _blacklist_text(entry: BlacklistEntry) -> str:
    chain = "every chain" if entry.chain_id is None else f"chain {entry.chain_id}"
    label = f" ({entry.label})" if entry.label else ""
    return f"{entry.address} on {chain}{label}"


def _match_text(match: RuleMatch) -> str:
    parts = []
    for name in ("wallets", "tiers", "chains", "assets", "initiators"):
        values = getattr(match, name)
        if values is not None:
            parts.append(f"{name}={_join(sorted(values))}")
    if match.destination != "any":
        parts.append(f"destination={match.destination}")
    if match.amount is not None:
        low = "" if match.amount.min is None else f"{amount_str(match.amount.min)} ≤ "
        high = "" if match.amount.max is None else f" ≤ {amount_str(match.amount.max)}"
        parts.append(f"{low}amount{high}")
    return "{" + "; ".join(parts) + "}" if parts else "{anything}"


def _rule_text(rule: Rule) -> str:
    action: str = rule.action
    if rule.approvals is not None:
        action += f"({rule.approvals.k} of {rule.approvals.group})"
    return f"{rule.id}: {action} if {_match_text(rule.match)}"


def _scope(limit: VelocityLimit) -> str:
    who = f"wallet {limit.wallet}" if limit.wallet is not None else f"each {limit.tier} wallet"
    return f"{who}, {limit.asset}"


def _limit_text(limit: VelocityLimit) -> str:
    return (
        f"{limit.id}: {amount_str(limit.max_amount)} {limit.asset} per {limit.window_seconds} s"
        f" ({_scope(limit)})"
    )
