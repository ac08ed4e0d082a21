"""`tessera demo`: the whole engine on one machine, end to end, with the policy enforced in
every node.

Sets up (once) three demo officers (Ed25519 key files, quorum 2) and their policy store, a demo
policy for a hot wallet on the in-process EVM (whitelisted exchange, 1 ETH without approvals,
more with 2 treasury approvals), and a local 2-of-3 cluster under a directory — three SoftHSM2
tokens, three SQLite files, node identity keys, the pinned roster, the policy's genesis hash
pinned on every node.  Then it starts the node processes; the officers activate the policy and
push it to the nodes; it creates the wallet (aux-info + DKG, bound to the policy's wallet on
every node), fills a presignature pool and funds the wallet on an in-process EVM (eth-tester /
py-evm), and:

1. a whitelisted 0.5 ETH transfer: each node decodes it, evaluates the policy, signs; mined;
2. a transfer to an address off the whitelist: refused by the nodes, with their reason;
3. a 2 ETH transfer to the whitelisted exchange: two officers approve it with the CLI
   (`tessera officer approve-withdrawal`), the nodes count the approvals, sign; mined;
4. a 250 USDT payout (a 6-decimal ERC-20 compiled from coordinator/contracts/Token.sol and
   deployed on the chain) through the payout engine: fees from `eth_feeHistory` under the
   registry's ceiling, gas from `eth_estimateGas`, a nonce reserved durably, signed by the nodes
   (each decodes the `transfer` call itself), stored, sent and confirmed;
5. a customer's deposit address (a BIP32 child of the wallet's key, no MPC round) receives
   40 USDT and is swept to the wallet: the wallet sends it the ether for gas first, then the
   deposit address's own derived share signs the sweep; the nodes sign both only as transfers
   between the wallet's own addresses.

A second run reuses the officers, the policy, the cluster, the wallet and the pool.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from eth_keys.datatypes import PrivateKey

from coordinator.cluster import CLUSTER_FILE, LocalCluster
from coordinator.deposits import DEPOSIT_BRANCH, DepositAddresses
from coordinator.engine import Coordinator, SigningFailed, SignOutcome
from coordinator.evm_chain import InProcessChain
from coordinator.fees import FeeLevel
from coordinator.payouts import PayoutEngine, PayoutRequest, PayoutState
from coordinator.registry import ChainRegistry, local_registry
from coordinator.store import CoordinatorStoreError, WalletRow
from policies.approvals import Approval, load_approval
from policies.document import PolicyDocument, parse_policy
from policies.errors import StoreNotFoundError
from policies.keys import MIN_SCRYPT_N, LocalOfficerSigner, create_key_file, load_key_file
from policies.push import governance_bundle, push_to
from policies.store import PolicyStore
from signer.chains.erc20 import encode_transfer
from signer.chains.evm import Eip1559Transfer, address_of, recover_sender
from signer.errors import TesseraError
from signer.node import codec
from signer.protocol.sign import Signature

T = TypeVar("T")
WALLET = "demo-hot-wallet"  # the coordinator's name for the wallet
POLICY_WALLET = "demo-hot"  # the policy's wallet the nodes bind its key to
OFFICERS = ("alice", "bob", "carol")
INITIATOR = "withdrawal-service"
ETHER = 10**18


class DemoFailed(TesseraError):
    pass


@dataclass
class Phase:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoReport:
    root: Path
    reused_cluster: bool
    phases: list[Phase] = field(default_factory=list)
    wallet_address: str = ""
    recipient: str = ""
    signers: tuple[int, ...] = ()
    signature: Signature | None = None
    raw_transaction: bytes = b""
    transaction_hash: bytes = b""
    recovered: str = ""
    balances_before: dict[str, int] = field(default_factory=dict)
    balances_after: dict[str, int] = field(default_factory=dict)
    gas_fee: int = 0
    pool_left: int = 0
    policy_hash: str = ""
    refused: dict[str, object] = field(default_factory=dict)  # the nodes' reason, transfer 2
    large_transaction_hash: bytes = b""
    large_approved_by: tuple[str, ...] = ()
    large_signers: tuple[int, ...] = ()
    token: str = ""  # the demo USDT contract
    token_payout: dict[str, object] = field(default_factory=dict)
    token_balances: dict[str, tuple[int, int]] = field(default_factory=dict)  # before, after
    sweep: dict[str, object] = field(default_factory=dict)


#: Told the name of each phase as it starts (the CLI shows it as progress).
ProgressCallback = Callable[[str], None]


def no_progress(_: str) -> None:
    return None


class _Phased(Protocol):
    root: Path
    reused_cluster: bool
    phases: list[Phase]


async def timed(
    report: _Phased,
    progress: ProgressCallback,
    name: str,
    fn: Callable[[], Awaitable[T]],
    detail: str = "",
) -> T:
    progress(name)
    start = time.perf_counter()
    result = await fn()
    report.phases.append(Phase(name, time.perf_counter() - start, detail))
    return result


class DemoOfficers:
    """The demo's three officers: key files (scrypt at its minimum cost, so the demo stays
    quick; real officers use the default or a token) under one passphrase file, and their
    policy store."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "officers"
        self.passphrase = self.dir / "passphrase"
        self.store_path = self.dir / "policy.db"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def exists(self) -> bool:
        return self.store_path.exists()

    def create(self, chain_id: int, token: str) -> PolicyDocument:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(24)
        self.passphrase.write_text(secret + "\n")
        self.passphrase.chmod(0o600)
        signers = {
            name: create_key_file(
                self.key(name), name, "ed25519", secret.encode(), scrypt_n=MIN_SCRYPT_N
            )
            for name in OFFICERS
        }
        exchange = str(PrivateKey(secrets.token_bytes(32)).public_key.to_checksum_address())
        policy = demo_policy(
            [(name, signer.public_key_hex) for name, signer in signers.items()],
            chain_id,
            exchange,
            token,
        )
        self._activate(policy, signers)
        return policy

    def _activate(self, policy: PolicyDocument, signers: dict[str, LocalOfficerSigner]) -> None:
        store = PolicyStore(self.store_path)
        try:
            now = _now()
            store.propose(policy, source="tessera demo", now=now)
            for name in ("alice", "bob"):  # quorum 2 of the 3
                store.sign_policy(signers[name], policy_hash=policy.policy_hash(), now=now)
            store.activate(policy_hash=policy.policy_hash(), now=now)
        finally:
            store.close()

    def for_chain(self, policy: PolicyDocument, chain_id: int, token: str) -> PolicyDocument:
        """The policy in force if it is for `chain_id` with `token` as the demo's USDT there;
        otherwise the officers activate a next version that is (a demo directory made by an
        older Tessera, a token deployed elsewhere, or the other demo's chain: the in-process
        EVM of `demo --engine`, the Hardhat node of `demo`)."""
        usdt = policy.assets.get("USDT")
        on_chain = chain_id in (policy.wallets[0].chains or ())
        if on_chain and usdt is not None and usdt.contract_on(chain_id) == token:
            return policy
        secret = self.passphrase.read_text().strip().encode()
        signers = {name: load_key_file(self.key(name), secret) for name in OFFICERS}
        officers = [(o.id, o.public_key) for o in policy.officers]
        upgraded = demo_policy(
            officers,
            chain_id,
            exchange_of(policy),
            token,
            version=policy.version + 1,
            previous=policy.policy_hash(),
        )
        self._activate(upgraded, signers)
        return upgraded

    def policy(self) -> PolicyDocument:
        if not self.exists():
            raise StoreNotFoundError(str(self.store_path))
        store = PolicyStore(self.store_path)
        try:
            return store.in_force(now=_now()).document
        finally:
            store.close()

    def push(self, urls: Sequence[str]) -> list[str]:
        """Push the chain to every node, as an officer would (no coordinator)."""
        store = PolicyStore(self.store_path)
        try:
            bundle = governance_bundle(store)
        finally:
            store.close()
        refused = [r for r in (push_to(url, bundle) for url in urls) if not r.accepted]
        if refused:
            raise DemoFailed("; ".join(f"{r.node}: {r.code} {r.detail}" for r in refused))
        return list(urls)

    def approve_with_cli(self, name: str, intent: dict[str, object]) -> Approval:
        """`tessera officer approve-withdrawal` for `intent`, as officer `name` would run it."""
        request = self.dir / f"request-{intent['request_id']}.json"
        out = self.dir / f"approval-{intent['request_id']}-{name}.json"
        request.write_text(json.dumps(intent, indent=2) + "\n")
        command = [
            sys.executable,
            "-m",
            "coordinator",
            "officer",
            "approve-withdrawal",
            str(request),
            "--key",
            str(self.key(name)),
            "--passphrase-file",
            str(self.passphrase),
            "--store",
            str(self.store_path),
            "--out",
            str(out),
            "--json",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
        if done.returncode != 0:
            raise DemoFailed(f"officer {name} could not approve: {done.stdout or done.stderr}")
        return load_approval(out)


def demo_policy(
    officers: Sequence[tuple[str, str]],
    chain_id: int,
    exchange: str,
    token: str,
    *,
    version: int = 1,
    previous: str | None = None,
) -> PolicyDocument:
    """The demo policy: the hot wallet on the EVM's chain; up to 1 ETH or 1,000 USDT (the
    demo token `token`) to the whitelisted exchange from the withdrawal service without
    approvals, more with 2 of the treasury."""
    document: dict[str, Any] = {
        "version": version,
        "description": "Tessera demo policy",
        "officers": [
            {"id": name, "algorithm": "ed25519", "public_key": key} for name, key in officers
        ],
        "governance": {"quorum": 2, "freeze_quorum": 1, "loosening_timelock_seconds": 0},
        "groups": {"treasury": [name for name, _ in officers]},
        "assets": {
            "ETH": {"decimals": 18, "native_chains": [chain_id]},
            "USDT": {"decimals": 6, "contracts": [{"chain_id": chain_id, "address": token}]},
        },
        "wallets": [{"id": POLICY_WALLET, "tier": "hot", "chains": [chain_id]}],
        "whitelists": {
            "exchanges": [{"address": exchange, "chain_id": chain_id, "label": "Exchange"}]
        },
        "rules": [
            {
                "id": "small-to-exchanges",
                "match": {
                    "destination": "whitelist:exchanges",
                    "assets": ["ETH"],
                    "amount": {"max": "1"},
                    "initiators": [INITIATOR],
                },
                "action": "ALLOW",
            },
            {
                "id": "usdt-to-exchanges",
                "match": {
                    "destination": "whitelist:exchanges",
                    "assets": ["USDT"],
                    "amount": {"max": "1000"},
                    "initiators": [INITIATOR],
                },
                "action": "ALLOW",
            },
            {
                "id": "large-to-exchanges",
                "match": {"destination": "whitelist:exchanges"},
                "action": "REQUIRE_APPROVAL",
                "approvals": {"group": "treasury", "k": 2},
            },
        ],
        "velocity_limits": [
            {
                "id": "hot-daily",
                "wallet": POLICY_WALLET,
                "asset": "ETH",
                "window_seconds": 86400,
                "max_amount": "1000",
            }
        ],
    }
    if previous is not None:
        document["previous"] = previous
    return parse_policy(document, source="tessera demo")


def _now() -> datetime:
    return datetime.now(UTC)


def exchange_of(policy: PolicyDocument) -> str:
    return policy.whitelists["exchanges"][0].address


async def demo_cluster(
    report: _Phased,
    progress: ProgressCallback,
    officers: DemoOfficers,
    document: PolicyDocument,
    pool_depth: int,
    prime_pools: dict[int, Path] | None,
    base_port: int,
) -> tuple[LocalCluster, Coordinator, WalletRow]:
    """The demo's 2-of-3 cluster under `report.root` (set up on first run), its node processes
    started with the officers' policy pushed to them, its wallet (created on first run) and a
    presignature pool of `pool_depth`: each step a timed phase of `report`."""
    root = report.root

    async def setup() -> LocalCluster:
        if report.reused_cluster:
            return LocalCluster.load(root)
        return LocalCluster.create(
            root,
            3,
            2,
            base_port=base_port,
            prime_pools=prime_pools,
            genesis_policy=document.policy_hash(),
        )

    cluster = await timed(
        report,
        progress,
        "cluster (reused)" if report.reused_cluster else "cluster set-up",
        setup,
        str(root)
        if report.reused_cluster
        else "3 SoftHSM2 tokens, identity keys, databases, genesis policy pinned",
    )
    await timed(report, progress, "start 3 node processes", cluster.up, "pin roster, wait healthy")

    async def push() -> list[str]:
        return officers.push([node.url for node in cluster.nodes])

    await timed(
        report, progress, "officers push the policy to the nodes", push, "no coordinator involved"
    )
    coordinator = cluster.coordinator()
    try:

        async def wallet() -> WalletRow:
            try:
                return coordinator.store.wallet(WALLET)
            except CoordinatorStoreError:
                return await coordinator.create_wallet(WALLET, policy_wallet=POLICY_WALLET)

        try:
            existing = coordinator.store.wallet(WALLET)
        except CoordinatorStoreError:
            existing = None
        row = await timed(
            report,
            progress,
            "create wallet" if existing is None else "wallet (reused)",
            wallet,
            f"aux-info (fresh safe primes) + 2-of-3 DKG, bound to {POLICY_WALLET}"
            if existing is None
            else "",
        )
        made = await timed(
            report,
            progress,
            "fill presignature pool",
            lambda: coordinator.fill_pool(row, (1, 2), (), pool_depth),
            f"signers 1,2 to depth {pool_depth}",
        )
        report.phases[-1].detail += f" ({made} new)"
    except BaseException:
        await coordinator.aclose()
        cluster.down()
        raise
    return cluster, coordinator, row


async def run_cluster_demo(
    root: Path,
    pool_depth: int = 3,
    keep_running: bool = False,
    prime_pools: dict[int, Path] | None = None,
    base_port: int = 18100,
    progress: ProgressCallback = no_progress,
) -> DemoReport:
    reused = (root / CLUSTER_FILE).exists()
    report = DemoReport(root, reused)
    officers = DemoOfficers(root)
    chain = InProcessChain()
    # The faucet's first transaction on a fresh chain: the same contract address every run.
    report.token = chain.deploy_token("Demo Tether USD", "USDT", 6, 10**9 * 10**6)

    async def policy() -> PolicyDocument:
        if officers.exists():
            return officers.for_chain(officers.policy(), chain.chain_id, report.token)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return officers.create(chain.chain_id, report.token)

    document = await timed(
        report,
        progress,
        "officers and policy" if not officers.exists() else "officers and policy (reused)",
        policy,
        "3 officer keys, quorum 2; version 1 signed by alice and bob",
    )
    if chain.chain_id not in (document.wallets[0].chains or ()):
        raise DemoFailed(f"the demo policy in {officers.dir} is for another chain id")
    report.policy_hash = document.policy_hash()
    exchange = exchange_of(document)

    cluster, coordinator, row = await demo_cluster(
        report, progress, officers, document, pool_depth, prime_pools, base_port
    )
    try:
        key = codec.decode_key_public(row.key_public)
        report.wallet_address = str(address_of(key.public_key))
        report.recipient = exchange

        async def fund() -> None:
            chain.fund(report.wallet_address, 10 * ETHER)
            chain.call_from_faucet(
                report.token, encode_transfer(report.wallet_address, 10_000 * USDT)
            )

        await timed(
            report, progress, "fund wallet on the in-process EVM", fund, "10 ETH, 10,000 USDT"
        )
        report.balances_before = {
            report.wallet_address: chain.balance(report.wallet_address),
            exchange: chain.balance(exchange),
        }
        value = ETHER // 2
        small = _transfer(chain, report.wallet_address, exchange, value)
        outcome = await timed(
            report,
            progress,
            "whitelisted 0.5 ETH: signed by the nodes",
            lambda: _sign(coordinator, small, _request_id()),
            "each node decodes the transaction and evaluates the policy",
        )
        report.signers = outcome.signers
        report.signature = outcome.signature
        report.raw_transaction = small.attach(outcome.signature)
        report.recovered = str(recover_sender(report.raw_transaction))
        if report.recovered != report.wallet_address:  # attach() checked it; say so if not
            raise DemoFailed(f"signed transaction recovers to {report.recovered}")

        async def submit() -> bytes:
            return chain.send_raw(report.raw_transaction)

        report.transaction_hash = await timed(
            report, progress, "submit to the EVM", submit, "mined"
        )
        report.gas_fee = chain.receipt(report.transaction_hash).fee

        stranger = str(PrivateKey(secrets.token_bytes(32)).public_key.to_checksum_address())
        off_list = _transfer(chain, report.wallet_address, stranger, value)

        async def refused() -> dict[str, object]:
            try:
                await _sign(coordinator, off_list, _request_id())
            except SigningFailed as exc:
                if exc.refusal is None:
                    raise
                problem = getattr(exc.refusal, "problem", None)
                return {} if problem is None else problem.model_dump(exclude_none=True)
            raise DemoFailed("the nodes signed a transfer off the whitelist")

        report.refused = await timed(
            report,
            progress,
            "0.5 ETH off the whitelist: refused by the nodes",
            refused,
            "the nodes' own policy decision",
        )
        large = _transfer(chain, report.wallet_address, exchange, 2 * ETHER)
        request_id = _request_id()
        claim = {
            "request_id": request_id,
            "wallet": POLICY_WALLET,
            "chain_id": chain.chain_id,
            "asset": "ETH",
            "destination": exchange,
            "amount": "2",
            "initiator": INITIATOR,
        }

        async def approvals() -> list[Approval]:
            return [officers.approve_with_cli(name, claim) for name in ("alice", "bob")]

        approved = await timed(
            report,
            progress,
            "2 ETH: two officers approve with the CLI",
            approvals,
            "tessera officer approve-withdrawal (alice, bob)",
        )
        report.large_approved_by = tuple(a.officer for a in approved)
        large_outcome = await timed(
            report,
            progress,
            "2 ETH: signed by the nodes with the approvals",
            lambda: _sign(coordinator, large, request_id, approved),
            "each node verifies the approvals itself",
        )
        report.large_signers = large_outcome.signers
        report.large_transaction_hash = chain.send_raw(large.attach(large_outcome.signature))
        report.gas_fee += chain.receipt(report.large_transaction_hash).fee
        report.balances_after = {
            report.wallet_address: chain.balance(report.wallet_address),
            exchange: chain.balance(exchange),
        }
        report.token_payout = await timed(
            report,
            progress,
            "250 USDT: the payout engine",
            lambda: _token_payout(coordinator, chain, report, exchange),
            "fees from eth_feeHistory, nonce reserved, signed by the nodes, sent, confirmed",
        )
        report.sweep = await timed(
            report,
            progress,
            "sweep a deposit address: 40 USDT",
            lambda: _sweep(coordinator, chain, report),
            "gas from the wallet first, then the deposit address's derived share signs",
        )
        report.pool_left = coordinator.store.pool_depth(row.key_id, row.epoch, "1,2", "")
    finally:
        await coordinator.aclose()
        if not keep_running:
            cluster.down()
    return report


USDT = 10**6


def demo_registry(chain_id: int, token: str) -> ChainRegistry:
    """The chain registry of the demo: the in-process chain, its USDT, a 1,000 gwei ceiling
    (the in-process chain has no URL: the engine gets its ChainRpc directly)."""
    return local_registry(chain_id, "in-process EVM", "http://127.0.0.1:8545", {"USDT": (token, 6)})


async def _token_payout(
    coordinator: Coordinator, chain: InProcessChain, report: DemoReport, exchange: str
) -> dict[str, object]:
    rpc = chain.rpc()
    engine = PayoutEngine(
        coordinator, demo_registry(chain.chain_id, report.token), {chain.chain_id: rpc}
    )
    # The in-process chain is new on every run; the coordinator's record of the last one is not.
    engine.nonces.forget(chain.chain_id, report.wallet_address)
    holders = (report.wallet_address, exchange)
    before = {a: chain.token_balance(report.token, a) for a in holders}
    request = PayoutRequest(
        payout_id=_request_id(),
        wallet=WALLET,
        chain_id=chain.chain_id,
        asset="USDT",
        destination=exchange,
        amount="250",
        initiator=INITIATOR,
        fee_level=FeeLevel.MEDIUM,
    )
    try:
        await engine.pay(request)
        row = await engine.wait(request.payout_id, timeout=30)
    finally:
        await rpc.aclose()
    if row.state != PayoutState.CONFIRMED:
        raise DemoFailed(f"the USDT payout ended {row.state}: {row.reason}")
    report.token_balances = {a: (before[a], chain.token_balance(report.token, a)) for a in holders}
    return {
        "payout_id": row.payout_id,
        "state": row.state,
        "nonce": row.nonce,
        "tx_hash": row.tx_hash,
        "block": row.block_number,
        "fee": chain.receipt(bytes.fromhex((row.tx_hash or "0x")[2:])).fee,
    }


#: the customer reference of the demo's deposit address (the same address every run: the chain
#: is new every run)
DEMO_CUSTOMER = "demo-customer-1"


async def _sweep(
    coordinator: Coordinator, chain: InProcessChain, report: DemoReport
) -> dict[str, object]:
    rpc = chain.rpc()
    engine = PayoutEngine(
        coordinator, demo_registry(chain.chain_id, report.token), {chain.chain_id: rpc}
    )
    [deposit] = DepositAddresses(coordinator.store).assign(WALLET, [DEMO_CUSTOMER])
    engine.nonces.forget(chain.chain_id, deposit.address)  # a new chain: its nonces start at 0
    chain.call_from_faucet(report.token, encode_transfer(deposit.address, 40 * USDT))
    home = chain.token_balance(report.token, report.wallet_address)
    sweep_id = _request_id()
    try:
        await engine.sweep(
            sweep_id,
            WALLET,
            chain.chain_id,
            "USDT",
            (DEPOSIT_BRANCH, deposit.child),
            INITIATOR,
        )
        row = await engine.wait(sweep_id, timeout=30)
    finally:
        await rpc.aclose()
    if row.state != PayoutState.CONFIRMED:
        raise DemoFailed(f"the sweep ended {row.state}: {row.reason}")
    gas = [r for r in engine.payouts() if r.for_payout == sweep_id]
    return {
        "customer_ref": DEMO_CUSTOMER,
        "deposit_address": deposit.address,
        "payout_id": row.payout_id,
        "state": row.state,
        "tx_hash": row.tx_hash,
        "gas_payouts": [
            {"payout_id": g.payout_id, "amount": g.amount, "state": g.state} for g in gas
        ],
        "swept_units": chain.token_balance(report.token, report.wallet_address) - home,
        "left_at_deposit_address": chain.token_balance(report.token, deposit.address),
    }


def _request_id() -> str:
    return f"demo-{secrets.token_hex(8)}"


def _transfer(chain: InProcessChain, sender: str, to: str, value: int) -> Eip1559Transfer:
    priority, max_fee = chain.suggest_fees()
    return Eip1559Transfer(
        chain_id=chain.chain_id,
        nonce=chain.nonce(sender),
        max_priority_fee_per_gas=priority,
        max_fee_per_gas=max_fee,
        gas=21_000,
        to=to,
        value=value,
    )


async def _sign(
    coordinator: Coordinator,
    transfer: Eip1559Transfer,
    request_id: str,
    approvals: Sequence[Approval] = (),
) -> SignOutcome:
    return await coordinator.sign_transaction(
        WALLET,
        transfer.signing_payload(),
        request_id=request_id,
        initiator=INITIATOR,
        approvals=approvals,
        preferred=(1, 2),
    )
