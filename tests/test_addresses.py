"""The destination checks before signing (coordinator/addresses.py, docs/chains.md "Address
checks"): EIP-55 with the position of the first wrong character, one-case addresses, address
poisoning look-alikes of whitelisted addresses, our own addresses, token contracts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policy_world import CHAIN, WHITELISTED, Officers, policy_document

from coordinator.addresses import AddressRefused, check_destination, checked_address, lookalike_of
from policies.document import eip55

GOOD = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
POLICY = policy_document(Officers.make())


def flip(address: str, index: int) -> str:
    """`address` with the letter at hex position `index` (0-based) in the other case."""
    body = list(address[2:])
    body[index] = body[index].swapcase()
    return "0x" + "".join(body)


def test_an_address_in_its_eip55_spelling_passes() -> None:
    assert checked_address(GOOD) == GOOD
    assert checked_address("0x" + "12" * 20) == "0x" + "12" * 20  # no letters: nothing to check


@pytest.mark.parametrize(("index", "group"), [(1, 1), (5, 2), (20, 6), (39, 10)])
def test_a_mistyped_case_names_the_first_wrong_character_and_its_group(
    index: int, group: int
) -> None:
    letters = [i for i, c in enumerate(GOOD[2:]) if c.isalpha()]
    at = min(i for i in letters if i >= index)
    with pytest.raises(AddressRefused) as caught:
        checked_address(flip(GOOD, at))
    assert caught.value.check == "checksum"
    assert f"character {at + 1} of 40" in caught.value.detail
    assert f"group {at // 4 + 1} of 10" in caught.value.detail
    assert GOOD[2:].lower() not in caught.value.detail.lower()  # never echoed, never "corrected"
    del group


def test_a_mistyped_digit_is_caught_by_the_checksum() -> None:
    typo = GOOD[:10] + ("1" if GOOD[10] != "1" else "2") + GOOD[11:]
    with pytest.raises(AddressRefused, match="checksum fails at character"):
        checked_address(typo)


@pytest.mark.parametrize("text", [GOOD.lower(), "0x" + GOOD[2:].upper()])
def test_an_address_in_one_case_carries_no_checksum(text: str) -> None:
    with pytest.raises(AddressRefused, match="one letter case") as caught:
        checked_address(text)
    assert caught.value.check == "checksum"


@pytest.mark.parametrize(
    "text", ["", "0x", GOOD[2:], GOOD + "00", GOOD[:-1], "0X" + GOOD[2:], GOOD[:-1] + "g", 7, None]
)
def test_what_is_not_an_address(text: object) -> None:
    with pytest.raises(AddressRefused) as caught:
        checked_address(text)
    assert caught.value.check == "format" and "40 hex digits" in caught.value.detail


@given(st.binary(min_size=20, max_size=20), st.integers(0, 39))
def test_any_single_case_flip_is_refused(raw: bytes, index: int) -> None:
    address = eip55("0x" + raw.hex())
    assert checked_address(address) == address
    if address[2 + index].isalpha():
        with pytest.raises(AddressRefused):
            checked_address(flip(address, index))


def poisoned(of: str) -> str:
    """An address with the first and last four hex digits of `of`, another middle."""
    middle = "0" * 32 if of[6:38].lower() != "0" * 32 else "1" * 32
    return eip55(of[:6] + middle + of[-4:])


def test_a_lookalike_of_a_whitelisted_address_is_refused_naming_it() -> None:
    fake = poisoned(WHITELISTED)
    assert lookalike_of(fake, POLICY, CHAIN) is not None
    with pytest.raises(AddressRefused) as caught:
        check_destination(fake, chain_id=CHAIN, policy=POLICY, own=(), token_contracts=())
    assert caught.value.check == "lookalike"
    assert WHITELISTED in caught.value.detail and "'Exchange'" in caught.value.detail


def test_the_whitelisted_address_itself_and_unrelated_ones_pass() -> None:
    for address in (WHITELISTED, GOOD):
        assert check_destination(address, chain_id=CHAIN, policy=POLICY, own=(), token_contracts=())
    # a look-alike of an entry on another chain only: not this chain's whitelist
    assert lookalike_of(poisoned(WHITELISTED), POLICY, 1) is None
    # only the first three and last four alike: not flagged
    near = eip55(
        WHITELISTED[:5] + ("0" if WHITELISTED[5] != "0" else "1") + "0" * 32 + WHITELISTED[-4:]
    )
    assert lookalike_of(near, POLICY, CHAIN) is None


@pytest.mark.parametrize(
    ("own", "tokens", "check"), [([GOOD], [], "own_address"), ([], [GOOD], "token_contract")]
)
def test_our_own_addresses_and_token_contracts_are_no_destination(
    own: list[str], tokens: list[str], check: str
) -> None:
    with pytest.raises(AddressRefused) as caught:
        check_destination(GOOD, chain_id=CHAIN, policy=None, own=own, token_contracts=tokens)
    assert caught.value.check == check
