"""The native-coin kind: a plain value transfer (empty calldata) of the chain's own coin.

The asset is the one policy asset whose `native_chains` lists the transaction's chain (the
policy validation allows at most one); the amount is the value in wei scaled down by the asset's
decimals, exactly — `Decimal.scaleb` in the policy's trapping `AMOUNT_CONTEXT`, so any rounding
would raise instead of silently changing what the limits see.
"""

from __future__ import annotations

from typing import Final

from policies.document import PolicyDocument
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer
from signer.chains.movement import Movement, asset_amount
from signer.problems import ErrorCode

NAME: Final = "native"


class NativeTransfer:
    """`CalldataKind` of plain value transfers."""

    name: Final = NAME

    def matches(self, data: bytes) -> bool:
        return data == b""

    def decode(self, transfer: Transfer, policy: PolicyDocument) -> Movement:
        if transfer.value == 0:
            # Mirrors policies/intent.py: a withdrawal of zero is not a withdrawal, and a
            # zero-value call signed "because it moves nothing" still spends a nonce and gas.
            raise TransactionRefused(
                ErrorCode.TRANSACTION_INVALID, "amount", "a transfer of zero is not a withdrawal"
            )
        symbol = native_asset(policy, transfer.chain_id)
        amount = asset_amount(transfer.value, symbol, policy.assets[symbol].decimals)
        return Movement(asset=symbol, destination=transfer.to, amount=amount, kind=NAME)


def native_asset(policy: PolicyDocument, chain_id: int) -> str:
    """The symbol of the asset that is chain `chain_id`'s native coin in `policy`."""
    found = [symbol for symbol, asset in policy.assets.items() if chain_id in asset.native_chains]
    if len(found) != 1:
        # None: nothing tells the node which coin the value is.  Several cannot pass policy
        # validation; refusing here too keeps the answer unambiguous whatever built the policy.
        raise TransactionRefused(
            ErrorCode.UNSUPPORTED_TRANSACTION,
            "native_asset",
            f"the policy names no single native asset for chain {chain_id}",
        )
    return found[0]


NATIVE: Final = NativeTransfer()
