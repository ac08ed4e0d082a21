"""Payouts on a real JSON-RPC chain: a local 2-of-3 cluster of node processes (SoftHSM2 tokens,
SQLite) enforcing a policy, paying out from one hot address to a Hardhat 2 node over web3's HTTP
provider.

    ./run bench-chain [--payouts 30] [--legs 200] [--dir var/bench-chain]

Measures, next to a single-key libsecp256k1 signature and the bare policy-checked threshold
signature (`Coordinator.sign_transaction`, warm pool, no chain) in the same run:
  * one payout's latency, sequential, ETH and a 6-decimal ERC-20: fees (`eth_feeHistory`), gas
    (`eth_estimateGas`), nonce reserved, signed by the nodes, stored, sent, mined and confirmed
    (1 confirmation): median, p90;
  * payouts per second with all `--payouts` in flight from the one address (consecutive nonces,
    every one mined and confirmed);
  * deposit addresses derived per second (`DepositAddresses.assign`, batches of 1,000);
  * a batch in one transaction through the Disperse contract, ETH and USDT (with its approve),
    at `--legs` legs: latency to confirmed and gas per leg, next to a single payout's gas;
  * sweeps of a deposit address to the wallet: ETH, and USDT (its gas sent first).
Every payout is checked: confirmed, and the recipient's balance moved by exactly what was paid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_utils.address import to_checksum_address

from benchmarks.machine import baseline_sign_samples, describe, fmt, summarise
from coordinator.cluster import LocalCluster
from coordinator.contracts import artifact
from coordinator.deposits import DEPOSIT_BRANCH, MAX_BATCH, DepositAddresses
from coordinator.engine import Coordinator
from coordinator.evm_chain import LocalChain
from coordinator.hardhat import HardhatNode
from coordinator.payouts import PayoutEngine, PayoutRequest, PayoutState, batch_request
from coordinator.registry import local_registry
from policies.bundle import GovernanceBundle, PolicyVersionDoc
from policies.document import PolicyDocument, parse_policy
from policies.keys import generate_officer_key
from signer.chains.erc20 import encode_transfer
from signer.chains.evm import Eip1559Transfer

CHAIN_ID = 31337
EXCHANGE = "0x4c16027649390E3a79dDd56B0AA5a43CdB30e485"
INITIATOR = "withdrawal-service"
#: the batch legs' recipients, each whitelisted
LEG_RECIPIENTS = [to_checksum_address(f"0x{i:02x}" + "5a" * 19) for i in range(1, 21)]


def bench_policy(token: str, disperse: str) -> tuple[PolicyDocument, GovernanceBundle]:
    officers = [generate_officer_key(name, "ed25519") for name in ("alice", "bob", "carol")]
    policy = parse_policy(
        {
            "version": 1,
            "officers": [
                {"id": o.officer_id, "algorithm": "ed25519", "public_key": o.public_key_hex}
                for o in officers
            ],
            "governance": {"quorum": 2, "freeze_quorum": 1},
            "assets": {
                "ETH": {"decimals": 18, "native_chains": [CHAIN_ID]},
                "USDT": {"decimals": 6, "contracts": [{"chain_id": CHAIN_ID, "address": token}]},
            },
            "wallets": [{"id": "hot", "tier": "hot", "chains": [CHAIN_ID]}],
            "whitelists": {
                "exchanges": [{"address": EXCHANGE, "chain_id": CHAIN_ID, "label": "Exchange"}]
                + [
                    {"address": a, "chain_id": CHAIN_ID, "label": f"Customer {i}"}
                    for i, a in enumerate(LEG_RECIPIENTS)
                ]
            },
            "disperse_contracts": [{"chain_id": CHAIN_ID, "address": disperse}],
            "fee_ceilings": [{"chain_id": CHAIN_ID, "max_fee_per_gas_wei": 10**12}],
            "rules": [
                {
                    "id": "payouts",
                    "match": {
                        "destination": "whitelist:exchanges",
                        "assets": ["ETH", "USDT"],
                        "amount": {"max": "1000"},
                    },
                    "action": "ALLOW",
                }
            ],
        },
        source="bench-chain policy",
    )
    return policy, GovernanceBundle(versions=[PolicyVersionDoc.signed(policy, officers[:2])])


def request(n: int, asset: str, amount: str) -> PayoutRequest:
    return PayoutRequest(
        payout_id=f"bench-{asset}-{n}-{time.time_ns()}",
        wallet="hot",
        chain_id=CHAIN_ID,
        asset=asset,
        destination=EXCHANGE,
        amount=amount,
        initiator=INITIATOR,
    )


@dataclass
class BenchWorld:
    """A Hardhat node with the bench token and the Disperse contract, and a running 2-of-3
    cluster of node processes whose genesis is the bench policy."""

    node: HardhatNode
    chain: LocalChain
    token: str
    disperse: str
    governance: GovernanceBundle
    cluster: LocalCluster


async def start_world(root: Path, base_port: int) -> BenchWorld:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    node = HardhatNode(CHAIN_ID).start(log=root / "hardhat.log")
    chain = LocalChain.connect(node.url)
    token = chain.deploy_token("Bench USDT", "USDT", 6, 10**9 * 10**6)
    disperse = chain.deploy(artifact("Disperse").bytecode)
    policy, governance = bench_policy(token, disperse)
    print(f"cluster under {root}, Hardhat at {node.url}")
    cluster = LocalCluster.create(
        root / "cluster", 3, 2, base_port=base_port, genesis_policy=policy.policy_hash()
    )
    await cluster.up()
    return BenchWorld(node, chain, token, disperse, governance, cluster)


async def bare_signatures(coordinator: Coordinator, count: int) -> list[float]:
    """Seconds per policy-checked threshold signature of an ETH transfer never sent."""
    samples = []
    for n in range(count):
        payload = Eip1559Transfer(
            chain_id=CHAIN_ID,
            nonce=10**6 + n,  # never sent: the signature alone
            max_priority_fee_per_gas=10**9,
            max_fee_per_gas=3 * 10**10,
            gas=21_000,
            to=EXCHANGE,
            value=10**15,
        ).signing_payload()
        t0 = time.perf_counter()
        await coordinator.sign_transaction(
            "hot", payload, request_id=f"bench-bare-{n}-{time.time_ns()}", initiator=INITIATOR
        )
        samples.append(time.perf_counter() - t0)
    return samples


async def bench(root: Path, payouts: int, legs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def record(name: str, samples: list[float]) -> None:
        summary = summarise(samples)
        results[name] = summary
        print(f"  {name}: median {fmt(summary['median'])}, p90 {fmt(summary['p90'])}")

    record("libsecp256k1 sign (single key, baseline)", baseline_sign_samples())
    world = await start_world(root, 18600)
    node, chain, token, disperse, governance, cluster = (
        world.node,
        world.chain,
        world.token,
        world.disperse,
        world.governance,
        world.cluster,
    )
    coordinator = cluster.coordinator()
    rpc = chain.rpc()
    try:
        await coordinator.relay_governance(governance)
        wallet = await coordinator.create_wallet("hot", policy_wallet="hot")
        bare = 20
        print(f"  filling the pool: {3 * payouts + bare + 2} presignatures …", flush=True)
        t0 = time.perf_counter()
        await coordinator.fill_pool(wallet, (1, 2), (), 3 * payouts + bare + 2)
        print(f"  pool filled in {time.perf_counter() - t0:.0f} s")
        registry = local_registry(
            CHAIN_ID,
            "Hardhat",
            node.url,
            {"USDT": (token, 6)},
            fee_ceiling_wei=10**12,
            disperse=disperse,
        )
        engine = PayoutEngine(coordinator, registry, {CHAIN_ID: rpc})
        sender = engine.sender_of("hot", ())
        chain.fund(sender, 1000 * 10**18)
        chain.call_from_faucet(token, encode_transfer(sender, 10**6 * 10**6))

        samples = await bare_signatures(coordinator, bare)
        record("policy-checked threshold signature, no chain (warm pool)", samples)

        for asset, amount, units, balance in (
            ("ETH", "0.001", 10**15, chain.balance),
            ("USDT", "1.5", 1_500_000, lambda a: chain.token_balance(token, a)),
        ):
            before = balance(EXCHANGE)
            samples = []
            for n in range(payouts):
                t0 = time.perf_counter()
                row = await engine.pay(request(n, asset, amount))
                row = await engine.wait(row.payout_id, poll=0.005)
                samples.append(time.perf_counter() - t0)
                if row.state != PayoutState.CONFIRMED:
                    raise SystemExit(f"a payout ended {row.state}: {row.reason}")
            if balance(EXCHANGE) - before != payouts * units:
                raise SystemExit(f"the {asset} recipient did not get exactly what was paid")
            record(f"{asset} payout: sign + send + mined + confirmed (sequential)", samples)

        before = chain.token_balance(token, EXCHANGE)
        requests = [request(n, "USDT", "2") for n in range(payouts)]
        t0 = time.perf_counter()
        await asyncio.gather(*(engine.pay(r) for r in requests))
        rows = await asyncio.gather(*(engine.wait(r.payout_id, poll=0.005) for r in requests))
        elapsed = time.perf_counter() - t0
        if any(r.state != PayoutState.CONFIRMED for r in rows):
            raise SystemExit("a concurrent payout was not confirmed")
        if chain.token_balance(token, EXCHANGE) - before != payouts * 2_000_000:
            raise SystemExit("the concurrent payouts did not pay exactly")
        nonces = sorted(r.nonce or 0 for r in rows)
        if nonces != list(range(nonces[0], nonces[0] + payouts)):
            raise SystemExit("the concurrent payouts' nonces are not consecutive")
        rate = payouts / elapsed
        results[f"USDT payouts per second, {payouts} in flight from one address"] = rate
        print(f"  {payouts} concurrent USDT payouts from one address: {rate:.1f} per second")

        book = DepositAddresses(coordinator.store)
        rates = []
        for batch in range(3):
            refs = [f"customer-{batch}-{i}" for i in range(MAX_BATCH)]
            t0 = time.perf_counter()
            book.assign("hot", refs)
            rates.append(MAX_BATCH / (time.perf_counter() - t0))
        results["deposit addresses derived and stored per second (batches of 1,000)"] = sorted(
            rates
        )[1]
        print(f"  deposit addresses: {sorted(rates)[1]:.0f} per second (median of 3 batches)")

        single_gas = {}
        for asset in ("ETH", "USDT"):
            confirmed = engine.payouts([PayoutState.CONFIRMED])
            paid = [
                r for r in confirmed if r.asset == asset and r.kind == "payout" and r.legs is None
            ]
            single_gas[asset] = chain.receipt(bytes.fromhex((paid[-1].tx_hash or "")[2:])).gas_used
        for asset, amount, units, balance in (
            ("ETH", "0.001", 10**15, chain.balance),
            ("USDT", "1.5", 1_500_000, lambda a: chain.token_balance(token, a)),
        ):
            recipients = [LEG_RECIPIENTS[i % len(LEG_RECIPIENTS)] for i in range(legs)]
            held = {a: balance(a) for a in set(recipients)}
            req = batch_request(
                registry.chain(CHAIN_ID),
                f"bench-batch-{asset}-{time.time_ns()}",
                "hot",
                asset,
                [(a, amount) for a in recipients],
                INITIATOR,
            )
            t0 = time.perf_counter()
            row = await engine.pay(req)
            row = await engine.wait(row.payout_id, poll=0.005)
            elapsed = time.perf_counter() - t0
            if row.state != PayoutState.CONFIRMED:
                raise SystemExit(f"the {asset} batch ended {row.state}: {row.reason}")
            for a in set(recipients):
                if balance(a) - held[a] != recipients.count(a) * units:
                    raise SystemExit(f"a {asset} batch leg was not paid exactly")
            gas = chain.receipt(bytes.fromhex((row.tx_hash or "")[2:])).gas_used
            name = f"{asset} batch of {legs} legs in one transaction"
            results[f"{name}: confirmed in (s)"] = elapsed
            results[f"{name}: gas per leg"] = gas / legs
            results[f"{asset} single payout gas"] = single_gas[asset]
            print(
                f"  {name}: confirmed in {fmt(elapsed)}, {gas / legs:,.0f} gas per leg "
                f"(a single {asset} payout: {single_gas[asset]:,} gas)"
            )

        def fund_eth(address: str) -> None:
            chain.fund(address, 10**17)

        def fund_usdt(address: str) -> None:
            chain.call_from_faucet(token, encode_transfer(address, 5_000_000))

        for asset, fund in (("ETH", fund_eth), ("USDT", fund_usdt)):
            samples = []
            for n in range(5):
                [deposit] = book.assign("hot", [f"sweep-{asset}-{n}-{time.time_ns()}"])
                fund(deposit.address)
                t0 = time.perf_counter()
                row = await engine.sweep(
                    f"bench-sweep-{asset}-{n}-{time.time_ns()}",
                    "hot",
                    CHAIN_ID,
                    asset,
                    (DEPOSIT_BRANCH, deposit.child),
                    INITIATOR,
                )
                row = await engine.wait(row.payout_id, poll=0.005)
                samples.append(time.perf_counter() - t0)
                if row.state != PayoutState.CONFIRMED:
                    raise SystemExit(f"a {asset} sweep ended {row.state}: {row.reason}")
            what = "gas sent first, then " if asset == "USDT" else ""
            record(f"{asset} sweep of a deposit address ({what}fresh presignature)", samples)
    finally:
        await rpc.aclose()
        await coordinator.aclose()
        cluster.down()
        node.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payouts", type=int, default=30)
    parser.add_argument("--legs", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("var/bench-chain"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("machine:", json.dumps(describe()))
    results = asyncio.run(bench(args.dir, max(args.payouts, 2), max(min(args.legs, 1000), 1)))
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
