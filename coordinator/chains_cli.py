"""`tessera chain …`: the operator's commands on chains (docs/chains.md).

- `tessera chain check [--registry FILE]` validates a registry file (default: the shipped
  mainnets) and lists its chains and tokens; with `--json` the registry as one JSON object;
- `tessera chain pay-batch FILE --wallet W --initiator I [--registry FILE] [--dir CLUSTER]
  [--wait SECONDS] [--one-transaction]` pays a CSV or JSON list of payouts
  (coordinator/batches.py) through the cluster's nodes over the registry's RPC URLs, one
  transaction per row or, with `--one-transaction`, one per chain and asset through the
  chain's disperse contract;
- `tessera chain deposit-addresses --wallet W --customers FILE [--dir CLUSTER]` gives each
  customer reference of the file its deposit address (coordinator/deposits.py).

Exit codes as every command group: 0 done, 1 refused (a file that does not validate, a batch
refused, a payout the nodes refused), 2 usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from hsm import output
from hsm.output import JsonUsageGroup, emit

if TYPE_CHECKING:
    from coordinator.payouts import PayoutRequest
    from coordinator.registry import ChainRegistry
    from coordinator.store import PayoutRow

chain_app = typer.Typer(
    cls=JsonUsageGroup,
    help="The chain registry: the EVM chains, RPC URLs, confirmations, fee ceilings and tokens.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry TOML file (default: the shipped mainnets, coordinator/mainnets.toml).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (errors too) on stdout.")
]


@chain_app.command("check")
def check(registry: RegistryOption = None, as_json: JsonOption = False) -> None:
    """Validate a chain registry and list what it holds."""
    from coordinator.registry import MAINNETS, RegistryError, load_registry  # noqa: PLC0415

    try:
        loaded = load_registry(registry or MAINNETS)
    except RegistryError as exc:
        output.fail(as_json, exc.code.value, str(exc), what="registry refused")
    if as_json:
        emit(loaded.model_dump(mode="json"))
        return
    table = Table("chain id", "name", "native", "fees", "confirmations", "tokens")
    for chain in loaded.chains:
        tokens = ", ".join(
            f"{symbol} ({token.decimals}) {token.address}" for symbol, token in chain.tokens.items()
        )
        fees = f"{chain.fee_model}, ≤ {chain.fee_ceiling_wei / 10**9:g} gwei"
        native = f"{chain.native.symbol} ({chain.native.decimals})"
        table.add_row(
            str(chain.chain_id), chain.name, native, fees, str(chain.confirmations), tokens or "—"
        )
    console.print(table)


ClusterOption = Annotated[
    Path,
    typer.Option(
        "--dir", help="Cluster directory (cluster.json, nodes/, coordinator.db).", file_okay=False
    ),
]


@chain_app.command("pay-batch")
def pay_batch_command(
    file: Annotated[Path, typer.Argument(help="The batch: CSV with a header row, or JSON.")],
    wallet: Annotated[str, typer.Option("--wallet", help="The paying wallet's name.")],
    initiator: Annotated[
        str, typer.Option("--initiator", help="Who asks for the payouts (the policy's initiator).")
    ],
    registry: RegistryOption = None,
    root: ClusterOption = Path("var/cluster"),
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: by the file's suffix).")
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait", min=0, help="Seconds to follow the payouts to confirmed (0: until sent)."
        ),
    ] = 0.0,
    one_transaction: Annotated[
        bool,
        typer.Option(
            "--one-transaction",
            help="Pay the rows of each chain and asset in one transaction (the disperse contract).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Pay a list of up to 1,000 payouts (columns payout_id, chain_id, asset, destination,
    amount[, fee_level]) in its order: all refused, nothing stored, if one row is wrong; each
    decided by the nodes' policy.  Re-running the same file pays nothing twice."""
    chosen = fmt or file.suffix.lstrip(".").lower()
    if chosen not in ("csv", "json"):
        output.usage("--format must be csv or json (or the file end in .csv or .json)", as_json)
    try:
        data = file.read_bytes()
    except OSError as exc:
        output.fail(as_json, "NOT_FOUND", f"{file}: {exc.strerror or exc}", what="cannot read")
    import asyncio  # noqa: PLC0415 - the engine loads only for this command

    from coordinator.batches import parse_batch  # noqa: PLC0415
    from coordinator.registry import MAINNETS, load_registry  # noqa: PLC0415
    from signer.errors import TesseraError  # noqa: PLC0415

    try:
        requests = parse_batch(data, chosen, wallet=wallet, initiator=initiator)
        loaded = load_registry(registry or MAINNETS)
        rows = asyncio.run(_pay(root, loaded, requests, wait, as_json, one_transaction))
    except TesseraError as exc:
        output.refuse(exc, as_json, what="batch not paid")
    docs = [
        {
            "payout_id": r.payout_id,
            "state": r.state,
            "nonce": r.nonce,
            "tx_hash": r.tx_hash,
            "reason": r.reason,
            "legs": None if r.legs is None else len(json.loads(r.legs)),
        }
        for r in rows
    ]
    failed = sum(1 for r in rows if r.state == "failed")
    if as_json:
        emit({"payouts": docs, "failed": failed})
    else:
        table = Table("payout", "state", "nonce", "tx hash / reason")
        for doc in docs:
            table.add_row(
                str(doc["payout_id"]),
                str(doc["state"]),
                "" if doc["nonce"] is None else str(doc["nonce"]),
                str(doc["tx_hash"] or doc["reason"] or ""),
            )
        console.print(table)
    if failed:
        raise typer.Exit(output.EXIT_REFUSED)


async def _pay(
    root: Path,
    registry: ChainRegistry,
    batch: list[PayoutRequest],
    wait: float,
    as_json: bool,
    one_transaction: bool = False,
) -> list[PayoutRow]:
    from coordinator.batches import check_batch, in_one_transaction, pay_batch  # noqa: PLC0415
    from coordinator.cluster import LocalCluster  # noqa: PLC0415
    from coordinator.payouts import PayoutEngine  # noqa: PLC0415
    from coordinator.rpc import ChainRpc  # noqa: PLC0415

    wanted = {r.chain_id for r in batch} & set(registry.chain_ids())
    rpcs = {cid: ChainRpc.connect(cid, registry.chain(cid).rpc_urls) for cid in wanted}
    coordinator = LocalCluster.load(root).coordinator()
    engine = PayoutEngine(coordinator, registry, rpcs)

    def say(done: int, total: int) -> None:
        if not as_json:
            output.errors.print(f"paid {done} of {total}", highlight=False)

    try:
        if one_transaction:
            await check_batch(engine, batch)  # every row, by its number in the file
            batch = in_one_transaction(registry, batch)
        rows = await pay_batch(engine, batch, say)
        if wait > 0:
            rows = [await engine.wait(r.payout_id, timeout=wait) for r in rows]
        return rows
    finally:
        await coordinator.aclose()
        for rpc in rpcs.values():
            await rpc.aclose()


@chain_app.command("deposit-addresses")
def deposit_addresses(
    wallet: Annotated[str, typer.Option("--wallet", help="The wallet the addresses belong to.")],
    customers: Annotated[
        Path,
        typer.Option("--customers", help="A file of customer references, one per line (≤ 1,000)."),
    ],
    root: ClusterOption = Path("var/cluster"),
    as_json: JsonOption = False,
) -> None:
    """Give each customer reference its deposit address (a non-hardened BIP32 child of the
    wallet's key: no MPC round); a reference that has one keeps it."""
    try:
        refs = [line.strip() for line in customers.read_text("utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        output.fail(as_json, "NOT_FOUND", f"{customers}: cannot be read ({type(exc).__name__})")
    from coordinator.cluster import LocalCluster  # noqa: PLC0415
    from coordinator.deposits import DepositAddresses  # noqa: PLC0415
    from coordinator.store import CoordinatorStore  # noqa: PLC0415
    from signer.errors import TesseraError  # noqa: PLC0415

    try:
        store = CoordinatorStore(LocalCluster.load(root).root / "coordinator.db")
        try:
            rows = DepositAddresses(store).assign(wallet, refs)
        finally:
            store.close()
    except TesseraError as exc:
        output.refuse(exc, as_json, what="no deposit addresses")
    docs = [{"customer_ref": r.customer_ref, "address": r.address, "child": r.child} for r in rows]
    if as_json:
        emit({"wallet": wallet, "addresses": docs})
        return
    for doc in docs:
        console.print(f"{doc['customer_ref']}\t{doc['address']}", highlight=False)
