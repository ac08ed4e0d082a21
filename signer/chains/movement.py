"""What a calldata kind reads out of a transfer (`Movement`), and what a kind is (`CalldataKind`).

Separate from the registry (`signer.chains.calldata`) because every kind module needs these two
names and the registry imports every kind module: kept here, the imports form no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from policies.document import AMOUNT_CONTEXT, MAX_AMOUNT, amount_str
from signer.chains.errors import TransactionRefused
from signer.problems import ErrorCode

if TYPE_CHECKING:
    from policies.document import PolicyDocument
    from signer.chains.evm import Transfer


@dataclass(frozen=True)
class Movement:
    """`amount` (exact, in the asset's units: "1.5" ETH, not wei) of `asset` to `destination`
    (EIP-55), as calldata kind `kind` reads the transfer.  For a token call the destination is
    the recipient in the calldata, not the transaction's `to` (the token contract).  A batch
    has `legs` (recipient, amount), its destination is the disperse contract and its amount
    their sum."""

    asset: str
    destination: str
    amount: Decimal
    kind: str
    legs: tuple[tuple[str, Decimal], ...] | None = None


def asset_amount(raw: int, symbol: str, decimals: int) -> Decimal:
    """`raw` base units (wei, a token's smallest unit) of `symbol` in its units, exactly.

    Decimal(int) is exact whatever its size; scaleb only moves the exponent, and the policy's
    200-digit trapping context holds any 256-bit value, so nothing here can round."""
    amount = Decimal(raw).scaleb(-decimals, AMOUNT_CONTEXT)
    if amount > MAX_AMOUNT:
        # The policy cannot even express such an amount (its bound is 10^30 units).
        raise TransactionRefused(
            ErrorCode.TRANSACTION_INVALID,
            "amount",
            f"{amount_str(amount)[:40]}… {symbol} is above the 10^30 bound of any amount",
        )
    return amount


class CalldataKind(Protocol):
    """One kind of call a node can decode.  `matches` looks at the calldata alone, so the
    registry can require that exactly one kind claims a payload; `decode` may then refuse it
    (`TransactionRefused`) for what the policy or the values say."""

    @property
    def name(self) -> str: ...

    def matches(self, data: bytes) -> bool: ...

    def decode(self, transfer: Transfer, policy: PolicyDocument) -> Movement: ...
