"""The pure evaluator: the documented examples, each evaluation step, and properties — first
match wins with default deny, determinism, exact decimals at 18 places."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from policies.canonical import canonical_json
from policies.document import (
    AMOUNT_CONTEXT,
    PolicyDocument,
    load_policy,
    parse_policy,
    read_structured_file,
)
from policies.errors import EvaluationInputError
from policies.evaluator import Decision, evaluate
from policies.intent import TransactionIntent, load_intent
from policies.velocity import LedgerEntry, LedgerView

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EXCHANGE_A = "0x4c16027649390E3a79dDd56B0AA5a43CdB30e485"
EXCHANGE_B = "0x5abc91D7A27f625BC4Bb73f7A54ec672791AAC35"
EXCHANGE_C = "0x2065262007b530960ed796260Da9946c12370E63"
SANCTIONED = "0x61371bed4a6b90951F9f3F5673a2D5C393E2Fb20"
SCAM_MAINNET = "0xa065189F56B4a09D29aF0540fDc5321A626C2Ac6"
OTHER = "0xDd98b0535AF1475c64b312a50e578f42957b6771"
EMPTY = LedgerView.empty(NOW)


def example() -> PolicyDocument:
    return load_policy(FIXTURES / "example.yaml")


def intent(**changes: Any) -> TransactionIntent:
    fields: dict[str, Any] = {
        "request_id": "wd-1",
        "wallet": "hot-1",
        "chain_id": 1,
        "asset": "ETH",
        "destination": EXCHANGE_A,
        "amount": Decimal("0.5"),
        "initiator": "withdrawal-service",
    }
    fields.update(changes)
    return TransactionIntent(**fields)


def decide(
    the_intent: TransactionIntent,
    *,
    policy: PolicyDocument | None = None,
    approvals: Sequence[str] = (),
    ledger: LedgerView = EMPTY,
    now: datetime = NOW,
    frozen: Sequence[str] = (),
) -> Decision:
    return evaluate(
        policy or example(),
        the_intent,
        approvals=frozenset(approvals),
        ledger=ledger,
        now=now,
        frozen_wallets=frozenset(frozen),
    )


def committed(request_id: str, amount: str, at: datetime, wallet: str = "hot-1") -> LedgerEntry:
    return LedgerEntry(request_id, wallet, "ETH", Decimal(amount), at, "committed")


def reserved(request_id: str, amount: str, at: datetime, expires: datetime) -> LedgerEntry:
    return LedgerEntry(request_id, "hot-1", "ETH", Decimal(amount), at, "reserved", expires)


# --- the documented examples (docs/policies.md) --------------------------------------------------


def test_small_withdrawal_to_whitelisted_exchange_is_allowed() -> None:
    decision = decide(load_intent(FIXTURES / "intent-small.yaml"))
    assert (decision.outcome, decision.reason, decision.rule) == (
        "ALLOW",
        "rule_allow",
        "hot-small-eth",
    )
    assert decision.explanation[-1] == "ALLOW: allowed by rule hot-small-eth"
    [limit] = decision.limits
    assert (limit.limit_id, limit.used, limit.requested) == ("hot-eth-daily", 0, Decimal("0.5"))


def test_large_withdrawal_needs_two_of_three_treasury_officers() -> None:
    large = load_intent(FIXTURES / "intent-large.yaml")
    pending = decide(large)
    assert (pending.outcome, pending.rule) == ("REQUIRE_APPROVAL", "hot-large")
    assert pending.approval is not None
    assert (pending.approval.group, pending.approval.k, pending.approval.counted) == (
        "treasury",
        2,
        (),
    )
    assert [line.split(":")[0] for line in pending.explanation[1:3]] == [
        "rule hot-small-eth",
        "rule hot-small-usdc",
    ]
    assert "amount 5 is above max 1" in pending.explanation[1]
    one = decide(large, approvals=["alice"])
    assert one.outcome == "REQUIRE_APPROVAL" and one.approval is not None
    assert one.approval.counted == ("alice",) and one.approval.missing == 1
    two = decide(large, approvals=["alice", "carol"])
    assert (two.outcome, two.reason, two.rule) == ("ALLOW", "approved", "hot-large")


def test_approvals_outside_the_group_or_by_the_initiator_do_not_count() -> None:
    large = intent(amount=Decimal(5), initiator="alice")
    decision = decide(large, approvals=["alice", "dave", "erin", "bob"])
    assert decision.outcome == "REQUIRE_APPROVAL"
    assert decision.approval is not None
    assert decision.approval.counted == ("bob",)
    assert dict(decision.approval.ignored) == {
        "alice": "the initiator cannot approve its own request",
        "dave": "not in group treasury",
        "erin": "not in group treasury",
    }


def test_cold_wallet_needs_three_of_five_for_everything() -> None:
    cold = load_intent(FIXTURES / "intent-cold.yaml")
    assert decide(cold, approvals=["alice", "dave"]).outcome == "REQUIRE_APPROVAL"
    decision = decide(cold, approvals=["alice", "dave", "erin"])
    assert (decision.outcome, decision.rule) == ("ALLOW", "cold-all")
    tiny = cold.model_copy(update={"amount": Decimal("0.000000000000000001")})
    assert decide(tiny).outcome == "REQUIRE_APPROVAL"


def test_daily_limit_caps_the_hot_wallet() -> None:
    earlier = NOW - timedelta(hours=5)
    ledger = LedgerView(NOW, (committed("a", "9", earlier), committed("b", "0.6", earlier)))
    decision = decide(intent(amount=Decimal("0.5")), ledger=ledger)
    assert (decision.outcome, decision.reason, decision.rule) == (
        "DENY",
        "limit_exceeded",
        "hot-small-eth",
    )
    assert decision.explanation[-1] == "DENY: velocity limit hot-eth-daily would be exceeded"
    [limit] = decision.limits
    assert limit.used == Decimal("9.6") and not limit.fits
    assert decide(intent(amount=Decimal("0.4")), ledger=ledger).outcome == "ALLOW"


def test_unlisted_destination_is_denied_by_default() -> None:
    decision = decide(load_intent(FIXTURES / "intent-unlisted.yaml"))
    assert (decision.outcome, decision.reason, decision.rule) == ("DENY", "no_rule", None)
    assert decision.explanation[-1] == "DENY: no rule matched: default deny"
    no_match = [line for line in decision.explanation if ": no match — " in line]
    assert len(no_match) == 4


def test_whitelisted_address_on_another_chain_does_not_match() -> None:
    decision = decide(load_intent(FIXTURES / "intent-wrong-chain.yaml"))
    assert decision.outcome == "DENY" and decision.reason == "no_rule"
    assert (
        "rule hot-small-eth: no match — destination 0x4c16027649390E3a79dDd56B0AA5a43CdB30e485 is"
        " on whitelist exchanges only for chain 1, not chain 137"
    ) in decision.explanation
    # The same exchange is whitelisted on Polygon under another address: that one matches.
    assert decide(intent(chain_id=137, destination=EXCHANGE_B)).outcome == "ALLOW"


def test_sanctioned_destination_is_blocked_whatever_the_rules() -> None:
    decision = decide(load_intent(FIXTURES / "intent-sanctioned.yaml"), approvals=["alice", "bob"])
    assert (decision.outcome, decision.reason, decision.rule) == ("BLOCK", "blacklisted", None)
    assert "the blacklist overrides every rule" in decision.explanation[-1]
    assert "Sanctions list 2026-02" in decision.explanation[-1]


def test_chain_bound_blacklist_entry_only_blocks_on_its_chain() -> None:
    assert decide(intent(destination=SCAM_MAINNET)).reason == "blacklisted"
    other_chain = decide(intent(destination=SCAM_MAINNET, chain_id=137))
    assert other_chain.reason == "no_rule"


def test_activation_delay_of_a_whitelist_entry() -> None:
    to_c = intent(destination=EXCHANGE_C)
    before = decide(to_c, now=datetime(2026, 3, 3, 8, 59, 59, tzinfo=UTC))
    assert before.outcome == "DENY"
    assert (
        "rule hot-small-eth: no match — whitelist exchanges entry for"
        f" {EXCHANGE_C} on chain 1 is active only from 2026-03-03T09:00:00Z (activation delay)"
    ) in before.explanation
    at = decide(to_c, now=datetime(2026, 3, 3, 9, 0, tzinfo=UTC), ledger=LedgerView.empty(NOW))
    assert at.outcome == "ALLOW"


# --- each step of the evaluation order -----------------------------------------------------------


def test_blacklist_overrides_an_allow_rule_and_says_so() -> None:
    doc = read_structured_file(FIXTURES / "example.yaml")
    doc["rules"].insert(0, {"id": "anything", "action": "ALLOW"})
    policy = parse_policy(doc)
    decision = decide(intent(destination=SANCTIONED), policy=policy)
    assert (decision.outcome, decision.rule) == ("BLOCK", None)
    assert "rule anything matched: ALLOW, overridden by the blacklist" in decision.explanation
    assert decide(intent(destination=OTHER), policy=policy).outcome == "ALLOW"


def test_blacklist_block_rule_is_named_when_it_matches() -> None:
    doc = read_structured_file(FIXTURES / "example.yaml")
    doc["rules"].insert(
        0, {"id": "sanctions", "match": {"destination": "blacklist"}, "action": "BLOCK"}
    )
    policy = parse_policy(doc)
    decision = decide(intent(destination=SANCTIONED), policy=policy)
    assert (decision.outcome, decision.reason, decision.rule, decision.rule_action) == (
        "BLOCK",
        "blacklisted",
        "sanctions",
        "BLOCK",
    )
    clean = decide(intent(), policy=policy)
    assert "rule sanctions: no match — destination" in clean.explanation[1]
    assert clean.outcome == "ALLOW"


def test_block_rule() -> None:
    doc = read_structured_file(FIXTURES / "example.yaml")
    doc["rules"].insert(0, {"id": "no-polygon", "match": {"chains": [137]}, "action": "BLOCK"})
    decision = decide(intent(chain_id=137, destination=EXCHANGE_B), policy=parse_policy(doc))
    assert (decision.outcome, decision.reason, decision.rule) == (
        "BLOCK",
        "rule_block",
        "no-polygon",
    )
    assert decision.limits == ()


@pytest.mark.parametrize(
    ("changes", "reason", "says"),
    [
        ({"wallet": "warm-9"}, "unknown_wallet", "wallet warm-9 is not in the policy"),
        ({"chain_id": 10}, "chain_not_allowed", "may only send on chains 1, 137, not chain 10"),
        ({"asset": "DAI"}, "unknown_asset", "asset DAI is not in the policy"),
        ({"asset": "USDC", "amount": Decimal("1.0000001")}, "amount_precision", "USDC (6)"),
    ],
)
def test_intents_the_policy_cannot_speak_about_are_denied(
    changes: dict[str, Any], reason: str, says: str
) -> None:
    decision = decide(intent(**changes), approvals=["alice", "bob", "carol"])
    assert (decision.outcome, decision.reason, decision.rule) == ("DENY", reason, None)
    assert says in decision.explanation[-1]


def test_frozen_wallet_is_denied_even_with_approvals() -> None:
    decision = decide(intent(amount=Decimal(5)), approvals=["alice", "bob"], frozen=["hot-1"])
    assert (decision.outcome, decision.reason) == ("DENY", "frozen")
    assert decide(intent(), frozen=["cold-1"]).outcome == "ALLOW"


def test_approvals_never_lift_a_limit() -> None:
    ledger = LedgerView(NOW, (committed("a", "6", NOW - timedelta(hours=1)),))
    decision = decide(intent(amount=Decimal(5)), approvals=["alice", "bob", "carol"], ledger=ledger)
    assert (decision.outcome, decision.reason) == ("DENY", "limit_exceeded")
    assert decision.approval is not None and decision.approval.satisfied
    pending = decide(intent(amount=Decimal(5)), ledger=ledger)
    assert pending.outcome == "DENY", "a request that cannot fit is not left waiting for approvals"


def test_limit_counts_only_the_rolling_window() -> None:
    window = timedelta(seconds=86400)
    ledger = LedgerView(
        NOW,
        (
            committed("old", "9.5", NOW - window),  # exactly one window ago: out (half-open)
            committed("recent", "9", NOW - window + timedelta(microseconds=1)),
            committed("other-wallet", "9", NOW, wallet="cold-1"),
        ),
    )
    [limit] = decide(intent(amount=Decimal(1)), ledger=ledger).limits
    assert limit.used == Decimal(9) and limit.fits
    assert decide(intent(amount=Decimal("1.000000000000000001")), ledger=ledger).outcome == "DENY"


def test_own_reservation_is_not_counted_twice_and_expired_ones_not_at_all() -> None:
    later = NOW + timedelta(hours=1)
    ledger = LedgerView(
        NOW,
        (
            reserved("wd-1", "5", NOW - timedelta(minutes=1), later),  # this very request
            reserved("gone", "9", NOW - timedelta(hours=2), NOW),  # expired at now
            reserved("live", "4", NOW - timedelta(minutes=2), later),
        ),
    )
    decision = decide(intent(amount=Decimal(5)), approvals=["alice", "bob"], ledger=ledger)
    assert decision.outcome == "ALLOW"
    assert decision.limits[0].used == Decimal(4)


def test_later_entries_count_for_windows_that_hold_the_request() -> None:
    # A clock that went backwards must not open a window where the limit is exceeded.
    ledger = LedgerView(NOW, (committed("future", "9.8", NOW + timedelta(seconds=30)),))
    decision = decide(intent(amount=Decimal("0.5")), ledger=ledger)
    assert decision.outcome == "DENY" and decision.limits[0].used == Decimal("9.8")


def test_naive_now_is_refused() -> None:
    with pytest.raises(EvaluationInputError) as info:
        decide(intent(), now=datetime(2026, 3, 2, 12, 0))
    assert info.value.argument == "now"


def test_record_is_canonical_json_ready() -> None:
    decision = decide(intent(amount=Decimal(5)), approvals=["alice", "dave"])
    record = decision.to_record()
    canonical_json(record)
    assert record["outcome"] == "REQUIRE_APPROVAL"
    assert record["policy_hash"] == example().policy_hash()
    assert record["intent_digest"] == intent(amount=Decimal(5)).digest_hex()
    assert record["intent"]["amount"] == "5"
    assert record["approval"] == {
        "group": "treasury",
        "k": 2,
        "counted": ["alice"],
        "ignored": [{"officer": "dave", "why": "not in group treasury"}],
    }
    assert record["limits"][0]["max_amount"] == "10"
    assert record["evaluated_at"] == "2026-03-02T12:00:00Z"


# --- random policies: first match wins, default deny, determinism --------------------------------

BASE = read_structured_file(FIXTURES / "example.yaml")
WALLETS = [
    {"id": "w-hot", "tier": "hot", "chains": [1, 137]},
    {"id": "w-hot2", "tier": "hot"},
    {"id": "w-cold", "tier": "cold", "chains": [1]},
]
WALLET_IDS = [w["id"] for w in WALLETS]
TIER_OF = {w["id"]: w["tier"] for w in WALLETS}
CHAINS = [1, 137, 10]
ACTIVATION = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
WHITELISTS = {
    "wl-a": [
        {"address": EXCHANGE_A, "chain_id": 1, "label": "A"},
        {"address": EXCHANGE_B, "chain_id": 1, "label": "B"},
        {"address": EXCHANGE_B, "chain_id": 137, "label": "B polygon"},
    ],
    "wl-b": [
        {
            "address": EXCHANGE_C,
            "chain_id": 1,
            "label": "C",
            "added_at": "2026-03-02T10:00:00Z",
            "activation_delay_seconds": 3600,
        }
    ],
}
DESTINATIONS = [EXCHANGE_A, EXCHANGE_B, EXCHANGE_C, SANCTIONED, OTHER]
AMOUNTS = ["0", "0.5", "1", "2.25", "10", "100"]
INITIATORS = ["svc", "ops", "alice", "bob"]
GROUPS = {"g-small": ["alice", "bob", "carol"], "g-all": ["alice", "bob", "carol", "dave", "erin"]}


def _optional_subset(draw: Any, values: Sequence[Any]) -> list[Any] | None:
    if draw(st.booleans()):
        return None
    return draw(st.lists(st.sampled_from(values), min_size=1, unique=True))


@st.composite
def rule_dicts(draw: Any, rule_id: str) -> dict[str, Any]:
    match: dict[str, Any] = {}
    scope = draw(st.sampled_from(["none", "wallets", "tiers"]))
    if scope == "wallets":
        match["wallets"] = draw(st.lists(st.sampled_from(WALLET_IDS), min_size=1, unique=True))
    elif scope == "tiers":
        match["tiers"] = draw(st.lists(st.sampled_from(["hot", "cold"]), min_size=1, unique=True))
    for key, values in (
        ("chains", CHAINS),
        ("assets", ["ETH", "USDC"]),
        ("initiators", INITIATORS),
    ):
        chosen = _optional_subset(draw, values)
        if chosen is not None:
            match[key] = chosen
    match["destination"] = draw(
        st.sampled_from(["any", "whitelist:wl-a", "whitelist:wl-b", "blacklist"])
    )
    if "assets" in match and draw(st.booleans()):
        low, high = sorted(
            draw(st.lists(st.sampled_from(AMOUNTS), min_size=2, max_size=2)), key=Decimal
        )
        bounds = draw(st.sampled_from([{"min": low}, {"max": high}, {"min": low, "max": high}]))
        match["amount"] = bounds
    action = draw(st.sampled_from(["ALLOW", "BLOCK", "REQUIRE_APPROVAL"]))
    if match["destination"] == "blacklist":
        action = "BLOCK"
    rule: dict[str, Any] = {"id": rule_id, "match": match, "action": action}
    if action == "REQUIRE_APPROVAL":
        group = draw(st.sampled_from(sorted(GROUPS)))
        rule["approvals"] = {"group": group, "k": draw(st.integers(1, len(GROUPS[group])))}
    return rule


@st.composite
def policy_dicts(draw: Any) -> dict[str, Any]:
    count = draw(st.integers(0, 6))
    rules = [draw(rule_dicts(f"r{index}")) for index in range(count)]
    limits = []
    for index in range(draw(st.integers(0, 2))):
        limit: dict[str, Any] = {
            "id": f"l{index}",
            "asset": draw(st.sampled_from(["ETH", "USDC"])),
            "window_seconds": draw(st.sampled_from([60, 3600, 86400])),
            "max_amount": draw(st.sampled_from(["1", "5", "100"])),
        }
        if draw(st.booleans()):
            limit["wallet"] = draw(st.sampled_from(WALLET_IDS))
        else:
            limit["tier"] = draw(st.sampled_from(["hot", "cold"]))
        limits.append(limit)
    return {
        "version": 1,
        "officers": copy.deepcopy(BASE["officers"]),
        "governance": {"quorum": 3, "freeze_quorum": 1},
        "groups": copy.deepcopy(GROUPS),
        "assets": {"ETH": {"decimals": 18}, "USDC": {"decimals": 6}},
        "wallets": copy.deepcopy(WALLETS),
        "whitelists": copy.deepcopy(WHITELISTS),
        "blacklist": [{"address": SANCTIONED, "label": "sanctioned"}],
        "rules": rules,
        "velocity_limits": limits,
    }


intents = st.builds(
    TransactionIntent,
    request_id=st.just("req-1"),
    wallet=st.sampled_from(WALLET_IDS),
    chain_id=st.sampled_from(CHAINS),
    asset=st.sampled_from(["ETH", "USDC"]),
    destination=st.sampled_from(DESTINATIONS),
    amount=st.sampled_from([Decimal(a) for a in AMOUNTS if a != "0"] + [Decimal("0.000001")]),
    initiator=st.sampled_from(INITIATORS),
)


def reference_matches(rule: dict[str, Any], the_intent: TransactionIntent, now: datetime) -> bool:
    """A deliberately naive restatement of the matching rules, for comparison."""
    match = rule["match"]
    if "wallets" in match and the_intent.wallet not in match["wallets"]:
        return False
    if "tiers" in match and TIER_OF[the_intent.wallet] not in match["tiers"]:
        return False
    if "chains" in match and the_intent.chain_id not in match["chains"]:
        return False
    if "assets" in match and the_intent.asset not in match["assets"]:
        return False
    destination = match["destination"]
    if destination == "blacklist" and the_intent.destination != SANCTIONED:
        return False
    if destination.startswith("whitelist:"):
        entries = WHITELISTS[destination.split(":")[1]]
        listed = [
            e
            for e in entries
            if e["address"] == the_intent.destination and e["chain_id"] == the_intent.chain_id
        ]
        if not listed:
            return False
        # wl-b's entry counts from added_at + delay = ACTIVATION.
        if "added_at" in listed[0] and now < ACTIVATION:
            return False
    amount = match.get("amount", {})
    if "min" in amount and the_intent.amount < Decimal(amount["min"]):
        return False
    if "max" in amount and the_intent.amount > Decimal(amount["max"]):
        return False
    return not ("initiators" in match and the_intent.initiator not in match["initiators"])


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_dicts(),
    intents,
    st.sampled_from(
        [ACTIVATION - timedelta(seconds=1), ACTIVATION, ACTIVATION + timedelta(hours=2)]
    ),
)
def test_first_matching_rule_decides_and_no_match_denies(
    doc: dict[str, Any], the_intent: TransactionIntent, now: datetime
) -> None:
    policy = parse_policy(doc)
    decision = evaluate(
        policy, the_intent, approvals=frozenset(), ledger=LedgerView.empty(now), now=now
    )
    event(f"{decision.outcome} ({decision.reason})")
    wallet = next(w for w in WALLETS if w["id"] == the_intent.wallet)
    if "chains" in wallet and the_intent.chain_id not in wallet["chains"]:
        assert (decision.outcome, decision.reason) == ("DENY", "chain_not_allowed")
        return
    rules = doc["rules"]
    first = next((r for r in rules if reference_matches(r, the_intent, now)), None)
    skipped = rules if first is None else rules[: rules.index(first)]
    explained = [line.split(":")[0] for line in decision.explanation if ": no match — " in line]
    assert explained == [f"rule {r['id']}" for r in skipped]
    if the_intent.destination == SANCTIONED:
        assert decision.outcome == "BLOCK"
        assert decision.rule == (first["id"] if first and first["action"] == "BLOCK" else None)
        return
    if first is None:
        assert (decision.outcome, decision.reason, decision.rule) == ("DENY", "no_rule", None)
        return
    assert decision.rule == first["id"]
    if first["action"] == "BLOCK":
        assert decision.outcome == "BLOCK"
        return
    tier = TIER_OF[the_intent.wallet]
    caps = [
        Decimal(limit["max_amount"])
        for limit in doc["velocity_limits"]
        if limit["asset"] == the_intent.asset
        and (limit.get("wallet") == the_intent.wallet or limit.get("tier") == tier)
    ]
    if any(the_intent.amount > cap for cap in caps):
        assert (decision.outcome, decision.reason) == ("DENY", "limit_exceeded")
    else:
        expected = "ALLOW" if first["action"] == "ALLOW" else "REQUIRE_APPROVAL"
        assert decision.outcome == expected


ledger_entries = st.lists(
    st.builds(
        LedgerEntry,
        request_id=st.sampled_from(["req-1", "x1", "x2", "x3", "x4"]),
        wallet=st.sampled_from(WALLET_IDS),
        asset=st.sampled_from(["ETH", "USDC"]),
        amount=st.sampled_from([Decimal("0.5"), Decimal(1), Decimal("2.25")]),
        at=st.sampled_from([ACTIVATION - timedelta(seconds=s) for s in (0, 30, 3000, 90000)]),
        state=st.sampled_from(["reserved", "committed"]),
        expires_at=st.sampled_from([None, ACTIVATION, ACTIVATION + timedelta(hours=1)]),
    ),
    max_size=6,
)


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_dicts(),
    intents,
    st.lists(st.sampled_from(["alice", "bob", "carol", "dave", "erin", "mallory"]), unique=True),
    ledger_entries,
    st.sets(st.sampled_from(WALLET_IDS)),
    st.randoms(use_true_random=False),
)
def test_evaluation_is_deterministic(
    doc: dict[str, Any],
    the_intent: TransactionIntent,
    approvers: list[str],
    entries: list[LedgerEntry],
    frozen: set[str],
    rnd: Any,
) -> None:
    policy = parse_policy(doc)
    first = evaluate(
        policy,
        the_intent,
        approvals=frozenset(approvers),
        ledger=LedgerView(ACTIVATION, tuple(entries)),
        now=ACTIVATION,
        frozen_wallets=frozenset(frozen),
    )
    # Same meaning, presented differently: another parse, shuffled approvals and ledger.
    rnd.shuffle(approvers)
    rnd.shuffle(entries)
    again = evaluate(
        parse_policy(copy.deepcopy(doc)),
        TransactionIntent.model_validate(the_intent.model_dump()),
        approvals=frozenset(approvers),
        ledger=LedgerView(ACTIVATION, tuple(entries)),
        now=ACTIVATION,
        frozen_wallets=frozenset(frozen),
    )
    assert again == first
    assert canonical_json(again.to_record()) == canonical_json(first.to_record())


# --- exact decimals at 18 places -----------------------------------------------------------------

WEI = Decimal("0.000000000000000001")


def _eth(wei: int) -> Decimal:
    return Decimal(wei).scaleb(-18, AMOUNT_CONTEXT)


@settings(deadline=None, max_examples=200)
@given(
    st.lists(st.integers(1, 10**24), max_size=8),
    st.integers(1, 10**24),
    st.integers(0, 10**6),
)
def test_limits_are_exact_at_18_decimals(
    spent_wei: list[int], request_wei: int, spare: int
) -> None:
    limit_wei = sum(spent_wei) + request_wei + spare
    doc = read_structured_file(FIXTURES / "example.yaml")
    doc["rules"] = [{"id": "all", "action": "ALLOW"}]
    doc["velocity_limits"] = [
        {
            "id": "cap",
            "wallet": "hot-1",
            "asset": "ETH",
            "window_seconds": 86400,
            "max_amount": format(_eth(limit_wei), "f"),
        }
    ]
    policy = parse_policy(doc)
    ledger = LedgerView(
        NOW, tuple(committed(f"s{i}", format(_eth(w), "f"), NOW) for i, w in enumerate(spent_wei))
    )
    fits = evaluate(
        policy,
        intent(amount=_eth(request_wei + spare)),
        approvals=frozenset(),
        ledger=ledger,
        now=NOW,
    )
    assert fits.outcome == "ALLOW"
    assert fits.limits[0].used.scaleb(18, AMOUNT_CONTEXT) == sum(spent_wei)
    assert fits.limits[0].remaining_after == 0
    over = evaluate(
        policy,
        intent(amount=AMOUNT_CONTEXT.add(_eth(request_wei + spare), WEI)),
        approvals=frozenset(),
        ledger=ledger,
        now=NOW,
    )
    assert (over.outcome, over.reason) == ("DENY", "limit_exceeded")
    assert over.limits[0].remaining_after == -WEI


@settings(deadline=None, max_examples=100)
@given(st.integers(1, 10**30))
def test_rule_amount_bounds_are_exact_at_18_decimals(max_wei: int) -> None:
    doc = read_structured_file(FIXTURES / "example.yaml")
    doc["rules"] = [
        {
            "id": "small",
            "match": {"assets": ["ETH"], "amount": {"max": format(_eth(max_wei), "f")}},
            "action": "ALLOW",
        }
    ]
    doc["velocity_limits"] = []
    policy = parse_policy(doc)
    at_max = evaluate(
        policy, intent(amount=_eth(max_wei)), approvals=frozenset(), ledger=EMPTY, now=NOW
    )
    assert at_max.outcome == "ALLOW"
    above = evaluate(
        policy, intent(amount=_eth(max_wei + 1)), approvals=frozenset(), ledger=EMPTY, now=NOW
    )
    assert above.outcome == "DENY"
    assert above.explanation[1].startswith("rule small: no match — amount")


def test_evaluation_touches_no_clock_file_network_or_randomness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins
    import os
    import random
    import socket
    import time

    policy, large = example(), intent(amount=Decimal(5))
    expected = decide(large, policy=policy, approvals=["alice", "bob"])

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the evaluator must be pure")

    for owner, name in [
        (builtins, "open"),
        (os, "open"),
        (os, "urandom"),
        (socket, "socket"),
        (time, "time"),
        (time, "time_ns"),
        (time, "monotonic"),
        (random, "random"),
    ]:
        monkeypatch.setattr(owner, name, forbidden)
    fresh_policy = PolicyDocument.model_validate(policy.model_dump())
    assert decide(large, policy=fresh_policy, approvals=["alice", "bob"]) == expected
