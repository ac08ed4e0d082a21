"""Batch payouts (issue 12, item 6b): the Disperse contract (coordinator/contracts/Disperse.sol)
pays every leg or none on a real chain (eth-tester), and its calldata decoder
(signer/chains/disperse.py) reads back exactly what the encoder wrote and refuses every other
byte string with TRANSACTION_INVALID and the name of the failed check."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from hypothesis import given, settings
from hypothesis import strategies as st
from web3.types import TxParams, Wei

from coordinator.contracts import artifact
from coordinator.evm_chain import InProcessChain, TransactionRejected
from signer.chains.disperse import (
    DISPERSE_ETHER,
    DISPERSE_TOKEN,
    MAX_LEGS,
    DisperseCall,
    decode_disperse,
    encode_disperse_ether,
    encode_disperse_token,
)
from signer.chains.errors import TransactionRefused
from signer.problems import ErrorCode

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
A = "0x4c16027649390E3a79dDd56B0AA5a43CdB30e485"
B = to_checksum_address("0x" + "3c" * 20)
C = to_checksum_address("0x" + "5e" * 20)
ZERO = "0x" + "00" * 20
APPROVE = bytes.fromhex("095ea7b3")  # approve(address,uint256)
WORD = 32

addresses = st.binary(min_size=20, max_size=20).filter(any).map(to_checksum_address)
amounts = st.integers(min_value=1, max_value=2**256 - 1)
legs_lists = st.lists(st.tuples(addresses, amounts), min_size=1, max_size=50)


def refusal(data: Any) -> TransactionRefused:
    with pytest.raises(TransactionRefused) as caught:
        decode_disperse(data)
    error = caught.value
    assert error.code == ErrorCode.TRANSACTION_INVALID
    if isinstance(data, bytes) and len(data) > 4:
        assert data[4:].hex() not in error.detail and data.hex() not in error.detail
    return error


def word(value: int) -> bytes:
    return value.to_bytes(WORD, "big")


def patched(data: bytes, at: int, new: bytes) -> bytes:
    """`data` with the bytes at `at` replaced by `new`."""
    return data[:at] + new + data[at + len(new) :]


def ether3() -> bytes:
    return encode_disperse_ether([A, B, C], [1, 2, 3])


def token3() -> bytes:
    return encode_disperse_token(TOKEN, [A, B, C], [1, 2, 3])


# --- selectors and the canonical encoding -------------------------------------------------------
def test_the_selectors_are_the_keccak_of_their_signatures() -> None:
    assert DISPERSE_ETHER == keccak(text="disperseEther(address[],uint256[])")[:4]
    assert DISPERSE_TOKEN == keccak(text="disperseToken(address,address[],uint256[])")[:4]
    functions = {f["name"]: f for f in artifact("Disperse").abi if f["type"] == "function"}
    assert functions["disperseEther"]["stateMutability"] == "payable"
    assert functions["disperseToken"]["stateMutability"] == "nonpayable"
    assert not [f for f in artifact("Disperse").abi if f["type"] in ("receive", "fallback")]


@settings(max_examples=100, deadline=None)
@given(legs=legs_lists, token=addresses)
def test_the_encoder_is_the_abi_encoding(legs: list[tuple[str, int]], token: str) -> None:
    recipients, values = [r for r, _ in legs], [v for _, v in legs]
    assert encode_disperse_ether(recipients, values) == DISPERSE_ETHER + abi_encode(
        ["address[]", "uint256[]"], [recipients, values]
    )
    assert encode_disperse_token(token, recipients, values) == DISPERSE_TOKEN + abi_encode(
        ["address", "address[]", "uint256[]"], [token, recipients, values]
    )


def test_the_encoder_refuses_what_is_no_abi_value() -> None:
    with pytest.raises(ValueError, match="as many values"):
        encode_disperse_ether([A, B], [1])
    with pytest.raises(ValueError, match="uint256"):
        encode_disperse_ether([A], [2**256])
    with pytest.raises(ValueError, match="uint256"):
        encode_disperse_ether([A], [-1])
    with pytest.raises(ValueError, match="20-byte"):
        encode_disperse_token("0x1234", [A], [1])


# --- round trips ----------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(legs=legs_lists)
def test_ether_round_trip(legs: list[tuple[str, int]]) -> None:
    data = encode_disperse_ether([r for r, _ in legs], [v for _, v in legs])
    decoded = decode_disperse(data)
    assert decoded == DisperseCall(token=None, legs=tuple(legs))
    assert decoded.total == sum(v for _, v in legs)


@settings(max_examples=150, deadline=None)
@given(legs=legs_lists, token=addresses)
def test_token_round_trip(legs: list[tuple[str, int]], token: str) -> None:
    legs = [(r, v) for r, v in legs if r != token] or [(A if token != A else B, 1)]
    data = encode_disperse_token(token, [r for r, _ in legs], [v for _, v in legs])
    assert decode_disperse(data) == DisperseCall(token=token, legs=tuple(legs))


def test_addresses_come_back_in_their_checksum_spelling() -> None:
    lower = "0x" + A[2:].lower()
    decoded = decode_disperse(encode_disperse_token(TOKEN.lower(), [lower], [7]))
    assert decoded == DisperseCall(token=TOKEN, legs=((A, 7),))


def test_the_most_legs_decode() -> None:
    recipients = [to_checksum_address((i + 1).to_bytes(20, "big")) for i in range(MAX_LEGS)]
    decoded = decode_disperse(encode_disperse_ether(recipients, [5] * MAX_LEGS))
    assert len(decoded.legs) == MAX_LEGS and decoded.total == 5 * MAX_LEGS


# --- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "check"),
    [
        (b"", "selector"),
        (DISPERSE_ETHER[:3], "selector"),
        (bytes.fromhex("12345678") + ether3()[4:], "selector"),
        (bytes.fromhex("a9059cbb") + ether3()[4:], "selector"),
        (bytearray(ether3()), "encoding"),
        (DISPERSE_ETHER, "length"),
        (ether3()[: 4 + 2 * WORD], "length"),
        (token3()[: 4 + 3 * WORD], "length"),
        (patched(ether3(), 4, word(0x60)), "offset"),
        (patched(ether3(), 4, word(0x20)), "offset"),
        (patched(ether3(), 4 + WORD, word(0x40 + 4 * WORD + WORD)), "offset"),
        (patched(ether3(), 4 + WORD, word(0x40)), "offset"),  # both arrays on the same words
        (patched(token3(), 4 + WORD, word(0x40)), "offset"),
        (patched(token3(), 4 + 2 * WORD, word(0)), "offset"),
        (DISPERSE_ETHER + abi_encode(["address[]", "uint256[]"], [[A, B, C], [1, 2]]), "legs"),
        (DISPERSE_ETHER + abi_encode(["address[]", "uint256[]"], [[A, B], [1, 2, 3]]), "legs"),
        (encode_disperse_ether([], []), "legs"),
        (encode_disperse_token(TOKEN, [], []), "legs"),
        (encode_disperse_ether([A] * (MAX_LEGS + 1), [1] * (MAX_LEGS + 1)), "legs"),
        (patched(ether3(), 4 + 3 * WORD, b"\x01"), "address"),  # dirty recipient word
        (patched(ether3(), 4 + 4 * WORD + 11, b"\xff"), "address"),
        (patched(token3(), 4, b"\x01"), "address"),  # dirty token word
        (encode_disperse_ether([A, ZERO, C], [1, 2, 3]), "address"),
        (encode_disperse_token(ZERO, [A], [1]), "address"),
        (encode_disperse_token(TOKEN, [A, TOKEN], [1, 2]), "address"),
        (encode_disperse_ether([A, B, C], [1, 0, 3]), "amount"),
        (encode_disperse_token(TOKEN, [A], [0]), "amount"),
        (ether3() + b"\x00", "length"),
        (ether3() + bytes(WORD), "length"),
        (token3() + b"\x01", "length"),
        (ether3()[:-1], "length"),
        (ether3()[:-WORD], "length"),
        (token3()[:-1], "length"),
        (ether3()[: 4 + 2 * WORD + 4 * WORD], "length"),  # cut before the values' length word
    ],
    ids=[
        "empty",
        "short-selector",
        "unknown-selector",
        "erc20-transfer-selector",
        "not-bytes",
        "selector-only",
        "head-only",
        "token-head-only",
        "first-offset-past-the-head",
        "first-offset-inside-the-head",
        "second-offset-one-word-late",
        "second-offset-aliasing-the-first",
        "token-first-offset",
        "token-second-offset",
        "more-recipients-than-values",
        "more-values-than-recipients",
        "no-legs",
        "token-no-legs",
        "one-leg-too-many",
        "dirty-recipient-word",
        "dirty-last-high-byte",
        "dirty-token-word",
        "zero-address-recipient",
        "zero-address-token",
        "leg-to-the-token",
        "zero-amount",
        "token-zero-amount",
        "trailing-byte",
        "trailing-word",
        "token-trailing-byte",
        "truncated-byte",
        "truncated-word",
        "token-truncated",
        "no-values-length",
    ],
)
def test_every_malformed_payload_is_refused_naming_its_check(data: Any, check: str) -> None:
    assert refusal(data).check == check


@pytest.mark.parametrize("count", [MAX_LEGS, MAX_LEGS + 1, 2**64, 2**256 - 1])
@pytest.mark.parametrize("token", [None, TOKEN], ids=["ether", "token"])
def test_a_huge_claimed_length_is_refused_before_any_allocation(
    count: int, token: str | None
) -> None:
    """Canonical offsets for `count` legs, but only three words of them."""
    first = (2 if token is None else 3) * WORD
    second = (first + WORD * (1 + count)) % 2**256
    head = word(first) + word(second) + word(count) + word(1) * 3
    data = DISPERSE_ETHER + head
    if token is not None:
        data = DISPERSE_TOKEN + bytes(12) + bytes.fromhex(token[2:]) + head
    tracemalloc.start()
    try:
        error = refusal(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.check == ("length" if count <= MAX_LEGS else "legs")
    assert peak < 20_000  # a few small objects, nothing sized by the claimed count


@settings(max_examples=400, deadline=None)
@given(prefix=st.sampled_from([b"", DISPERSE_ETHER, DISPERSE_TOKEN]), tail=st.binary(max_size=400))
def test_random_bytes_raise_nothing_but_a_refusal(prefix: bytes, tail: bytes) -> None:
    data = prefix + tail
    try:
        decoded = decode_disperse(data)
    except TransactionRefused as exc:
        assert exc.code == ErrorCode.TRANSACTION_INVALID
        return
    assert reencoded(decoded) == data  # only the canonical encoding is ever accepted


@settings(max_examples=400, deadline=None)
@given(
    legs=st.lists(st.tuples(addresses, amounts), min_size=1, max_size=5),
    token=st.one_of(st.none(), addresses),
    at=st.integers(min_value=0, max_value=10**6),
    new=st.binary(min_size=1, max_size=33),
    cut=st.integers(min_value=-40, max_value=40),
)
def test_mutated_encodings_raise_nothing_but_a_refusal(
    legs: list[tuple[str, int]], token: str | None, at: int, new: bytes, cut: int
) -> None:
    valid = reencoded(DisperseCall(token=token, legs=tuple(legs)))
    at %= len(valid)
    data = patched(valid, at, new)
    data = data[:cut] if cut < 0 else data + bytes(cut)
    try:
        decoded = decode_disperse(data)
    except TransactionRefused as exc:
        assert exc.code == ErrorCode.TRANSACTION_INVALID
        return
    assert reencoded(decoded) == data


def reencoded(call: DisperseCall) -> bytes:
    recipients, values = [r for r, _ in call.legs], [v for _, v in call.legs]
    if call.token is None:
        return encode_disperse_ether(recipients, values)
    return encode_disperse_token(call.token, recipients, values)


# --- on a chain -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain() -> Iterator[InProcessChain]:
    yield InProcessChain()


@pytest.fixture(scope="module")
def disperse(chain: InProcessChain) -> str:
    return chain.deploy(artifact("Disperse").bytecode)


def send(chain: InProcessChain, to: str, data: bytes, value: int = 0) -> None:
    """A call from the faucet with `value` wei, waited for (`call_from_faucet` sends none);
    `TransactionRejected` if the node's gas estimate reverts."""
    params: TxParams = {
        "from": chain.faucet,
        "to": to_checksum_address(to),
        "data": HexBytes(data),
        "value": Wei(value),
    }
    chain._mined(chain._send(params, f"calling {to}"))


def fresh(tag: int) -> list[str]:
    return [to_checksum_address(bytes([tag, i]) + bytes(17) + b"\x01") for i in range(3)]


def test_the_contract_bound_is_the_decoders(chain: InProcessChain, disperse: str) -> None:
    params: TxParams = {"to": to_checksum_address(disperse), "data": keccak(text="MAX_LEGS()")[:4]}
    assert int.from_bytes(chain._w3.eth.call(params), "big") == MAX_LEGS


def test_ether_is_paid_to_every_leg_exactly(chain: InProcessChain, disperse: str) -> None:
    recipients, values = fresh(1), [1, 10**18, 123_456_789]
    data = encode_disperse_ether(recipients, values)
    assert decode_disperse(data) == DisperseCall(None, tuple(zip(recipients, values, strict=True)))
    send(chain, disperse, data, value=sum(values))
    assert [chain.balance(r) for r in recipients] == values
    assert chain.balance(disperse) == 0


@pytest.mark.parametrize(
    ("values", "sent", "reason"),
    [
        ([1, 2, 3], 5, "msg.value is not the sum"),
        ([1, 2, 3], 7, "msg.value is not the sum"),  # no leftover may stay in the contract
    ],
)
def test_a_wrong_value_reverts_the_whole_batch(
    chain: InProcessChain, disperse: str, values: list[int], sent: int, reason: str
) -> None:
    recipients = fresh(2 + sent)
    data = encode_disperse_ether(recipients, values)
    with pytest.raises(TransactionRejected, match=reason):
        send(chain, disperse, data, value=sent)
    assert [chain.balance(r) for r in recipients] == [0, 0, 0]
    assert chain.balance(disperse) == 0


def test_a_leg_to_the_zero_address_reverts(chain: InProcessChain, disperse: str) -> None:
    recipients = [*fresh(20)[:2], ZERO]
    data = encode_disperse_ether(recipients, [1, 2, 3])
    assert refusal(data).check == "address"
    with pytest.raises(TransactionRejected, match="a leg to the zero address"):
        send(chain, disperse, data, value=6)
    assert [chain.balance(r) for r in recipients[:2]] == [0, 0]


def test_the_contract_takes_no_plain_ether(chain: InProcessChain, disperse: str) -> None:
    with pytest.raises(TransactionRejected):
        chain.fund(disperse, 1)
    assert chain.balance(disperse) == 0


def test_a_token_is_paid_to_every_leg_exactly(chain: InProcessChain, disperse: str) -> None:
    token = chain.deploy_token("Test USDT", "USDT", 6, 10**12)
    approve = APPROVE + bytes(12) + bytes.fromhex(disperse[2:]) + word(10**9)
    chain.call_from_faucet(token, approve)
    recipients, values = fresh(30), [1, 2_500_000, 999_999]
    data = encode_disperse_token(token, recipients, values)
    assert decode_disperse(data) == DisperseCall(token, tuple(zip(recipients, values, strict=True)))
    chain.call_from_faucet(disperse, data)
    assert [chain.token_balance(token, r) for r in recipients] == values
    assert chain.token_balance(token, chain.faucet) == 10**12 - sum(values)
    assert chain.token_balance(token, disperse) == 0

    # beyond the allowance left: the token's reason, and no leg is paid
    others = fresh(31)
    over = encode_disperse_token(token, others, [1, 10**9, 1])
    with pytest.raises(TransactionRejected, match="Token: allowance exceeded"):
        chain.call_from_faucet(disperse, over)
    zero_leg = encode_disperse_token(token, [others[0], ZERO], [1, 1])
    with pytest.raises(TransactionRejected, match="a leg to the zero address"):
        chain.call_from_faucet(disperse, zero_leg)
    assert [chain.token_balance(token, r) for r in others] == [0, 0, 0]
    # a token call with value: the function is not payable
    with pytest.raises(TransactionRejected):
        send(chain, disperse, encode_disperse_token(token, others, [1, 1, 1]), value=1)
    # no contract at the token address: nothing to "pay" with
    with pytest.raises(TransactionRejected, match="the token is not a contract"):
        chain.call_from_faucet(disperse, encode_disperse_token(C, others, [1, 1, 1]))
