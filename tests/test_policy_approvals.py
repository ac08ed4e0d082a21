"""Withdrawal approvals: binding, validity window, replay, self-approval, group membership —
each rejection case on its own, and the batch semantics a node relies on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.approvals import (
    MAX_APPROVAL_LIFETIME,
    Approval,
    check_approvals,
    load_approval,
    parse_approval,
    sign_approval,
    verify_approval,
    verify_approvals,
)
from policies.document import PolicyDocument, parse_policy
from policies.errors import (
    ApprovalBindingError,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalFormatError,
    ApprovalGroupError,
    ApprovalNotYetValidError,
    ApprovalOfficerError,
    ApprovalReplayError,
    ApprovalSignatureError,
    ApprovalWindowError,
    SelfApprovalError,
)
from policies.intent import TransactionIntent, parse_intent
from policies.keys import LocalOfficerSigner, generate_officer_key

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
OFFICERS = [
    generate_officer_key(name, alg)
    for name, alg in [
        ("alice", "ed25519"),
        ("bob", "p256"),
        ("carol", "ed25519"),
        ("dave", "p256"),
        ("erin", "ed25519"),
    ]
]
ALICE, BOB, CAROL, DAVE, ERIN = OFFICERS
EXCHANGE = to_checksum_address("0x" + "5a" * 20)
OTHER = to_checksum_address("0x" + "7c" * 20)


def officer_entry(signer: LocalOfficerSigner) -> dict[str, str]:
    return {
        "id": signer.officer_id,
        "algorithm": signer.algorithm,
        "public_key": signer.public_key_hex,
    }


def policy_obj(
    officers: Sequence[LocalOfficerSigner] = OFFICERS[:3],
    *,
    version: int = 1,
    previous: str | None = None,
    quorum: int = 2,
    freeze_quorum: int = 1,
    timelock: int = 0,
    whitelist: Sequence[str] = (EXCHANGE,),
    daily_limit: str = "100",
    large_from: str = "10",
) -> dict[str, Any]:
    """A small policy: hot wallet, small withdrawals to whitelisted addresses auto-approved,
    large ones need 2 of the treasury group, a cold wallet needs 2 for everything, a daily limit."""
    ids = [o.officer_id for o in officers]
    return {
        "version": version,
        "previous": previous,
        "officers": [officer_entry(o) for o in officers],
        "governance": {
            "quorum": quorum,
            "freeze_quorum": freeze_quorum,
            "loosening_timelock_seconds": timelock,
        },
        "groups": {"treasury": ids},
        "assets": {"ETH": {"decimals": 18}},
        "wallets": [{"id": "hot-1", "tier": "hot"}, {"id": "cold-1", "tier": "cold"}],
        "whitelists": {
            "exchanges": [
                {"address": a, "chain_id": 1, "label": f"exchange {i}"}
                for i, a in enumerate(whitelist)
            ]
        },
        "rules": [
            {
                "id": "hot-small",
                "match": {
                    "wallets": ["hot-1"],
                    "assets": ["ETH"],
                    "destination": "whitelist:exchanges",
                    "amount": {"max": large_from},
                },
                "action": "ALLOW",
            },
            {
                "id": "hot-large",
                "match": {"wallets": ["hot-1"], "destination": "whitelist:exchanges"},
                "action": "REQUIRE_APPROVAL",
                "approvals": {"group": "treasury", "k": 2},
            },
            {
                "id": "cold-all",
                "match": {"wallets": ["cold-1"]},
                "action": "REQUIRE_APPROVAL",
                "approvals": {"group": "treasury", "k": 2},
            },
        ],
        "velocity_limits": [
            {
                "id": "hot-daily",
                "wallet": "hot-1",
                "asset": "ETH",
                "window_seconds": 86400,
                "max_amount": daily_limit,
            }
        ],
    }


def make_policy(*args: Any, **kwargs: Any) -> PolicyDocument:
    return parse_policy(policy_obj(*args, **kwargs))


def make_intent(**overrides: Any) -> TransactionIntent:
    fields = {
        "request_id": "wd-0001",
        "wallet": "hot-1",
        "chain_id": 1,
        "asset": "ETH",
        "destination": EXCHANGE,
        "amount": "25",
        "initiator": "svc-withdrawals",
    }
    return parse_intent({**fields, **overrides})


POLICY = make_policy()
INTENT = make_intent()


def approve(
    signer: LocalOfficerSigner = ALICE,
    intent: TransactionIntent = INTENT,
    policy: PolicyDocument = POLICY,
    **kwargs: Any,
) -> Approval:
    return sign_approval(signer, intent, policy, now=NOW, **kwargs)


def rejected(approval: Approval, *, now: datetime = NOW, **kwargs: Any) -> ApprovalError:
    with pytest.raises(ApprovalError) as info:
        verify_approval(
            kwargs.pop("policy", POLICY),
            kwargs.pop("intent", INTENT),
            approval,
            now=now,
            **kwargs,
        )
    assert INTENT.request_id in str(info.value)
    return info.value


def test_valid_approvals_count() -> None:
    approvals = [approve(ALICE), approve(BOB)]
    for approval in approvals:
        verify_approval(POLICY, INTENT, approval, now=NOW + timedelta(minutes=5))
    assert verify_approvals(POLICY, INTENT, approvals, now=NOW) == {"alice", "bob"}


def test_forged_signature() -> None:
    good = approve(ALICE)
    forged = good.model_copy(update={"signature": BOB.sign(b"x").hex()})
    err = rejected(forged)
    assert isinstance(err, ApprovalSignatureError) and err.officer == "alice"


def test_signed_with_the_wrong_key() -> None:
    """Mallory's key, claiming to be alice: the statement names alice, the key is not hers."""
    impostor = generate_officer_key("alice", "ed25519")
    err = rejected(approve(impostor))
    assert isinstance(err, ApprovalSignatureError) and "alice's ed25519 key" in err.reason


def test_tampered_statement_breaks_the_signature() -> None:
    stretched = approve(ALICE).model_copy(update={"expires_at": NOW + timedelta(hours=5)})
    assert isinstance(rejected(stretched), ApprovalSignatureError)


def test_signer_is_not_an_officer() -> None:
    mallory = generate_officer_key("mallory", "ed25519")
    err = rejected(approve(mallory))
    assert isinstance(err, ApprovalOfficerError) and err.officer == "mallory"


def test_officer_removed_in_the_new_version_can_no_longer_approve() -> None:
    v2 = make_policy([ALICE, BOB, DAVE], version=2, previous=POLICY.policy_hash())  # carol removed
    err = rejected(approve(CAROL, policy=v2), policy=v2)
    assert isinstance(err, ApprovalOfficerError) and "version 2" in err.reason


def test_not_in_the_group() -> None:
    policy = parse_policy({**policy_obj(), "groups": {"treasury": ["alice", "bob"]}})
    approval = approve(CAROL, policy=policy)
    verify_approval(policy, INTENT, approval, now=NOW)  # fine when no group is asked
    err = rejected(approval, policy=policy, group="treasury")
    assert isinstance(err, ApprovalGroupError) and "'treasury'" in err.reason


def test_expired() -> None:
    approval = approve(ALICE, lifetime=timedelta(minutes=10))
    verify_approval(
        POLICY, INTENT, approval, now=NOW + timedelta(minutes=10) - timedelta(seconds=1)
    )
    err = rejected(approval, now=NOW + timedelta(minutes=10))
    assert isinstance(err, ApprovalExpiredError)


def test_not_yet_valid() -> None:
    approval = approve(ALICE)
    err = rejected(approval, now=NOW - timedelta(seconds=1))
    assert isinstance(err, ApprovalNotYetValidError)


def test_replayed_nonce() -> None:
    approval = approve(ALICE)
    err = rejected(approval, seen_nonces={approval.nonce})
    assert isinstance(err, ApprovalReplayError) and approval.nonce in err.reason


def test_bound_to_another_request() -> None:
    other = make_intent(request_id="wd-0002")
    err = rejected(approve(ALICE, intent=other))
    assert isinstance(err, ApprovalBindingError) and "another request ('wd-0002')" in err.reason


@pytest.mark.parametrize(
    "change",
    [{"amount": "25.000000000000000001"}, {"destination": OTHER}, {"chain_id": 137}],
    ids=["amount", "destination", "chain"],
)
def test_bound_to_another_transaction(change: dict[str, Any]) -> None:
    """Same request id, different transaction: the coordinator swapped the payload."""
    swapped = make_intent(**change)
    err = rejected(approve(ALICE), intent=swapped)
    assert isinstance(err, ApprovalBindingError) and "another transaction" in err.reason


def test_bound_to_another_policy_version() -> None:
    v2 = make_policy(version=2, previous=POLICY.policy_hash(), daily_limit="200")
    err = rejected(approve(ALICE), policy=v2)
    assert isinstance(err, ApprovalBindingError) and "another policy version" in err.reason


def test_initiator_cannot_approve_their_own_request() -> None:
    intent = make_intent(initiator="alice")
    err = rejected(approve(ALICE, intent=intent), intent=intent)
    assert isinstance(err, SelfApprovalError)
    assert verify_approvals(POLICY, intent, [approve(BOB, intent=intent)], now=NOW) == {"bob"}


@pytest.mark.parametrize(
    ("lifetime", "message"),
    [(MAX_APPROVAL_LIFETIME + timedelta(seconds=1), "maximum"), (timedelta(0), "not after")],
)
def test_unusable_validity_window(lifetime: timedelta, message: str) -> None:
    with pytest.raises(ApprovalWindowError, match=message):
        approve(ALICE, lifetime=lifetime)


def test_window_check_applies_to_received_approvals() -> None:
    """A statement someone signed with an over-long window (not through sign_approval)."""
    from policies.keys import Purpose, sign_statement

    long = approve(ALICE).model_copy(update={"expires_at": NOW + timedelta(days=30)})
    signature = sign_statement(ALICE, Purpose.APPROVAL, long.statement())
    long = long.model_copy(update={"signature": signature.hex()})
    assert isinstance(rejected(long), ApprovalWindowError)


def test_duplicate_approvals_from_one_officer_count_once() -> None:
    first, second = approve(ALICE), approve(ALICE)
    assert first.nonce != second.nonce
    check = check_approvals(POLICY, INTENT, [first, second], now=NOW)
    assert check.accepted == {"alice"} and check.nonces == {first.nonce, second.nonce}
    assert not check.problems


def test_same_approval_twice_in_a_batch_is_a_replay() -> None:
    approval = approve(ALICE)
    check = check_approvals(POLICY, INTENT, [approval, approval], now=NOW)
    assert check.accepted == {"alice"}
    assert [type(p) for p in check.problems] == [ApprovalReplayError]


def test_reject_statement_never_counts_as_approval() -> None:
    no = approve(BOB, decision="reject", reason="destination under review")
    check = check_approvals(POLICY, INTENT, [approve(ALICE), no], now=NOW)
    assert check.accepted == {"alice"} and check.rejected_by == {"bob"}
    flipped = no.model_copy(update={"decision": "approve"})
    assert isinstance(rejected(flipped), ApprovalSignatureError)


def test_invalid_extra_approvals_are_ignored_but_reported() -> None:
    mallory = generate_officer_key("mallory", "ed25519")
    junk = [
        approve(mallory),
        approve(CAROL, lifetime=timedelta(seconds=1)),
        approve(BOB, intent=make_intent(request_id="wd-9")),
    ]
    check = check_approvals(POLICY, INTENT, [approve(ALICE), *junk], now=NOW + timedelta(seconds=5))
    assert check.accepted == {"alice"}
    assert [type(p) for p in check.problems] == [
        ApprovalOfficerError,
        ApprovalExpiredError,
        ApprovalBindingError,
    ]
    assert [p.officer for p in check.problems] == ["mallory", "carol", "bob"]


@settings(max_examples=20, deadline=None)
@given(
    picks=st.lists(st.sampled_from(range(5)), max_size=8),
    seen=st.booleans(),
)
def test_only_valid_distinct_officers_are_counted(picks: list[int], seen: bool) -> None:
    """Officers 0-2 are in the policy, 3-4 are not; a seen nonce never counts."""
    approvals = [approve(OFFICERS[i]) for i in picks]
    seen_nonces = {approvals[0].nonce} if seen and approvals else set()
    accepted = verify_approvals(POLICY, INTENT, approvals, now=NOW, seen_nonces=seen_nonces)
    expected = {
        OFFICERS[i].officer_id
        for i, a in zip(picks, approvals, strict=True)
        if i < 3 and a.nonce not in seen_nonces
    }
    assert accepted == expected


def test_approval_file_round_trip(tmp_path: Path) -> None:
    approval = approve(BOB)
    path = tmp_path / "approval.json"
    path.write_text(json.dumps(approval.to_json_object()))
    loaded = load_approval(path)
    assert loaded == approval
    verify_approval(POLICY, INTENT, loaded, now=NOW)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nonce": "xyz"}, "nonce"),
        ({"signature": "00"}, "signature"),
        ({"decision": "maybe"}, "decision"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2026-05-04T10:00:00"}, "expires_at"),
        ({"extra": 1}, "extra"),
        ({"officer": "Not An Id"}, "officer"),
    ],
)
def test_malformed_approval_names_the_field(change: dict[str, Any], field: str) -> None:
    obj = {**approve(ALICE).to_json_object(), **change}
    with pytest.raises(ApprovalFormatError) as info:
        parse_approval(obj, "approval.json")
    assert info.value.field == field and info.value.source == "approval.json"


def test_unreadable_approval_files(tmp_path: Path) -> None:
    with pytest.raises(ApprovalFormatError, match="cannot read"):
        load_approval(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ApprovalFormatError, match="not JSON"):
        load_approval(bad)
    with pytest.raises(ApprovalFormatError, match="mapping"):
        parse_approval([1, 2], "list.json")
