"""What a calldata kind reads out of a transfer (`Movement`), and what a kind is (`CalldataKind`).

Separate from the registry (`signer.chains.calldata`) because every kind module needs these two
names and the registry imports every kind module: kept here, the imports form no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from policies.document import PolicyDocument
    from signer.chains.evm import Transfer


@dataclass(frozen=True)
class Movement:
    """`amount` (exact, in the asset's units: "1.5" ETH, not wei) of `asset` to `destination`
    (EIP-55), as calldata kind `kind` reads the transfer.  For a token call the destination is
    the recipient in the calldata, not the transaction's `to` (the token contract)."""

    asset: str
    destination: str
    amount: Decimal
    kind: str


class CalldataKind(Protocol):
    """One kind of call a node can decode.  `matches` looks at the calldata alone, so the
    registry can require that exactly one kind claims a payload; `decode` may then refuse it
    (`TransactionRefused`) for what the policy or the values say."""

    @property
    def name(self) -> str: ...

    def matches(self, data: bytes) -> bool: ...

    def decode(self, transfer: Transfer, policy: PolicyDocument) -> Movement: ...
