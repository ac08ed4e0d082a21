"""The registry of calldata kinds: which kinds of call a key-share node can read a movement from.

A kind (`signer.chains.movement.CalldataKind`) has a `name`, `matches(data)` — a test on the
calldata alone — and `decode(transfer, policy)`, which returns the `Movement` (asset, recipient,
exact amount) or refuses.  `KINDS` lists them in order; `movement_of` requires exactly one to
match, so two kinds that both claim a payload are a bug found at once, never a silent choice.

Adding a kind (ERC-20 `transfer(address,uint256)` was the second: `erc20.py`; a batch payout
through the policy's disperse contract the third: `disperse.py`) is one new module in this
package (its kind object: the selector in `matches`, the asset and recipient in `decode`) plus
one line in `KINDS`; nothing else changes.  Calldata that no kind matches is refused as
UNSUPPORTED_TRANSACTION, so a node never signs a call it cannot read.
"""

from __future__ import annotations

from typing import Final

from policies.document import PolicyDocument
from signer.chains.disperse import DISPERSE
from signer.chains.erc20 import ERC20
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer
from signer.chains.movement import CalldataKind, Movement
from signer.chains.native import NATIVE
from signer.problems import ErrorCode

__all__ = ["KINDS", "CalldataKind", "Movement", "movement_of", "selector_of"]

KINDS: Final[tuple[CalldataKind, ...]] = (NATIVE, ERC20, DISPERSE)


def selector_of(data: bytes) -> str:
    """The 4-byte function selector of `data` as hex (what a detail may name: never the data)."""
    if not data:
        return "none (empty calldata)"
    if len(data) < 4:
        return f"none ({len(data)} bytes of calldata, shorter than a selector)"
    return "0x" + data[:4].hex()


def movement_of(transfer: Transfer, policy: PolicyDocument) -> Movement:
    """What `transfer` moves, read by the one kind whose `matches` accepts its calldata."""
    matching = [kind for kind in KINDS if kind.matches(transfer.data)]
    if len(matching) != 1:
        which = "no calldata kind" if not matching else "several calldata kinds"
        raise TransactionRefused(
            ErrorCode.UNSUPPORTED_TRANSACTION,
            "calldata",
            f"{which} of this node decodes selector {selector_of(transfer.data)}",
        )
    return matching[0].decode(transfer, policy)
