"""Fees for a payout: what to offer per gas, how much gas, and the ceiling nothing is signed above.

EIP-1559 chains: the priority fee is the median, over the last `HISTORY_BLOCKS` blocks, of the
tip paid at the level's percentile of each block (`eth_feeHistory`: low 10th, medium 50th, high
90th); blocks that paid no tip at all are left out, and with no such block the node's own
`eth_maxPriorityFeePerGas` answers.  The max fee leaves room for the base fee to double (about six
full blocks in a row) — `2 × next base fee + tip` — and is lowered to the chain's
`fee_ceiling_wei` when that is above it but still leaves the next block's base fee and the tip
under it.  When even `next base fee + tip` exceeds the ceiling nothing is signed:
`FeeAboveCeiling`.  Legacy chains: the node's `eth_gasPrice`, raised by the level (×1, ×1.125,
×1.25), refused above the ceiling.

Gas: `eth_estimateGas` for exactly the call to be signed, plus `GAS_MARGIN_PERCENT` (state can
change between the estimate and inclusion: a token's first transfer to an address costs more than
the next); a plain transfer to an address without code is 21,000 exactly (no margin to waste).
All in integers of wei; no float anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from statistics import median_low
from typing import Final

from coordinator.registry import Chain
from coordinator.rpc import ChainRpc
from signer.chains.evm import ChainError
from signer.problems import ErrorCode

HISTORY_BLOCKS: Final = 20
GAS_MARGIN_PERCENT: Final = 25
PLAIN_TRANSFER_GAS: Final = 21_000


class FeeLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


#: The percentile of each block's tips a level pays (EIP-1559).
PERCENTILE: Final = {FeeLevel.LOW: 10.0, FeeLevel.MEDIUM: 50.0, FeeLevel.HIGH: 90.0}
#: A legacy gas price's raise per level, as a fraction (numerator, denominator).
LEGACY_RAISE: Final = {FeeLevel.LOW: (1, 1), FeeLevel.MEDIUM: (9, 8), FeeLevel.HIGH: (5, 4)}


class FeeAboveCeiling(ChainError):
    """The chain's fees now are above its configured ceiling: nothing is signed."""

    code = ErrorCode.FEE_ABOVE_CEILING

    def __init__(self, chain_id: int, needed: int, ceiling: int) -> None:
        self.chain_id = chain_id
        self.needed = needed
        self.ceiling = ceiling
        super().__init__(
            f"chain {chain_id}: the fee needed now is {needed} wei per gas, above the "
            f"ceiling of {ceiling} wei per gas in the chain registry"
        )


@dataclass(frozen=True)
class Eip1559Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    @property
    def per_gas(self) -> int:
        """The most the transaction may pay per gas."""
        return self.max_fee_per_gas


@dataclass(frozen=True)
class LegacyFees:
    gas_price: int

    @property
    def per_gas(self) -> int:
        return self.gas_price


#: Per-gas fees of one transaction, by the chain's fee model.
Fees = Eip1559Fees | LegacyFees


def eip1559_fees(chain: Chain, next_base_fee: int, tip: int) -> Fees:
    """The fees to offer given the next block's base fee and the tip chosen (pure, for tests)."""
    ceiling = chain.fee_ceiling_wei
    if next_base_fee + tip > ceiling:
        raise FeeAboveCeiling(chain.chain_id, next_base_fee + tip, ceiling)
    return Eip1559Fees(
        max_fee_per_gas=min(2 * next_base_fee + tip, ceiling), max_priority_fee_per_gas=tip
    )


def legacy_fees(chain: Chain, gas_price: int, level: FeeLevel) -> Fees:
    numerator, denominator = LEGACY_RAISE[level]
    price = -(-gas_price * numerator // denominator)  # rounded up
    if price > chain.fee_ceiling_wei:
        raise FeeAboveCeiling(chain.chain_id, price, chain.fee_ceiling_wei)
    return LegacyFees(gas_price=price)


async def quote_fees(rpc: ChainRpc, chain: Chain, level: FeeLevel) -> Fees:
    """The fees for a transaction on `chain` at `level`, now."""
    if chain.fee_model == "legacy":
        return legacy_fees(chain, await rpc.gas_price(), level)
    history = await rpc.fee_history(HISTORY_BLOCKS, [PERCENTILE[level]])
    tips = [row[0] for row in history.rewards if row and row[0] > 0]
    tip = median_low(tips) if tips else await rpc.max_priority_fee()
    return eip1559_fees(chain, history.next_base_fee, tip)


async def estimate_gas(rpc: ChainRpc, sender: str, to: str, value: int, data: bytes) -> int:
    """The gas limit to sign: the estimate plus the margin (none for a plain transfer)."""
    estimate = await rpc.estimate_gas(sender, to, value, data)
    if not data and estimate == PLAIN_TRANSFER_GAS:
        return estimate
    return estimate + -(-estimate * GAS_MARGIN_PERCENT // 100)
