"""The signer API end to end: `tessera serve`'s service (uvicorn, its workers) over a local
2-of-3 cluster of node processes enforcing a policy, paying to a Hardhat 2 node, driven over
HTTP by the Python client with signed requests from a process of its own (the exchange's side:
benchmarks/bench_api_client.py).

    ./run bench-api [--withdrawals 30] [--concurrency 10] [--poll 0.05] [--dir var/bench-api]

Measures, next to a single-key libsecp256k1 signature and the bare policy-checked threshold
signature (`Coordinator.sign_transaction`, warm pool, no HTTP, no chain) in the same run:
  * `POST /v1/withdrawals` → 202 (the answer: stored, screened later), median and p90;
  * → SIGNED (the BROADCASTING event: screened, policy dry run, signed by the nodes) and
    → COMPLETED (mined and confirmed), one withdrawal at a time, warm pool;
  * withdrawals per second to COMPLETED with `--concurrency` clients submitting at once;
  * the service's CPU per withdrawal over the one-at-a-time runs (this process's CPU time,
    sampled every 10 ms: what its event loop, the critical path, has to get through).
Times to SIGNED and COMPLETED are read from the withdrawal's own event rows (the service's
clock) against the moment the client started the POST, so no polling adds to them.  The
service runs in this process, the client in its own; both share the machine with the nodes and
Hardhat.  The client's status reads (every `--poll` seconds) are served by the service's event
loop, as any integrator's are.
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
from coordinator.api.auth import ApiClients, Scope
from coordinator.api.lifecycle import Status
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


def cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """The CPU seconds used between two wall-clock moments, interpolated between the samples
    (wall, process CPU) around each."""

    def at(moment: float) -> float:
        before = max((s for s in samples if s[0] <= moment), default=samples[0])
        after = min((s for s in samples if s[0] >= moment), default=samples[-1])
        if after[0] == before[0]:
            return before[1]
        share = (moment - before[0]) / (after[0] - before[0])
        return before[1] + share * (after[1] - before[1])

    return at(end) - at(start)


async def bench(root: Path, withdrawals: int, concurrency: int, poll: float) -> dict[str, Any]:
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
    key_file = root / "bench-client.pem"
    key_file.write_bytes(issued.private_key_pem)
    key_file.chmod(0o600)
    balances = {
        "ETH": (10**15, chain.balance),
        "USDT": (1_500_000, lambda a: chain.token_balance(token, a)),
    }
    before = {asset: read(EXCHANGE) for asset, (_units, read) in balances.items()}
    # The service's CPU (this process: the client, nodes and Hardhat have their own), sampled
    # by wall clock, so that the part of a run's window can be read off afterwards
    cpu_samples: list[tuple[float, float]] = []

    async def sample_cpu() -> None:
        while True:
            cpu_samples.append((time.time(), time.process_time()))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample_cpu())
    try:
        # the exchange's side in a process of its own (benchmarks/bench_api_client.py)
        exchange = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve().parent / "bench_api_client.py"),
            "--url", f"http://127.0.0.1:{PORT}",
            "--key-id", issued.key_id,
            "--key-file", str(key_file),
            "--chain-id", str(CHAIN_ID),
            "--destination", EXCHANGE,
            "--withdrawals", str(withdrawals),
            "--concurrency", str(concurrency),
            "--poll", str(poll),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await exchange.communicate()
        if exchange.returncode != 0:
            raise SystemExit(f"the exchange's client process exited {exchange.returncode}")
        report = json.loads(out)
        print(f"  the client polled every {report['poll'] * 1000:.0f} ms, in its own process")
        for asset, (units, read) in balances.items():
            rows = report["sequential"][asset]
            answered, signed, completed = [], [], []
            for row in rows:
                if row["status"] != Status.COMPLETED:
                    raise SystemExit(f"a withdrawal ended {row['status']}")
                at = events_at(cluster, row["id"])
                answered.append(row["answered"])
                signed.append(at[Status.BROADCASTING] - row["wall"])
                completed.append(at[Status.COMPLETED] - row["wall"])
            extra = 2_000_000 * len(report["concurrent"]["withdrawals"]) if asset == "USDT" else 0
            if read(EXCHANGE) - before[asset] != len(rows) * units + extra:
                raise SystemExit(f"the {asset} recipient did not get exactly what was paid")
            first, last = rows[0]["wall"], events_at(cluster, rows[-1]["id"])[Status.COMPLETED]
            used = cpu_between(cpu_samples, first, last) / len(rows)
            results[f"{asset}: service CPU per withdrawal, POST → COMPLETED"] = {"ms": used * 1000}
            print(f"  {asset}: the service used {used * 1000:.1f} ms of CPU per withdrawal")
            record(f"{asset}: POST /v1/withdrawals → 202", answered)
            record(f"{asset}: POST → SIGNED (screened, policy, nodes' signature)", signed)
            record(f"{asset}: POST → COMPLETED (mined, 1 confirmation)", completed)

        ended = report["concurrent"]["withdrawals"]
        if any(e["status"] != Status.COMPLETED for e in ended):
            raise SystemExit("a concurrent withdrawal did not complete")
        elapsed = report["concurrent"]["seconds"]
        rate = len(ended) / elapsed
        results[f"USDT withdrawals to COMPLETED, {concurrency} clients at once"] = {
            "withdrawals": len(ended),
            "seconds": elapsed,
            "per_second": rate,
        }
        print(f"  {len(ended)} USDT withdrawals, {concurrency} at once: {rate:.1f} per second")
    finally:
        sampler.cancel()
        service.server.should_exit = True
        await serving
        cluster.down()
        node.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--withdrawals", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--poll", type=float, default=0.05, help="seconds between the client's status reads"
    )
    parser.add_argument("--dir", type=Path, default=Path("var/bench-api"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("machine:", json.dumps(describe()))
    results = asyncio.run(
        bench(args.dir, max(args.withdrawals, 2), max(args.concurrency, 1), args.poll)
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
