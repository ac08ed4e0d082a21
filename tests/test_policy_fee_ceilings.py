"""The fee bound the nodes enforce themselves (issue 12, item 4): the policy's ceiling per gas
on each chain (`fee_ceilings`, policies/document.py), read by every signing route
(signer/chains/fees.py) — a compromised coordinator cannot burn the wallet's coin in fees."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from policy_world import CHAIN, WHITELISTED, Officers, policy_document

from policies.diff import diff_policies
from policies.document import PolicyDocument, parse_policy
from policies.errors import PolicySchemaError
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Eip1559Transfer, LegacyTransfer
from signer.chains.fees import check_fee_ceiling, price_per_gas
from signer.problems import ErrorCode

CEILING = 200 * 10**9  # 200 gwei


@functools.cache
def base() -> PolicyDocument:
    return policy_document(Officers.make())


def with_ceilings(*ceilings: tuple[int, int]) -> PolicyDocument:
    doc: dict[str, Any] = base().canonical_object()
    doc["fee_ceilings"] = [{"chain_id": c, "max_fee_per_gas_wei": w} for c, w in ceilings]
    return parse_policy(doc, source="test_policy_fee_ceilings")


def eip1559(max_fee: int, chain_id: int = CHAIN) -> Eip1559Transfer:
    return Eip1559Transfer(
        chain_id=chain_id,
        nonce=0,
        max_priority_fee_per_gas=min(max_fee, 10**9),
        max_fee_per_gas=max_fee,
        gas=21_000,
        to=WHITELISTED,
        value=1,
        data=b"",
    )


def legacy(price: int) -> LegacyTransfer:
    return LegacyTransfer(
        chain_id=CHAIN, nonce=0, gas_price=price, gas=21_000, to=WHITELISTED, value=1, data=b""
    )


def test_no_ceilings_leave_the_hash_of_earlier_documents_unchanged() -> None:
    plain = base()
    assert "fee_ceilings" not in plain.canonical_object()
    again = parse_policy({**plain.canonical_object(), "fee_ceilings": []}, source="empty")
    assert again.policy_hash() == plain.policy_hash()
    bounded = with_ceilings((CHAIN, CEILING))
    assert bounded.policy_hash() != plain.policy_hash()
    assert bounded.fee_ceiling_on(CHAIN) == CEILING and bounded.fee_ceiling_on(CHAIN + 1) is None


@pytest.mark.parametrize(
    "ceilings",
    [
        [(CHAIN, CEILING), (CHAIN, CEILING + 1)],  # two on one chain
        [(CHAIN, 0)],
        [(CHAIN, 2**53)],
        [(CHAIN, "200")],
    ],
)
def test_a_malformed_ceiling_is_refused_naming_it(ceilings: list[tuple[int, Any]]) -> None:
    with pytest.raises(PolicySchemaError) as caught:
        with_ceilings(*ceilings)
    assert any("fee_ceilings" in path for path, _value, _reason in caught.value.problems)


def test_a_price_above_the_ceiling_is_refused_and_at_it_signed() -> None:
    policy = with_ceilings((CHAIN, CEILING))
    for at in (eip1559(CEILING), legacy(CEILING), eip1559(10**15, chain_id=CHAIN + 1)):
        check_fee_ceiling(at, policy)  # at the ceiling, or on a chain it does not bound
    for above in (eip1559(CEILING + 1), legacy(CEILING + 1)):
        with pytest.raises(TransactionRefused) as caught:
            check_fee_ceiling(above, policy)
        assert caught.value.code is ErrorCode.FEE_ABOVE_CEILING and caught.value.check == "fee"
        assert (
            str(CEILING) in caught.value.detail and str(price_per_gas(above)) in caught.value.detail
        )


def test_removing_or_raising_a_ceiling_is_loosening_adding_or_lowering_it_tightening() -> None:
    none = with_ceilings()
    low, high = with_ceilings((CHAIN, CEILING)), with_ceilings((CHAIN, 2 * CEILING))
    assert diff_policies(none, low).tightening and not diff_policies(none, low).loosening
    assert diff_policies(low, none).loosening == (f"fee ceiling on chain {CHAIN} removed",)
    assert diff_policies(low, high).loosening and not diff_policies(low, high).tightening
    assert diff_policies(high, low).tightening and not diff_policies(high, low).loosening
