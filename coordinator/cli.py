"""`tessera cluster …` and `tessera demo`: a local cluster of node processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coordinator.client import NodeRefused, NodeUnavailable
from coordinator.cluster import LocalCluster
from coordinator.demo import DemoReport, run_cluster_demo
from coordinator.engine import PoolTarget
from coordinator.evm import address_of
from coordinator.store import CoordinatorStore
from signer.errors import TesseraError
from signer.node import codec

cluster_app = typer.Typer(
    help=(
        "A local cluster: n key-share node processes on this machine, each with its own "
        "SoftHSM2 token and database, and the coordinator's database. `up` creates what is "
        "missing and starts the nodes; `status` shows them; `down` stops them."
    ),
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

RootOption = Annotated[
    Path,
    typer.Option(
        "--dir", help="Cluster directory (cluster.json, nodes/, coordinator.db).", file_okay=False
    ),
]


def _fail(exc: Exception, what: str) -> typer.Exit:
    errors.print(f"[red]{what}:[/red] {exc}")
    return typer.Exit(1)


@cluster_app.command("up")
def up(
    root: RootOption = Path("var/cluster"),
    nodes: Annotated[int, typer.Option("--nodes", min=2, max=255, help="n: number of nodes.")] = 3,
    threshold: Annotated[int, typer.Option("--threshold", min=2, help="t: signers needed.")] = 2,
    base_port: Annotated[int, typer.Option("--base-port", min=1024, max=65000)] = 18100,
) -> None:
    """Create the cluster if the directory has none (tokens, keys, databases, roster), start
    every node that is not running, and pin the roster on new nodes."""
    try:
        if (root / "cluster.json").exists():
            cluster = LocalCluster.load(root)
        else:
            cluster = LocalCluster.create(root, nodes, threshold, base_port)
        asyncio.run(cluster.up())
    except TesseraError as exc:
        raise _fail(exc, "cluster up failed") from exc
    console.print(f"[green]cluster up[/green]: {len(cluster.nodes)} nodes, t = {cluster.threshold}")
    for node in cluster.nodes:
        console.print(f"  {node.node_id}  {node.url}  pid {cluster.pid(node)}")


@cluster_app.command("down")
def down(root: RootOption = Path("var/cluster")) -> None:
    """Stop the cluster's node processes (their directories and data stay)."""
    try:
        LocalCluster.load(root).down()
    except TesseraError as exc:
        raise _fail(exc, "cluster down failed") from exc
    console.print("cluster stopped")


@cluster_app.command("status")
def status(
    root: RootOption = Path("var/cluster"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each node's process and health, the wallets and their presignature pools."""
    try:
        cluster = LocalCluster.load(root)
    except TesseraError as exc:
        raise _fail(exc, "cluster status failed") from exc

    async def probe() -> list[dict[str, Any]]:
        rows = []
        for node in cluster.nodes:
            client = cluster.client(node)
            try:
                health = await client.health()
                state = "pinned" if health.pinned else "not pinned"
                if health.quarantined:
                    state += f", {health.quarantined} quarantine entries"
            except (NodeUnavailable, NodeRefused) as exc:
                state = f"down ({type(exc).__name__})"
            finally:
                await client.aclose()
            rows.append(
                {"node": node.node_id, "url": node.url, "pid": cluster.pid(node), "state": state}
            )
        return rows

    nodes = asyncio.run(probe())
    coordinator = cluster.coordinator()
    wallets = []
    for wallet in coordinator.store.wallets():
        key = codec.decode_key_public(wallet.key_public)
        wallets.append(
            {
                "name": wallet.name,
                "key_id": wallet.key_id,
                "public_key": key.public_key.to_bytes().hex(),
                "epoch": wallet.epoch,
                "threshold": f"{key.threshold}-of-{len(key.parties)}",
                "pools": coordinator.store.pools(wallet.key_id),
            }
        )
    asyncio.run(coordinator.aclose())
    if as_json:
        typer.echo(json.dumps({"nodes": nodes, "wallets": wallets}, indent=2))
        return
    table = Table(title=f"cluster {cluster.root}")
    for column in ("node", "url", "pid", "state"):
        table.add_column(column)
    for row in nodes:
        table.add_row(*(str(row[c]) for c in ("node", "url", "pid", "state")))
    console.print(table)
    for entry in wallets:
        console.print(
            f"wallet {entry['name']} ({entry['threshold']}, epoch {entry['epoch']}): "
            f"pools {entry['pools'] or 'empty'}"
        )


def _indices(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{what} must be comma-separated party indices") from exc
    if not values or any(i < 1 for i in values) or len(set(values)) != len(values):
        raise typer.BadParameter(f"{what} must be distinct indices ≥ 1, e.g. 1,2")
    return tuple(sorted(values))


def _path(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split("/") if part)
    except ValueError as exc:
        raise typer.BadParameter("path must look like 0/5 (non-hardened indices)") from exc
    if any(not 0 <= step < 2**31 for step in steps):
        raise typer.BadParameter("path steps must be non-hardened: 0 ≤ step < 2^31")
    return steps


@cluster_app.command("wallet")
def wallet(
    name: Annotated[str, typer.Option("--name", help="Wallet name (unique in the cluster).")],
    root: RootOption = Path("var/cluster"),
) -> None:
    """Create a wallet on the running cluster: aux-info for the committee if there is none yet
    (the nodes generate fresh safe primes), then a t-of-n DKG.  Prints its key and address."""
    async def create() -> dict[str, Any]:
        coordinator = LocalCluster.load(root).coordinator()
        try:
            row = await coordinator.create_wallet(name)
        finally:
            await coordinator.aclose()
        key = codec.decode_key_public(row.key_public)
        return {
            "name": row.name,
            "key_id": row.key_id,
            "threshold": f"{key.threshold}-of-{len(key.parties)}",
            "public_key": key.public_key.to_bytes().hex(),
            "address": str(address_of(key.public_key)),
        }

    try:
        doc = asyncio.run(create())
    except TesseraError as exc:
        raise _fail(exc, "wallet creation failed") from exc
    typer.echo(json.dumps(doc, indent=2))


@cluster_app.command("pools")
def pools(
    wallet_name: Annotated[str, typer.Option("--wallet", help="Wallet name or key id.")],
    signers: Annotated[str, typer.Option("--signers", help="Signer set, e.g. 1,2 (t nodes).")],
    depth: Annotated[int, typer.Option("--depth", min=1, max=10_000, help="Pool depth.")] = 8,
    path: Annotated[str, typer.Option("--path", help="BIP32 path, e.g. 0/5.")] = "",
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Keep the pool full in the background until interrupted."),
    ] = False,
    root: RootOption = Path("var/cluster"),
) -> None:
    """Fill a presignature pool (wallet, signer set, path) to a depth; with --keep, keep
    refilling it as presignatures are used, until Ctrl-C.  A failed presign that is not
    operational (see docs/nodes.md) stops the keeper for that pool."""
    parties, steps = _indices(signers, "--signers"), _path(path)

    async def fill() -> int:
        coordinator = LocalCluster.load(root).coordinator()
        try:
            row = coordinator.store.wallet(wallet_name)
            made = await coordinator.fill_pool(row, parties, steps, depth)
            if keep:
                stop = asyncio.Event()
                target = PoolTarget(row.name, parties, steps, depth)
                console.print(f"keeping {row.name} [{signers}] m/{path} at {depth}; Ctrl-C stops")
                try:
                    await coordinator.keep_pools([target], stop)
                except asyncio.CancelledError:
                    stop.set()
            return made
        finally:
            await coordinator.aclose()

    try:
        made = asyncio.run(fill())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except TesseraError as exc:
        raise _fail(exc, "pool fill failed") from exc
    typer.echo(json.dumps({"wallet": wallet_name, "signers": list(parties), "made": made}))


@cluster_app.command("suspensions")
def suspensions(
    root: RootOption = Path("var/cluster"),
    include_cleared: Annotated[bool, typer.Option("--all", help="Also cleared ones.")] = False,
) -> None:
    """Parties and party sets the coordinator stopped using after a failure (JSON).  Each node
    keeps its own quarantine as well: `tessera node quarantine list`."""
    try:
        store = CoordinatorStore(LocalCluster.load(root).root / "coordinator.db")
    except TesseraError as exc:
        raise _fail(exc, "cannot open the coordinator") from exc
    rows = store.suspensions(include_cleared=include_cleared)
    typer.echo(json.dumps([row.to_json() for row in rows], indent=2))


@cluster_app.command("clear-suspension")
def clear_suspension(
    entry: Annotated[int, typer.Option("--entry", min=1, help="Entry id (from `suspensions`).")],
    reason: Annotated[str, typer.Option("--reason", help="Why it no longer applies.")],
    root: RootOption = Path("var/cluster"),
) -> None:
    """Let the coordinator use a party (set) again; the nodes' own entries stay until their
    operators clear them."""
    try:
        store = CoordinatorStore(LocalCluster.load(root).root / "coordinator.db")
        row = store.clear_suspension(entry, reason)
    except TesseraError as exc:
        raise _fail(exc, "cannot clear") from exc
    typer.echo(json.dumps(row.to_json(), indent=2))


def print_demo(report: DemoReport) -> None:
    table = Table(title="Tessera demo — 2-of-3 nodes, SoftHSM2, HTTP, in-process EVM")
    table.add_column("phase")
    table.add_column("time", justify="right")
    table.add_column("detail")
    for phase in report.phases:
        table.add_row(phase.name, f"{phase.seconds * 1000:.1f} ms", phase.detail)
    console.print(table)
    signature = report.signature
    if signature is None:
        return
    eth = 10**18
    console.print(f"wallet address:   {report.wallet_address}")
    console.print(f"recipient:        {report.recipient}")
    console.print(f"signed by nodes:  {', '.join(str(i) for i in report.signers)}")
    console.print(f"signed tx:        0x{report.raw_transaction.hex()}")
    console.print(f"recovers to:      {report.recovered} [green](the wallet)[/green]")
    console.print(f"tx hash:          0x{report.transaction_hash.hex()} (mined)")
    for address in (report.wallet_address, report.recipient):
        before = report.balances_before[address] / eth
        after = report.balances_after[address] / eth
        console.print(f"balance {address}: {before:.6f} → {after:.6f} ETH")
    console.print(
        f"gas fee: {report.gas_fee} wei; presignatures left in the pool: {report.pool_left}"
    )


def demo_command(root: Path, pool_depth: int, keep_running: bool, as_json: bool) -> None:
    try:
        report = asyncio.run(run_cluster_demo(root, pool_depth, keep_running))
    except TesseraError as exc:
        raise _fail(exc, "demo failed") from exc
    if not as_json:
        print_demo(report)
        return
    signature = report.signature
    doc = {
        "cluster": str(report.root),
        "reused_cluster": report.reused_cluster,
        "phases": [
            {"phase": p.name, "seconds": p.seconds, "detail": p.detail} for p in report.phases
        ],
        "wallet_address": report.wallet_address,
        "recipient": report.recipient,
        "signers": list(report.signers),
        "signed_transaction": "0x" + report.raw_transaction.hex(),
        "transaction_hash": "0x" + report.transaction_hash.hex(),
        "recovered": report.recovered,
        "signature": None
        if signature is None
        else {"r": hex(signature.r), "s": hex(signature.s), "recovery_id": signature.recovery_id},
        "balances_before": report.balances_before,
        "balances_after": report.balances_after,
        "gas_fee": report.gas_fee,
        "pool_left": report.pool_left,
    }
    typer.echo(json.dumps(doc, indent=2))
