"""The native-coin kind: a plain value transfer (empty calldata) of the chain's own coin.

The asset is the one policy asset whose `native_chains` lists the transaction's chain (the
policy validation allows at most one); the amount is the value in wei scaled down by the asset's
decimals, exactly — `Decimal.scaleb` in the policy's trapping `AMOUNT_CONTEXT`, so any rounding
would raise instead of silently changing what the limits see.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from policies.document import AMOUNT_CONTEXT, MAX_AMOUNT, PolicyDocument, amount_str
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Transfer
from signer.chains.movement import Movement
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
        decimals = policy.assets[symbol].decimals
        # Decimal(int) is exact whatever its size; scaleb only moves the exponent, and the
        # 200-digit context holds any 256-bit value, so nothing here can round.
        amount = Decimal(transfer.value).scaleb(-decimals, AMOUNT_CONTEXT)
        if amount > MAX_AMOUNT:
            # The policy cannot even express such an amount (its bound is 10^30 units).
            raise TransactionRefused(
                ErrorCode.TRANSACTION_INVALID,
                "amount",
                f"{amount_str(amount)[:40]}… {symbol} is above the 10^30 bound of any amount",
            )
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
