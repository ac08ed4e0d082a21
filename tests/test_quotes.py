"""Fee quotes and gas estimates asked ahead (coordinator/quotes.py), on eth-tester through the
same JSON-RPC client as a real node."""

from __future__ import annotations

import asyncio

import pytest
from rpc_requests import recorded

from coordinator.evm_chain import InProcessChain
from coordinator.fees import FeeLevel
from coordinator.quotes import FRESH_SECONDS, Quoted, QuotesAhead, read_quotes
from coordinator.registry import Chain
from signer.chains.erc20 import encode_transfer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
RECIPIENT = "0x" + "12" * 20


def chain(chain_id: int) -> Chain:
    return Chain.model_validate(
        {
            "chain_id": chain_id,
            "name": "test",
            "native": {"symbol": "ETH", "decimals": 18},
            "rpc_urls": ["http://127.0.0.1:9"],
            "confirmations": 1,
            "fee_model": "eip1559",
            "fee_ceiling_wei": 100 * 10**9,
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def local() -> InProcessChain:
    return InProcessChain()


def transfer(local: InProcessChain, token: str, units: int, **changes: object) -> Quoted:
    fields: dict[str, object] = {
        "chain_id": local.chain_id,
        "sender": local.faucet,
        "to": token,
        "value": 0,
        "data": encode_transfer(RECIPIENT, units),
        "level": FeeLevel.MEDIUM,
    }
    return Quoted(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_quote_asked_ahead_is_the_chains_own_answer_handed_over_once(
    local: InProcessChain,
) -> None:
    token = local.deploy_token("T", "T", 6, 10**12)
    quoted = transfer(local, token, 5)

    async def go() -> None:
        ahead = QuotesAhead()
        early = local.rpc()
        ahead.ask("p1", early, chain(local.chain_id), quoted)
        await asyncio.sleep(0.5)  # the reads done meanwhile (the screening, in the service)
        await early.aclose()  # nothing is asked of the chain from here on
        got = await ahead.take("p1", quoted)
        assert got is not None
        assert await ahead.take("p1", quoted) is None  # handed over once
        rpc = local.rpc()
        try:
            assert got == await read_quotes(rpc, chain(local.chain_id), quoted)
        finally:
            await rpc.aclose()

    asyncio.run(go())


@pytest.mark.parametrize(
    "other",
    [
        {"data": encode_transfer(RECIPIENT, 6)},
        {"value": 1},
        {"level": FeeLevel.HIGH},
        {"sender": RECIPIENT},
        {"to": RECIPIENT},
        {"chain_id": 1},
    ],
    ids=["calldata", "value", "fee level", "sender", "recipient", "chain"],
)
def test_a_quote_for_another_transaction_is_not_handed_over(
    local: InProcessChain, other: dict[str, object]
) -> None:
    token = local.deploy_token("T", "T", 6, 10**12)
    quoted = transfer(local, token, 5)

    async def go() -> None:
        ahead = QuotesAhead()
        rpc = local.rpc()
        try:
            ahead.ask("p1", rpc, chain(local.chain_id), quoted)
            assert await ahead.take("p1", transfer(local, token, 5, **other)) is None
            assert await ahead.take("p1", quoted) is None  # dropped, not kept for later
            assert await ahead.take("never-asked", quoted) is None
        finally:
            await rpc.aclose()

    asyncio.run(go())


def test_a_quote_older_than_its_freshness_is_not_handed_over(local: InProcessChain) -> None:
    token = local.deploy_token("T", "T", 6, 10**12)
    quoted = transfer(local, token, 5)
    clock = Clock()

    async def go() -> None:
        ahead = QuotesAhead(clock)
        rpc = local.rpc()
        try:
            ahead.ask("p1", rpc, chain(local.chain_id), quoted)
            ahead.ask("p2", rpc, chain(local.chain_id), quoted)
            clock.now += FRESH_SECONDS - 0.01
            assert await ahead.take("p1", quoted) is not None
            clock.now += 0.02  # the payout waited (for officers, say): quoted anew
            assert await ahead.take("p2", quoted) is None
        finally:
            await rpc.aclose()

    asyncio.run(go())


def test_a_read_that_failed_ahead_is_left_to_the_payout_own_reads(local: InProcessChain) -> None:
    token = local.deploy_token("T", "T", 6, 10**12)
    broke = transfer(local, token, 5, sender=RECIPIENT)  # holds nothing: the estimate fails

    async def go() -> None:
        ahead = QuotesAhead()
        rpc = local.rpc()
        try:
            ahead.ask("p1", rpc, chain(local.chain_id), broke)
            await asyncio.sleep(0.5)
            assert await ahead.take("p1", broke) is None  # no error here: asked again later
        finally:
            await rpc.aclose()

    asyncio.run(go())


def test_payouts_asked_ahead_share_one_fee_read_per_level_for_its_freshness(
    local: InProcessChain,
) -> None:
    """The fee quote depends on the chain and the level only: one eth_feeHistory for every
    payout asked ahead within FRESH_SECONDS of it, each with its own gas estimate; its age,
    not the payout's, decides whether it is still handed over."""
    token = local.deploy_token("T", "T", 6, 10**12)
    clock = Clock()

    async def go() -> None:
        ahead = QuotesAhead(clock)
        rpc = local.rpc()
        sent = recorded(rpc)
        try:
            one, two, high = (
                transfer(local, token, 5),
                transfer(local, token, 6),
                transfer(local, token, 7, level=FeeLevel.HIGH),
            )
            ahead.ask("p1", rpc, chain(local.chain_id), one)
            clock.now += FRESH_SECONDS - 0.5
            ahead.ask("p2", rpc, chain(local.chain_id), two)  # the same fee read
            ahead.ask("p3", rpc, chain(local.chain_id), high)  # another level: its own
            got_one = await ahead.take("p1", one)
            assert got_one is not None
            assert sent.count("eth_feeHistory") == 2 and sent.count("eth_estimateGas") == 3
            clock.now += 0.51  # p2 was asked 0.51 s ago, its fee read FRESH_SECONDS + 0.01
            assert await ahead.take("p2", two) is None
            assert await ahead.take("p3", high) is not None
            ahead.ask("p4", rpc, chain(local.chain_id), two)  # a new fee read now
            got_four = await ahead.take("p4", two)
            assert got_four is not None and sent.count("eth_feeHistory") == 3
            assert got_four == await read_quotes(rpc, chain(local.chain_id), two)
        finally:
            await rpc.aclose()

    asyncio.run(go())
