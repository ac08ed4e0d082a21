"""Fees for payouts (coordinator/fees.py): what is offered per gas at each level, the registry's
ceiling, the gas margin; on eth-tester through the same JSON-RPC client as a real node."""

from __future__ import annotations

import asyncio

import pytest
from rpc_requests import recorded

from coordinator.evm_chain import InProcessChain
from coordinator.fees import (
    GAS_MARGIN_PERCENT,
    FeeAboveCeiling,
    FeeLevel,
    eip1559_fees,
    estimate_gas,
    legacy_fees,
    quote_fees,
)
from coordinator.registry import Chain
from coordinator.rpc import FeeHistory
from signer.chains.erc20 import encode_transfer
from signer.problems import ErrorCode

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
GWEI = 10**9


def chain(model: str = "eip1559", ceiling: int = 100 * GWEI) -> Chain:
    return Chain.model_validate(
        {
            "chain_id": 1,
            "name": "test",
            "native": {"symbol": "ETH", "decimals": 18},
            "rpc_urls": ["http://127.0.0.1:9"],
            "confirmations": 1,
            "fee_model": model,
            "fee_ceiling_wei": ceiling,
        }
    )


def test_the_max_fee_leaves_room_for_the_base_fee_to_double() -> None:
    fees = eip1559_fees(chain(), 10 * GWEI, 2 * GWEI)
    assert fees.max_fee_per_gas == 22 * GWEI and fees.max_priority_fee_per_gas == 2 * GWEI
    assert fees.per_gas == 22 * GWEI


def test_the_max_fee_is_lowered_to_the_ceiling_while_the_next_block_fits_under_it() -> None:
    fees = eip1559_fees(chain(ceiling=30 * GWEI), 20 * GWEI, 2 * GWEI)
    assert fees.max_fee_per_gas == 30 * GWEI  # not 42: never above the ceiling


def test_fees_above_the_ceiling_are_refused() -> None:
    with pytest.raises(FeeAboveCeiling) as caught:
        eip1559_fees(chain(ceiling=21 * GWEI), 20 * GWEI, 2 * GWEI)
    assert caught.value.code is ErrorCode.FEE_ABOVE_CEILING
    assert caught.value.needed == 22 * GWEI and "ceiling of 21000000000 wei" in str(caught.value)
    with pytest.raises(FeeAboveCeiling):
        legacy_fees(chain("legacy", ceiling=10 * GWEI), 9 * GWEI, FeeLevel.HIGH)  # 11.25 gwei


@pytest.mark.parametrize(
    ("level", "price"),
    [(FeeLevel.LOW, 8 * GWEI), (FeeLevel.MEDIUM, 9 * GWEI), (FeeLevel.HIGH, 10 * GWEI)],
)
def test_legacy_levels_raise_the_gas_price_exactly(level: FeeLevel, price: int) -> None:
    assert legacy_fees(chain("legacy"), 8 * GWEI, level).gas_price == price
    assert legacy_fees(chain("legacy"), 7, FeeLevel.MEDIUM).gas_price == 8  # 7.875 rounded up


class History:
    """A ChainRpc stand-in answering the two fee calls with fixed figures (pure arithmetic
    under test: the real RPC path is the eth-tester test below)."""

    chain_id = 1

    def __init__(self, rewards: list[list[int]], base: int, tip: int = 3 * GWEI) -> None:
        self.rewards, self.base, self.tip = rewards, base, tip

    async def fee_history(self, blocks: int, percentiles: list[float]) -> FeeHistory:
        return FeeHistory((self.base,) * 2, tuple(tuple(r) for r in self.rewards))

    async def max_priority_fee(self) -> int:
        return self.tip


def test_the_tip_is_the_median_of_the_blocks_that_paid_one() -> None:
    rpc = History([[1 * GWEI], [0], [5 * GWEI], [2 * GWEI], [0]], base=10 * GWEI)
    fees = asyncio.run(quote_fees(rpc, chain(), FeeLevel.MEDIUM))  # type: ignore[arg-type]
    assert fees.max_priority_fee_per_gas == 2 * GWEI  # median of 1, 2, 5; empty blocks left out
    empty = History([[0], [0]], base=10 * GWEI)
    fees = asyncio.run(quote_fees(empty, chain(), FeeLevel.HIGH))  # type: ignore[arg-type]
    assert fees.max_priority_fee_per_gas == 3 * GWEI  # the node's own suggestion


def test_quotes_and_estimates_over_json_rpc_on_eth_tester() -> None:
    local = InProcessChain()
    token = local.deploy_token("T", "T", 6, 10**12)
    rpc = local.rpc()

    async def go() -> None:
        try:
            for level in FeeLevel:
                fees = await quote_fees(rpc, chain(), level)
                assert fees.max_fee_per_gas is not None and fees.max_priority_fee_per_gas
                assert fees.max_fee_per_gas <= 100 * GWEI
            plain = await estimate_gas(rpc, local.faucet, "0x" + "12" * 20, 1, b"")
            assert plain == 21_000  # a plain transfer: exact, no margin
            call = encode_transfer("0x" + "12" * 20, 5)
            raw = await rpc.estimate_gas(local.faucet, token, 0, call)
            with_margin = await estimate_gas(rpc, local.faucet, token, 0, call)
            assert with_margin == raw + -(-raw * GAS_MARGIN_PERCENT // 100)
        finally:
            await rpc.aclose()

    asyncio.run(go())


def test_a_read_is_one_request_to_the_node() -> None:
    """`eth_estimateGas` and `eth_call` go out alone: web3's validation layer asked the node's
    `eth_chainId` before each (two round trips on every payout's way to its signature) for a
    `chainId` field these calls never carry; `check_chain_id` asks it once."""
    local = InProcessChain()
    token = local.deploy_token("T", "T", 6, 10**12)
    rpc = local.rpc()
    sent = recorded(rpc)

    async def go() -> None:
        try:
            await rpc.estimate_gas(local.faucet, "0x" + "12" * 20, 1, b"")
            await rpc.token_balance(token, local.faucet)
            await rpc.fee_history(4, [50.0])
        finally:
            await rpc.aclose()

    asyncio.run(go())
    # (eth-tester's own provider layer also asks eth_accounts to fill an eth_call's sender;
    # an HTTP provider has no such layer)
    assert [m for m in sent if m != "eth_accounts"] == [
        "eth_estimateGas",
        "eth_call",
        "eth_feeHistory",
    ]
