"""Payouts on real chains (docs/chains.md, "Payouts"): threshold-signed by real node processes
whose policy decides each one, sent over web3's HTTP provider to two Hardhat nodes (chain ids
31337 and 1338) and to the in-process eth-tester chain, followed to their confirmations.
Balances are checked exact, in wei and token units."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from chain_world import (
    BLOCKED,
    CHAIN_A,
    CHAIN_B,
    ETHER,
    RECIPIENT,
    SECOND,
    STRANGER,
    TOKENS,
    World,
    make_world,
    registry_file,
    registry_for,
    stop_world,
)
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from policy_world import INITIATOR, new_request_id

from coordinator.payouts import (
    PayoutEngine,
    PayoutError,
    PayoutKind,
    PayoutRequest,
    PayoutState,
    batch_request,
)
from coordinator.rpc import TransactionRejected
from coordinator.store import PayoutRow
from policies.document import amount_str
from signer.chains.erc20 import encode_transfer
from signer.chains.evm import (
    Eip1559Transfer,
    chain_id_of,
    decode_signing_payload,
    recover_sender,
)
from signer.problems import ErrorCode

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
T = TypeVar("T")
CONCURRENT = 50


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # the concurrent test's payouts and every other test's, each one presignature: the
    # module's tests take 300 from the wallet's own path (counted after a whole run of the
    # module), four more in case a retry burns one; an empty pool would presign on demand
    w = make_world(tmp_path_factory.mktemp("payouts"), presignatures=CONCURRENT + BATCH + 54)
    try:
        yield w
    finally:
        stop_world(w)


def request(
    chain_id: int, asset: str, amount: str, to: str = RECIPIENT, **kw: Any
) -> PayoutRequest:
    return PayoutRequest(
        payout_id=kw.pop("payout_id", new_request_id("po")),
        wallet="hot",
        chain_id=chain_id,
        asset=asset,
        destination=to,
        amount=amount,
        initiator=INITIATOR,
        **kw,
    )


async def pay_and_confirm(engine: PayoutEngine, req: PayoutRequest) -> PayoutRow:
    row = await engine.pay(req)
    assert row.state == PayoutState.SENT, row.reason
    return await engine.wait(req.payout_id)


def units(amount: str, decimals: int) -> int:
    return int(Decimal(amount).scaleb(decimals))


@pytest.mark.parametrize("chain", ["hardhat", "eth-tester"])
def test_eth_and_both_tokens_are_paid_exactly(world: World, chain: str) -> None:
    chain_id = (
        CHAIN_A
        if chain == "hardhat"
        else next(cid for cid in world.chains.local if cid not in (CHAIN_A, CHAIN_B))
    )
    local = world.chains.local[chain_id]
    eth_before = local.balance(SECOND)
    sender_before = local.balance(world.sender)
    token_before = {s: local.token_balance(world.chains.token(chain_id, s), SECOND) for s in TOKENS}
    amounts = {"ETH": "0.25", "USDT": "12.345678", "DAI": "1.000000000000000001"}

    async def go() -> list[PayoutRow]:
        async with world.engine() as engine:
            return [
                await pay_and_confirm(engine, request(chain_id, asset, amount, SECOND))
                for asset, amount in amounts.items()
            ]

    rows = run(go())
    fees = 0
    for row in rows:
        assert row.state == PayoutState.CONFIRMED, row.reason
        assert row.raw is not None and recover_sender(row.raw) == world.sender
        assert chain_id_of(row.raw) == chain_id
        receipt = local.receipt(bytes.fromhex(row.tx_hash[2:]))
        assert receipt.success and receipt.block_number == row.block_number
        fees += receipt.fee
    assert local.balance(SECOND) - eth_before == units("0.25", 18)
    assert sender_before - local.balance(world.sender) == units("0.25", 18) + fees
    for symbol, decimals in TOKENS.items():
        got = local.token_balance(world.chains.token(chain_id, symbol), SECOND)
        assert got - token_before[symbol] == units(amounts[symbol], decimals)
    # consecutive nonces, one per payout
    nonces = [r.nonce for r in rows]
    assert nonces == list(range(nonces[0], nonces[0] + 3))


def test_a_second_chain_has_its_own_chain_id_and_nonces(world: World) -> None:
    local = world.chains.local[CHAIN_B]
    before = local.balance(RECIPIENT)
    chain_nonce = local.nonce(world.sender)
    other_nonce = world.chains.local[CHAIN_A].nonce(world.sender)

    async def go() -> PayoutRow:
        async with world.engine() as engine:
            return await pay_and_confirm(engine, request(CHAIN_B, "ETH", "0.5"))

    row = run(go())
    assert row.state == PayoutState.CONFIRMED and row.raw is not None
    assert chain_id_of(row.raw) == CHAIN_B and row.nonce == chain_nonce
    assert local.balance(RECIPIENT) - before == ETHER // 2
    # the same address on chain A keeps its own counter
    assert world.chains.local[CHAIN_A].nonce(world.sender) == other_nonce


def test_fifty_concurrent_payouts_from_one_address_get_consecutive_nonces(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    start = local.nonce(world.sender)
    before = local.token_balance(world.chains.token(CHAIN_A, "USDT"), RECIPIENT)

    async def go() -> list[PayoutRow]:
        async with world.engine() as engine:
            requests = [request(CHAIN_A, "USDT", "1.5") for _ in range(CONCURRENT)]
            sent = await asyncio.gather(*(engine.pay(r) for r in requests))
            assert all(r.state == PayoutState.SENT for r in sent), [r.reason for r in sent]
            return list(await asyncio.gather(*(engine.wait(r.payout_id) for r in requests)))

    rows = run(go())
    assert all(r.state == PayoutState.CONFIRMED for r in rows)
    assert sorted(r.nonce for r in rows) == list(range(start, start + CONCURRENT))
    assert len({r.tx_hash for r in rows}) == CONCURRENT
    assert local.nonce(world.sender) == start + CONCURRENT
    got = local.token_balance(world.chains.token(CHAIN_A, "USDT"), RECIPIENT) - before
    assert got == CONCURRENT * 1_500_000


def test_a_payout_sent_before_the_one_of_the_nonce_below_takes_that_one_along(
    world: World,
) -> None:
    """Signed in nonce order, sent in the other: an automining Hardhat cannot queue nonce n+1
    ("nonce too high"), so the send of n+1 sends n first (the race the concurrent test met)."""
    local = world.chains.local[CHAIN_A]
    start = local.nonce(world.sender)

    async def go() -> tuple[list[PayoutRow], PayoutRow]:
        async with world.engine() as engine:
            first, second = (request(CHAIN_A, "ETH", "0.01") for _ in range(2))
            for r in (first, second):
                await engine.submit(r)
                signed = await engine.drive(r.payout_id, send=False)
                assert signed.state == PayoutState.SIGNED, signed.reason
            sent = await engine.drive(second.payout_id)  # the higher nonce first
            assert sent.state == PayoutState.SENT, sent.reason
            earlier = engine.payout(first.payout_id)
            assert earlier.state == PayoutState.SENT  # taken along, in order
            return [await engine.wait(r.payout_id) for r in (first, second)], earlier

    rows, earlier = run(go())
    assert [r.nonce for r in rows] == [start, start + 1]
    assert all(r.state == PayoutState.CONFIRMED for r in rows), [r.reason for r in rows]
    assert local.nonce(world.sender) == start + 2
    assert earlier.tx_hash == rows[0].tx_hash


def test_the_chain_says_which_side_of_the_account_nonce_a_refused_one_is(world: World) -> None:
    """Hardhat's "nonce too high" and "nonce too low" are told apart: they need opposite
    handling (send the earlier one first, or look for what took the nonce)."""
    local = world.chains.local[CHAIN_A]
    account = Account.create()
    local.fund(account.address, 10**17)
    priority, max_fee = local.suggest_fees()

    def signed(nonce: int, value: int) -> bytes:
        tx = {
            "type": 2,
            "chainId": CHAIN_A,
            "nonce": nonce,
            "to": RECIPIENT,
            "value": value,
            "gas": 21_000,
            "maxPriorityFeePerGas": priority,
            "maxFeePerGas": max_fee,
        }
        return bytes(account.sign_transaction(tx).raw_transaction)

    async def go() -> tuple[TransactionRejected, TransactionRejected]:
        rpc = local.rpc()
        with pytest.raises(TransactionRejected) as high:
            await rpc.send_raw(signed(3, 1))
        await rpc.send_raw(signed(0, 1))
        with pytest.raises(TransactionRejected) as low:
            await rpc.send_raw(signed(0, 2))  # another transaction at a used nonce
        return high.value, low.value

    high, low = run(go())
    assert high.nonce_too_high and not high.nonce_too_low, high.reason
    assert low.nonce_too_low and not low.nonce_too_high, low.reason


def test_a_refused_payout_gives_its_nonce_back(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    start = local.nonce(world.sender)

    async def go() -> tuple[PayoutRow, PayoutRow]:
        async with world.engine() as engine:
            refused = await engine.pay(request(CHAIN_A, "ETH", "0.1", STRANGER))
            paid = await pay_and_confirm(engine, request(CHAIN_A, "ETH", "0.1"))
            assert engine.nonces.next_nonce(CHAIN_A, world.sender) == start + 1
            return refused, paid

    refused, paid = run(go())
    assert refused.state == PayoutState.FAILED and refused.nonce is None
    assert refused.raw is None and refused.reason is not None
    assert refused.reason.startswith("POLICY_DENIED")
    assert paid.nonce == start and paid.state == PayoutState.CONFIRMED  # no gap
    assert local.nonce(world.sender) == start + 1


def test_the_nodes_are_asked_only_once_the_reserved_nonce_is_on_disk(world: World) -> None:
    """The reservation is committed without an fsync of its own (policies/sqlite.py `Sync`):
    the engine's barrier must have synced it by the time any node is asked to sign."""
    seen: list[bool] = []

    async def go() -> PayoutRow:
        async with world.engine() as engine:
            asked = engine.coordinator.sign_transaction

            async def spying(*args: Any, **kwargs: Any) -> Any:
                seen.append(engine.store.unsynced())
                return await asked(*args, **kwargs)

            engine.coordinator.sign_transaction = spying  # type: ignore[method-assign]
            return await pay_and_confirm(engine, request(CHAIN_A, "ETH", "0.01"))

    paid = run(go())
    assert paid.state == PayoutState.CONFIRMED
    assert seen == [False]


def test_a_payout_id_is_one_payout(world: World) -> None:
    req = request(CHAIN_A, "DAI", "2")

    async def go() -> tuple[PayoutRow, PayoutRow]:
        async with world.engine() as engine:
            first = await pay_and_confirm(engine, req)
            again = await engine.pay(req)  # an exact replay: the same payout, nothing new
            with pytest.raises(PayoutError) as caught:
                await engine.pay(request(CHAIN_A, "DAI", "3", payout_id=req.payout_id))
            assert caught.value.code is ErrorCode.REQUEST_REUSED
            assert "amount" in str(caught.value) and "3" not in caught.value.detail.split("(")[0]
            return first, again

    first, again = run(go())
    assert again.tx_hash == first.tx_hash and again.state == PayoutState.CONFIRMED


def test_a_fee_above_the_ceiling_is_refused_before_a_nonce_is_taken(world: World) -> None:
    registry = registry_for(world.chains, **{str(CHAIN_A): {"fee_ceiling_wei": 1000}})
    local = world.chains.local[CHAIN_A]
    start = local.nonce(world.sender)

    async def go() -> PayoutRow:
        async with world.engine(registry) as engine:
            row = await engine.pay(request(CHAIN_A, "ETH", "0.1"))
            assert engine.nonces.next_nonce(CHAIN_A, world.sender) == start
            return row

    row = run(go())
    assert row.state == PayoutState.FAILED and row.nonce is None
    assert row.reason is not None and row.reason.startswith("FEE_ABOVE_CEILING")
    assert "ceiling of 1000 wei" in row.reason
    assert local.nonce(world.sender) == start


@pytest.mark.parametrize(
    ("change", "code", "says"),
    [
        ({"chain_id": 99}, ErrorCode.UNKNOWN_CHAIN, "chain 99 is not configured"),
        ({"asset": "WBTC"}, ErrorCode.UNKNOWN_CHAIN, "asset WBTC is not registered"),
        ({"amount": "1.0000001", "asset": "USDT"}, ErrorCode.VALIDATION, "more than 6 decimal"),
        ({"amount": "-1"}, ErrorCode.VALIDATION, "decimal text"),
        ({"amount": "1e3"}, ErrorCode.VALIDATION, "decimal text"),
        ({"amount": "0"}, ErrorCode.VALIDATION, "above zero"),
        ({"destination": RECIPIENT.lower()}, ErrorCode.ADDRESS_REFUSED, "no EIP-55 checksum"),
        (
            {"destination": "0x" + RECIPIENT[2:].swapcase()},
            ErrorCode.ADDRESS_REFUSED,
            "checksum fails at character 1 of 40",
        ),
        (
            {"destination": to_checksum_address("0xa1a1" + "0" * 32 + "a1a1")},
            ErrorCode.ADDRESS_REFUSED,
            f"starts and ends like {RECIPIENT}",
        ),
        ({"destination": "0x12"}, ErrorCode.ADDRESS_REFUSED, "40 hex digits"),
        ({"payout_id": "no spaces here"}, ErrorCode.VALIDATION, "payout id"),
    ],
)
def test_a_bad_payout_request_is_refused_before_anything_is_stored(
    world: World, change: dict[str, Any], code: ErrorCode, says: str
) -> None:
    fields = {"chain_id": CHAIN_A, "asset": "ETH", "amount": "1", "to": RECIPIENT, **change}
    fields["to"] = fields.pop("destination", fields["to"])
    req = request(fields.pop("chain_id"), fields.pop("asset"), fields.pop("amount"), **fields)

    async def go() -> None:
        async with world.engine() as engine:
            with pytest.raises(PayoutError) as caught:
                await engine.pay(req)
            assert caught.value.code is code and says in str(caught.value)
            with pytest.raises(PayoutError):
                engine.payout(req.payout_id)

    run(go())


@pytest.mark.parametrize("which", ["USDT", "DAI", "sender", "deposit"])
def test_a_payout_to_a_token_contract_or_to_ourselves_is_refused(world: World, which: str) -> None:
    async def go() -> None:
        async with world.engine() as engine:
            if which == "sender":
                to = world.sender
            elif which == "deposit":  # one of our own customers' deposit addresses
                to, _path = deposit_address(engine)
            else:
                to = world.chains.token(CHAIN_A, which)
            req = request(CHAIN_A, "USDT", "1", to)
            with pytest.raises(PayoutError) as caught:
                await engine.pay(req)
            assert caught.value.code is ErrorCode.ADDRESS_REFUSED
            own = which in ("sender", "deposit")
            assert caught.value.check == ("own_address" if own else "token_contract")
            with pytest.raises(PayoutError):
                engine.payout(req.payout_id)  # nothing stored

    run(go())


def test_a_reorg_that_drops_a_mined_payout_sends_the_same_bytes_again(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    registry = registry_for(world.chains, **{str(CHAIN_A): {"confirmations": 3}})
    before = local.balance(SECOND)
    snapshot = local.request("evm_snapshot")

    async def go() -> tuple[PayoutRow, PayoutRow, PayoutRow]:
        async with world.engine(registry) as engine:
            req = request(CHAIN_A, "ETH", "0.75", SECOND)
            await engine.pay(req)
            mined = await engine.track(req.payout_id)
            assert mined.state == PayoutState.MINED, mined.state  # 1 of 3 confirmations
            assert local.request("evm_revert", snapshot) is True  # the block is gone
            assert local.balance(SECOND) == before
            resent = await engine.track(req.payout_id)
            assert resent.state == PayoutState.SENT  # the tracker saw it vanish, sent again
            local.request("hardhat_mine", "0x3")
            done = await engine.wait(req.payout_id)
            return mined, resent, done

    mined, resent, done = run(go())
    assert done.state == PayoutState.CONFIRMED
    assert done.tx_hash == mined.tx_hash == resent.tx_hash  # the same signed bytes
    assert local.balance(SECOND) - before == ETHER * 3 // 4  # credited once


def test_a_reverted_token_payout_fails_with_its_reason(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "USDT")
    from coordinator.evm_chain import set_blocked

    async def go() -> PayoutRow:
        async with world.engine() as engine:
            local.request("evm_setAutomine", False)
            try:
                req = request(CHAIN_A, "USDT", "4", SECOND)
                sent = await engine.pay(req)  # estimated while SECOND may still receive
                assert sent.state == PayoutState.SENT
                # the issuer blocks SECOND in the same block, ahead of the payout (higher tip)
                local.submit_from_faucet(token, set_blocked(SECOND), priority_fee=50 * 10**9)
                local.request("evm_mine")
            finally:
                local.request("evm_setAutomine", True)
            return await engine.wait(req.payout_id)

    try:
        row = run(go())
    finally:
        local.call_from_faucet(token, set_blocked(SECOND, False))
    assert row.state == PayoutState.FAILED and row.block_number is not None
    assert row.reason == "reverted: Token: address blocked"


@pytest.mark.parametrize(
    ("failpoint", "state"),
    [
        ("payout.after_reserve", PayoutState.RESERVED),
        ("payout.after_sign", PayoutState.SIGNED),
        ("payout.after_send", PayoutState.SIGNED),  # sent, but the send not yet recorded
    ],
)
def test_kill_9_at_each_step_ends_in_exactly_one_mined_transaction(
    world: World, tmp_path: Path, failpoint: str, state: PayoutState
) -> None:
    """The coordinator process is SIGKILLed right after a step was stored (a failpoint:
    signer/node/faults.py); a new process on the same database finishes the payout."""
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "DAI")
    start = local.nonce(world.sender)
    before = local.token_balance(token, SECOND)
    payout_id = new_request_id("kill")
    batch = tmp_path / "payout.csv"
    batch.write_text(
        f"payout_id,chain_id,asset,destination,amount\n{payout_id},{CHAIN_A},DAI,{SECOND},0.5\n"
    )
    args = [
        sys.executable, "-m", "coordinator", "chain", "pay-batch", str(batch),
        "--wallet", "hot", "--initiator", INITIATOR,
        "--registry", str(registry_file(world, tmp_path / "chains.toml")),
        "--dir", str(world.cluster.root), "--wait", "30", "--json",
    ]  # fmt: skip
    env = {**os.environ, "TESSERA_FAILPOINTS": failpoint}
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    async def stored() -> PayoutRow:
        async with world.engine() as engine:
            return engine.payout(payout_id)

    assert run(stored()).state == state
    env.pop("TESSERA_FAILPOINTS")
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    (row,) = json.loads(again.stdout)["payouts"]
    assert row["state"] == "confirmed" and row["nonce"] == start
    assert local.nonce(world.sender) == start + 1  # one transaction at one nonce
    assert local.token_balance(token, SECOND) - before == 5 * 10**17  # paid once


def test_a_nonce_used_outside_tessera_is_detected_on_restart(world: World) -> None:
    local = world.chains.local[CHAIN_B]

    async def outside() -> int:
        # the same key signs a transfer that never went through the payout engine
        async with world.engine() as engine:
            await pay_and_confirm(engine, request(CHAIN_B, "ETH", "0.01"))  # the account exists
            nonce = local.nonce(world.sender)
            priority, max_fee = local.suggest_fees()
            tx = Eip1559Transfer(
                chain_id=CHAIN_B,
                nonce=nonce,
                max_priority_fee_per_gas=priority,
                max_fee_per_gas=max_fee,
                gas=21_000,
                to=RECIPIENT,
                value=10**15,
            )
            outcome = await engine.coordinator.sign_transaction(
                "hot",
                tx.signing_payload(),
                request_id=new_request_id("manual"),
                initiator=INITIATOR,
            )
            local.send_raw(tx.attach(outcome.signature))
            return nonce

    async def restart(req: PayoutRequest) -> PayoutRow:
        async with world.engine() as engine:
            with pytest.raises(PayoutError) as caught:
                await engine.pay(req)
            assert caught.value.code is ErrorCode.NONCE_CONFLICT
            assert "1 transaction(s) sent outside Tessera" in str(caught.value)
            assert engine.payout(req.payout_id).state == PayoutState.ACCEPTED
            # the counter moved past the outside nonce: the payout goes on without a collision
            return await pay_and_confirm(engine, req)

    used = run(outside())
    row = run(restart(request(CHAIN_B, "ETH", "0.01")))
    assert row.state == PayoutState.CONFIRMED and row.nonce == used + 1


def test_a_legacy_fee_chain_pays_with_a_legacy_transaction(world: World) -> None:
    """A chain the registry marks legacy (BSC-style): an EIP-155 gas-price transaction, which
    the nodes decode and sign as well."""
    registry = registry_for(world.chains, **{str(CHAIN_B): {"fee_model": "legacy"}})
    local = world.chains.local[CHAIN_B]
    token = world.chains.token(CHAIN_B, "USDT")
    before = local.token_balance(token, RECIPIENT)

    async def go() -> PayoutRow:
        async with world.engine(registry) as engine:
            return await pay_and_confirm(engine, request(CHAIN_B, "USDT", "7.000001"))

    row = run(go())
    assert row.state == PayoutState.CONFIRMED and row.raw is not None
    assert row.raw[0] >= 0xC0  # an RLP list: a legacy transaction, not a typed envelope
    assert chain_id_of(row.raw) == CHAIN_B and recover_sender(row.raw) == world.sender
    assert local.token_balance(token, RECIPIENT) - before == 7_000_001


BATCH = 200


@pytest.mark.slow  # 200 threshold signatures (and their presignatures in the module's pool)
def test_a_batch_of_200_payouts_gets_consecutive_nonces_in_its_order(world: World) -> None:
    from coordinator.batches import pay_batch

    local = world.chains.local[CHAIN_A]
    start = local.nonce(world.sender)
    assets = [("ETH", "0.001", 10**15), ("USDT", "0.25", 250_000), ("DAI", "0.5", 5 * 10**17)]
    holders = {s: world.chains.token(CHAIN_A, s) for s in ("USDT", "DAI")}

    def balances() -> dict[str, int]:
        out = {"ETH": local.balance(RECIPIENT)}
        out.update({s: local.token_balance(t, RECIPIENT) for s, t in holders.items()})
        return out

    before = balances()
    requests = []
    for n in range(BATCH):
        asset, amount, _units = assets[n % 3]
        to = STRANGER if n == 100 else RECIPIENT  # off the whitelist: the nodes refuse it
        requests.append(request(CHAIN_A, asset, amount, to, payout_id=f"batch-{n}-{start}"))
    progress: list[int] = []

    async def go() -> list[PayoutRow]:
        async with world.engine() as engine:
            sent = await pay_batch(engine, requests, lambda done, total: progress.append(done))
            return [await engine.wait(r.payout_id) for r in sent]

    rows = run(go())
    assert progress == list(range(1, BATCH + 1))
    refused = rows.pop(100)
    assert refused.state == PayoutState.FAILED and refused.nonce is None
    assert refused.reason is not None and refused.reason.startswith("POLICY_DENIED")
    assert all(r.state == PayoutState.CONFIRMED for r in rows)
    assert [r.nonce for r in rows] == list(range(start, start + BATCH - 1))  # in batch order
    after = balances()
    paid = [n for n in range(BATCH) if n != 100]
    for index, (asset, _amount, units) in enumerate(assets):
        count = sum(1 for n in paid if n % 3 == index)
        assert after[asset] - before[asset] == count * units


def test_a_batch_with_one_bad_row_is_refused_whole(world: World) -> None:
    from coordinator.batches import BatchRefused, pay_batch

    good = [request(CHAIN_A, "ETH", "0.01") for _ in range(3)]
    bad = request(CHAIN_A, "ETH", "0.01", "0x" + RECIPIENT[2:].swapcase())
    twin = request(CHAIN_A, "ETH", "0.02", payout_id=good[0].payout_id)

    async def go() -> None:
        async with world.engine() as engine:
            with pytest.raises(BatchRefused) as caught:
                await pay_batch(engine, [*good, bad, twin])
            problems = caught.value.problems
            assert problems[0].startswith("row 4: ADDRESS_REFUSED: the EIP-55 checksum fails")
            assert problems[1] == "row 5: the payout id of row 1 again"
            for r in good:
                with pytest.raises(PayoutError):
                    engine.payout(r.payout_id)  # nothing stored

    run(go())


def test_the_operator_pays_a_batch_file_and_gives_deposit_addresses(
    world: World, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from coordinator.console import app

    registry = registry_file(world, tmp_path / "chains.toml")
    tag = new_request_id("cli")
    batch = tmp_path / "payouts.csv"
    batch.write_text(
        "payout_id,chain_id,asset,destination,amount\n"
        f"{tag}-1,{CHAIN_A},USDT,{RECIPIENT},3.5\n"
        f"{tag}-2,{CHAIN_B},ETH,{SECOND},0.02\n"
    )
    args = [
        "chain", "pay-batch", str(batch), "--wallet", "hot", "--initiator", INITIATOR,
        "--registry", str(registry), "--dir", str(world.cluster.root), "--wait", "30", "--json",
    ]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert [p["state"] for p in doc["payouts"]] == ["confirmed", "confirmed"]
    again = runner.invoke(app, args)  # the same file again: nothing paid twice
    assert again.exit_code == 0 and json.loads(again.stdout)["payouts"] == doc["payouts"]

    batch.write_text(
        f"payout_id,chain_id,asset,destination,amount\n{tag}-3,{CHAIN_A},ETH,{STRANGER},1\n"
    )
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["payouts"][0]["reason"].startswith("POLICY_DENIED")

    customers = tmp_path / "customers.txt"
    customers.write_text("alice\nbob\n\nalice-2\n")
    dep = ["chain", "deposit-addresses", "--wallet", "hot", "--customers", str(customers)]
    out = runner.invoke(app, [*dep, "--dir", str(world.cluster.root), "--json"])
    assert out.exit_code == 0, out.output
    addresses = json.loads(out.stdout)["addresses"]
    assert [a["customer_ref"] for a in addresses] == ["alice", "bob", "alice-2"]
    assert len({a["address"] for a in addresses}) == 3
    customers.write_text("not valid\n")
    bad = runner.invoke(app, [*dep, "--dir", str(world.cluster.root), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["error"]["code"] == "VALIDATION"


class Crash(BaseException):
    """The process dying at this point: nothing after it runs (not an Exception, so no handler
    in the engine can catch it)."""


class CrashAfterReserving(PayoutEngine):
    async def _sign(self, row: PayoutRow, approvals: Any, signed: Any = None) -> PayoutRow:
        raise Crash


def test_a_large_payout_is_signed_with_its_approvals_also_after_a_crash(world: World) -> None:
    """Approvals given after the payout was submitted are stored with it, and a payout resumed
    after a crash is signed with them again."""
    from datetime import UTC, datetime

    from policy_world import approve

    from policies.intent import TransactionIntent

    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "USDT")
    before = local.token_balance(token, SECOND)
    req = request(CHAIN_A, "USDT", "1500", SECOND)
    claim = TransactionIntent.model_validate(
        {
            "request_id": req.payout_id,
            "wallet": "hot",
            "chain_id": CHAIN_A,
            "asset": "USDT",
            "destination": SECOND,
            "amount": "1500",
            "initiator": INITIATOR,
        }
    )
    officers = [world.officers["alice"], world.officers["bob"]]
    approvals = approve(officers, claim, world.policy, now=datetime.now(UTC))

    async def without() -> PayoutRow:
        async with world.engine() as engine:
            return await engine.pay(req)  # no approvals yet: the nodes refuse

    refused = run(without())
    assert refused.state == PayoutState.FAILED and refused.reason is not None
    assert refused.reason.startswith("POLICY_DENIED")

    second = request(CHAIN_A, "USDT", "1500", SECOND)
    claim = claim.model_copy(update={"request_id": second.payout_id})
    approvals = approve(officers, claim, world.policy, now=datetime.now(UTC))

    async def crash() -> None:
        async with world.engine(cls=CrashAfterReserving) as engine:
            await engine.submit(second)
            await engine.submit(
                PayoutRequest(**{**second.__dict__, "approvals": tuple(approvals)})
            )  # the officers' approvals arrive
            with pytest.raises(Crash):
                await engine.drive(second.payout_id)

    async def restart() -> PayoutRow:
        async with world.engine() as engine:
            await engine.resume()
            return await engine.wait(second.payout_id)

    run(crash())
    row = run(restart())
    assert row.state == PayoutState.CONFIRMED, row.reason
    assert local.token_balance(token, SECOND) - before == 1500 * 10**6


def test_a_stuck_payout_is_sped_up_at_its_nonce_and_paid_once(world: World) -> None:
    """Replace by fee: the same transaction at the same nonce with higher fees, decided again by
    every node and signed only as a fee replacement; the chain takes one of the two."""
    local = world.chains.local[CHAIN_A]
    before = local.balance(SECOND)
    start = local.nonce(world.sender)

    async def go() -> tuple[PayoutRow, PayoutRow, PayoutRow]:
        async with world.engine() as engine:
            local.request("evm_setAutomine", False)
            try:
                sent = await engine.pay(request(CHAIN_A, "ETH", "0.3", SECOND))
                faster = await engine.speed_up(sent.payout_id)
                local.request("evm_mine")
            finally:
                local.request("evm_setAutomine", True)
            done = await engine.wait(sent.payout_id)
            with pytest.raises(PayoutError) as caught:
                await engine.speed_up(sent.payout_id)  # confirmed: nothing to speed up
            assert caught.value.code is ErrorCode.VALIDATION
            return sent, faster, done

    sent, faster, done = run(go())
    assert faster.state == PayoutState.SENT and faster.tx_hash != sent.tx_hash
    assert faster.nonce == sent.nonce == start
    assert json.loads(faster.replaced)[0]["tx_hash"] == sent.tx_hash
    old = decode_signing_payload(sent.payload or b"")
    new = decode_signing_payload(faster.payload or b"")
    assert isinstance(old, Eip1559Transfer) and isinstance(new, Eip1559Transfer)
    assert new.max_fee_per_gas * 8 >= old.max_fee_per_gas * 9  # at least +12.5 %
    assert done.state == PayoutState.CONFIRMED and done.tx_hash == faster.tx_hash
    assert local.nonce(world.sender) == start + 1
    assert local.balance(SECOND) - before == 3 * 10**17  # paid once


def test_the_nodes_sign_no_second_transaction_for_a_request_but_a_fee_replacement(
    world: World,
) -> None:
    from coordinator.client import NodeRefused
    from coordinator.errors import SigningFailed

    async def go() -> None:
        async with world.engine() as engine:
            row = await pay_and_confirm(engine, request(CHAIN_A, "ETH", "0.01", SECOND))
            old = decode_signing_payload(row.payload or b"")
            assert isinstance(old, Eip1559Transfer)
            bumped = {"max_fee_per_gas": old.max_fee_per_gas * 2}
            for change, says in (
                ({"to": RECIPIENT, **bumped}, "changes only the fees; this one changes to"),
                ({"value": old.value * 2, **bumped}, "changes value"),
                ({"max_fee_per_gas": old.max_fee_per_gas * 11}, "at most 10 times"),
            ):
                with pytest.raises(SigningFailed) as caught:
                    await engine.coordinator.sign_transaction(
                        "hot",
                        replace(old, **change).signing_payload(),
                        request_id=row.payout_id,
                        initiator=INITIATOR,
                    )
                assert caught.value.code is ErrorCode.REQUEST_REUSED
                refusal = caught.value.refusal
                assert isinstance(refusal, NodeRefused) and says in refusal.problem.detail

    run(go())


def test_a_sent_payout_cancelled_on_chain_pays_nothing(world: World) -> None:
    """A 0-value self-send at the payout's nonce, signed by the nodes only as the cancellation of
    what they signed for it, takes the payout's place in the pool: nothing is paid."""
    from coordinator.errors import SigningFailed
    from signer.chains.replacement import is_cancellation

    local = world.chains.local[CHAIN_A]
    before = local.balance(SECOND)
    start = local.nonce(world.sender)

    async def go() -> tuple[PayoutRow, PayoutRow, PayoutRow]:
        async with world.engine() as engine:
            local.request("evm_setAutomine", False)
            try:
                sent = await engine.pay(request(CHAIN_A, "ETH", "0.2", SECOND))
                cancelling = await engine.cancel(sent.payout_id)
                local.request("evm_mine")
            finally:
                local.request("evm_setAutomine", True)
            done = await engine.wait(sent.payout_id)
            for again in (engine.cancel, engine.speed_up):
                with pytest.raises(PayoutError) as caught:
                    await again(sent.payout_id)  # cancelled: terminal
                assert caught.value.code is ErrorCode.VALIDATION
            # the nodes will not sign the payout again after its cancellation (no revival)
            old = decode_signing_payload(sent.payload or b"")
            assert isinstance(old, Eip1559Transfer)
            revived = replace(old, max_fee_per_gas=old.max_fee_per_gas * 3)
            with pytest.raises(SigningFailed) as refused:
                await engine.coordinator.sign_transaction(
                    "hot",
                    revived.signing_payload(),
                    request_id=sent.payout_id,
                    initiator=INITIATOR,
                )
            assert refused.value.code is ErrorCode.REQUEST_REUSED
            return sent, cancelling, done

    sent, cancelling, done = run(go())
    tx = decode_signing_payload(cancelling.payload or b"")
    assert is_cancellation(tx, world.sender) and tx.nonce == sent.nonce == start
    assert cancelling.state == PayoutState.SENT and cancelling.tx_hash != sent.tx_hash
    assert done.state == PayoutState.CANCELLED and done.tx_hash == cancelling.tx_hash
    assert done.reason is not None and "cancelled on chain" in done.reason
    assert local.nonce(world.sender) == start + 1
    assert local.balance(SECOND) == before  # paid nothing


def test_a_cancellation_that_comes_too_late_leaves_the_payout_confirmed(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    before = local.balance(SECOND)

    async def go() -> tuple[PayoutRow, PayoutRow]:
        async with world.engine() as engine:
            sent = await engine.pay(request(CHAIN_A, "ETH", "0.07", SECOND))  # mined at once
            late = await engine.cancel(sent.payout_id)  # the chain says: nonce too low
            return late, await engine.wait(sent.payout_id)

    late, done = run(go())
    assert late.state == PayoutState.SENT
    assert done.state == PayoutState.CONFIRMED and done.reason is None
    assert json.loads(done.replaced)[0]["tx_hash"] == late.tx_hash  # the cancellation, unmined
    assert local.balance(SECOND) - before == 7 * 10**16


def test_a_nonce_whose_transaction_the_chain_refuses_is_filled_by_a_cancellation(
    world: World,
) -> None:
    """A signed payout the chain refuses (its sender cannot cover it) holds up the next nonce;
    its cancellation is mined at that nonce and the next payout goes through."""
    local = world.chains.local[CHAIN_A]
    start = local.nonce(world.sender)
    funds = local.balance(world.sender)
    before = local.balance(SECOND)

    class SignOnly(PayoutEngine):
        async def _send(self, row: PayoutRow) -> PayoutRow:
            return row  # signed and stored, not sent

    async def sign_only() -> PayoutRow:
        async with world.engine(cls=SignOnly) as engine:
            return await engine.pay(request(CHAIN_A, "ETH", "5", SECOND))

    async def go(stuck: PayoutRow) -> tuple[PayoutRow, PayoutRow, PayoutRow]:
        async with world.engine() as engine:
            with pytest.raises(PayoutError) as refused:
                await engine.drive(stuck.payout_id)  # 5 ETH, the sender holds 1
            assert refused.value.code is ErrorCode.CHAIN_REJECTED
            assert engine.payout(stuck.payout_id).state == PayoutState.SIGNED
            local.request("evm_setAutomine", False)  # (Hardhat queues nothing when automining)
            try:
                after = await engine.pay(request(CHAIN_A, "ETH", "0.01", SECOND))
                assert after.state == PayoutState.SENT and after.nonce == start + 1
                local.request("evm_mine")
                assert (await engine.track(after.payout_id)).state == PayoutState.SENT  # held up
                await engine.cancel(stuck.payout_id)
                local.request("evm_mine")
            finally:
                local.request("evm_setAutomine", True)
            return (
                await engine.wait(stuck.payout_id),
                await engine.wait(after.payout_id),
                engine.payout(stuck.payout_id),
            )

    stuck = run(sign_only())
    assert stuck.state == PayoutState.SIGNED and stuck.nonce == start
    local.request("hardhat_setBalance", world.sender, hex(10**18))
    try:
        cancelled, after, _ = run(go(stuck))
    finally:
        local.request("hardhat_setBalance", world.sender, hex(funds))
    assert cancelled.state == PayoutState.CANCELLED and cancelled.nonce == start
    assert after.state == PayoutState.CONFIRMED
    assert local.nonce(world.sender) == start + 2  # no gap, nothing doubled
    assert local.balance(SECOND) - before == 10**16  # only the second payout paid


def test_the_nodes_sign_a_cancellation_only_of_what_they_signed(world: World) -> None:
    from coordinator.client import NodeRefused
    from coordinator.errors import SigningFailed, SignRequestInvalid

    async def go() -> None:
        async with world.engine() as engine:
            row = await pay_and_confirm(engine, request(CHAIN_A, "ETH", "0.01", SECOND))
            old = decode_signing_payload(row.payload or b"")
            assert isinstance(old, Eip1559Transfer)
            cancel = replace(
                old, to=world.sender, value=0, data=b"", max_fee_per_gas=old.max_fee_per_gas * 2
            )
            for request_id, change, path, says in (
                (new_request_id("never"), {}, (), "signed nothing for it"),
                (row.payout_id, {"nonce": old.nonce + 1}, (), "keeps the chain and nonce"),
                (row.payout_id, {"max_fee_per_gas": old.max_fee_per_gas * 11}, (), "at most 10"),
                (row.payout_id, {"gas": old.gas + 1}, (), "gas may not exceed"),
            ):
                with pytest.raises(SigningFailed) as caught:
                    await engine.coordinator.sign_cancellation(
                        "hot",
                        replace(cancel, **change).signing_payload(),
                        request_id=request_id,
                        path=path,
                    )
                assert caught.value.code is ErrorCode.CANCEL_REFUSED, says
                refusal = caught.value.refusal
                assert isinstance(refusal, NodeRefused) and says in refusal.problem.detail
            # a payment is no cancellation: refused before any node is asked
            with pytest.raises(SignRequestInvalid) as invalid:
                await engine.coordinator.sign_cancellation(
                    "hot", replace(cancel, value=1).signing_payload(), request_id=row.payout_id
                )
            assert invalid.value.code is ErrorCode.CANCEL_REFUSED
            # the same transaction "replaced" from another of the wallet's addresses would be a
            # second payout: the nodes refuse it
            with pytest.raises(SigningFailed) as other:
                await engine.coordinator.sign_transaction(
                    "hot",
                    replace(old, max_fee_per_gas=old.max_fee_per_gas * 2).signing_payload(),
                    request_id=row.payout_id,
                    initiator=INITIATOR,
                    path=(1, 7),
                )
            assert other.value.code is ErrorCode.REQUEST_REUSED
            refusal = other.value.refusal
            assert isinstance(refusal, NodeRefused)
            assert "from the address the request was signed from" in refusal.problem.detail

    run(go())


# --- a batch in one transaction (the disperse contract) ----------------------------------------


def batch(world: World, legs: Sequence[tuple[str, str]], chain_id: int = CHAIN_A, **kw: Any) -> Any:
    chain = registry_for(world.chains).chain(chain_id)
    return batch_request(
        chain,
        kw.pop("payout_id", new_request_id("bt")),
        "hot",
        kw.pop("asset", "ETH"),
        legs,
        INITIATOR,
    )


def test_a_batch_in_one_transaction_pays_every_leg_exactly(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    legs = [(RECIPIENT, "0.25"), (SECOND, "0.5"), (RECIPIENT, "0.000000000000000003")]
    before = {a: local.balance(a) for a in (RECIPIENT, SECOND, world.sender)}
    req = batch(world, legs)
    assert req.amount == "0.750000000000000003"
    assert req.destination == world.chains.disperse[CHAIN_A]

    async def go() -> PayoutRow:
        async with world.engine() as engine:
            return await pay_and_confirm(engine, req)

    row = run(go())
    assert row.state == PayoutState.CONFIRMED, row.reason
    assert row.raw is not None and recover_sender(row.raw) == world.sender
    sent = decode_signing_payload(_stored_payload(row))
    assert sent.to == world.chains.disperse[CHAIN_A]
    assert sent.value == units("0.750000000000000003", 18)
    receipt = local.receipt(bytes.fromhex(row.tx_hash[2:]))
    assert receipt.success
    assert local.balance(RECIPIENT) - before[RECIPIENT] == units("0.250000000000000003", 18)
    assert local.balance(SECOND) - before[SECOND] == units("0.5", 18)
    spent = units("0.750000000000000003", 18) + receipt.fee
    assert before[world.sender] - local.balance(world.sender) == spent


def _stored_payload(row: PayoutRow) -> bytes:
    assert row.payload is not None
    return row.payload


def test_a_batch_with_one_leg_to_a_blacklisted_address_is_refused_whole(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    start = local.nonce(world.sender)
    before = local.balance(RECIPIENT)

    async def go() -> tuple[PayoutRow, PayoutRow]:
        async with world.engine() as engine:
            refused = await engine.pay(batch(world, [(RECIPIENT, "0.1"), (BLOCKED, "0.1")]))
            paid = await pay_and_confirm(engine, request(CHAIN_A, "ETH", "0.01"))
            return refused, paid

    refused, paid = run(go())
    # every node decoded the legs itself and its policy blocked the batch for the one leg
    assert refused.state == PayoutState.FAILED and refused.raw is None
    assert refused.reason is not None and refused.reason.startswith("POLICY_DENIED")
    assert "leg 1" in refused.reason and "blacklisted" in refused.reason
    assert local.balance(RECIPIENT) - before == units("0.01", 18)  # nothing of the batch
    assert paid.nonce == start  # the batch gave its nonce back


def test_a_batch_is_refused_before_anything_is_stored_when_it_cannot_be_paid(
    world: World,
) -> None:
    async def go() -> list[PayoutError]:
        errors = []
        async with world.engine() as engine:
            for req in (
                batch(world, [(RECIPIENT, "0.1"), (RECIPIENT.lower()[:-1] + "G", "0.1")]),
                batch(world, [(RECIPIENT, "0.1"), (SECOND, "-1")]),
                batch(world, [(RECIPIENT, "1")], asset="WBTC"),
                batch(world, [(RECIPIENT, "1")], payout_id="mine:allowance:1"),
                batch(world, []),
                replace(batch(world, [(RECIPIENT, "0.1")]), amount="0.2"),
                replace(batch(world, [(RECIPIENT, "0.1")]), destination=SECOND),
                batch(world, [(RECIPIENT, "0.1"), (world.sender, "0.1")]),
            ):
                with pytest.raises(PayoutError) as caught:
                    await engine.submit(req)
                errors.append(caught.value)
                with pytest.raises(PayoutError):
                    engine.payout(req.payout_id)
        return errors

    bad_address, bad_amount, token, taken, empty, total, contract, own = run(go())
    assert bad_address.detail.startswith("leg 1:")
    assert bad_amount.code is ErrorCode.VALIDATION and "leg 1" in bad_amount.detail
    assert token.code is ErrorCode.UNKNOWN_CHAIN and "WBTC" in token.detail
    assert taken.code is ErrorCode.VALIDATION and "allowance" in taken.detail
    assert empty.code is ErrorCode.VALIDATION and "1 to 1000 legs" in empty.detail
    assert total.code is ErrorCode.VALIDATION and "sum of its legs" in total.detail
    assert contract.code is ErrorCode.VALIDATION and "disperse contract" in contract.detail
    assert own.check == "own_address" and own.detail.startswith("leg 1:")


# --- a token batch in one transaction: the allowance it spends ---------------------------------


def allowance_of(world: World, symbol: str) -> int:
    """The sender's allowance to the disperse contract, read with a plain eth_call."""
    local = world.chains.local[CHAIN_A]
    selector = keccak(text="allowance(address,address)")[:4]
    words = [bytes.fromhex(a[2:]).rjust(32, b"\0") for a in (world.sender, disperse_of(world))]
    out = local.request(
        "eth_call",
        {
            "to": world.chains.token(CHAIN_A, symbol),
            "data": "0x" + (selector + b"".join(words)).hex(),
        },
        "latest",
    )
    return int(out, 16)


def disperse_of(world: World) -> str:
    return world.chains.disperse[CHAIN_A]


def approves_for(engine: PayoutEngine, batch_id: str) -> list[tuple[int, PayoutRow]]:
    """The approves the engine made for a batch: (amount in base units, row), checked against
    what was signed and mined."""
    out = []
    for row in engine.payouts():
        if row.kind == PayoutKind.ALLOWANCE and row.for_payout == batch_id:
            sent = decode_signing_payload(_stored_payload(row))
            assert sent.data[:4] == keccak(text="approve(address,uint256)")[:4]
            assert sent.value == 0 and sent.data[16:36] == bytes.fromhex(row.destination[2:])
            out.append((int.from_bytes(sent.data[36:68], "big"), row))
    return sorted(out, key=lambda pair: pair[1].created_at)


def test_a_token_batch_approves_its_exact_total_and_pays_every_leg(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "DAI")
    legs = [(RECIPIENT, "1.5"), (SECOND, "0.000000000000000007"), (RECIPIENT, "2")]
    holders = (RECIPIENT, SECOND, world.sender)
    before = {a: local.token_balance(token, a) for a in holders}
    start = local.nonce(world.sender)
    assert allowance_of(world, "DAI") == 0
    req = batch(world, legs, asset="DAI")

    async def go() -> tuple[PayoutRow, list[tuple[int, PayoutRow]]]:
        async with world.engine() as engine:
            row = await pay_and_confirm(engine, req)
            return row, approves_for(engine, req.payout_id)

    row, approves = run(go())
    assert row.state == PayoutState.CONFIRMED, row.reason
    total = units("3.500000000000000007", 18)
    # one approve of the exact total, at the nonce before the batch's, mined first
    assert [amount for amount, _ in approves] == [total]
    approve = approves[0][1]
    assert approve.state == PayoutState.CONFIRMED and approve.nonce == start
    assert approve.raw is not None and recover_sender(approve.raw) == world.sender
    assert row.nonce == start + 1 and row.raw is not None
    assert recover_sender(row.raw) == world.sender
    sent = decode_signing_payload(_stored_payload(row))
    assert sent.to == disperse_of(world) and sent.value == 0
    assert local.token_balance(token, RECIPIENT) - before[RECIPIENT] == units("3.5", 18)
    assert local.token_balance(token, SECOND) - before[SECOND] == 7
    assert before[world.sender] - local.token_balance(token, world.sender) == total
    assert allowance_of(world, "DAI") == 0  # the batch spent exactly what was approved


def test_a_token_batch_refused_whole_leaves_its_allowance_for_the_next(world: World) -> None:
    """A blacklisted leg refuses the batch on every node after its approve was mined; the
    allowance left is spent by a smaller batch without a new approve, and a larger one resets
    it to zero (as USDT requires) before approving its own total."""
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "USDT")
    before = {a: local.token_balance(token, a) for a in (RECIPIENT, SECOND, BLOCKED)}
    refused_req = batch(world, [(RECIPIENT, "10"), (BLOCKED, "0.5")], asset="USDT")
    smaller_req = batch(world, [(SECOND, "4.25")], asset="USDT")
    larger_req = batch(world, [(RECIPIENT, "20"), (SECOND, "0.000001")], asset="USDT")

    async def go() -> dict[str, Any]:
        async with world.engine() as engine:
            refused = await engine.pay(refused_req)
            left = allowance_of(world, "USDT")
            smaller = await pay_and_confirm(engine, smaller_req)
            left_after = allowance_of(world, "USDT")
            larger = await pay_and_confirm(engine, larger_req)
            return {
                "refused": refused,
                "left": left,
                "smaller": smaller,
                "left_after": left_after,
                "larger": larger,
                "approves": {
                    r.payout_id: approves_for(engine, r.payout_id)
                    for r in (refused_req, smaller_req, larger_req)
                },
            }

    got = run(go())
    refused = got["refused"]
    assert refused.state == PayoutState.FAILED and refused.raw is None
    assert refused.reason is not None and refused.reason.startswith("POLICY_DENIED")
    assert "leg 1" in refused.reason and "blacklisted" in refused.reason
    assert [a for a, _ in got["approves"][refused_req.payout_id]] == [units("10.5", 6)]
    assert got["left"] == units("10.5", 6)
    # the smaller batch spends what was left: no approve of its own
    assert got["smaller"].state == PayoutState.CONFIRMED, got["smaller"].reason
    assert got["approves"][smaller_req.payout_id] == []
    assert got["left_after"] == units("10.5", 6) - units("4.25", 6)
    # the larger one: a reset to zero, then its exact total, at consecutive nonces
    larger = got["larger"]
    assert larger.state == PayoutState.CONFIRMED, larger.reason
    approves = got["approves"][larger_req.payout_id]
    assert [a for a, _ in approves] == [0, units("20.000001", 6)]
    assert [r.nonce for _, r in approves] == [
        _stored(larger.nonce) - 2,
        _stored(larger.nonce) - 1,
    ]
    assert allowance_of(world, "USDT") == 0
    assert local.token_balance(token, RECIPIENT) - before[RECIPIENT] == units("20", 6)
    assert local.token_balance(token, SECOND) - before[SECOND] == units("4.250001", 6)
    assert local.token_balance(token, BLOCKED) == before[BLOCKED]  # nothing of the refused one


def _stored(value: int | None) -> int:
    assert value is not None
    return value


def test_the_nodes_sign_an_allowance_only_to_the_disperse_contract(world: World) -> None:
    """attacks.md T21p: an approve to any other spender is refused by every node itself, even
    when the coordinator skips its own check (asked here straight over HTTP)."""
    from coordinator.client import NodeRefused
    from signer.chains.allowance import encode_approve
    from signer.node.api import AllowanceRequest

    token = world.chains.token(CHAIN_A, "USDT")
    approve = Eip1559Transfer(
        chain_id=CHAIN_A,
        nonce=0,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=10**10,
        gas=60_000,
        to=token,
        value=0,
        data=encode_approve(STRANGER, 2**256 - 1),
    )

    async def go() -> list[NodeRefused]:
        refusals = []
        coordinator = world.cluster.coordinator()
        try:
            wallet = coordinator.store.wallet("hot")
            for client in coordinator.clients.values():
                with pytest.raises(NodeRefused) as caught:
                    await client.sign_allowance(
                        AllowanceRequest(
                            key_id=wallet.key_id,
                            transaction=approve.signing_payload().hex(),
                            request_id=new_request_id("al"),
                            presignature_id="00" * 32,
                            sender=world.sender,
                        )
                    )
                refusals.append(caught.value)
        finally:
            await coordinator.aclose()
        return refusals

    refusals = run(go())
    assert len(refusals) == len(world.cluster.nodes) and refusals
    for refusal in refusals:
        assert refusal.problem.code is ErrorCode.ALLOWANCE_REFUSED
        assert refusal.problem.check == "spender"
        assert STRANGER in refusal.problem.detail


def test_the_operator_pays_a_file_in_one_transaction_per_chain_and_asset(
    world: World, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from coordinator.console import app

    local = world.chains.local[CHAIN_A]
    usdt = world.chains.token(CHAIN_A, "USDT")
    registry = registry_file(world, tmp_path / "chains.toml")
    tag = new_request_id("one")
    batch = tmp_path / "payouts.csv"
    batch.write_text(
        "payout_id,chain_id,asset,destination,amount\n"
        f"{tag}-1,{CHAIN_A},USDT,{RECIPIENT},3.5\n"
        f"{tag}-2,{CHAIN_A},ETH,{SECOND},0.02\n"
        f"{tag}-3,{CHAIN_A},USDT,{SECOND},0.000007\n"
    )
    before = {a: local.token_balance(usdt, a) for a in (RECIPIENT, SECOND)}
    eth_before = local.balance(SECOND)
    args = [
        "chain", "pay-batch", str(batch), "--wallet", "hot", "--initiator", INITIATOR,
        "--registry", str(registry), "--dir", str(world.cluster.root), "--wait", "30",
        "--one-transaction", "--json",
    ]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    # one transaction for the USDT rows, one for the ETH row, in the order of their first rows
    assert [(p["state"], p["legs"]) for p in doc["payouts"]] == [("confirmed", 2), ("confirmed", 1)]
    assert local.token_balance(usdt, RECIPIENT) - before[RECIPIENT] == units("3.5", 6)
    assert local.token_balance(usdt, SECOND) - before[SECOND] == 7
    assert local.balance(SECOND) - eth_before == units("0.02", 18)
    again = runner.invoke(app, args)  # the same file again: nothing paid twice
    assert again.exit_code == 0 and json.loads(again.stdout)["payouts"] == doc["payouts"]
    assert local.token_balance(usdt, RECIPIENT) - before[RECIPIENT] == units("3.5", 6)

    # a wrong row is named by its number in the file; nothing is stored or paid
    batch.write_text(
        "payout_id,chain_id,asset,destination,amount\n"
        f"{tag}-4,{CHAIN_A},USDT,{RECIPIENT},1\n"
        f"{tag}-5,{CHAIN_A},USDT,{world.sender},1\n"
    )
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "VALIDATION" and "row 2" in error["detail"]
    assert "row 1" not in error["detail"]


# --- sweeping deposit addresses ------------------------------------------------------------


def deposit_address(engine: PayoutEngine) -> tuple[str, tuple[int, int]]:
    from coordinator.deposits import DEPOSIT_BRANCH, DepositAddresses

    [row] = DepositAddresses(engine.store).assign("hot", [new_request_id("cust")])
    return row.address, (DEPOSIT_BRANCH, row.child)


def test_a_deposit_address_is_swept_of_its_ether_to_the_wallet(world: World) -> None:
    local = world.chains.local[CHAIN_A]

    async def go() -> tuple[str, int, int, PayoutRow]:
        async with world.engine() as engine:
            address, path = deposit_address(engine)
            local.fund(address, 2 * ETHER + 12345)
            held, home = local.balance(address), local.balance(world.sender)
            sweep_id = new_request_id("sw")
            sent = await engine.sweep(sweep_id, "hot", CHAIN_A, "ETH", path, INITIATOR)
            assert sent.state == PayoutState.SENT, sent.reason
            return address, held, home, await engine.wait(sweep_id)

    address, held, home, row = run(go())
    assert row.state == PayoutState.CONFIRMED, row.reason
    assert row.kind == PayoutKind.SWEEP and row.destination == world.sender
    # signed with the deposit address's derived share: it is the sender
    assert row.raw is not None and recover_sender(row.raw) == address
    sent = decode_signing_payload(_stored_payload(row))
    assert isinstance(sent, Eip1559Transfer) and sent.to == world.sender and sent.gas == 21_000
    # everything but the most the gas may cost
    assert sent.value == held - 21_000 * sent.max_fee_per_gas
    assert row.amount == amount_str(Decimal(sent.value).scaleb(-18))
    receipt = local.receipt(bytes.fromhex(_stored_hash(row)))
    assert local.balance(world.sender) - home == sent.value
    assert local.balance(address) == held - sent.value - receipt.fee


def _stored_hash(row: PayoutRow) -> str:
    assert row.tx_hash is not None
    return row.tx_hash[2:]


def test_a_token_sweep_is_fuelled_from_the_wallet_first_and_moves_every_unit(
    world: World,
) -> None:
    from coordinator.deposits import DepositWatcher

    local = world.chains.local[CHAIN_A]
    usdt = world.chains.token(CHAIN_A, "USDT")
    chain = registry_for(world.chains).chain(CHAIN_A)

    async def go() -> dict[str, Any]:
        async with world.engine() as engine:
            address, path = deposit_address(engine)
            watcher = DepositWatcher(
                engine.store, chain, engine.rpcs[CHAIN_A], start_block=local.block_number() + 1
            )
            await watcher.scan()  # the cursor starts here
            local.call_from_faucet(usdt, encode_transfer(address, units("25.000001", 6)))
            assert local.balance(address) == 0  # no ether for gas
            home = local.token_balance(usdt, world.sender)
            sweep_id = new_request_id("sw")
            sent = await engine.sweep(sweep_id, "hot", CHAIN_A, "USDT", path, INITIATOR)
            assert sent.state == PayoutState.SENT, sent.reason
            row = await engine.wait(sweep_id)
            gas = [r for r in engine.payouts() if r.kind == PayoutKind.GAS]
            again = await engine.sweep(sweep_id, "hot", CHAIN_A, "USDT", path, INITIATOR)
            with pytest.raises(PayoutError) as reused:
                await engine.sweep(sweep_id, "hot", CHAIN_A, "DAI", path, INITIATOR)
            with pytest.raises(PayoutError) as empty:
                await engine.sweep(new_request_id("sw"), "hot", CHAIN_A, "USDT", path, INITIATOR)
            with pytest.raises(PayoutError) as home_path:
                await engine.sweep(new_request_id("sw"), "hot", CHAIN_A, "ETH", (), INITIATOR)
            seen = (await watcher.scan()).seen
            return {
                "address": address,
                "home": home,
                "row": row,
                "gas": [r for r in gas if r.for_payout == sweep_id],
                "again": again,
                "reused": reused.value,
                "empty": empty.value,
                "home_path": home_path.value,
                "seen": seen,
            }

    got = run(go())
    row, address = got["row"], got["address"]
    assert row.state == PayoutState.CONFIRMED, row.reason
    assert row.raw is not None and recover_sender(row.raw) == address
    assert local.token_balance(usdt, world.sender) - got["home"] == units("25.000001", 6)
    assert local.token_balance(usdt, address) == 0
    # its gas came first, from the wallet's own address, as one internal transfer
    [gas] = got["gas"]
    assert gas.state == PayoutState.CONFIRMED and gas.destination == address
    assert gas.raw is not None and recover_sender(gas.raw) == world.sender
    assert row.nonce == 0  # the deposit address's first transaction
    assert got["again"].payout_id == row.payout_id  # the same sweep: nothing twice
    assert got["reused"].code is ErrorCode.REQUEST_REUSED
    assert got["empty"].code is ErrorCode.VALIDATION and "nothing to sweep" in got["empty"].detail
    assert got["home_path"].code is ErrorCode.VALIDATION
    # the customer's deposit is seen; the wallet's gas is not a deposit
    assert [(d.asset, d.amount) for d in got["seen"]] == [("USDT", "25.000001")]


def test_the_nodes_sign_an_internal_transfer_only_to_the_wallets_own_address(
    world: World,
) -> None:
    """A coordinator asking the internal-transfer route for a payment anywhere else (to a
    stranger, to an address it claims is the wallet's, to the sender itself) is refused by
    every node: each derives the recipient from its own key."""
    from coordinator.client import NodeRefused
    from signer.node.api import InternalTransferRequest

    def transfer(to: str) -> bytes:
        return Eip1559Transfer(
            chain_id=CHAIN_A,
            nonce=0,
            max_priority_fee_per_gas=10**9,
            max_fee_per_gas=10**10,
            gas=21_000,
            to=to,
            value=ETHER,
            data=b"",
        ).signing_payload()

    async def go() -> list[tuple[str | None, str]]:
        out = []
        async with world.engine() as engine:
            child = engine.sender_of("hot", (1, 9))
            wallet = engine.store.wallet("hot")
            for to, sender, destination_path in (
                (STRANGER, child, []),  # "the wallet's address" is the stranger
                (child, world.sender, []),  # the destination path names the sender itself
                (STRANGER, world.sender, [1, 9]),  # the child's address is not the stranger
            ):
                for client in engine.coordinator.clients.values():
                    with pytest.raises(NodeRefused) as caught:
                        await client.sign_internal(
                            InternalTransferRequest(
                                key_id=wallet.key_id,
                                transaction=transfer(to).hex(),
                                request_id=new_request_id("in"),
                                presignature_id="00" * 32,
                                sender=sender,
                                destination_path=destination_path,
                            )
                        )
                    assert caught.value.problem.code is ErrorCode.INTERNAL_TRANSFER_REFUSED
                    out.append((caught.value.problem.check, caught.value.problem.detail))
        return out

    refusals = run(go())
    n = len(world.cluster.nodes)
    assert [check for check, _ in refusals] == (
        ["destination"] * n + ["destination_path"] * n + ["destination"] * n
    )
    assert all(STRANGER in detail for check, detail in refusals if check == "destination")


def test_the_nodes_refuse_a_fee_above_the_policys_ceiling(world: World) -> None:
    """The nodes bound the price per gas themselves (the policy's `fee_ceilings`): a
    coordinator signing past its own registry's ceiling gets nothing signed."""
    from chain_world import FEE_CEILING

    from coordinator.client import NodeRefused
    from coordinator.errors import SigningFailed

    payload = Eip1559Transfer(
        chain_id=CHAIN_A,
        nonce=world.chains.local[CHAIN_A].nonce(world.sender),
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=FEE_CEILING + 1,
        gas=21_000,
        to=RECIPIENT,
        value=1,
        data=b"",
    ).signing_payload()

    async def go() -> SigningFailed:
        async with world.engine() as engine:
            with pytest.raises(SigningFailed) as caught:
                await engine.coordinator.sign_transaction(
                    "hot", payload, request_id=new_request_id("fee"), initiator=INITIATOR
                )
            return caught.value

    failed = run(go())
    assert failed.code is ErrorCode.FEE_ABOVE_CEILING
    refusal = failed.refusal
    assert isinstance(refusal, NodeRefused) and refusal.problem.check == "fee"
    assert str(FEE_CEILING) in refusal.problem.detail


class CrashBeforeTheNonce(PayoutEngine):
    """The process dying after a payout's helper (an approve, gas) was mined, just before the
    payout itself takes its nonce."""

    async def _reserve_and_sign(
        self, row: PayoutRow, approvals: Any, signed: Any = None
    ) -> PayoutRow:
        if row.kind in (PayoutKind.PAYOUT, PayoutKind.SWEEP) and (
            row.legs is not None or row.kind == PayoutKind.SWEEP
        ):
            raise Crash
        return await super()._reserve_and_sign(row, approvals, signed)


@pytest.mark.parametrize("what", ["token batch", "token sweep"])
def test_a_crash_after_the_helper_was_mined_does_not_make_it_twice(world: World, what: str) -> None:
    local = world.chains.local[CHAIN_A]
    usdt = world.chains.token(CHAIN_A, "USDT")

    async def go() -> tuple[PayoutRow, list[PayoutRow], str]:
        async with world.engine(cls=CrashBeforeTheNonce) as engine:
            if what == "token batch":
                req = batch(world, [(SECOND, "7.5")], asset="USDT")
                payout_id, holder = req.payout_id, SECOND
                with pytest.raises(Crash):
                    await engine.pay(req)
            else:
                address, path = deposit_address(engine)
                local.call_from_faucet(usdt, encode_transfer(address, units("7.5", 6)))
                payout_id, holder = new_request_id("sw"), world.sender
                with pytest.raises(Crash):
                    await engine.sweep(payout_id, "hot", CHAIN_A, "USDT", path, INITIATOR)
        async with world.engine() as engine:  # the restarted process
            await engine.drive(payout_id)  # as resume() does for every unfinished payout
            row = await engine.wait(payout_id)
            helpers = [r for r in engine.payouts() if r.for_payout == payout_id]
        return row, helpers, holder

    before = {a: local.token_balance(usdt, a) for a in (SECOND, world.sender)}
    row, helpers, holder = run(go())
    assert row.state == PayoutState.CONFIRMED, row.reason
    assert len(helpers) == 1 and helpers[0].state == PayoutState.CONFIRMED  # made once
    assert local.token_balance(usdt, holder) - before[holder] == units("7.5", 6)
    if what == "token batch":
        assert allowance_of(world, "USDT") == 0
