"""A payout world for the chain tests: real node processes (2-of-3, SoftHSM2 tokens), two Hardhat
nodes with different chain ids and an in-process eth-tester chain, each with a 6-decimal
USDT-like and an 18-decimal DAI-like token compiled from coordinator/contracts/Token.sol.

The officers' policy (quorum 2 of alice, bob, carol) has ETH native on the three chains, USDT and
DAI with their contract on each, one wallet `hot` on all three, and two rules: up to 1,000 of any
asset to the whitelist (RECIPIENT and SECOND on each chain) from the withdrawal service is
allowed; more, to the whitelist, needs the approvals of alice and bob (group treasury); anything
else is denied by default; BLOCKED is blacklisted.  No velocity limit: no receipts, so a payout
is one signing round.  Each chain has the Disperse contract (coordinator/contracts/Disperse.sol)
deployed, named by the policy and the registry, for batches paid in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from node_cluster import make_cluster
from policy_world import INITIATOR, Officers, officers_store

from coordinator.cluster import LocalCluster
from coordinator.contracts import artifact
from coordinator.evm_chain import InProcessChain, LocalChain
from coordinator.hardhat import HardhatNode
from coordinator.payouts import PayoutEngine
from coordinator.registry import ChainRegistry, parse_registry
from coordinator.rpc import ChainRpc
from policies.document import PolicyDocument, parse_policy
from policies.push import governance_bundle
from signer.chains.erc20 import encode_transfer

CHAIN_A = 31337  # Hardhat's default chain id
CHAIN_B = 1338  # a second Hardhat node: another chain
RECIPIENT = to_checksum_address("0x" + "a1" * 20)
SECOND = to_checksum_address("0x" + "a2" * 20)
STRANGER = to_checksum_address("0x" + "c3" * 20)
BLOCKED = to_checksum_address("0x" + "b2" * 20)
ETHER = 10**18
USDT_UNITS = 10**6
TOKENS = {"USDT": 6, "DAI": 18}
FEE_CEILING = 10**13  # wei per gas (10,000 gwei): the nodes' own bound in the payout policy


@dataclass
class Chains:
    """Each chain's faucet side (`LocalChain`) and its token contracts."""

    local: dict[int, LocalChain]
    tokens: dict[int, dict[str, str]]
    hardhat: dict[int, HardhatNode] = field(default_factory=dict)
    disperse: dict[int, str] = field(default_factory=dict)

    def token(self, chain_id: int, symbol: str) -> str:
        return self.tokens[chain_id][symbol]


def start_chains(root: Path) -> Chains:
    nodes = {cid: HardhatNode(cid) for cid in (CHAIN_A, CHAIN_B)}
    try:
        for cid, node in nodes.items():
            node.start(log=root / f"hardhat-{cid}.log")
        local: dict[int, LocalChain] = {cid: LocalChain.connect(n.url) for cid, n in nodes.items()}
        tester = InProcessChain()
        local[tester.chain_id] = tester
        tokens = {
            cid: {
                symbol: chain.deploy_token(
                    f"Test {symbol}", symbol, decimals, 10**12 * 10**decimals
                )
                for symbol, decimals in TOKENS.items()
            }
            for cid, chain in local.items()
        }
        disperse = {
            cid: chain.deploy(artifact("Disperse").bytecode) for cid, chain in local.items()
        }
    except BaseException:
        for node in nodes.values():
            node.stop()
        raise
    return Chains(local, tokens, nodes, disperse)


def payout_policy(officers: Officers, chains: Chains) -> PolicyDocument:
    chain_ids = sorted(chains.local)
    assets: dict[str, Any] = {"ETH": {"decimals": 18, "native_chains": chain_ids}}
    for symbol, decimals in TOKENS.items():
        assets[symbol] = {
            "decimals": decimals,
            "contracts": [
                {"chain_id": cid, "address": chains.token(cid, symbol)} for cid in chain_ids
            ],
        }
    whitelist = [
        {"address": address, "chain_id": cid, "label": f"exchange {n}"}
        for cid in chain_ids
        for n, address in enumerate((RECIPIENT, SECOND))
    ]
    return parse_policy(
        {
            "version": 1,
            "description": "payout test policy",
            "officers": [
                {"id": k.officer_id, "algorithm": k.algorithm, "public_key": k.public_key_hex}
                for k in officers.keys.values()
            ],
            "governance": {"quorum": 2, "freeze_quorum": 1, "loosening_timelock_seconds": 0},
            "groups": {"treasury": ["alice", "bob"]},
            "assets": assets,
            "wallets": [{"id": "hot", "tier": "hot", "chains": chain_ids}],
            "whitelists": {"exchanges": whitelist},
            "blacklist": [{"address": BLOCKED, "label": "sanctioned"}],
            "disperse_contracts": [
                {"chain_id": cid, "address": chains.disperse[cid]} for cid in chain_ids
            ],
            # far above what Hardhat asks (a few gwei): FEE_CEILING per gas
            "fee_ceilings": [
                {"chain_id": cid, "max_fee_per_gas_wei": FEE_CEILING} for cid in chain_ids
            ],
            "rules": [
                {
                    "id": "payouts",
                    "match": {
                        "destination": "whitelist:exchanges",
                        "assets": ["ETH", *TOKENS],
                        "amount": {"max": "1000"},
                        "initiators": [INITIATOR],
                    },
                    "action": "ALLOW",
                },
                {
                    "id": "large",
                    "match": {"destination": "whitelist:exchanges"},
                    "action": "REQUIRE_APPROVAL",
                    "approvals": {"group": "treasury", "k": 2},
                },
            ],
        },
        source="chain_world",
    )


def registry_for(
    chains: Chains, only: Iterable[int] | None = None, **overrides: Any
) -> ChainRegistry:
    """The registry of the world's chains (of `only` these, when given)."""
    entries = []
    for cid in sorted(chains.local if only is None else set(only) & set(chains.local)):
        node = chains.hardhat.get(cid)
        entries.append(
            {
                "chain_id": cid,
                "name": f"local {cid}",
                "native": {"symbol": "ETH", "decimals": 18},
                # the in-process chain has no URL: its ChainRpc is handed over directly
                "rpc_urls": [node.url if node else "http://127.0.0.1:9"],
                "confirmations": 1,
                "fee_model": "eip1559",
                "fee_ceiling_wei": 10**12,
                "tokens": {
                    symbol: {"address": chains.token(cid, symbol), "decimals": decimals}
                    for symbol, decimals in TOKENS.items()
                },
                "disperse": chains.disperse[cid],
                **overrides.get(str(cid), {}),
            }
        )
    return parse_registry({"chains": entries}, "chain_world")


@dataclass
class World:
    chains: Chains
    cluster: LocalCluster
    policy: PolicyDocument
    sender: str
    officers: Officers

    @asynccontextmanager
    async def engine(
        self, registry: ChainRegistry | None = None, cls: Callable[..., PayoutEngine] = PayoutEngine
    ) -> AsyncIterator[PayoutEngine]:
        """A payout engine on a fresh coordinator (its own clients and RPC sessions, as after a
        restart) over the cluster's coordinator database."""
        coordinator = self.cluster.coordinator()
        rpcs: dict[int, ChainRpc] = {cid: chain.rpc() for cid, chain in self.chains.local.items()}
        engine = cls(coordinator, registry or registry_for(self.chains), rpcs)
        try:
            yield engine
        finally:
            await coordinator.aclose()
            for rpc in rpcs.values():
                await rpc.aclose()

    def fund(self, address: str, eth: int = 100) -> None:
        for cid, chain in self.chains.local.items():
            chain.fund(address, eth * ETHER)
            for symbol, decimals in TOKENS.items():
                data = encode_transfer(address, 10**6 * 10**decimals)
                chain.call_from_faucet(self.chains.token(cid, symbol), data)


def make_world(root: Path, presignatures: int) -> World:
    chains = start_chains(root)
    try:
        officers = Officers.make()
        policy = payout_policy(officers, chains)
        store = officers_store(root / "officers.db", officers, policy)
        cluster = make_cluster(root, genesis_policy=policy.policy_hash(), raw_keys=False)
        asyncio.run(cluster.up())
    except BaseException:
        for node in chains.hardhat.values():
            node.stop()
        raise
    try:

        async def setup() -> str:
            coordinator = cluster.coordinator()
            try:
                await coordinator.relay_governance(governance_bundle(store))
                hot = await coordinator.create_wallet("hot", policy_wallet="hot")
                await coordinator.fill_pool(hot, (1, 2), (), presignatures)
                engine = PayoutEngine(coordinator, registry_for(chains), {})
                return engine.sender_of("hot", ())
            finally:
                await coordinator.aclose()

        sender = asyncio.run(setup())
        world = World(chains, cluster, policy, sender, officers)
        world.fund(sender)
        return world
    except BaseException:
        cluster.down()
        for node in chains.hardhat.values():
            node.stop()
        raise
    finally:
        store.close()


def stop_world(world: World) -> None:
    world.cluster.down()
    for node in world.chains.hardhat.values():
        node.stop()


def registry_file(world: World, path: Path) -> Path:
    """The chain registry of the two Hardhat nodes as an operator writes it (TOML)."""
    entries = []
    for cid in (CHAIN_A, CHAIN_B):
        node = world.chains.hardhat[cid]
        tokens = ", ".join(
            f'{s} = {{ address = "{world.chains.token(cid, s)}", decimals = {d} }}'
            for s, d in TOKENS.items()
        )
        entries.append(
            f'[[chains]]\nchain_id = {cid}\nname = "local {cid}"\n'
            f'native = {{ symbol = "ETH", decimals = 18 }}\nrpc_urls = ["{node.url}"]\n'
            f'confirmations = 1\nfee_model = "eip1559"\nfee_ceiling_wei = 1_000_000_000_000\n'
            f'disperse = "{world.chains.disperse[cid]}"\n'
            f"tokens = {{ {tokens} }}\n"
        )
    path.write_text("\n".join(entries))
    return path
