"""The ERC-20 kind: `transfer(address,uint256)` on a token contract of the officers' policy.

A node reads a token transfer only from what it can check alone:

* the calldata is exactly the selector 0xa9059cbb and two ABI words (68 bytes), the address
  word's 12 high bytes zero — any other shape is refused, never guessed at (a longer payload
  could carry data a token contract reads differently from this decoder);
* the transaction calls a contract that the policy lists for one asset on this chain
  (`Asset.contracts`): the asset is that one, so its rules and limits apply; a call to any other
  contract is UNSUPPORTED_TRANSACTION;
* it sends no native value along (a token transfer that also moves coin would move two assets
  under one decision);
* the amount is the uint256 scaled down by the asset's decimals, exactly (as `native`: a
  trapping context, so nothing rounds); zero, the zero address and the token contract itself as
  recipient are refused (the last two burn the tokens or lock them in the contract).

The intent's destination is the recipient in the calldata, not the transaction's `to`.
"""

from __future__ import annotations

from typing import Final

from policies.document import PolicyDocument, eip55
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer
from signer.chains.movement import Movement, asset_amount
from signer.problems import ErrorCode

NAME: Final = "erc20_transfer"
#: keccak256("transfer(address,uint256)")[:4]
SELECTOR: Final = bytes.fromhex("a9059cbb")
_WORD: Final = 32
_LENGTH: Final = len(SELECTOR) + 2 * _WORD


def encode_transfer(recipient: str, amount: int) -> bytes:
    """The calldata of `transfer(recipient, amount)` (amount in the token's smallest unit)."""
    raw = bytes.fromhex(recipient.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError("a recipient is a 20-byte address")
    if not 0 <= amount < 2**256:
        raise ValueError("an ERC-20 amount is a uint256")
    return SELECTOR + raw.rjust(_WORD, b"\0") + amount.to_bytes(_WORD, "big")


def address_and_amount(data: bytes, signature: str, role: str) -> tuple[bytes, bytes]:
    """The two ABI words of an `(address, uint256)` call's calldata (after its 4-byte
    selector): exactly 68 bytes, the address word's 12 high bytes zero — any other shape is
    TRANSACTION_INVALID (check `calldata`), naming `signature` and the address's `role`."""
    if len(data) != _LENGTH:
        raise TransactionRefused(
            ErrorCode.TRANSACTION_INVALID,
            "calldata",
            f"{signature} calldata is {_LENGTH} bytes, not {len(data)}",
        )
    address_word, amount_word = data[4 : 4 + _WORD], data[4 + _WORD :]
    if address_word[:12] != b"\0" * 12:
        raise TransactionRefused(
            ErrorCode.TRANSACTION_INVALID,
            "calldata",
            f"the {role} word is not an ABI-encoded address (its 12 high bytes are not zero)",
        )
    return address_word, amount_word


class Erc20Transfer:
    """`CalldataKind` of ERC-20 `transfer(address,uint256)` calls."""

    name: Final = NAME

    def matches(self, data: bytes) -> bool:
        return data[: len(SELECTOR)] == SELECTOR

    def decode(self, transfer: Transfer, policy: PolicyDocument) -> Movement:
        address_word, amount_word = address_and_amount(
            transfer.data, "transfer(address,uint256)", "recipient"
        )
        if transfer.value != 0:
            raise TransactionRefused(
                ErrorCode.TRANSACTION_INVALID,
                "value",
                "a token transfer sends no native value along with it",
            )
        symbol = token_asset(policy, transfer.chain_id, transfer.to)
        recipient = eip55("0x" + address_word[12:].hex())
        if int(recipient, 16) == 0:
            raise TransactionRefused(
                ErrorCode.TRANSACTION_INVALID, "destination", "a transfer to the zero address burns"
            )
        if recipient.lower() == transfer.to.lower():
            raise TransactionRefused(
                ErrorCode.TRANSACTION_INVALID,
                "destination",
                f"a transfer of {symbol} to its own token contract locks it there",
            )
        raw = int.from_bytes(amount_word, "big")
        if raw == 0:
            raise TransactionRefused(
                ErrorCode.TRANSACTION_INVALID, "amount", "a transfer of zero is not a withdrawal"
            )
        amount = asset_amount(raw, symbol, policy.assets[symbol].decimals)
        return Movement(asset=symbol, destination=recipient, amount=amount, kind=NAME)


def token_asset(policy: PolicyDocument, chain_id: int, contract: str) -> str:
    """The symbol of the policy asset whose token contract on `chain_id` is `contract`."""
    wanted = contract.lower()
    found = [
        symbol
        for symbol, asset in policy.assets.items()
        if (address := asset.contract_on(chain_id)) is not None and address.lower() == wanted
    ]
    if len(found) != 1:
        # None: the node does not know what this contract's units are.  Several cannot pass
        # policy validation; refused here too whatever built the policy.
        raise TransactionRefused(
            ErrorCode.UNSUPPORTED_TRANSACTION,
            "token",
            f"contract {eip55(contract)} on chain {chain_id} is no token asset of the policy",
        )
    return found[0]


ERC20: Final = Erc20Transfer()
