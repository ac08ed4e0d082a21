"""Fee replacements (signer/chains/replacement.py): the only second transaction a node signs
for one request — the same transaction at the same nonce, every fee raised by 10 % to 10×."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer.chains.erc20 import encode_transfer
from signer.chains.evm import Eip1559Transfer, LegacyTransfer
from signer.chains.replacement import MAX_BUMP, replacement_problem

TO = "0xA1A1a1a1A1A1A1A1A1a1a1a1a1a1A1A1a1A1a1a1"
OLD = Eip1559Transfer(
    chain_id=1,
    nonce=7,
    max_priority_fee_per_gas=2 * 10**9,
    max_fee_per_gas=40 * 10**9,
    gas=80_000,
    to=TO,
    value=0,
    data=encode_transfer("0x" + "12" * 20, 5),
)
LEGACY = LegacyTransfer(chain_id=56, nonce=3, gas_price=5 * 10**9, gas=21_000, to=TO, value=10**18)


def test_a_fee_replacement_is_signed() -> None:
    new = replace(OLD, max_priority_fee_per_gas=3 * 10**9, max_fee_per_gas=44 * 10**9)
    assert replacement_problem(OLD, new) is None
    assert replacement_problem(LEGACY, replace(LEGACY, gas_price=55 * 10**8)) is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"to": "0x" + "34" * 20}, "to"),
        ({"value": 1}, "value"),
        ({"nonce": 8}, "nonce"),
        ({"gas": 90_000}, "gas"),
        ({"chain_id": 5}, "chain_id"),
        ({"data": encode_transfer("0x" + "12" * 20, 6)}, "data"),
        ({"access_list": ((TO, (bytes(32),)),)}, "access_list"),
    ],
)
def test_anything_but_the_fees_changed_is_refused(change: dict[str, Any], named: str) -> None:
    bumped = {"max_priority_fee_per_gas": 3 * 10**9, "max_fee_per_gas": 50 * 10**9}
    problem = replacement_problem(OLD, replace(OLD, **bumped, **change))
    assert problem is not None and named in problem and "changes only the fees" in problem


def test_the_bump_is_bounded_both_ways() -> None:
    too_little = replace(OLD, max_priority_fee_per_gas=21 * 10**8, max_fee_per_gas=50 * 10**9)
    assert "at least 10 %" in (replacement_problem(OLD, too_little) or "")
    tip_only = replace(OLD, max_priority_fee_per_gas=3 * 10**9)
    assert "max_fee_per_gas must rise" in (replacement_problem(OLD, tip_only) or "")
    huge = replace(OLD, max_priority_fee_per_gas=3 * 10**9, max_fee_per_gas=401 * 10**9)
    assert f"at most {MAX_BUMP} times" in (replacement_problem(OLD, huge) or "")
    assert replacement_problem(LEGACY, replace(LEGACY, gas_price=LEGACY.gas_price * 11))
    assert "same kind" in (replacement_problem(OLD, LEGACY) or "")


@given(st.integers(1, 10**12), st.integers(1, 10**12))
def test_the_legacy_bounds_exactly(before: int, after: int) -> None:
    problem = replacement_problem(
        replace(LEGACY, gas_price=before), replace(LEGACY, gas_price=after)
    )
    assert (problem is None) == (after * 10 >= before * 11 and after <= before * MAX_BUMP)
