"""The one ERC-20 `approve` a node signs (signer/chains/allowance.py): an allowance of a policy
token to the policy's disperse contract, the allowance a token batch spends.  Every other shape,
token, value or spender is refused with a typed error naming the check (attacks.md T21p)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_world import CHAIN
from test_policy_batches import DISPERSE, OTHER_CONTRACT, TOKEN, make_policy

from policies.document import PolicyDocument, parse_policy
from signer.chains.allowance import SELECTOR, Allowance, encode_approve, read_allowance
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Eip1559Transfer, Transfer
from signer.chains.intent import intent_of
from signer.problems import ErrorCode

STRANGER = to_checksum_address("0x" + "c3" * 20)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address("0x" + b.hex()))


def approve(data: bytes, *, to: str = TOKEN, value: int = 0, chain_id: int = CHAIN) -> Transfer:
    return Eip1559Transfer(
        chain_id=chain_id,
        nonce=3,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=2 * 10**9,
        gas=60_000,
        to=to,
        value=value,
        data=data,
    )


def refused(policy: PolicyDocument, transfer: Transfer) -> TransactionRefused:
    with pytest.raises(TransactionRefused) as caught:
        read_allowance(transfer, policy)
    return caught.value


def test_the_selector_is_approves() -> None:
    assert keccak(text="approve(address,uint256)")[:4] == SELECTOR


def test_the_policy_names_its_disperse_contract() -> None:
    policy = make_policy()
    assert policy.disperse_contract_on(CHAIN) == DISPERSE


def test_an_approve_to_the_disperse_contract_is_read_exactly() -> None:
    policy = make_policy()
    for amount in (0, 1, 10_500_000, 2**256 - 1):
        got = read_allowance(approve(encode_approve(DISPERSE, amount)), policy)
        assert got == Allowance(asset="USDT", token=TOKEN, spender=DISPERSE, amount=amount)


def test_t21p_an_allowance_to_any_other_spender_is_refused() -> None:
    """attacks.md T21p: an allowance is a drain needing no further signature when its spender
    is an address an attacker controls; only the policy's disperse contract is a spender."""
    policy = make_policy()
    for spender in (STRANGER, OTHER_CONTRACT, TOKEN):
        exc = refused(policy, approve(encode_approve(spender, 10**6)))
        assert exc.code is ErrorCode.ALLOWANCE_REFUSED and exc.check == "spender"
        assert spender in exc.detail and DISPERSE in exc.detail


def test_t21p_without_a_disperse_contract_no_allowance_is_signed() -> None:
    doc = make_policy().canonical_object()
    bare = parse_policy({**doc, "disperse_contracts": []}, source="no disperse")
    exc = refused(bare, approve(encode_approve(DISPERSE, 1)))
    assert exc.code is ErrorCode.ALLOWANCE_REFUSED and "names none" in exc.detail


def test_t21p_an_approve_on_the_wrong_chain_is_refused() -> None:
    # the same token and spender addresses on a chain the policy has neither on
    exc = refused(make_policy(), approve(encode_approve(DISPERSE, 1), chain_id=CHAIN + 7))
    assert exc.code is ErrorCode.UNSUPPORTED_TRANSACTION and exc.check == "token"


@pytest.mark.parametrize(
    ("change", "code", "check"),
    [
        ({"to": STRANGER}, ErrorCode.UNSUPPORTED_TRANSACTION, "token"),
        ({"value": 1}, ErrorCode.TRANSACTION_INVALID, "value"),
        ({"data": encode_approve(DISPERSE, 5) + b"\0"}, ErrorCode.TRANSACTION_INVALID, "calldata"),
        ({"data": encode_approve(DISPERSE, 5)[:-1]}, ErrorCode.TRANSACTION_INVALID, "calldata"),
        (
            {"data": SELECTOR + b"\1" + encode_approve(DISPERSE, 5)[5:]},
            ErrorCode.TRANSACTION_INVALID,
            "calldata",
        ),
        # transfer(address,uint256) is no approve
        (
            {"data": bytes.fromhex("a9059cbb") + encode_approve(DISPERSE, 5)[4:]},
            ErrorCode.ALLOWANCE_REFUSED,
            "calldata",
        ),
        ({"data": b""}, ErrorCode.ALLOWANCE_REFUSED, "calldata"),
    ],
)
def test_every_other_approve_shape_is_refused_naming_its_check(
    change: dict[str, Any], code: ErrorCode, check: str
) -> None:
    fields: dict[str, Any] = {"data": encode_approve(DISPERSE, 5), **change}
    exc = refused(make_policy(), approve(**fields))
    assert (exc.code, exc.check) == (code, check)


def test_an_approve_is_never_a_payment_the_policy_route_signs() -> None:
    """The allowance has its own route: the transaction route's decoder does not read it."""
    raw = approve(encode_approve(DISPERSE, 10**6)).signing_payload()
    with pytest.raises(TransactionRefused) as caught:
        intent_of(raw, make_policy(), wallet="hot", request_id="al-1", initiator="svc")
    assert caught.value.code is ErrorCode.UNSUPPORTED_TRANSACTION


def test_encode_approve_refuses_what_is_no_address_or_uint256() -> None:
    with pytest.raises(ValueError, match="20-byte"):
        encode_approve("0x1234", 1)
    with pytest.raises(ValueError, match="uint256"):
        encode_approve(DISPERSE, 2**256)
    with pytest.raises(ValueError, match="uint256"):
        encode_approve(DISPERSE, -1)


@settings(max_examples=200, deadline=None)
@given(addresses, st.integers(0, 2**256 - 1))
def test_approve_calldata_round_trips(spender: str, amount: int) -> None:
    policy = make_policy()
    transfer = approve(encode_approve(spender, amount))
    if spender == DISPERSE:
        assert read_allowance(transfer, policy).amount == amount
    else:
        assert refused(policy, transfer).check == "spender"


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.binary(max_size=120), st.integers(0, 3))
def test_random_calldata_is_read_or_refused_with_a_typed_error(
    with_selector: bool, body: bytes, value: int
) -> None:
    policy = make_policy()
    data = (SELECTOR + body) if with_selector else body
    try:
        got = read_allowance(approve(data, value=value), policy)
    except TransactionRefused as exc:
        assert exc.code in (
            ErrorCode.ALLOWANCE_REFUSED,
            ErrorCode.TRANSACTION_INVALID,
            ErrorCode.UNSUPPORTED_TRANSACTION,
        )
        assert exc.check in ("calldata", "value", "spender", "token")
        assert len(body) < 8 or body.hex() not in exc.detail  # the input is never echoed
    else:
        assert got.spender == DISPERSE and value == 0 and len(data) == 68
