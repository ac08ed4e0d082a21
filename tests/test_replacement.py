"""Fee replacements and cancellations (signer/chains/replacement.py): the only second
transaction a node signs for one request — the same transaction at the same nonce, or a 0-value
self-send there, every fee raised by 10 % to 10×."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer.chains.erc20 import encode_transfer
from signer.chains.evm import Eip1559Transfer, LegacyTransfer
from signer.chains.replacement import (
    MAX_BUMP,
    cancellation_problem,
    is_cancellation,
    replacement_problem,
)

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


SENDER = "0xb2b2b2b2b2B2b2B2B2b2b2B2B2b2B2B2b2b2b2b2"
BUMPED = {"max_priority_fee_per_gas": 3 * 10**9, "max_fee_per_gas": 50 * 10**9}
CANCEL = replace(OLD, to=SENDER, value=0, data=b"", gas=21_000, **BUMPED)


def test_a_cancellation_is_a_self_send_of_nothing_at_the_nonce() -> None:
    assert is_cancellation(CANCEL, SENDER.lower())  # the sender in any case
    assert cancellation_problem(OLD, CANCEL, SENDER) is None
    # a cancellation is cancelled again (faster) by another one, never revived
    faster = replace(CANCEL, max_priority_fee_per_gas=4 * 10**9, max_fee_per_gas=60 * 10**9)
    assert cancellation_problem(CANCEL, faster, SENDER) is None
    assert replacement_problem(CANCEL, replace(OLD, max_fee_per_gas=70 * 10**9)) is not None
    legacy = replace(LEGACY, to=SENDER, value=0, gas_price=6 * 10**9)
    assert cancellation_problem(LEGACY, legacy, SENDER) is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"to": TO}, "0-value self-send"),
        ({"value": 1}, "0-value self-send"),
        ({"data": b"\x00", "gas": 30_000}, "0-value self-send"),
        ({"access_list": ((TO, (bytes(32),)),), "gas": 30_000}, "0-value self-send"),
        ({"nonce": 8}, "changes nonce"),
        ({"chain_id": 5}, "changes chain_id"),
        ({"gas": 80_001}, "gas may not exceed"),
        ({"max_fee_per_gas": 40 * 10**9}, "at least 10 %"),
        ({"max_fee_per_gas": 401 * 10**9}, f"at most {MAX_BUMP} times"),
    ],
)
def test_anything_else_is_no_cancellation(change: dict[str, Any], says: str) -> None:
    problem = cancellation_problem(OLD, replace(CANCEL, **change), SENDER)
    assert problem is not None and says in problem
    assert "same kind" in (cancellation_problem(LEGACY, CANCEL, SENDER) or "")
