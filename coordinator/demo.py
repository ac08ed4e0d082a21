"""`tessera demo`: the whole engine on one machine, end to end.

Sets up (once) a local 2-of-3 cluster under a directory — three SoftHSM2 tokens, three SQLite
files, node identity keys, the pinned roster — starts the three node processes, creates a
wallet (aux-info + DKG across the nodes), fills a presignature pool, builds an EIP-1559 ETH
transfer from the wallet's address, signs it through the nodes, checks that the signed
transaction recovers to the wallet's address, submits it to an in-process EVM (eth-tester /
py-evm) funded for the purpose, and reports balances and per-phase timings.  A second run
reuses the cluster, the wallet and whatever is left in the pool.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from eth_keys.datatypes import PrivateKey

from coordinator.cluster import CLUSTER_FILE, LocalCluster
from coordinator.evm_chain import InProcessChain
from coordinator.store import CoordinatorStoreError, WalletRow
from signer.chains.evm import Eip1559Transfer, address_of, recover_sender
from signer.errors import TesseraError
from signer.node import codec
from signer.protocol.sign import HashScheme, Signature

T = TypeVar("T")
WALLET = "demo-hot-wallet"
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


#: Told the name of each phase as it starts (the CLI shows it as progress).
ProgressCallback = Callable[[str], None]


def _no_progress(_: str) -> None:
    return None


async def _timed(
    report: DemoReport,
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


async def run_cluster_demo(
    root: Path,
    pool_depth: int = 3,
    keep_running: bool = False,
    prime_pools: dict[int, Path] | None = None,
    base_port: int = 18100,
    progress: ProgressCallback = _no_progress,
) -> DemoReport:
    reused = (root / CLUSTER_FILE).exists()
    report = DemoReport(root, reused)

    async def setup() -> LocalCluster:
        if reused:
            return LocalCluster.load(root)
        return LocalCluster.create(root, 3, 2, base_port=base_port, prime_pools=prime_pools)

    cluster = await _timed(
        report,
        progress,
        "cluster set-up" if not reused else "cluster (reused)",
        setup,
        "3 SoftHSM2 tokens, identity keys, databases" if not reused else str(root),
    )
    await _timed(report, progress, "start 3 node processes", cluster.up, "pin roster, wait healthy")
    coordinator = cluster.coordinator()
    try:

        async def wallet() -> WalletRow:
            try:
                return coordinator.store.wallet(WALLET)
            except CoordinatorStoreError:
                return await coordinator.create_wallet(WALLET)

        try:
            existing = coordinator.store.wallet(WALLET)
        except CoordinatorStoreError:
            existing = None
        row = await _timed(
            report,
            progress,
            "create wallet" if existing is None else "wallet (reused)",
            wallet,
            "aux-info (fresh safe primes) + 2-of-3 DKG" if existing is None else "",
        )
        key = codec.decode_key_public(row.key_public)
        report.wallet_address = str(address_of(key.public_key))
        made = await _timed(
            report,
            progress,
            "fill presignature pool",
            lambda: coordinator.fill_pool(row, (1, 2), (), pool_depth),
            f"signers 1,2 to depth {pool_depth}",
        )
        report.phases[-1].detail += f" ({made} new)"

        chain = InProcessChain()
        # a fresh address nobody holds a key to after this line: the transfer's recipient
        recipient = str(PrivateKey(secrets.token_bytes(32)).public_key.to_checksum_address())
        report.recipient = recipient

        async def fund() -> None:
            chain.fund(report.wallet_address, 10 * ETHER)

        await _timed(report, progress, "fund wallet on the in-process EVM", fund, "10 ETH")
        report.balances_before = {
            report.wallet_address: chain.balance(report.wallet_address),
            recipient: chain.balance(recipient),
        }
        priority, max_fee = chain.suggest_fees()
        transfer = Eip1559Transfer(
            chain_id=chain.chain_id,
            nonce=chain.nonce(report.wallet_address),
            max_priority_fee_per_gas=priority,
            max_fee_per_gas=max_fee,
            gas=21_000,
            to=recipient,
            value=ETHER + ETHER // 2,
        )
        outcome = await _timed(
            report,
            progress,
            "sign the transaction through the nodes",
            lambda: coordinator.sign(
                WALLET, transfer.signing_payload(), HashScheme.KECCAK256, preferred=(1, 2)
            ),
            "one round: partials from 2 nodes, combined and verified",
        )
        report.signers = outcome.signers
        report.signature = outcome.signature
        report.raw_transaction = transfer.attach(outcome.signature)
        report.recovered = str(recover_sender(report.raw_transaction))
        if report.recovered != report.wallet_address:  # attach() checked it; say so if not
            raise DemoFailed(f"signed transaction recovers to {report.recovered}")

        async def submit() -> bytes:
            return chain.send_raw(report.raw_transaction)

        report.transaction_hash = await _timed(
            report, progress, "submit to the EVM", submit, "mined"
        )
        receipt = chain.receipt(report.transaction_hash)
        report.gas_fee = receipt.fee
        report.balances_after = {
            report.wallet_address: chain.balance(report.wallet_address),
            recipient: chain.balance(recipient),
        }
        report.pool_left = coordinator.store.pool_depth(row.key_id, row.epoch, "1,2", "")
    finally:
        await coordinator.aclose()
        if not keep_running:
            cluster.down()
    return report
