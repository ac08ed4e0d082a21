"""End-to-end benchmark over HTTP: a local 2-of-3 cluster of node processes (SoftHSM2 tokens,
SQLite), driven by the coordinator on loopback.

    ./run bench-cluster [--signatures 50] [--concurrency 8] [--dir var/bench-cluster]

Measures, next to a single-key libsecp256k1 signature in the same run:
  * time from "create wallet" (aux-info on fresh safe primes + DKG) to the first signature
    (the first signature takes an interactive presign: the pool is empty), and the same with
    aux-info already done (a new wallet on an existing cluster);
  * presignature refill rate (presign sessions per second, two sessions at a time);
  * latency of one signature with a warm pool, from the coordinator's request to a verified
    signature (sequential requests: median, p90);
  * throughput with `--concurrency` requests in flight;
  * the same warm-pool signature on a policy wallet, where every signer decodes the transaction
    and runs its policy decision (no velocity limit), and with a velocity limit, where the
    coordinator first collects a receipt from each of the 3 nodes; and what the decision itself
    costs on each node (`tessera_node_decision_seconds`, the nodes' own histogram).
Every signature is verified (libsecp256k1) before it counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import baseline_sign_samples, describe, fmt, summarise
from coordinator.cluster import LocalCluster
from coordinator.engine import Coordinator
from policies.bundle import GovernanceBundle, PolicyVersionDoc
from policies.document import PolicyDocument, parse_policy
from policies.keys import generate_officer_key
from signer.chains.evm import Eip1559Transfer
from signer.node import codec
from signer.protocol.sign import HashScheme, message_digest

CHAIN_ID = 1
EXCHANGE = "0x4c16027649390E3a79dDd56B0AA5a43CdB30e485"


def bench_policy() -> tuple[PolicyDocument, GovernanceBundle]:
    """Two policy wallets: `limited` with a daily velocity limit (receipts from every node),
    `free` without one (the decision alone); small ETH transfers to one exchange are allowed."""
    officers = [generate_officer_key(name, "ed25519") for name in ("alice", "bob", "carol")]
    rule_match = {
        "destination": "whitelist:exchanges",
        "assets": ["ETH"],
        "amount": {"max": "1"},
    }
    policy = parse_policy(
        {
            "version": 1,
            "officers": [
                {"id": o.officer_id, "algorithm": "ed25519", "public_key": o.public_key_hex}
                for o in officers
            ],
            "governance": {"quorum": 2, "freeze_quorum": 1},
            "assets": {"ETH": {"decimals": 18, "native_chains": [CHAIN_ID]}},
            "wallets": [
                {"id": "limited", "tier": "hot", "chains": [CHAIN_ID]},
                {"id": "free", "tier": "hot", "chains": [CHAIN_ID]},
            ],
            "whitelists": {
                "exchanges": [{"address": EXCHANGE, "chain_id": CHAIN_ID, "label": "Exchange"}]
            },
            "rules": [{"id": "small", "match": rule_match, "action": "ALLOW"}],
            "velocity_limits": [
                {
                    "id": "daily",
                    "wallet": "limited",
                    "asset": "ETH",
                    "window_seconds": 86400,
                    "max_amount": "1000000",
                }
            ],
        },
        source="bench policy",
    )
    return policy, GovernanceBundle(versions=[PolicyVersionDoc.signed(policy, officers[:2])])


def transfer(nonce: int) -> bytes:
    return Eip1559Transfer(
        chain_id=CHAIN_ID,
        nonce=nonce,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=3 * 10**10,
        gas=21_000,
        to=EXCHANGE,
        value=10**15,
    ).signing_payload()


async def decision_seconds(cluster: LocalCluster) -> dict[str, float]:
    """Mean decision time per node and action, from each node's own histogram."""
    means: dict[str, float] = {}
    for entry in cluster.nodes:
        node = entry.index
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{entry.url}/metrics")  # no token: counts only
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for line in response.text.splitlines():
            for suffix, into in (("_sum", sums), ("_count", counts)):
                prefix = f'tessera_node_decision_seconds{suffix}{{action="'
                if line.startswith(prefix):
                    action = line[len(prefix) :].split('"', 1)[0]
                    into[action] = float(line.rsplit(" ", 1)[1])
        for action, total in sums.items():
            if counts.get(action):
                means[f"node {node} {action}"] = total / counts[action]
    return means


def _verify(coordinator: Coordinator, wallet: str, message: bytes, signature: Any) -> None:
    key = codec.decode_key_public(coordinator.store.wallet(wallet).key_public)
    digest = message_digest(message, HashScheme.KECCAK256)
    if not key.public_key.to_public_key().verify(signature.der(), digest, hasher=None):
        raise SystemExit("a signature did not verify")


async def bench(root: Path, signatures: int, concurrency: int) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def record(name: str, samples: list[float]) -> None:
        stats = results[name] = summarise(samples)
        print(f"  {name:<58} median {fmt(stats['median']):>10}  p90 {fmt(stats['p90']):>10}")

    record("baseline: libsecp256k1 sign", baseline_sign_samples())

    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    policy, governance = bench_policy()
    cluster = LocalCluster.create(
        root, 3, 2, base_port=18500, raw_keys=True, genesis_policy=policy.policy_hash()
    )
    await cluster.up()
    results["cluster set-up (3 tokens, keys, processes)"] = time.perf_counter() - t0
    coordinator = cluster.coordinator()
    try:
        t0 = time.perf_counter()
        await coordinator.create_wallet("first")
        created = time.perf_counter() - t0
        outcome = await coordinator.sign("first", b"first", HashScheme.KECCAK256, preferred=(1, 2))
        _verify(coordinator, "first", b"first", outcome.signature)
        first = time.perf_counter() - t0
        results["create wallet incl. aux-info → first signature"] = first
        print(f"  create wallet (aux-info + DKG): {fmt(created)}; → first signature {fmt(first)}")

        t0 = time.perf_counter()
        await coordinator.create_wallet("second")
        outcome = await coordinator.sign("second", b"x", HashScheme.KECCAK256, preferred=(1, 2))
        _verify(coordinator, "second", b"x", outcome.signature)
        again = time.perf_counter() - t0
        results["create wallet (aux-info reused) → first signature"] = again
        print(f"  new wallet, aux-info reused → first signature: {fmt(again)}")

        wallet = coordinator.store.wallet("first")
        t0 = time.perf_counter()
        await coordinator.fill_pool(wallet, (1, 2), (), signatures + concurrency * 4)
        elapsed = time.perf_counter() - t0
        rate = (signatures + concurrency * 4) / elapsed
        results["presignature refill rate (per second, 2 sessions at a time)"] = rate
        print(f"  presignature refill: {rate:.2f} per second")

        latencies = []
        for k in range(signatures):
            message = b"withdrawal %d" % k
            t0 = time.perf_counter()
            outcome = await coordinator.sign(
                "first", message, HashScheme.KECCAK256, preferred=(1, 2)
            )
            latencies.append(time.perf_counter() - t0)
            _verify(coordinator, "first", message, outcome.signature)
        record("one signature, warm pool, over HTTP (coordinator → verified)", latencies)

        batch = concurrency * 4
        messages = [b"concurrent %d" % k for k in range(batch)]
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                coordinator.sign("first", m, HashScheme.KECCAK256, preferred=(1, 2))
                for m in messages
            )
        )
        elapsed = time.perf_counter() - t0
        for outcome, message in zip(outcomes, messages, strict=True):
            _verify(coordinator, "first", message, outcome.signature)
        results[f"throughput, {concurrency} in flight (signatures per second)"] = batch / elapsed
        print(f"  throughput with {concurrency} in flight: {batch / elapsed:.1f} signatures/s")

        await coordinator.relay_governance(governance)
        nonce = 0
        for name, label in (
            ("free", "policy-checked signature (decision on each signer), warm pool"),
            ("limited", "policy-checked signature + velocity receipts (3 nodes), warm pool"),
        ):
            policy_wallet = await coordinator.create_wallet(name, policy_wallet=name)
            await coordinator.fill_pool(policy_wallet, (1, 2), (), signatures)
            samples = []
            for _ in range(signatures):
                payload = transfer(nonce)
                nonce += 1
                t0 = time.perf_counter()
                outcome = await coordinator.sign_transaction(
                    name,
                    payload,
                    request_id=f"bench-{name}-{nonce}",
                    initiator="withdrawal-service",
                    preferred=(1, 2),
                )
                samples.append(time.perf_counter() - t0)
                _verify(coordinator, name, payload, outcome.signature)
            record(label, samples)
        for key, mean in (await decision_seconds(cluster)).items():
            results[f"policy decision, mean, {key}"] = mean
            print(f"  policy decision on {key}: mean {fmt(mean)}")
    finally:
        await coordinator.aclose()
        cluster.down()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signatures", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=Path("var/bench-cluster"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("machine:", json.dumps(describe()))
    results = asyncio.run(bench(args.dir, max(args.signatures, 2), max(args.concurrency, 1)))
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
