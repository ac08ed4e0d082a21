"""Checks on a payout's destination before anything is signed (docs/chains.md, "Address checks").

The nodes decide what the policy allows; these checks catch what a policy cannot see, the ways a
person or an attacker gets a wrong address into a withdrawal:

* `format` and `checksum`: the destination must be written in its EIP-55 spelling.  A mixed-case
  address whose letter cases disagree with its checksum was mistyped (one wrong digit changes the
  whole checksum): it is refused with the position of the first character that disagrees and its
  group of four (how wallets and block explorers show an address), never with a "corrected"
  spelling — the checksum of a typo is not the address the customer meant.  An address written
  in one case only carries no checksum and is refused too: give the checksummed form.
* `lookalike` (address poisoning): an attacker sends dust from an address that starts and ends
  like one the exchange pays often, so it shows up in the history to copy from.  A destination
  that is not itself whitelisted but shares its first and last `LOOKALIKE_CHARS` hex characters
  with an address of the policy's whitelists is refused, naming the whitelisted address (and its
  label) it imitates.
* `own_address`: paying one of Tessera's own addresses (a wallet's, the sender itself, a
  customer's deposit address: the caller passes them as `own`) is an internal movement, never
  a withdrawal.
* `token_contract`: a token contract is never a recipient (tokens sent there are lost).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from eth_typing import ChecksumAddress

from policies.document import PolicyDocument, eip55
from signer.errors import TesseraError
from signer.problems import ErrorCode

LOOKALIKE_CHARS: Final = 4
GROUP: Final = 4
_HEX40: Final = re.compile(r"^0x[0-9a-fA-F]{40}$")


class AddressRefused(TesseraError):
    """A destination refused before signing; `check` names which check (see the module)."""

    code = ErrorCode.ADDRESS_REFUSED

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"destination refused ({check}): {detail}")


def checked_address(text: object) -> ChecksumAddress:
    """`text` if it is an address in its exact EIP-55 spelling; else `AddressRefused`."""
    if not isinstance(text, str) or not _HEX40.fullmatch(text):
        raise AddressRefused("format", "not a 0x-prefixed address of 40 hex digits")
    body = text[2:]
    expected = eip55(text)[2:]
    if body == expected:
        return ChecksumAddress(text)  # type: ignore[arg-type]
    # (an address whose checksum happens to be all one case passed above)
    if body == body.lower() or body == body.upper():
        raise AddressRefused(
            "checksum", "written in one letter case, it carries no EIP-55 checksum: give it mixed"
        )
    for index, (typed, wanted) in enumerate(zip(body, expected, strict=True)):
        if typed != wanted:
            position = index + 1
            group = index // GROUP + 1
            first = (group - 1) * GROUP + 1
            raise AddressRefused(
                "checksum",
                f"the EIP-55 checksum fails at character {position} of 40 (group {group} of 10, "
                f"characters {first}-{first + GROUP - 1}): the address is mistyped",
            )
    raise AssertionError("unreachable: the spellings differ somewhere")  # pragma: no cover


@dataclass(frozen=True)
class Lookalike:
    address: str
    label: str
    whitelist: str


def lookalike_of(destination: str, policy: PolicyDocument, chain_id: int) -> Lookalike | None:
    """The whitelisted address of `chain_id` that `destination` imitates, if any (none when
    `destination` is itself whitelisted there)."""
    wanted = destination.lower()
    head, tail = wanted[2 : 2 + LOOKALIKE_CHARS], wanted[-LOOKALIKE_CHARS:]
    found: Lookalike | None = None
    for name, entries in policy.whitelists.items():
        for entry in entries:
            if entry.chain_id != chain_id:
                continue
            known = entry.address.lower()
            if known == wanted:
                return None
            if (
                found is None
                and known[2 : 2 + LOOKALIKE_CHARS] == head
                and known[-LOOKALIKE_CHARS:] == tail
            ):
                found = Lookalike(entry.address, entry.label, name)
    return found


def check_destination(
    destination: object,
    *,
    chain_id: int,
    policy: PolicyDocument | None,
    own: Iterable[str],
    token_contracts: Iterable[str],
) -> ChecksumAddress:
    """Every check of the module on a payout's destination, in order; the address if it
    passes."""
    address = checked_address(destination)
    lowered = address.lower()
    if lowered in {t.lower() for t in token_contracts}:
        raise AddressRefused(
            "token_contract", "the destination is a token contract (tokens sent there are lost)"
        )
    if lowered in {a.lower() for a in own}:
        raise AddressRefused(
            "own_address", "the destination is one of Tessera's own addresses, not a withdrawal"
        )
    if policy is not None:
        imitated = lookalike_of(address, policy, chain_id)
        if imitated is not None:
            raise AddressRefused(
                "lookalike",
                f"possible address poisoning: the destination starts and ends like "
                f"{imitated.address} ({imitated.label!r} on whitelist {imitated.whitelist}) "
                "but is another address",
            )
    return address
