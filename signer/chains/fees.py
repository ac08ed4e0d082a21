"""The fee bound a node enforces itself: the policy's ceiling on what a transaction pays per gas
(`PolicyDocument.fee_ceilings`, policies/document.py).

A transaction pays the gas it uses times its price per gas.  For the calls a node signs — a
transfer, a token transfer, a batch, an approve — the gas used is fixed by the call itself, not
by the gas limit the coordinator chose (what is not used is refunded), so the price is what a
compromised coordinator could raise to burn the wallet's coin in fees without moving any of it
past the policy.  The price is the EIP-1559 max fee per gas (the priority fee is never above it,
signer/chains/evm.py) or the legacy gas price.  A chain the policy names no ceiling for is not
bounded here (the coordinator's registry still bounds it, coordinator/fees.py).
"""

from __future__ import annotations

from policies.document import PolicyDocument
from signer.chains.errors import TransactionRefused
from signer.chains.evm import Eip1559Transfer, Transfer
from signer.problems import ErrorCode

__all__ = ["check_fee_ceiling", "price_per_gas"]


def price_per_gas(transfer: Transfer) -> int:
    """The most `transfer` pays per gas it uses."""
    if isinstance(transfer, Eip1559Transfer):
        return transfer.max_fee_per_gas
    return transfer.gas_price


def check_fee_ceiling(transfer: Transfer, policy: PolicyDocument) -> None:
    """Refuse (`TransactionRefused`, FEE_ABOVE_CEILING, check `fee`) a transaction that would
    pay more per gas than the policy's ceiling on its chain."""
    ceiling = policy.fee_ceiling_on(transfer.chain_id)
    price = price_per_gas(transfer)
    if ceiling is not None and price > ceiling:
        raise TransactionRefused(
            ErrorCode.FEE_ABOVE_CEILING,
            "fee",
            f"the transaction pays up to {price} wei per gas; the policy's ceiling on chain "
            f"{transfer.chain_id} is {ceiling}",
        )
