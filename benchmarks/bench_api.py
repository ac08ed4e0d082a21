"""The signer API end to end: `tessera serve`'s service (uvicorn, its workers) over a local
2-of-3 cluster of node processes enforcing a policy, paying to a Hardhat 2 node, driven over
HTTP by the Python client with signed requests.

    ./run bench-api [--withdrawals 30] [--concurrency 10] [--dir var/bench-api]

Measures, next to a single-key libsecp256k1 signature and the bare policy-checked threshold
signature (`Coordinator.sign_transaction`, warm pool, no HTTP, no chain) in the same run:
  * `POST /v1/withdrawals` → 202 (the answer: stored, screened later), median and p90;
  * → SIGNED (the BROADCASTING event: screened, policy dry run, signed by the nodes) and
    → COMPLETED (mined and confirmed), one withdrawal at a time, warm pool;
  * withdrawals per second to COMPLETED with `--concurrency` clients submitting at once.
Times to SIGNED and COMPLETED are read from the withdrawal's own event rows (the service's
clock) against the moment the client started the POST, so no polling adds to them.  The
client and the service share this one process (and the machine with the nodes and Hardhat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import select

from benchmarks.bench_chain import CHAIN_ID, EXCHANGE, INITIATOR, bare_signatures, start_world
from benchmarks.machine import baseline_sign_samples, describe, fmt, summarise
from coordinator.api.auth import ApiClients, Scope, load_private_key
from coordinator.api.client import AsyncTesseraClient
from coordinator.api.lifecycle import Status
from coordinator.api.models import WithdrawalCreate
from coordinator.api.server import ServeOptions, build, run
from coordinator.api.tables import WithdrawalEventRow
from coordinator.cluster import LocalCluster
from coordinator.registry import local_registry
from signer.chains.erc20 import encode_transfer

PORT = 18700


def events_at(cluster: LocalCluster, withdrawal_id: str) -> dict[str, float]:
    from coordinator.store import CoordinatorStore  # noqa: PLC0415

    store = CoordinatorStore(cluster.root / "coordinator.db")
    try:
        with store.session() as session:
            rows = session.exec(
                select(WithdrawalEventRow).where(WithdrawalEventRow.withdrawal_id == withdrawal_id)
            ).all()
        return {row.status: row.created_at for row in rows}
    finally:
        store.close()


async def bench(root: Path, withdrawals: int, concurrency: int) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def record(name: str, samples: list[float]) -> None:
        summary = summarise(samples)
        results[name] = summary
        print(f"  {name}: median {fmt(summary['median'])}, p90 {fmt(summary['p90'])}")

    record("libsecp256k1 sign (single key, baseline)", baseline_sign_samples())
    world = await start_world(root, 18650)
    node, chain, token, disperse, governance, cluster = (
        world.node,
        world.chain,
        world.token,
        world.disperse,
        world.governance,
        world.cluster,
    )
    coordinator = cluster.coordinator()
    bare = 20
    total = bare + 2 * withdrawals + withdrawals * 2 + 4
    try:
        await coordinator.relay_governance(governance)
        wallet = await coordinator.create_wallet("hot", policy_wallet="hot")
        print(f"  filling the pool: {total} presignatures …", flush=True)
        t0 = time.perf_counter()
        await coordinator.fill_pool(wallet, (1, 2), (), total)
        print(f"  pool filled in {time.perf_counter() - t0:.0f} s")
        samples = await bare_signatures(coordinator, bare)
        record("policy-checked threshold signature, no HTTP, no chain (warm pool)", samples)
    finally:
        await coordinator.aclose()

    registry = local_registry(
        CHAIN_ID, "Hardhat", node.url, {"USDT": (token, 6)}, fee_ceiling_wei=10**12,
        disperse=disperse,
    )  # fmt: skip
    options = ServeOptions(port=PORT, pool_depth=0, initiator=INITIATOR)
    service = build(cluster, registry, options)
    sender = service.engine.sender_of("hot", ())
    chain.fund(sender, 1000 * 10**18)
    chain.call_from_faucet(token, encode_transfer(sender, 10**6 * 10**6))
    issued = ApiClients(service.coordinator.store).create(
        "bench", [Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ], rate_per_minute=10**6
    )
    ready = asyncio.Event()

    async def started() -> None:
        ready.set()

    serving = asyncio.create_task(run(service, options, started))
    await ready.wait()
    client = AsyncTesseraClient(
        f"http://127.0.0.1:{PORT}", issued.key_id, load_private_key(issued.private_key_pem)
    )
    counter = iter(range(10**9))

    def body(asset: str, amount: str) -> WithdrawalCreate:
        return WithdrawalCreate(
            client_request_id=f"bench-{asset}-{next(counter)}-{time.time_ns()}",
            wallet="hot",
            chain_id=CHAIN_ID,
            asset=asset,
            destination=EXCHANGE,
            amount=amount,
        )

    try:
        for asset, amount, units, balance in (
            ("ETH", "0.001", 10**15, chain.balance),
            ("USDT", "1.5", 1_500_000, lambda a: chain.token_balance(token, a)),
        ):
            before = balance(EXCHANGE)
            answered, signed, completed = [], [], []
            for _ in range(withdrawals):
                wall, t0 = time.time(), time.perf_counter()
                accepted = await client.create_withdrawal(body(asset, amount))
                answered.append(time.perf_counter() - t0)
                done = await client.wait(accepted.id, poll=0.01)
                if done.status != Status.COMPLETED:
                    raise SystemExit(f"a withdrawal ended {done.status}: {done.reason}")
                at = events_at(cluster, accepted.id)
                signed.append(at[Status.BROADCASTING] - wall)
                completed.append(at[Status.COMPLETED] - wall)
            if balance(EXCHANGE) - before != withdrawals * units:
                raise SystemExit(f"the {asset} recipient did not get exactly what was paid")
            record(f"{asset}: POST /v1/withdrawals → 202", answered)
            record(f"{asset}: POST → SIGNED (screened, policy, nodes' signature)", signed)
            record(f"{asset}: POST → COMPLETED (mined, 1 confirmation)", completed)

        before = chain.token_balance(token, EXCHANGE)
        many = [body("USDT", "2") for _ in range(2 * withdrawals)]
        gate = asyncio.Semaphore(concurrency)

        async def one(request: WithdrawalCreate) -> str:
            async with gate:
                accepted = await client.create_withdrawal(request)
                return (await client.wait(accepted.id, poll=0.05, timeout=600)).status

        t0 = time.perf_counter()
        ended = await asyncio.gather(*(one(r) for r in many))
        elapsed = time.perf_counter() - t0
        if any(s != Status.COMPLETED for s in ended):
            raise SystemExit("a concurrent withdrawal did not complete")
        if chain.token_balance(token, EXCHANGE) - before != len(many) * 2_000_000:
            raise SystemExit("the concurrent withdrawals did not pay exactly")
        rate = len(many) / elapsed
        results[f"USDT withdrawals to COMPLETED, {concurrency} clients at once"] = {
            "withdrawals": len(many),
            "seconds": elapsed,
            "per_second": rate,
        }
        print(f"  {len(many)} USDT withdrawals, {concurrency} at once: {rate:.1f} per second")
    finally:
        await client.aclose()
        service.server.should_exit = True
        await serving
        cluster.down()
        node.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--withdrawals", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=Path("var/bench-api"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("machine:", json.dumps(describe()))
    results = asyncio.run(bench(args.dir, max(args.withdrawals, 2), max(args.concurrency, 1)))
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
