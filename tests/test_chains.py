"""The transaction decoder key-share nodes run (signer/chains/): payloads built with the real
codec decode to the exact intent, every refusal carries its problem code and check, arbitrary
bytes never raise anything else, and the policy fields it relies on (`Asset.native_chains`,
`VelocityLimit.receipt_quorum`) are validated and diffed as documented."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.diff import diff_policies
from policies.document import PolicyDocument, load_policy, parse_policy
from policies.errors import PolicySchemaError
from policies.intent import TransactionIntent
from policies.structured import read_structured_file
from signer.chains.calldata import KINDS, Movement, movement_of
from signer.chains.errors import TransactionRefused
from signer.chains.evm import EIP1559_TYPE, Eip1559Transfer, LegacyTransfer, Transfer
from signer.chains.intent import compare_claim, decode_transaction, intent_of
from signer.chains.native import NATIVE
from signer.problems import ErrorCode

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
EXCHANGE_A = "0x4c16027649390E3a79dDd56B0AA5a43CdB30e485"
OTHER = to_checksum_address("0x" + "5a" * 20)
GWEI = 10**9
ETHER = 10**18
REQUEST = {"wallet": "hot-1", "request_id": "req-1", "initiator": "withdrawal-service"}


def example() -> dict[str, Any]:
    data = read_structured_file(FIXTURES / "example.yaml")
    assert isinstance(data, dict)
    return data


POLICY = load_policy(FIXTURES / "example.yaml")


def eip1559(value: int = ETHER // 2, *, chain_id: int = 1, data: bytes = b"") -> Eip1559Transfer:
    return Eip1559Transfer(
        chain_id=chain_id,
        nonce=7,
        max_priority_fee_per_gas=GWEI,
        max_fee_per_gas=30 * GWEI,
        gas=100_000,
        to=EXCHANGE_A,
        value=value,
        data=data,
    )


def legacy(value: int = ETHER // 2, *, chain_id: int = 1, data: bytes = b"") -> LegacyTransfer:
    return LegacyTransfer(
        chain_id=chain_id,
        nonce=3,
        gas_price=20 * GWEI,
        gas=100_000,
        to=EXCHANGE_A,
        value=value,
        data=data,
    )


def refusal(call: Callable[[], object]) -> TransactionRefused:
    with pytest.raises(TransactionRefused) as caught:
        call()
    return caught.value


def expected(amount: str, *, chain_id: int = 1, destination: str = EXCHANGE_A) -> TransactionIntent:
    return TransactionIntent(
        request_id="req-1",
        wallet="hot-1",
        chain_id=chain_id,
        asset="ETH",
        destination=destination,
        amount=Decimal(amount),
        initiator="withdrawal-service",
    )


# --- decoding to the exact intent ----------------------------------------------------------------


@pytest.mark.parametrize("build", [eip1559, legacy], ids=["eip1559", "legacy"])
def test_payload_decodes_to_the_exact_intent(build: Callable[..., Transfer]) -> None:
    transfer = build(ETHER // 2)
    payload = transfer.signing_payload()
    decoded = intent_of(payload, POLICY, **REQUEST)
    assert decoded.transfer == transfer
    assert decoded.movement == Movement(
        asset="ETH", destination=EXCHANGE_A, amount=Decimal("0.5"), kind="native"
    )
    assert decoded.intent == expected("0.5")
    assert decoded.intent.digest() == expected("0.5").digest()
    assert decoded.payload_hash == hashlib.sha256(payload).digest()


@pytest.mark.parametrize(
    ("wei", "amount"),
    [
        (1, "0.000000000000000001"),
        (10**30, "1000000000000"),
        (123 * 10**15 + 1, "0.123000000000000001"),
    ],
)
@pytest.mark.parametrize("build", [eip1559, legacy], ids=["eip1559", "legacy"])
def test_amounts_are_exact(build: Callable[..., Transfer], wei: int, amount: str) -> None:
    decoded = intent_of(build(wei).signing_payload(), POLICY, **REQUEST)
    assert decoded.movement.amount == Decimal(amount)
    # Exactly equal, not merely close: the same digits, so the digest approvals sign matches.
    assert decoded.intent.digest() == expected(amount).digest()


def test_the_native_kind_is_registered_and_claims_only_empty_calldata() -> None:
    assert NATIVE in KINDS and NATIVE.name == "native"
    assert NATIVE.matches(b"") and not NATIVE.matches(b"\x00")


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [eip1559, legacy], ids=["eip1559", "legacy"])
def test_calldata_is_unsupported_and_names_the_selector_only(
    build: Callable[..., Transfer],
) -> None:
    # approve(address,uint256): a selector no kind reads (transfer's is the ERC-20 kind's)
    call = bytes.fromhex("095ea7b3") + bytes(12) + bytes.fromhex("5a" * 20) + (10**6).to_bytes(32)
    payload = build(0, data=call).signing_payload()
    error = refusal(lambda: intent_of(payload, POLICY, **REQUEST))
    assert (error.code, error.check) == (ErrorCode.UNSUPPORTED_TRANSACTION, "calldata")
    assert "0x095ea7b3" in error.detail
    assert call.hex() not in error.detail and "5a5a5a5a" not in error.detail


def test_calldata_shorter_than_a_selector_is_unsupported() -> None:
    error = refusal(lambda: movement_of(eip1559(data=b"\x01\x02"), POLICY))
    assert (error.code, error.check) == (ErrorCode.UNSUPPORTED_TRANSACTION, "calldata")


def test_a_chain_without_native_asset_is_unsupported() -> None:
    payload = eip1559(chain_id=137).signing_payload()  # hot-1 may use 137, but no asset is native
    error = refusal(lambda: intent_of(payload, POLICY, **REQUEST))
    assert (error.code, error.check) == (ErrorCode.UNSUPPORTED_TRANSACTION, "native_asset")
    assert "137" in error.detail


@pytest.mark.parametrize("build", [eip1559, legacy], ids=["eip1559", "legacy"])
def test_zero_value_is_refused(build: Callable[..., Transfer]) -> None:
    error = refusal(lambda: intent_of(build(0).signing_payload(), POLICY, **REQUEST))
    assert (error.code, error.check) == (ErrorCode.TRANSACTION_INVALID, "amount")


def test_an_amount_beyond_any_policy_bound_is_invalid() -> None:
    error = refusal(lambda: intent_of(eip1559(2**255).signing_payload(), POLICY, **REQUEST))
    assert (error.code, error.check) == (ErrorCode.TRANSACTION_INVALID, "amount")


def _garbage_payloads() -> list[tuple[str, bytes]]:
    good = eip1559().signing_payload()
    legacy_good = legacy().signing_payload()
    return [
        ("empty", b""),
        ("truncated-eip1559", good[:-1]),
        ("truncated-legacy", legacy_good[: len(legacy_good) // 2]),
        ("trailing-byte", good + b"\x00"),
        ("garbage", b"\x02" + b"\xff" * 40),
        ("type-1-envelope", b"\x01" + good[1:]),
        ("type-3-envelope", b"\x03" + good[1:]),
        ("unknown-type-byte", b"\x7f" + good[1:]),
        ("legacy-nonzero-r", legacy_good[:-2] + b"\x01\x80"),
    ]


@pytest.mark.parametrize(
    ("payload"), [p for _n, p in _garbage_payloads()], ids=[n for n, _p in _garbage_payloads()]
)
def test_malformed_payloads_are_invalid(payload: bytes) -> None:
    error = refusal(lambda: decode_transaction(payload))
    assert (error.code, error.check) == (ErrorCode.TRANSACTION_INVALID, "encoding")
    assert (
        refusal(lambda: intent_of(payload, POLICY, **REQUEST)).code == ErrorCode.TRANSACTION_INVALID
    )


def test_a_field_the_codec_refuses_is_invalid() -> None:
    # Canonical RLP of a transfer to the zero address: decodes, but the codec never builds it.
    good = eip1559()
    raw = good.signing_payload().replace(bytes.fromhex(EXCHANGE_A[2:]), bytes(20))
    error = refusal(lambda: decode_transaction(raw))
    assert (error.code, error.check) == (ErrorCode.TRANSACTION_INVALID, "encoding")
    assert "to" in error.detail


def test_bad_request_fields_are_a_validation_error_naming_the_field() -> None:
    payload = eip1559().signing_payload()
    bad = {**REQUEST, "initiator": "-not valid-"}
    error = refusal(lambda: intent_of(payload, POLICY, **bad))
    assert (error.code, error.check) == (ErrorCode.VALIDATION, "intent")
    assert "initiator" in error.detail and "-not valid-" not in error.detail
    error = refusal(lambda: intent_of(payload, POLICY, **{**REQUEST, "request_id": ""}))
    assert "request_id" in error.detail


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_a_refusal(payload: bytes) -> None:
    try:
        intent_of(payload, POLICY, **REQUEST)
    except TransactionRefused as error:
        assert error.code in (
            ErrorCode.TRANSACTION_INVALID,
            ErrorCode.UNSUPPORTED_TRANSACTION,
        )
        assert len(error.detail) <= 300


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(min_size=1, max_size=300))
def test_arbitrary_typed_payloads_raise_nothing_but_a_refusal(payload: bytes) -> None:
    # Arbitrary bytes after the EIP-1559 type byte reach the strict RLP decoder every time.
    try:
        decode_transaction(bytes([EIP1559_TYPE]) + payload)
    except TransactionRefused as error:
        assert error.code == ErrorCode.TRANSACTION_INVALID


# --- the coordinator's claim ---------------------------------------------------------------------


def test_compare_claim_accepts_the_same_intent() -> None:
    decoded = intent_of(eip1559().signing_payload(), POLICY, **REQUEST).intent
    compare_claim(decoded, expected("0.5"))
    compare_claim(decoded, expected("0.50"))  # the same amount, written otherwise


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chain_id", 137),
        ("asset", "USDC"),
        ("destination", OTHER),
        ("amount", Decimal("0.4")),
        ("wallet", "cold-1"),
        ("request_id", "req-2"),
        ("initiator", "someone-else"),
    ],
)
def test_compare_claim_names_each_differing_field(field: str, value: object) -> None:
    decoded = expected("0.5")
    claimed = decoded.model_copy(update={field: value})
    error = refusal(lambda: compare_claim(decoded, claimed))
    assert (error.code, error.check) == (ErrorCode.INTENT_MISMATCH, "intent")
    assert field in error.detail
    if field in ("chain_id", "asset", "destination", "amount"):
        assert str(value) in error.detail
    else:
        assert str(value) not in error.detail  # named, never echoed


def test_compare_claim_names_every_difference() -> None:
    decoded = expected("0.5")
    claimed = decoded.model_copy(update={"amount": Decimal("5"), "destination": OTHER})
    detail = refusal(lambda: compare_claim(decoded, claimed)).detail
    assert "amount" in detail and "destination" in detail and "asset" not in detail


# --- the policy fields ---------------------------------------------------------------------------


def test_example_policy_names_eth_native_on_mainnet() -> None:
    assert POLICY.assets["ETH"].native_chains == (1,)
    assert POLICY.assets["USDC"].native_chains == ()


def test_two_assets_cannot_claim_the_same_native_chain() -> None:
    doc = example()
    doc["assets"]["USDC"]["native_chains"] = [5, 1]
    with pytest.raises(PolicySchemaError) as caught:
        parse_policy(doc)
    assert caught.value.path == "assets.USDC.native_chains[1]"
    assert "ETH" in caught.value.reason


def test_native_chains_are_distinct_within_an_asset() -> None:
    doc = example()
    doc["assets"]["ETH"]["native_chains"] = [1, 31337, 1]
    with pytest.raises(PolicySchemaError) as caught:
        parse_policy(doc)
    assert caught.value.path == "assets.ETH.native_chains[2]"


def test_native_chain_order_does_not_change_the_hash() -> None:
    one, two = example(), example()
    one["assets"]["ETH"]["native_chains"] = [1, 31337]
    two["assets"]["ETH"]["native_chains"] = [31337, 1]
    assert parse_policy(one).policy_hash() == parse_policy(two).policy_hash()


def test_receipt_quorum_is_a_count() -> None:
    doc = example()
    doc["velocity_limits"][0]["receipt_quorum"] = 0
    with pytest.raises(PolicySchemaError) as caught:
        parse_policy(doc)
    assert caught.value.path == "velocity_limits[0].receipt_quorum"


def successor(
    mutate: Callable[[dict[str, Any]], None], base: PolicyDocument = POLICY
) -> PolicyDocument:
    doc = base.model_dump(mode="json")
    mutate(doc)
    doc["version"] = base.version + 1
    doc["previous"] = base.policy_hash()
    return parse_policy(doc)


def _quorum(value: int | None) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["velocity_limits"][0]["receipt_quorum"] = value

    return mutate


def test_setting_or_lowering_the_receipt_quorum_loosens() -> None:
    three = successor(_quorum(3))
    diff = diff_policies(POLICY, three)
    assert any("receipt quorum every node → 3" in line for line in diff.loosening), diff.lines
    two = successor(_quorum(2), three)
    assert any("receipt quorum 3 → 2" in line for line in diff_policies(three, two).loosening)


def test_raising_or_unsetting_the_receipt_quorum_tightens() -> None:
    two = successor(_quorum(2))
    three = successor(_quorum(3), two)
    assert any("receipt quorum 2 → 3" in line for line in diff_policies(two, three).tightening)
    back = successor(_quorum(None), three)
    diff = diff_policies(three, back)
    assert any("receipt quorum 3 → every node" in line for line in diff.tightening)
    assert diff.loosening == ()


@pytest.mark.parametrize("chains", [[1, 31337], [], [5]], ids=["added", "removed", "replaced"])
def test_any_native_chains_change_loosens(chains: list[int]) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["assets"]["ETH"]["native_chains"] = chains

    diff = diff_policies(POLICY, successor(mutate))
    assert any("asset ETH: native on chains" in line for line in diff.loosening), diff.lines
