"""The one ERC-20 `approve(address,uint256)` a node signs: the allowance a token batch spends.

A token batch in one transaction (`disperse.py`, `disperseToken`) moves the tokens with the
token's `transferFrom(sender, leg, amount)`, called by the policy's disperse contract, so the
sending address must first let that contract spend its tokens.  An `approve` moves nothing
itself and no policy rule decides it; what it grants is the danger (attacks.md T21p: an
allowance to an address the attacker controls is a drain that needs no further signature).  A
node therefore signs an `approve` (`read_allowance`) only when:

* the calldata is exactly the selector 0x095ea7b3 and two ABI words (68 bytes, the spender
  word's 12 high bytes zero: `erc20.address_and_amount`) — any other shape is refused, never
  guessed at;
* the transaction calls a token contract of the policy on its chain (`erc20.token_asset`);
* it sends no native value along;
* the spender is the policy's disperse contract on that chain (`disperse_contracts`), which
  moves a sender's tokens only inside a `disperseToken` call made by that sender — a batch the
  nodes decode and the policy decides leg by leg.  Any other spender is ALLOWANCE_REFUSED.

The amount is not bounded here: whatever the allowance, the contract spends it only in batches
that every node decided, and the coordinator approves a batch's exact total.  Zero is allowed:
tokens such as USDT refuse to change a non-zero allowance to another non-zero one, so the
coordinator resets one to zero first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from policies.document import PolicyDocument, eip55
from signer.chains.erc20 import address_and_amount, token_asset
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer
from signer.problems import ErrorCode

__all__ = ["SELECTOR", "Allowance", "encode_approve", "read_allowance"]

#: keccak256("approve(address,uint256)")[:4]
SELECTOR: Final = bytes.fromhex("095ea7b3")
_WORD: Final = 32


@dataclass(frozen=True)
class Allowance:
    """An `approve` as the node read it: `asset` (the policy's symbol), the token contract and
    the spender (EIP-55), and the amount in the token's base units."""

    asset: str
    token: str
    spender: str
    amount: int


def encode_approve(spender: str, amount: int) -> bytes:
    """The calldata of `approve(spender, amount)` (amount in the token's base units)."""
    raw = bytes.fromhex(spender.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError("a spender is a 20-byte address")
    if not 0 <= amount < 2**256:
        raise ValueError("an ERC-20 allowance is a uint256")
    return SELECTOR + raw.rjust(_WORD, b"\0") + amount.to_bytes(_WORD, "big")


def read_allowance(transfer: Transfer, policy: PolicyDocument) -> Allowance:
    """The allowance `transfer` grants, if a node may sign it; `TransactionRefused` if not."""
    data = transfer.data
    if data[: len(SELECTOR)] != SELECTOR:
        raise TransactionRefused(
            ErrorCode.ALLOWANCE_REFUSED,
            "calldata",
            "an allowance is an approve(address,uint256) call",
        )
    spender_word, amount_word = address_and_amount(data, "approve(address,uint256)", "spender")
    if transfer.value != 0:
        raise TransactionRefused(
            ErrorCode.TRANSACTION_INVALID, "value", "an approve sends no native value along"
        )
    asset = token_asset(policy, transfer.chain_id, transfer.to)
    spender = eip55("0x" + spender_word[12:].hex())
    disperse = policy.disperse_contract_on(transfer.chain_id)
    if disperse is None or disperse.lower() != spender.lower():
        # T21p: the only spender is the contract that spends solely in decided batches
        allowed = "names none" if disperse is None else f"names {eip55(disperse)}"
        raise TransactionRefused(
            ErrorCode.ALLOWANCE_REFUSED,
            "spender",
            f"an allowance of {asset} goes only to the policy's disperse contract on chain "
            f"{transfer.chain_id} (the policy {allowed}); not to {spender}",
        )
    return Allowance(
        asset=asset,
        token=eip55(transfer.to),
        spender=spender,
        amount=int.from_bytes(amount_word, "big"),
    )
