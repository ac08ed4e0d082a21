"""The ERC-20 calldata kind (signer/chains/erc20.py): a `transfer(address,uint256)` on a token
contract of the policy decodes to the exact intent in the token's units; every other shape is
refused with its code and check; the policy's `Asset.contracts` are validated, hashed and diffed
as documented (docs/chains.md, docs/policies.md)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.diff import diff_policies
from policies.document import AMOUNT_CONTEXT, PolicyDocument, load_policy, parse_policy
from policies.errors import PolicySchemaError
from policies.structured import read_structured_file
from signer.chains.calldata import KINDS, movement_of
from signer.chains.erc20 import ERC20, SELECTOR, encode_transfer
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Eip1559Transfer, LegacyTransfer, Transfer
from signer.chains.intent import intent_of
from signer.problems import ErrorCode

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
RECIPIENT = "0x4c16027649390E3a79dDd56B0AA5a43CdB30e485"
REQUEST = {"wallet": "hot-1", "request_id": "req-1", "initiator": "withdrawal-service"}


def example(**contracts: Any) -> dict[str, Any]:
    data = read_structured_file(FIXTURES / "example.yaml")
    assert isinstance(data, dict)
    data["assets"]["USDC"]["contracts"] = [{"chain_id": 1, "address": USDC}]
    data["assets"]["USDC"].update(contracts)
    return data


POLICY: PolicyDocument = parse_policy(example())


def token_call(
    data: bytes, *, to: str = USDC, value: int = 0, chain_id: int = 1, legacy: bool = False
) -> Transfer:
    if legacy:
        return LegacyTransfer(
            chain_id=chain_id, nonce=3, gas_price=10**10, gas=80_000, to=to, value=value, data=data
        )
    return Eip1559Transfer(
        chain_id=chain_id,
        nonce=3,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=3 * 10**10,
        gas=80_000,
        to=to,
        value=value,
        data=data,
    )


def refusal(transfer: Transfer, policy: PolicyDocument = POLICY) -> TransactionRefused:
    with pytest.raises(TransactionRefused) as caught:
        movement_of(transfer, policy)
    return caught.value


def test_the_kind_is_registered_and_claims_the_transfer_selector_only() -> None:
    assert ERC20 in KINDS and ERC20.name == "erc20_transfer"
    assert SELECTOR == bytes.fromhex("a9059cbb")
    assert ERC20.matches(encode_transfer(RECIPIENT, 1))
    assert not ERC20.matches(b"") and not ERC20.matches(bytes.fromhex("095ea7b3") + bytes(64))


@pytest.mark.parametrize("legacy", [False, True], ids=["eip1559", "legacy"])
def test_a_token_transfer_decodes_to_the_intent_in_token_units(legacy: bool) -> None:
    payload = token_call(encode_transfer(RECIPIENT, 1_500_000), legacy=legacy).signing_payload()
    decoded = intent_of(payload, POLICY, **REQUEST)
    assert decoded.movement.kind == "erc20_transfer"
    intent = decoded.intent
    assert (intent.asset, intent.amount, intent.chain_id) == ("USDC", Decimal("1.5"), 1)
    assert intent.destination == RECIPIENT  # the recipient in the calldata, not the contract


def test_the_recipient_is_read_in_its_checksum_spelling_whatever_the_encoding() -> None:
    lower = "0x" + RECIPIENT[2:].lower()
    movement = movement_of(token_call(encode_transfer(lower, 7)), POLICY)
    assert movement.destination == RECIPIENT and movement.amount == Decimal("0.000007")


@settings(max_examples=200, deadline=None)
@given(
    recipient=st.binary(min_size=20, max_size=20).filter(any),
    raw=st.integers(min_value=1, max_value=10**36),
)
def test_round_trip(recipient: bytes, raw: int) -> None:
    address = to_checksum_address("0x" + recipient.hex())
    if address.lower() == USDC.lower():
        return
    movement = movement_of(token_call(encode_transfer(address, raw)), POLICY)
    assert movement.destination == address
    assert movement.amount == Decimal(raw).scaleb(-6, AMOUNT_CONTEXT)
    assert int(movement.amount.scaleb(6, AMOUNT_CONTEXT)) == raw  # exact: nothing rounds


@settings(max_examples=300, deadline=None)
@given(tail=st.binary(max_size=200), value=st.integers(min_value=0, max_value=10**20))
def test_random_calldata_raises_nothing_but_a_refusal(tail: bytes, value: int) -> None:
    try:
        movement_of(token_call(SELECTOR + tail, value=value), POLICY)
    except TransactionRefused as exc:
        assert exc.code in (ErrorCode.TRANSACTION_INVALID, ErrorCode.UNSUPPORTED_TRANSACTION)


@pytest.mark.parametrize(
    ("data", "check"),
    [
        (SELECTOR, "calldata"),
        (encode_transfer(RECIPIENT, 5)[:-1], "calldata"),
        (encode_transfer(RECIPIENT, 5) + bytes(32), "calldata"),
        (
            SELECTOR + b"\x01" + bytes(11) + bytes.fromhex(RECIPIENT[2:]) + (5).to_bytes(32),
            "calldata",
        ),
        (encode_transfer(RECIPIENT, 0), "amount"),
        (encode_transfer("0x" + "00" * 20, 5), "destination"),
        (encode_transfer(USDC, 5), "destination"),
        (encode_transfer(RECIPIENT, 2**256 - 1), "amount"),
    ],
    ids=[
        "no-arguments",
        "short",
        "long",
        "dirty-address-word",
        "zero",
        "zero-address",
        "to-the-contract",
        "beyond-any-bound",
    ],
)
def test_malformed_token_calls_are_invalid(data: bytes, check: str) -> None:
    error = refusal(token_call(data))
    assert (error.code, error.check) == (ErrorCode.TRANSACTION_INVALID, check)
    assert data.hex() not in error.detail


def test_a_token_call_carrying_native_value_is_invalid() -> None:
    error = refusal(token_call(encode_transfer(RECIPIENT, 5), value=1))
    assert (error.code, error.check) == (ErrorCode.TRANSACTION_INVALID, "value")


def test_a_contract_the_policy_does_not_list_is_unsupported() -> None:
    other = to_checksum_address("0x" + "5a" * 20)
    error = refusal(token_call(encode_transfer(RECIPIENT, 5), to=other))
    assert (error.code, error.check) == (ErrorCode.UNSUPPORTED_TRANSACTION, "token")
    assert other in error.detail
    # the same contract on a chain where the policy does not list it
    error = refusal(token_call(encode_transfer(RECIPIENT, 5), chain_id=137))
    assert (error.code, error.check) == (ErrorCode.UNSUPPORTED_TRANSACTION, "token")


# --- the policy's contracts ----------------------------------------------------------------------
def test_contracts_leave_older_documents_hash_unchanged() -> None:
    plain = load_policy(FIXTURES / "example.yaml")
    doc = example()
    del doc["assets"]["USDC"]["contracts"]
    assert parse_policy(doc).policy_hash() == plain.policy_hash()
    assert "contracts" not in plain.canonical_object()["assets"]["USDC"]
    assert POLICY.policy_hash() != plain.policy_hash()
    assert POLICY.canonical_object()["assets"]["USDC"]["contracts"] == [
        {"chain_id": 1, "address": USDC}
    ]


def test_contract_order_does_not_change_the_hash() -> None:
    other = to_checksum_address("0x" + "3c" * 20)
    one = example(contracts=[{"chain_id": 1, "address": USDC}, {"chain_id": 137, "address": other}])
    two = example(contracts=[{"chain_id": 137, "address": other}, {"chain_id": 1, "address": USDC}])
    assert parse_policy(one).policy_hash() == parse_policy(two).policy_hash()


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (
            lambda d: d["assets"]["USDC"]["contracts"].append(
                {"chain_id": 1, "address": RECIPIENT}
            ),
            "assets.USDC.contracts[1]",
            "duplicate chain",
        ),
        (
            lambda d: d["assets"]["ETH"].update(contracts=[{"chain_id": 1, "address": RECIPIENT}]),
            "assets.ETH.contracts[0].chain_id",
            "native coin of chain 1",
        ),
        (
            lambda d: d["assets"].update(
                DAI={"decimals": 18, "contracts": [{"chain_id": 1, "address": USDC}]}
            ),
            "assets.USDC.contracts[0].address",
            "already DAI's",
        ),
        (
            lambda d: d["assets"]["USDC"]["contracts"][0].update(address=USDC.lower()),
            "assets.USDC.contracts[0].address",
            "EIP-55",
        ),
    ],
    ids=["two-on-one-chain", "native-and-token", "one-contract-two-assets", "no-checksum"],
)
def test_contracts_are_validated(mutate: Any, path: str, reason: str) -> None:
    doc = example()
    mutate(doc)
    with pytest.raises(PolicySchemaError) as caught:
        parse_policy(doc)
    assert caught.value.path == path and reason in caught.value.reason


def test_a_new_contract_loosens_and_a_removed_one_tightens() -> None:
    doc = POLICY.model_dump(mode="json")
    other = to_checksum_address("0x" + "3c" * 20)
    doc["assets"]["USDC"]["contracts"] = [{"chain_id": 137, "address": other}]
    doc["version"], doc["previous"] = POLICY.version + 1, POLICY.policy_hash()
    changes = diff_policies(POLICY, parse_policy(doc))
    assert any(f"asset USDC: contract {other} on chain 137" in line for line in changes.loosening)
    removed = f"asset USDC: contract {USDC} on chain 1 removed"
    assert any(removed in line for line in changes.tightening), changes.lines
