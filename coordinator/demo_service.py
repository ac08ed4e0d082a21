"""`tessera demo`: the product end to end, as an exchange uses it — over HTTP.

It sets up (once, under the demo directory) the demo officers and their policy, the 2-of-3
cluster and its wallet (`coordinator.demo.demo_cluster`), then starts a local Hardhat node (a
real JSON-RPC Ethereum node; it starts empty on every run), deploys the demo USDT (compiled
from coordinator/contracts/Token.sol) and funds the wallet.  It creates two API clients with
`tessera api-client create` (the exchange's withdrawal service; the officers' console), starts
`tessera serve` as its own process with a local webhook receiver, and then, as the exchange
would, submits withdrawals over HTTP with the Python client:

1. 0.5 ETH to the whitelisted exchange: screened, checked, signed by the nodes, mined;
2. 250 USDT to the exchange: the nodes decode the token call themselves; mined;
3. 0.5 ETH to an address off the whitelist: REJECTED with the nodes' own reason;
4. 2 ETH to the exchange: waits in PENDING_APPROVAL until two officers approve it with
   `tessera officer approve WITHDRAWAL_ID --server URL`; then signed and mined.

It prints what the webhook receiver got (each delivery's signature verified), the balances
before and after, and the timings of each phase and of each withdrawal's statuses.

A second run reuses the officers, the policy, the cluster, the wallet, the pool and the API
clients.  Hardhat's chain is new on every run, so what the coordinator recorded of the last
run's chain is dropped first (`NonceManager.forget`: a development chain only), and a
withdrawal a broken earlier run left unfinished is FAILED with its reason, not resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Final

import httpx
from eth_keys.datatypes import PrivateKey
from sqlmodel import col, select

from coordinator.api.auth import load_private_key
from coordinator.api.client import AsyncTesseraClient
from coordinator.api.lifecycle import TERMINAL, Status, SubStatus
from coordinator.api.models import Withdrawal, WithdrawalCreate
from coordinator.api.server import WEBHOOK_KEY_FILE
from coordinator.api.tables import WithdrawalEventRow, WithdrawalRow
from coordinator.api.webhooks import (
    WebhookDispatcher,
    WebhookVerificationError,
    load_or_create_signing_key,
    verify_webhook,
)
from coordinator.api.withdrawals import view
from coordinator.cluster import CLUSTER_FILE, LocalCluster
from coordinator.demo import (
    ETHER,
    USDT,
    WALLET,
    DemoFailed,
    DemoOfficers,
    Phase,
    ProgressCallback,
    demo_cluster,
    exchange_of,
    no_progress,
    timed,
)
from coordinator.evm_chain import LocalChain
from coordinator.hardhat import HardhatNode
from coordinator.nonces import NonceManager
from coordinator.payouts import PayoutEngine
from coordinator.ports import free_port
from coordinator.registry import local_registry, registry_toml
from coordinator.store import CoordinatorStore
from policies.document import PolicyDocument
from signer.chains.erc20 import encode_transfer

CHAIN_ID: Final = 31337  # Hardhat's own
#: the receiver's path: an endpoint of an earlier run left enabled is recognised by it
HOOK_PATH: Final = "/tessera-demo/webhooks"
CLIENTS: Final = {
    "demo-exchange": ("withdrawals:create", "withdrawals:read"),
    "demo-officers": ("approvals:write", "withdrawals:read"),
}
SERVICE_START: Final = 120.0  # s for `tessera serve` to listen and be ready
WITHDRAWAL_TIMEOUT: Final = 120.0


@dataclass
class DemoWithdrawal:
    """One withdrawal of the demo as the API reported it, with its statuses' times."""

    label: str
    withdrawal: Withdrawal
    #: each status reached, in order, with ms since the submission was stored
    timeline: list[tuple[str, float]] = field(default_factory=list)
    approved_by: list[str] = field(default_factory=list)
    #: ms from the POST to its 202
    accepted_ms: float = 0.0


@dataclass
class ServiceDemoReport:
    root: Path
    reused_cluster: bool
    phases: list[Phase] = field(default_factory=list)
    service_url: str = ""
    chain_url: str = ""
    wallet_address: str = ""
    exchange: str = ""
    stranger: str = ""
    token: str = ""
    policy_hash: str = ""
    webhook_public_key: str = ""
    withdrawals: list[DemoWithdrawal] = field(default_factory=list)
    #: every delivery the receiver got, its signature verified, in the order received
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    #: address → asset → (before, after), in the asset's smallest unit
    balances: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    pool_left: int = 0


class WebhookReceiver:
    """The exchange's webhook receiver, on a free loopback port: it verifies each delivery
    with the service's public key (`verify_webhook`) and keeps it; a delivery that does not
    verify is answered 400 and counted."""

    def __init__(self) -> None:
        self.public_key: str | None = None
        self.received: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20))
                try:
                    if receiver.public_key is None:
                        raise WebhookVerificationError("public_key", "not known yet")
                    doc = verify_webhook(receiver.public_key, dict(self.headers), body)
                except WebhookVerificationError as exc:
                    with receiver._lock:
                        receiver.refused.append(f"{exc.check}: {exc}")
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.received.append(doc)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return None  # the demo prints what it received, not an access log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{HOOK_PATH}"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tessera(*args: str, timeout: float = 120) -> dict[str, Any]:
    """Run a `tessera` command with `--json` as an operator would; its JSON answer."""
    command = [sys.executable, "-m", "coordinator", *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if done.returncode != 0:
        raise DemoFailed(f"tessera {args[0]} {args[1]} exited {done.returncode}: {done.stdout}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def api_clients(root: Path) -> dict[str, tuple[str, Path]]:
    """The demo's API clients (name → key id, private key file): made on first run with
    `tessera api-client create`, then reused."""
    directory = root / "api-clients"
    directory.mkdir(mode=0o700, exist_ok=True)
    index = directory / "clients.json"
    known: dict[str, str] = json.loads(index.read_text()) if index.exists() else {}
    clients: dict[str, tuple[str, Path]] = {}
    for name, scopes in CLIENTS.items():
        key_file = directory / f"{name}.pem"
        if name not in known or not key_file.exists():
            if key_file.exists():  # a key whose id was never recorded: rotate to a new one
                key_file.unlink()
                made = _tessera(
                    "api-client", "rotate", name, "--db", str(root / "coordinator.db"),
                    "--out", str(key_file),
                )  # fmt: skip
            else:
                scope_args = [a for s in scopes for a in ("--scope", s)]
                made = _tessera(
                    "api-client", "create", name, *scope_args,
                    "--db", str(root / "coordinator.db"), "--out", str(key_file),
                )  # fmt: skip
            known[name] = str(made["key_id"])
            index.write_text(json.dumps(known, indent=2) + "\n")
        clients[name] = (known[name], key_file)
    return clients


def forget_previous_chain(store: CoordinatorStore, address: str) -> int:
    """Hardhat starts empty: drop the nonce counter and payouts of the last run's chain and
    FAIL (with an event) any withdrawal on it an interrupted run left unfinished; returns how
    many were failed."""
    NonceManager(store).forget(CHAIN_ID, address)
    failed = 0
    now = time.time()
    with store.session() as session:
        live = [s.value for s in Status if s not in TERMINAL]
        rows = session.exec(
            select(WithdrawalRow)
            .where(WithdrawalRow.chain_id == CHAIN_ID)
            .where(col(WithdrawalRow.status).in_(live))
        ).all()
        for row in rows:
            row.status = Status.FAILED.value
            row.sub_status = SubStatus.CHAIN_FAILED.value
            row.reason_code = "chain_reset"
            row.reason = "the demo's local chain was restarted before this withdrawal ended"
            row.updated_at = now
            session.add(row)
            session.add(
                WithdrawalEventRow(
                    withdrawal_id=row.withdrawal_id,
                    status=row.status,
                    sub_status=row.sub_status,
                    detail=view(row).model_dump_json(),
                    created_at=now,
                )
            )
            failed += 1
        session.commit()
    return failed


def disable_demo_endpoints(root: Path) -> None:
    """Disable the webhook endpoints of earlier runs' receivers (gone with their run)."""
    store = CoordinatorStore(root / "coordinator.db")
    try:
        dispatcher = WebhookDispatcher(store, load_or_create_signing_key(root / WEBHOOK_KEY_FILE))
        for endpoint in dispatcher.endpoints():
            if endpoint.url.endswith(HOOK_PATH):
                dispatcher.disable_endpoint(endpoint.endpoint_id)
    finally:
        store.close()


class ServiceProcess:
    """`tessera serve` as its own process: started, waited for, stopped with SIGTERM."""

    def __init__(self, root: Path, registry: Path, port: int, webhook: str, depth: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = root / "logs" / "service.log"
        self.log.parent.mkdir(exist_ok=True)
        command = [
            sys.executable, "-m", "coordinator", "serve", "--dir", str(root),
            "--registry", str(registry), "--port", str(port), "--webhook", webhook,
            "--pool-depth", str(depth), "--json",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process: subprocess.Popen[str] = subprocess.Popen(  # noqa: S603
                command, stdout=subprocess.PIPE, stderr=log, text=True
            )
        self.started: dict[str, Any] = {}

    def wait_ready(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.process.stdout
        # {"serving": …, "webhook_public_key": …} once it listens (stdout is a pipe: Popen's)
        line = stdout.readline() if stdout is not None else ""
        if not line:
            raise DemoFailed(f"tessera serve exited {self.process.wait()}; see {self.log}")
        self.started = json.loads(line)
        deadline = time.monotonic() + SERVICE_START
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):  # not listening yet: asked again
                if httpx.get(f"{self.url}/v1/readyz", timeout=2).status_code == 200:
                    return self.started
            time.sleep(0.2)
        raise DemoFailed(f"tessera serve was not ready within {SERVICE_START:.0f} s; {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


async def run_service_demo(
    root: Path,
    pool_depth: int = 4,
    keep_running: bool = False,
    prime_pools: dict[int, Path] | None = None,
    base_port: int = 18100,
    progress: ProgressCallback = no_progress,
    service_port: int | None = None,
) -> ServiceDemoReport:
    report = ServiceDemoReport(root, (root / CLUSTER_FILE).exists())
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    officers = DemoOfficers(root)
    hardhat = HardhatNode(CHAIN_ID)
    service: ServiceProcess | None = None
    receiver: WebhookReceiver | None = None
    cluster: LocalCluster | None = None
    try:

        async def local_chain() -> LocalChain:
            hardhat.start(log=root / "logs" / "hardhat.log")
            chain = LocalChain.connect(hardhat.url)
            # the faucet's first transaction on the empty chain: the same address every run
            report.token = chain.deploy_token("Demo Tether USD", "USDT", 6, 10**9 * USDT)
            return chain

        (root / "logs").mkdir(exist_ok=True)
        chain = await timed(
            report,
            progress,
            "start a local Hardhat node",
            local_chain,
            "JSON-RPC Ethereum node; USDT compiled from Token.sol and deployed",
        )
        report.chain_url = hardhat.url

        async def policy() -> PolicyDocument:
            if officers.exists():
                return officers.for_chain(officers.policy(), CHAIN_ID, report.token)
            return officers.create(CHAIN_ID, report.token)

        document = await timed(
            report,
            progress,
            "officers and policy" if not officers.exists() else "officers and policy (reused)",
            policy,
            "3 officer keys, quorum 2; activated by alice and bob",
        )
        report.policy_hash = document.policy_hash()
        report.exchange = exchange_of(document)
        report.stranger = str(PrivateKey(secrets.token_bytes(32)).public_key.to_checksum_address())
        cluster, coordinator, _wallet = await demo_cluster(
            report, progress, officers, document, pool_depth, prime_pools, base_port
        )
        registry = local_registry(
            CHAIN_ID, "local Hardhat", hardhat.url, {"USDT": (report.token, 6)}
        )
        try:
            report.wallet_address = PayoutEngine(coordinator, registry, {}).sender_of(WALLET, ())
            stale = forget_previous_chain(coordinator.store, report.wallet_address)
        finally:
            await coordinator.aclose()
        if stale:
            report.phases[-1].detail += f"; {stale} unfinished withdrawal(s) of a past run failed"

        async def fund() -> None:
            chain.fund(report.wallet_address, 10 * ETHER)
            chain.call_from_faucet(
                report.token, encode_transfer(report.wallet_address, 10_000 * USDT)
            )

        await timed(report, progress, "fund the wallet", fund, "10 ETH and 10,000 USDT on Hardhat")
        watched = (report.wallet_address, report.exchange, report.stranger)
        before = {
            a: {"ETH": chain.balance(a), "USDT": chain.token_balance(report.token, a)}
            for a in watched
        }

        async def clients() -> dict[str, tuple[str, Path]]:
            return api_clients(root)

        keys = await timed(
            report,
            progress,
            "API clients",
            clients,
            "tessera api-client create: the exchange (withdrawals) and the officers (approvals)",
        )
        registry_file = root / "chains.toml"
        registry_file.write_text(registry_toml(registry))
        disable_demo_endpoints(root)
        receiver = WebhookReceiver()
        port = service_port or free_port()

        async def serve() -> dict[str, Any]:
            nonlocal service
            service = ServiceProcess(root, registry_file, port, receiver.url, pool_depth)
            return service.wait_ready()

        started = await timed(
            report,
            progress,
            "start tessera serve",
            serve,
            "its own process: the API, its workers, the pool keeper, webhooks",
        )
        report.service_url = str(started["serving"])
        report.webhook_public_key = str(started["webhook_public_key"])
        receiver.public_key = report.webhook_public_key
        await _exchange_flow(report, progress, keys, officers, root)
        await timed(
            report,
            progress,
            "webhooks received",
            lambda: _await_webhooks(report, receiver),
            "each delivery's Ed25519 signature verified",
        )
        report.webhooks = receiver.events()
        for address in watched:
            after = {
                "ETH": chain.balance(address),
                "USDT": chain.token_balance(report.token, address),
            }
            report.balances[address] = {k: (before[address][k], after[k]) for k in after}
        report.pool_left = _pool_left(root)
    finally:
        if service is not None and not keep_running:
            service.stop()
        if receiver is not None:
            receiver.close()
            if not keep_running:
                disable_demo_endpoints(root)
        if not keep_running:
            if cluster is not None:
                cluster.down()
            hardhat.stop()
    return report


def _pool_left(root: Path) -> int:
    store = CoordinatorStore(root / "coordinator.db")
    try:
        wallet = store.wallet(WALLET)
        return store.pool_depth(wallet.key_id, wallet.epoch, "1,2", "")
    finally:
        store.close()


async def _exchange_flow(
    report: ServiceDemoReport,
    progress: ProgressCallback,
    keys: dict[str, tuple[str, Path]],
    officers: DemoOfficers,
    root: Path,
) -> None:
    """The exchange's withdrawals over HTTP, one phase each."""
    key_id, key_file = keys["demo-exchange"]
    run = secrets.token_hex(4)  # client_request_ids are unique forever: one set per run
    api = AsyncTesseraClient(report.service_url, key_id, load_private_key(key_file.read_bytes()))
    try:

        async def submit(
            label: str, asset: str, amount: str, to: str, expect: Status
        ) -> DemoWithdrawal:
            request = WithdrawalCreate(
                client_request_id=f"demo-{run}-{len(report.withdrawals) + 1}",
                wallet=WALLET,
                chain_id=CHAIN_ID,
                asset=asset,
                destination=to,
                amount=amount,
                note=label,
            )
            t0 = time.perf_counter()
            accepted = await api.create_withdrawal(request)
            item = DemoWithdrawal(label, await api.withdrawal(accepted.id))
            item.accepted_ms = (time.perf_counter() - t0) * 1000
            report.withdrawals.append(item)
            until = None if expect in TERMINAL else (expect,)
            item.withdrawal = await api.wait(accepted.id, timeout=WITHDRAWAL_TIMEOUT, until=until)
            if item.withdrawal.status != expect:
                w = item.withdrawal
                raise DemoFailed(
                    f"{label}: {w.status} ({w.sub_status}) where {expect} was expected: "
                    f"{w.reason_code} {w.reason}"
                )
            item.timeline = await _timeline(api, item.withdrawal)
            return item

        await timed(
            report,
            progress,
            "0.5 ETH to the exchange: completed",
            lambda: submit("0.5 ETH, whitelisted", "ETH", "0.5", report.exchange, Status.COMPLETED),
            "POST /v1/withdrawals → screened, signed by the nodes, mined",
        )
        await timed(
            report,
            progress,
            "250 USDT to the exchange: completed",
            lambda: submit(
                "250 USDT, whitelisted", "USDT", "250", report.exchange, Status.COMPLETED
            ),
            "an ERC-20 transfer the nodes decode themselves",
        )
        await timed(
            report,
            progress,
            "0.5 ETH off the whitelist: rejected",
            lambda: submit(
                "0.5 ETH, not whitelisted", "ETH", "0.5", report.stranger, Status.REJECTED
            ),
            "the nodes refuse it, with their reason; no presignature spent",
        )
        large = await timed(
            report,
            progress,
            "2 ETH: waiting for officers",
            lambda: submit(
                "2 ETH, whitelisted", "ETH", "2", report.exchange, Status.PENDING_APPROVAL
            ),
            "the policy asks 2 of the treasury",
        )
        officer_key, officer_file = keys["demo-officers"]

        async def approvals() -> list[str]:
            done = []
            for name in ("alice", "bob"):
                answer = _tessera(
                    "officer", "approve", large.withdrawal.id, "--server", report.service_url,
                    "--api-key-id", officer_key, "--api-key", str(officer_file),
                    "--key", str(officers.key(name)), "--passphrase-file", str(officers.passphrase),
                    "--store", str(officers.store_path),
                )  # fmt: skip
                done.append(str(answer["officer"]))
            return done

        large.approved_by = await timed(
            report,
            progress,
            "2 ETH: two officers approve with the CLI",
            approvals,
            "tessera officer approve WITHDRAWAL_ID --server URL (alice, bob)",
        )

        async def finish() -> Withdrawal:
            return await api.wait(large.withdrawal.id, timeout=WITHDRAWAL_TIMEOUT)

        large.withdrawal = await timed(
            report,
            progress,
            "2 ETH: signed with the approvals, completed",
            finish,
            "every node verifies the approvals itself",
        )
        if large.withdrawal.status != Status.COMPLETED:
            w = large.withdrawal
            raise DemoFailed(f"the approved 2 ETH ended {w.status}: {w.reason_code} {w.reason}")
        large.timeline = await _timeline(api, large.withdrawal)
    finally:
        await api.aclose()


async def _timeline(api: AsyncTesseraClient, withdrawal: Withdrawal) -> list[tuple[str, float]]:
    events: list[dict[str, Any]] = await api.request(
        "GET", f"/v1/withdrawals/{withdrawal.id}/events"
    )
    start = withdrawal.created_at
    return [(str(e["status"]), (float(e["created_at"]) - start) * 1000) for e in events]


async def _await_webhooks(report: ServiceDemoReport, receiver: WebhookReceiver) -> None:
    """Until the receiver has every withdrawal's last event (at least once, in order)."""
    wanted = {(w.withdrawal.id, w.withdrawal.status.value) for w in report.withdrawals}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = {(d["data"]["id"], d["data"]["status"]) for d in receiver.events()}
        if wanted <= got:
            return
        await asyncio.sleep(0.1)
    missing = sorted(wanted - {(d["data"]["id"], d["data"]["status"]) for d in receiver.events()})
    raise DemoFailed(f"the webhook receiver never got {missing} ({len(receiver.refused)} refused)")


def lifecycle_text(timeline: Sequence[tuple[str, float]]) -> str:
    return " → ".join(f"{status} {ms:.0f}" for status, ms in timeline) + " ms"
