"""200 withdrawals through the signer API end to end (issue 13): submitted concurrently over
HTTP by the exchange's client to a running service over real node processes and a Hardhat
node, each completed on chain by exactly one transaction — consecutive nonces, no gap, no
double, exact balances — with every status event delivered to a webhook receiver in order of
its sequence."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest
from api_world import (
    Key,
    Receiver,
    ServiceThread,
    api_world,
    async_client,
    client,
    issue_key,
    serving,
)
from chain_world import CHAIN_A, RECIPIENT, SECOND, World

from coordinator.api.auth import Scope
from coordinator.api.lifecycle import RANK, Status
from coordinator.api.models import Withdrawal, WithdrawalCreate
from coordinator.api.server import WEBHOOK_KEY_FILE
from coordinator.api.webhooks import load_or_create_signing_key, public_key_text

WITHDRAWALS = 200
CONCURRENT_CLIENTS = 20
MILLI_ETH = 10**15
TOKEN_UNIT = 10**6  # USDT's 6 decimals

pytestmark = pytest.mark.slow  # 200 presignatures in the module's pool, 200 transactions


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("api-scale"), WITHDRAWALS) as w:
        yield w


def request(n: int) -> WithdrawalCreate:
    """Every third one a USDT payout, the others ether; alternating between the two exchange
    addresses; amounts distinct, so each balance sum says which were paid."""
    asset = "USDT" if n % 3 == 0 else "ETH"
    return WithdrawalCreate(
        client_request_id=f"scale-{n}",
        wallet="hot",
        chain_id=CHAIN_A,
        asset=asset,
        destination=RECIPIENT if n % 2 == 0 else SECOND,
        amount=f"0.{n + 1:03d}" if asset == "ETH" else f"{n + 1}",
        note=f"withdrawal {n} of {WITHDRAWALS}",
    )


def expected_units(requests: list[WithdrawalCreate], asset: str, to: str) -> int:
    unit = 10**18 if asset == "ETH" else TOKEN_UNIT
    total = 0
    for r in requests:
        if r.asset == asset and r.destination == to:
            whole, _, frac = r.amount.partition(".")
            total += int(whole) * unit + (int(frac.ljust(18, "0")[:18]) * unit // 10**18)
    return total


def test_200_withdrawals_through_the_api_each_end_in_one_transaction(world: World) -> None:
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "USDT")
    key: Key = issue_key(
        world, "scale", [Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ], rate=10**6
    )
    public = public_key_text(load_or_create_signing_key(world.cluster.root / WEBHOOK_KEY_FILE))
    receiver = Receiver(public)
    requests = [request(n) for n in range(WITHDRAWALS)]
    start_nonce = local.nonce(world.sender)
    before = {
        (asset, to): local.balance(to) if asset == "ETH" else local.token_balance(token, to)
        for asset in ("ETH", "USDT")
        for to in (RECIPIENT, SECOND)
    }
    try:
        with serving(world, webhook_urls=[receiver.url]) as api:
            ids = asyncio.run(submit_all(api, key, requests))
            assert len(set(ids)) == WITHDRAWALS  # one withdrawal per client_request_id
            done = wait_all(api, key, ids)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all_terminal_delivered(receiver, ids):
                time.sleep(0.2)
    finally:
        receiver.close()

    assert Counter(w.status for w in done.values()) == {Status.COMPLETED: WITHDRAWALS}
    # one transaction each, at consecutive nonces: the account moved by exactly 200
    assert local.nonce(world.sender) == start_nonce + WITHDRAWALS
    hashes = [w.tx_hash for w in done.values()]
    assert len(set(hashes)) == WITHDRAWALS and all(hashes)
    nonces = sorted(int(local.request("eth_getTransactionByHash", h)["nonce"], 16) for h in hashes)
    assert nonces == list(range(start_nonce, start_nonce + WITHDRAWALS))
    for (asset, to), was in before.items():
        now = local.balance(to) if asset == "ETH" else local.token_balance(token, to)
        assert now - was == expected_units(requests, asset, to), (asset, to)

    # webhooks: numbered 1.. without a gap, every withdrawal's every status once (deliveries
    # are at least once: deduplicated by event id), in the order of its lifecycle
    deliveries = receiver.received
    sequences = sorted({d["sequence"] for d in deliveries})
    assert sequences == list(range(1, len(sequences) + 1))
    first_of: dict[int, dict[str, object]] = {}
    for d in deliveries:
        first_of.setdefault(int(d["event_id"]), d)
    by_withdrawal: dict[str, list[str]] = defaultdict(list)
    for d in sorted(first_of.values(), key=lambda d: int(str(d["sequence"]))):
        data = d["data"]
        assert isinstance(data, dict)
        by_withdrawal[str(data["id"])].append(str(data["status"]))
    assert set(by_withdrawal) == set(ids)
    for statuses in by_withdrawal.values():
        ranks = [RANK[Status(s)] for s in statuses]
        assert ranks == sorted(ranks) and len(set(statuses)) == len(statuses)
        assert statuses[0] == "SUBMITTED" and statuses[-1] == "COMPLETED"


async def submit_all(api: ServiceThread, key: Key, requests: list[WithdrawalCreate]) -> list[str]:
    """The exchange's service: CONCURRENT_CLIENTS connections submitting at once."""
    queue: asyncio.Queue[WithdrawalCreate] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    ids: dict[str, str] = {}

    async def worker() -> None:
        exchange = async_client(api, key)
        try:
            while not queue.empty():
                r = queue.get_nowait()
                accepted = await exchange.create_withdrawal(r)
                assert accepted.client_request_id == r.client_request_id
                ids[r.client_request_id] = accepted.id
        finally:
            await exchange.aclose()

    await asyncio.gather(*(worker() for _ in range(CONCURRENT_CLIENTS)))
    return [ids[r.client_request_id] for r in requests]


def wait_all(api: ServiceThread, key: Key, ids: list[str]) -> dict[str, Withdrawal]:
    """Each withdrawal once it is terminal (asked round after round, not in a tight loop)."""
    done: dict[str, Withdrawal] = {}
    deadline = time.monotonic() + 900
    with client(api, key) as exchange:
        while len(done) < len(ids) and time.monotonic() < deadline:
            for wid in ids:
                if wid not in done:
                    current = exchange.withdrawal(wid)
                    if current.terminal:
                        done[wid] = current
            time.sleep(0.5)
    assert len(done) == len(ids), f"{len(ids) - len(done)} withdrawals still live"
    return done


def all_terminal_delivered(receiver: Receiver, ids: list[str]) -> bool:
    ended = {d["data"]["id"] for d in receiver.received if d["data"]["status"] == "COMPLETED"}
    return ended >= set(ids)
