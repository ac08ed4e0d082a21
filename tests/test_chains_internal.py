"""A transfer between two addresses of one wallet (signer/chains/internal.py): the node signs it
without a policy rule only when it pays exactly the address the node derived itself, one
recipient, not the sender (attacks.md T21q)."""

from __future__ import annotations

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_world import CHAIN
from test_policy_batches import DISPERSE, TOKEN, make_policy

from signer.chains.disperse import encode_disperse_ether
from signer.chains.erc20 import encode_transfer
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Eip1559Transfer, Transfer
from signer.chains.internal import read_internal
from signer.problems import ErrorCode

HOME = to_checksum_address("0x" + "11" * 20)
CHILD = to_checksum_address("0x" + "12" * 20)
STRANGER = to_checksum_address("0x" + "c3" * 20)


def transfer(to: str, value: int = 0, data: bytes = b"") -> Transfer:
    return Eip1559Transfer(
        chain_id=CHAIN,
        nonce=0,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=2 * 10**9,
        gas=100_000,
        to=to,
        value=value,
        data=data,
    )


def refused(t: Transfer, *, sender: str = CHILD, destination: str = HOME) -> TransactionRefused:
    with pytest.raises(TransactionRefused) as caught:
        read_internal(t, make_policy(), sender=sender, destination=destination)
    return caught.value


def test_an_ether_sweep_to_the_derived_address_is_read_exactly() -> None:
    moved = read_internal(transfer(HOME, 10**18 + 7), make_policy(), sender=CHILD, destination=HOME)
    assert (moved.asset, moved.destination, str(moved.amount)) == (
        "ETH",
        HOME,
        "1.000000000000000007",
    )


def test_a_token_sweep_pays_the_recipient_in_the_calldata() -> None:
    moved = read_internal(
        transfer(TOKEN, 0, encode_transfer(HOME, 25_000_001)),
        make_policy(),
        sender=CHILD,
        destination=HOME,
    )
    assert (moved.asset, moved.destination, str(moved.amount)) == ("USDT", HOME, "25.000001")


def test_t21q_an_internal_transfer_to_any_other_address_is_refused() -> None:
    """attacks.md T21q: the route without a policy rule pays only the wallet's own address."""
    for t in (transfer(STRANGER, 1), transfer(TOKEN, 0, encode_transfer(STRANGER, 1))):
        exc = refused(t)
        assert exc.code is ErrorCode.INTERNAL_TRANSFER_REFUSED and exc.check == "destination"
        assert STRANGER in exc.detail


def test_t21q_a_batch_or_a_self_send_is_no_internal_transfer() -> None:
    batch = transfer(DISPERSE, 1, encode_disperse_ether([HOME], [1]))
    assert refused(batch).check == "legs"
    assert refused(transfer(HOME, 1), sender=HOME).check == "destination_path"


def test_a_call_no_kind_reads_is_refused_as_for_any_payout() -> None:
    exc = refused(transfer(HOME, 0, bytes.fromhex("deadbeef")))
    assert exc.code is ErrorCode.UNSUPPORTED_TRANSACTION


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 10**20), st.sampled_from([HOME, TOKEN, STRANGER]))
def test_random_transactions_are_read_or_refused_with_a_typed_error(
    data: bytes, value: int, to: str
) -> None:
    try:
        moved = read_internal(
            transfer(to, value, data), make_policy(), sender=CHILD, destination=HOME
        )
    except TransactionRefused as exc:
        assert exc.code in (
            ErrorCode.INTERNAL_TRANSFER_REFUSED,
            ErrorCode.TRANSACTION_INVALID,
            ErrorCode.UNSUPPORTED_TRANSACTION,
        )
        assert len(data) < 8 or data.hex() not in exc.detail
    else:
        assert moved.destination == HOME
