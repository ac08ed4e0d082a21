"""Batch payouts: the calldata of the Disperse contract (coordinator/contracts/Disperse.sol).

One transaction pays many recipients: `disperseEther(address[],uint256[])` (the value sent is
the sum of the legs) or `disperseToken(address,address[],uint256[])` (the sender approved the
contract; each leg is a `transferFrom` of the token).  A node reads every leg before it signs,
so the decoder here accepts exactly one byte string per batch — the canonical ABI encoding that
`encode_disperse_ether` / `encode_disperse_token` produce — and refuses everything else with
`TransactionRefused(TRANSACTION_INVALID, check, detail)`:

* ``selector``: the first four bytes are one of the two selectors;
* ``offset``: both array offsets are the canonical ones (the first array right after the head,
  the second right after the first): the ABI lets other offsets point anywhere, even at the same
  words twice, and a contract and a decoder that read such a payload differently could disagree
  on what it pays;
* ``legs``: both arrays have the same length, 1 to `MAX_LEGS` (the contract's own bound);
* ``length``: the calldata is exactly as long as that length implies — nothing missing, nothing
  trailing.  A length word is compared with `MAX_LEGS` and the size of the payload before
  anything is read or allocated for it, so a huge claimed length in a short payload costs
  nothing, and decoding is one linear pass over the words;
* ``address``: every address word (the token's, each recipient's) has its 12 high bytes zero;
  no recipient is the zero address (ether or tokens sent there burn), the token is not the zero
  address and no recipient is the token contract itself (tokens sent there are locked);
* ``amount``: no leg is zero (a uint256 word is below 2**256 by construction);
* ``encoding``: the calldata is not bytes at all.

A detail names the check and at most a few small numbers (a count, an offset, a leg's index),
never the input.  The amounts stay in base units (wei, the token's smallest unit) in
`DisperseCall`.

`DISPERSE` is the calldata kind a node reads a batch with (`signer.chains.calldata`).  It adds
what only the transaction and the policy can say:

* ``contract``: the transaction calls the disperse contract the policy names for its chain —
  what a call does is the called contract's code, so the same calldata sent to any other
  contract could pay anyone (UNSUPPORTED_TRANSACTION);
* ``value``: `disperseEther` sends exactly the sum of its legs (the contract reverts
  otherwise, but a node signs only what will do what it read); `disperseToken` sends none;
* ``token``: the token is a token asset of the policy on this chain.

The movement's amount and each leg's are in the asset's units, exactly; the policy's decision on
each leg and on the total is the evaluator's (`policies.evaluator`, batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from policies.document import AMOUNT_CONTEXT, PolicyDocument, eip55
from signer.chains.erc20 import token_asset
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer
from signer.chains.movement import Movement, asset_amount
from signer.chains.native import native_asset
from signer.problems import ErrorCode

__all__ = [
    "DISPERSE",
    "DISPERSE_ETHER",
    "DISPERSE_TOKEN",
    "MAX_LEGS",
    "DisperseCall",
    "decode_disperse",
    "encode_disperse_ether",
    "encode_disperse_token",
]

#: keccak256("disperseEther(address[],uint256[])")[:4]
DISPERSE_ETHER: Final = bytes.fromhex("e63d38ed")
#: keccak256("disperseToken(address,address[],uint256[])")[:4]
DISPERSE_TOKEN: Final = bytes.fromhex("c73a2d60")
#: The most legs in one batch (Disperse.sol's `MAX_LEGS`).
MAX_LEGS: Final = 1000

_WORD: Final = 32
_SELECTOR: Final = 4
_HIGH: Final = bytes(12)  # the zero high bytes of an address word


@dataclass(frozen=True)
class DisperseCall:
    """A decoded batch: `token` (EIP-55; None for ether) and its `legs`, each (recipient in
    EIP-55, amount in base units), in calldata order."""

    token: str | None
    legs: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        """The sum of the legs in base units (for ether, the value the transaction must send)."""
        return sum(amount for _, amount in self.legs)


# --- encoding -------------------------------------------------------------------------------------


def _address_word(what: str, address: str) -> bytes:
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{what} is a 20-byte address")
    return _HIGH + raw


def _arrays(recipients: Sequence[str], values: Sequence[int], head: int) -> bytes:
    """The two dynamic arrays after a head of `head` words: their offsets, then each array as
    its length word and its elements."""
    if len(recipients) != len(values):
        raise ValueError("as many values as recipients")
    count = len(recipients)
    for value in values:
        if not 0 <= value < 2**256:
            raise ValueError("a value is a uint256")
    first = head * _WORD
    second = first + _WORD * (1 + count)
    return b"".join(
        [
            first.to_bytes(_WORD, "big"),
            second.to_bytes(_WORD, "big"),
            count.to_bytes(_WORD, "big"),
            *(_address_word("a recipient", r) for r in recipients),
            count.to_bytes(_WORD, "big"),
            *(v.to_bytes(_WORD, "big") for v in values),
        ]
    )


def encode_disperse_ether(recipients: Sequence[str], values: Sequence[int]) -> bytes:
    """The calldata of `disperseEther(recipients, values)` (values in wei), ABI-canonical.

    It encodes what it is given, including what the decoder refuses (no legs, zero values…), so
    tests can build refused payloads; only the ABI types themselves are checked."""
    return DISPERSE_ETHER + _arrays(recipients, values, head=2)


def encode_disperse_token(token: str, recipients: Sequence[str], values: Sequence[int]) -> bytes:
    """The calldata of `disperseToken(token, recipients, values)` (values in the token's smallest
    unit), ABI-canonical; as `encode_disperse_ether`, only the ABI types are checked."""
    return DISPERSE_TOKEN + _address_word("the token", token) + _arrays(recipients, values, head=3)


# --- decoding -------------------------------------------------------------------------------------


def _refuse(check: str, detail: str) -> TransactionRefused:
    return TransactionRefused(ErrorCode.TRANSACTION_INVALID, check, detail)


def _word(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + _WORD], "big")


def _address(data: bytes, at: int, what: str) -> bytes:
    """The 20 address bytes of the word at `at`; refused if its high bytes are not zero."""
    if data[at : at + 12] != _HIGH:
        raise _refuse(
            "address",
            f"{what} is not an ABI-encoded address (its 12 high bytes are not zero)",
        )
    return data[at + 12 : at + _WORD]


def decode_disperse(data: bytes) -> DisperseCall:
    """The batch that `data` (a Disperse call's calldata) pays, if it is exactly the canonical
    encoding of one; `TransactionRefused` (TRANSACTION_INVALID) naming the failed check if not."""
    if not isinstance(data, bytes):
        raise _refuse("encoding", f"calldata is bytes, not {type(data).__name__}")
    selector = data[:_SELECTOR]
    if selector == DISPERSE_ETHER:
        head, function = 2, "disperseEther"
    elif selector == DISPERSE_TOKEN:
        head, function = 3, "disperseToken"
    else:
        raise _refuse("selector", "the calldata is no disperseEther or disperseToken call")
    base = _SELECTOR  # ABI offsets count from the end of the selector
    size = len(data) - base
    head_size = head * _WORD
    if size < head_size + _WORD:
        raise _refuse(
            "length",
            f"{function} calldata is {len(data)} bytes, shorter than its head and first length",
        )

    token: str | None = None
    if head == 3:
        token_raw = _address(data, base, "the token word")
        if not any(token_raw):  # the zero address
            raise _refuse("address", "the token is the zero address")
        token = eip55("0x" + token_raw.hex())
    first = _word(data, base + (head - 2) * _WORD)
    second = _word(data, base + (head - 1) * _WORD)
    if first != head_size:
        raise _refuse("offset", f"the recipients' offset is not the canonical {head_size}")

    count = _word(data, base + first)  # within the payload: its size was checked above
    if count == 0:
        raise _refuse("legs", "a batch of no legs pays nothing")
    if count > MAX_LEGS:
        raise _refuse("legs", f"a batch has at most {MAX_LEGS} legs")
    canonical = first + _WORD * (1 + count)
    if second != canonical:
        raise _refuse("offset", f"the values' offset is not the canonical {canonical}")
    # Only now is anything sized by `count` looked at: `count` is at most MAX_LEGS, and
    # nothing is read beyond the payload before its exact size is checked.
    expected = canonical + _WORD * (1 + count)
    wrong_size = _refuse(
        "length", f"{function} calldata of {count} legs is {base + expected} bytes, not {len(data)}"
    )
    if size < canonical + _WORD:
        raise wrong_size
    if _word(data, base + second) != count:
        raise _refuse("legs", f"the values are not as many as the {count} recipients")
    if size != expected:
        raise wrong_size

    recipients_at = base + first + _WORD
    values_at = base + second + _WORD
    legs: list[tuple[str, int]] = []
    for index in range(count):
        raw = _address(data, recipients_at + index * _WORD, f"the recipient word of leg {index}")
        if not any(raw):  # the zero address
            raise _refuse("address", f"leg {index} pays the zero address, which burns it")
        recipient = eip55("0x" + raw.hex())
        if recipient == token:
            raise _refuse("address", f"leg {index} pays the token contract, which locks it")
        amount = _word(data, values_at + index * _WORD)
        if amount == 0:
            raise _refuse("amount", f"leg {index} pays zero")
        legs.append((recipient, amount))
    return DisperseCall(token=token, legs=tuple(legs))


# --- the calldata kind ----------------------------------------------------------------------------

NAME: Final = "disperse"


class DisperseKind:
    """`CalldataKind` of batch payouts through the policy's disperse contract."""

    name: Final = NAME

    def matches(self, data: bytes) -> bool:
        return data[:_SELECTOR] in (DISPERSE_ETHER, DISPERSE_TOKEN)

    def decode(self, transfer: Transfer, policy: PolicyDocument) -> Movement:
        contract = policy.disperse_contract_on(transfer.chain_id)
        if contract is None or contract.lower() != transfer.to.lower():
            raise TransactionRefused(
                ErrorCode.UNSUPPORTED_TRANSACTION,
                "contract",
                f"a batch payout calls the policy's disperse contract on chain "
                f"{transfer.chain_id} ({contract or 'none named'}), not {eip55(transfer.to)}",
            )
        call = decode_disperse(transfer.data)
        if call.token is None:
            symbol = native_asset(policy, transfer.chain_id)
            if transfer.value != call.total:
                raise TransactionRefused(
                    ErrorCode.TRANSACTION_INVALID,
                    "value",
                    "a disperseEther call sends exactly the sum of its legs",
                )
        else:
            symbol = token_asset(policy, transfer.chain_id, call.token)
            if transfer.value != 0:
                raise TransactionRefused(
                    ErrorCode.TRANSACTION_INVALID,
                    "value",
                    "a disperseToken call sends no native value along with it",
                )
        decimals = policy.assets[symbol].decimals
        legs = tuple(
            (recipient, asset_amount(raw, symbol, decimals)) for recipient, raw in call.legs
        )
        total = Decimal(0)
        for _recipient, amount in legs:
            total = AMOUNT_CONTEXT.add(total, amount)
        return Movement(
            asset=symbol, destination=eip55(transfer.to), amount=total, kind=NAME, legs=legs
        )


DISPERSE: Final = DisperseKind()
