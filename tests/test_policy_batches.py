"""Batch payouts as the nodes decide them (issue 12, item 6b): a transaction to the policy's
disperse contract is read leg by leg (signer/chains/disperse.py, the `disperse` calldata kind)
into one intent with `legs`, and the evaluator decides every leg and the total
(policies/evaluator.py, `_evaluate_batch`): one blocked leg refuses the batch whole, an amount
bound applies to the total, approvals are of the whole batch, velocity counts every leg."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_world import (
    BLACKLISTED,
    CHAIN,
    INITIATOR,
    STRANGER,
    WHITELISTED,
    Officers,
    policy_document,
)

from policies.diff import diff_policies
from policies.document import PolicyDocument, parse_policy
from policies.errors import IntentSchemaError, PolicySchemaError
from policies.evaluator import Decision, evaluate
from policies.intent import TransactionIntent, parse_intent
from policies.velocity import LedgerEntry, LedgerView
from signer.chains.disperse import encode_disperse_ether, encode_disperse_token
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Eip1559Transfer
from signer.chains.intent import intent_of
from signer.problems import ErrorCode

DISPERSE = to_checksum_address("0x" + "d1" * 20)
OTHER_CONTRACT = to_checksum_address("0x" + "d2" * 20)
TOKEN = to_checksum_address("0x" + "e1" * 20)
SECOND = to_checksum_address("0x" + "a3" * 20)
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
WEI = 10**18


@functools.cache
def make_policy() -> PolicyDocument:
    """policy_world's policy (ALLOW up to 1 ETH to the whitelist, approvals above, BLOCK above
    5, a 3 ETH daily limit) with a second whitelisted address, a 6-decimal token and the
    disperse contract on its chain."""
    doc = policy_document(Officers.make()).canonical_object()
    doc["whitelists"]["exchanges"].append({"address": SECOND, "chain_id": CHAIN, "label": "Two"})
    doc["assets"]["USDT"] = {
        "decimals": 6,
        "native_chains": [],
        "contracts": [{"chain_id": CHAIN, "address": TOKEN}],
    }
    doc["disperse_contracts"] = [{"chain_id": CHAIN, "address": DISPERSE}]
    return parse_policy(doc, source="test_policy_batches")


@pytest.fixture
def policy() -> PolicyDocument:
    return make_policy()


def batch(*legs: tuple[str, str], request_id: str = "bt-1", **fields: Any) -> TransactionIntent:
    total = sum((Decimal(amount) for _, amount in legs), Decimal(0))
    return parse_intent(
        {
            "request_id": request_id,
            "wallet": "hot",
            "chain_id": CHAIN,
            "asset": "ETH",
            "destination": DISPERSE,
            "amount": str(total),
            "initiator": INITIATOR,
            "legs": [{"destination": d, "amount": a} for d, a in legs],
            **fields,
        }
    )


def decide(
    policy: PolicyDocument,
    intent: TransactionIntent,
    approvals: frozenset[str] = frozenset(),
    ledger: LedgerView | None = None,
) -> Decision:
    return evaluate(
        policy,
        intent,
        approvals=approvals,
        ledger=ledger or LedgerView.empty(NOW),
        now=NOW,
    )


# --- the intent -----------------------------------------------------------------------------------


def test_a_batch_digests_its_legs_and_a_single_withdrawal_digests_as_before() -> None:
    one = parse_intent(
        {
            "request_id": "wd-1",
            "wallet": "hot",
            "chain_id": CHAIN,
            "asset": "ETH",
            "destination": WHITELISTED,
            "amount": "0.5",
            "initiator": INITIATOR,
        }
    )
    assert "legs" not in one.canonical_object()  # approvals of single withdrawals still hold
    first = batch((WHITELISTED, "0.25"), (SECOND, "0.25"))
    assert first.canonical_object()["legs"] == [
        {"destination": WHITELISTED, "amount": "0.25"},
        {"destination": SECOND, "amount": "0.25"},
    ]
    swapped = batch((WHITELISTED, "0.2"), (SECOND, "0.3"))  # same total, other legs
    assert first.amount == swapped.amount and first.digest() != swapped.digest()


@pytest.mark.parametrize(
    ("legs", "amount", "why"),
    [
        ([("0.25", WHITELISTED)], "0.5", "the sum of its legs"),
        ([], "1", "at least 1"),
        ([("0", WHITELISTED)], "0", "zero"),
    ],
)
def test_a_batch_intent_must_add_up(legs: list[tuple[str, str]], amount: str, why: str) -> None:
    with pytest.raises(IntentSchemaError) as caught:
        parse_intent(
            {
                "request_id": "bt-bad",
                "wallet": "hot",
                "chain_id": CHAIN,
                "asset": "ETH",
                "destination": DISPERSE,
                "amount": amount,
                "initiator": INITIATOR,
                "legs": [{"destination": d, "amount": a} for a, d in legs],
            }
        )
    assert why in str(caught.value)


def test_a_batch_of_more_than_1000_legs_is_no_intent() -> None:
    with pytest.raises(IntentSchemaError):
        batch(*[(WHITELISTED, "0.000001")] * 1001)


# --- the evaluator --------------------------------------------------------------------------------


def test_a_batch_whose_legs_and_total_are_allowed_is_allowed(policy: PolicyDocument) -> None:
    decision = decide(policy, batch((WHITELISTED, "0.25"), (SECOND, "0.5")))
    assert decision.outcome == "ALLOW" and decision.rule == "small"
    assert any("2 leg(s) (0, 1)" in line for line in decision.explanation)


def test_one_blacklisted_leg_blocks_the_batch_whole(policy: PolicyDocument) -> None:
    decision = decide(policy, batch((WHITELISTED, "0.25"), (BLACKLISTED, "0.01")))
    assert decision.outcome == "BLOCK" and decision.reason == "blacklisted"
    assert "leg 1" in decision.explanation[-1] and "refused whole" in decision.explanation[-1]


def test_one_leg_no_rule_allows_denies_the_batch_whole(policy: PolicyDocument) -> None:
    decision = decide(policy, batch((WHITELISTED, "0.25"), (SECOND, "0.1"), (STRANGER, "0.1")))
    assert decision.outcome == "DENY" and decision.reason == "no_rule"
    assert "leg 2" in decision.explanation[-1]


def test_a_block_outranks_a_deny_among_the_legs(policy: PolicyDocument) -> None:
    decision = decide(policy, batch((STRANGER, "0.1"), (BLACKLISTED, "0.1")))
    assert decision.outcome == "BLOCK" and "leg 1" in decision.explanation[-1]


def test_an_amount_bound_applies_to_the_total_not_only_to_each_leg(
    policy: PolicyDocument,
) -> None:
    # each leg is within "small" (up to 1 ETH); one transaction moving 1.2 is not
    pending = decide(policy, batch((WHITELISTED, "0.6"), (SECOND, "0.6")))
    assert pending.outcome == "REQUIRE_APPROVAL" and pending.rule == "large"
    # and above 5 in all, "too-large" blocks it although no leg is above 5
    blocked = decide(policy, batch((WHITELISTED, "2.6"), (SECOND, "2.6")))
    assert blocked.outcome == "BLOCK" and blocked.rule == "too-large"


def test_a_batch_needing_approvals_is_allowed_by_the_officers_approvals_of_it(
    policy: PolicyDocument,
) -> None:
    intent = batch((WHITELISTED, "0.6"), (SECOND, "0.6"))
    one = decide(policy, intent, frozenset({"alice"}))
    assert one.outcome == "REQUIRE_APPROVAL" and one.approval is not None
    assert one.approval.missing == 1
    both = decide(policy, intent, frozenset({"alice", "bob"}))
    assert both.outcome == "ALLOW" and both.reason == "approved"


def test_velocity_counts_every_leg(policy: PolicyDocument) -> None:
    used = LedgerEntry(
        request_id="earlier",
        wallet="hot",
        asset="ETH",
        amount=Decimal("2.5"),
        at=NOW - timedelta(hours=1),
        state="committed",
    )
    ledger = LedgerView(as_of=NOW, entries=(used,))
    # every leg alone would fit the 3 ETH day (2.5 + 0.3); the batch moves 0.6
    decision = decide(policy, batch((WHITELISTED, "0.3"), (SECOND, "0.3")), ledger=ledger)
    assert decision.outcome == "DENY" and decision.reason == "limit_exceeded"
    assert decision.limits[0].requested == Decimal("0.6")
    fits = decide(policy, batch((WHITELISTED, "0.25"), (SECOND, "0.25")), ledger=ledger)
    assert fits.outcome == "ALLOW"


def test_a_frozen_wallet_sends_no_batch(policy: PolicyDocument) -> None:
    decision = evaluate(
        policy,
        batch((WHITELISTED, "0.1")),
        approvals=frozenset(),
        ledger=LedgerView.empty(NOW),
        now=NOW,
        frozen_wallets=frozenset({"hot"}),
    )
    assert decision.outcome == "DENY" and decision.reason == "frozen"


# --- the node's reading of the transaction ------------------------------------------------------


def payload(to: str, data: bytes, value: int) -> bytes:
    return Eip1559Transfer(
        chain_id=CHAIN,
        nonce=7,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=2 * 10**9,
        gas=2_000_000,
        to=to,
        value=value,
        data=data,
    ).signing_payload()


def read(policy: PolicyDocument, raw: bytes) -> TransactionIntent:
    return intent_of(raw, policy, wallet="hot", request_id="bt-1", initiator=INITIATOR).intent


def refused(policy: PolicyDocument, raw: bytes) -> TransactionRefused:
    with pytest.raises(TransactionRefused) as caught:
        read(policy, raw)
    return caught.value


def test_the_node_reads_an_ether_batch_leg_by_leg(policy: PolicyDocument) -> None:
    values = [25 * 10**16, 5 * 10**17 + 3]
    data = encode_disperse_ether([WHITELISTED, SECOND], values)
    intent = read(policy, payload(DISPERSE, data, sum(values)))
    assert intent == batch((WHITELISTED, "0.25"), (SECOND, "0.500000000000000003"))


def test_the_node_reads_a_token_batch_in_the_tokens_units(policy: PolicyDocument) -> None:
    data = encode_disperse_token(TOKEN, [WHITELISTED, SECOND], [1_500_000, 1])
    intent = read(policy, payload(DISPERSE, data, 0))
    assert intent.asset == "USDT" and intent.amount == Decimal("1.500001")
    assert intent.legs is not None and [leg.amount for leg in intent.legs] == [
        Decimal("1.5"),
        Decimal("0.000001"),
    ]


def test_a_batch_through_another_contract_is_not_read(policy: PolicyDocument) -> None:
    data = encode_disperse_ether([WHITELISTED], [WEI])
    error = refused(policy, payload(OTHER_CONTRACT, data, WEI))
    assert error.code is ErrorCode.UNSUPPORTED_TRANSACTION and error.check == "contract"
    without = parse_policy(
        {**policy.canonical_object(), "disperse_contracts": []}, source="no disperse"
    )
    error = refused(without, payload(DISPERSE, data, WEI))
    assert error.code is ErrorCode.UNSUPPORTED_TRANSACTION and "none named" in error.detail


@pytest.mark.parametrize("value", [0, WEI - 1, WEI + 1])
def test_an_ether_batch_sends_exactly_the_sum_of_its_legs(
    policy: PolicyDocument, value: int
) -> None:
    data = encode_disperse_ether([WHITELISTED, SECOND], [WEI // 2, WEI // 2])
    error = refused(policy, payload(DISPERSE, data, value))
    assert error.code is ErrorCode.TRANSACTION_INVALID and error.check == "value"


def test_a_token_batch_sends_no_ether_and_only_a_policy_token(policy: PolicyDocument) -> None:
    data = encode_disperse_token(TOKEN, [WHITELISTED], [10])
    error = refused(policy, payload(DISPERSE, data, 1))
    assert error.code is ErrorCode.TRANSACTION_INVALID and error.check == "value"
    unknown = encode_disperse_token(OTHER_CONTRACT, [WHITELISTED], [10])
    error = refused(policy, payload(DISPERSE, unknown, 0))
    assert error.code is ErrorCode.UNSUPPORTED_TRANSACTION and error.check == "token"


def test_a_policy_names_one_disperse_contract_per_chain_and_never_a_token(
    policy: PolicyDocument,
) -> None:
    doc = policy.canonical_object()
    for contracts, why in (
        ([{"chain_id": CHAIN, "address": DISPERSE}] * 2, "duplicate chain"),
        ([{"chain_id": CHAIN, "address": TOKEN}], "USDT's token contract"),
    ):
        with pytest.raises(PolicySchemaError) as caught:
            parse_policy({**doc, "disperse_contracts": contracts}, source="bad")
        assert why in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([WHITELISTED, SECOND]), st.integers(1, 10**24)),
        min_size=1,
        max_size=40,
    )
)
def test_every_ether_batch_reads_back_exactly(legs: list[tuple[str, int]]) -> None:
    policy = make_policy()
    data = encode_disperse_ether([d for d, _ in legs], [v for _, v in legs])
    intent = read(policy, payload(DISPERSE, data, sum(v for _, v in legs)))
    assert intent.legs is not None
    assert [(leg.destination, leg.amount) for leg in intent.legs] == [
        (d, Decimal(v).scaleb(-18)) for d, v in legs
    ]
    assert intent.amount == Decimal(sum(v for _, v in legs)).scaleb(-18)


def test_naming_a_disperse_contract_is_loosening_and_removing_it_tightening(
    policy: PolicyDocument,
) -> None:
    doc = policy.canonical_object()
    before = parse_policy({**doc, "disperse_contracts": []}, source="without")
    added = diff_policies(before, policy)
    assert added.loosening == (f"disperse contract {DISPERSE} on chain {CHAIN}",)
    removed = diff_policies(policy, before)
    assert removed.tightening == (f"disperse contract {DISPERSE} on chain {CHAIN} removed",)
    assert not removed.loosening


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([bytes.fromhex("e63d38ed"), bytes.fromhex("c73a2d60")]),
    st.binary(max_size=400),
    st.integers(0, 2 * WEI),
)
def test_random_batch_calldata_is_read_or_refused_with_a_typed_error(
    selector: bytes, body: bytes, value: int
) -> None:
    policy = make_policy()
    try:
        intent = read(policy, payload(DISPERSE, selector + body, value))
    except TransactionRefused as exc:
        assert exc.code in (ErrorCode.TRANSACTION_INVALID, ErrorCode.UNSUPPORTED_TRANSACTION)
        # never the input (a short run of hex could be any word's letters, "ed" in "encoded")
        assert len(body) < 8 or body.hex() not in exc.detail
    else:
        assert intent.legs is not None and intent.destination == DISPERSE
