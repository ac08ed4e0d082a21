"""The `tessera` console script: one command line over every layer (typer + rich).

It lives in the top layer because it assembles the command groups of all of them: `hsm`
(`tessera hsm`), `policies` (`tessera officer`, `tessera policy`), `signer` (`tessera node`,
`tessera primes`) and the coordinator's own (`tessera cluster`, `tessera demo`).

Each group is imported only when its name is on the command line (`LazyGroups`): the groups
pull in FastAPI, SQLAlchemy, pydantic models and the protocol code, and `tessera policy …`
should not pay for `tessera node …`.  `tessera --help` imports them all, to list them.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer import _click as click  # typer ≥ 0.29 vendors click: its Context and Command
from typer.core import TyperGroup

from signer.errors import TesseraError

#: Command group name → (module, Typer attribute), in the order `tessera --help` lists them.
LAZY_GROUPS: dict[str, tuple[str, str]] = {
    "primes": ("signer.cli", "primes_app"),
    "hsm": ("hsm.cli", "hsm_app"),
    "node": ("signer.node.cli", "node_app"),
    "cluster": ("coordinator.cli", "cluster_app"),
    "chain": ("coordinator.chains_cli", "chain_app"),
    "officer": ("policies.cli", "officer_app"),
    "policy": ("policies.cli", "policy_app"),
    "api-client": ("coordinator.api.clients_cli", "clients_app"),
    "webhook": ("coordinator.api.webhooks_cli", "webhook_app"),
}


class LazyGroups(TyperGroup):
    """The root group: the eager commands (`demo`) plus `LAZY_GROUPS`, each built from its
    Typer app the first time it is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*LAZY_GROUPS, *(n for n in super().list_commands(ctx) if n not in LAZY_GROUPS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_GROUPS and cmd_name not in self.commands:
            module, attribute = LAZY_GROUPS[cmd_name]
            sub: typer.Typer = getattr(importlib.import_module(module), attribute)
            group = typer.main.get_group(sub)  # a group even when the app has one command
            group.name = cmd_name
            if cmd_name == "officer":
                # `officer approve --server`: the one officer command that talks to the
                # signer API (a coordinator-layer client), so it is assembled here
                from coordinator.api.officer_cli import approve  # noqa: PLC0415

                group.add_command(
                    typer.main.get_command_from_info(
                        typer.models.CommandInfo(name="approve", callback=approve),
                        pretty_exceptions_short=True,
                        rich_markup_mode=None,
                    ),
                    "approve",
                )
            self.add_command(group, cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=LazyGroups,
    help="Tessera: MPC threshold-signing custody engine (CGGMP21 threshold ECDSA).",
    no_args_is_help=True,
)


@app.callback()
def root() -> None:
    """Tessera: MPC threshold-signing custody engine (CGGMP21 threshold ECDSA)."""
    # (a callback makes the root a group even though `demo` is its only eager command)


console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


@app.command()
def demo(
    root: Annotated[
        Path,
        typer.Option(
            "--dir", help="Cluster directory (created on first run, then reused).", file_okay=False
        ),
    ] = Path("var/demo"),
    pool_depth: Annotated[
        int, typer.Option("--pool-depth", min=1, max=1000, help="Presignatures to keep ready.")
    ] = 4,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the node processes (and the service and Hardhat node) running.",
        ),
    ] = False,
    engine: Annotated[
        bool,
        typer.Option(
            "--engine",
            help="Instead: the engine in this process on an in-process EVM (no API): "
            "transfers, a USDT payout and a deposit address swept.",
        ),
    ] = False,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process", help="Instead: the protocols alone, all parties in this process."
        ),
    ] = False,
    proofs: Annotated[
        bool, typer.Option("--proofs", help="Instead: prove and verify each ZK proof once.")
    ] = False,
    pool: Annotated[
        Path | None,
        typer.Option("--pool", help="With --in-process/--proofs: safe primes from this pool."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The product on this machine, as an exchange uses it: a 2-of-3 cluster of node processes
    (SoftHSM2 tokens, SQLite, identity keys, set up under --dir on first run) enforcing the demo
    officers' policy, a wallet (aux-info + DKG), a local Hardhat node, and `tessera serve`; over
    HTTP with the Python client: 0.5 ETH and 250 USDT to the whitelisted exchange signed and
    mined, 0.5 ETH off the whitelist rejected with the nodes' reason, 2 ETH completed after two
    officers approve it with `tessera officer approve`; the webhooks received, balances and the
    timings of each phase.  A second run reuses the cluster, the wallet and the API clients."""
    if sum((engine, in_process, proofs)) > 1:
        errors.print("--engine, --in-process and --proofs are each a demo of their own: one")
        raise typer.Exit(2)
    if not in_process and not proofs:
        if pool is not None:
            errors.print("--pool applies to --in-process and --proofs only")
            raise typer.Exit(2)
        if engine:
            from coordinator.cli import demo_command  # noqa: PLC0415 (start-up time)

            demo_command(root, pool_depth, keep_running, as_json)
            return
        from coordinator.demo_service_cli import service_demo_command  # noqa: PLC0415

        service_demo_command(root, pool_depth, keep_running, as_json)
        return
    from signer.demo import run_demo, run_wallet_demo  # noqa: PLC0415 (keeps start-up fast)

    try:
        if proofs:
            steps = run_demo(pool)
            wallet = None
        else:
            wallet = run_wallet_demo(pool)
            steps = wallet.steps
    except TesseraError as exc:
        errors.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        doc: dict[str, object] = {
            "steps": [{"step": s.name, "seconds": s.seconds, "detail": s.detail} for s in steps]
        }
        if wallet is not None:
            doc["address"] = wallet.address
            doc["signature"] = {
                "r": hex(wallet.signature.r),
                "s": hex(wallet.signature.s),
                "v": wallet.signature.recovery_id,
                "digest": wallet.signature.digest.hex(),
            }
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title="Tessera in-process — N = 3072 bits, m = 128, ℓ/ε/ℓ' = 256/512/1280")
    table.add_column("step")
    table.add_column("time", justify="right")
    table.add_column("detail")
    for step in steps:
        table.add_row(step.name, f"{step.seconds * 1000:.1f} ms", step.detail)
    console.print(table)
    if wallet is None:
        console.print("[green]all proofs verified[/green]")
        return
    sig = wallet.signature
    console.print(f"deposit address m/0/5: {wallet.address}")
    console.print(f"signed digest:  0x{sig.digest.hex()}")
    console.print(
        f"signature:      r=0x{sig.r:064x}\n                s=0x{sig.s:064x} v={sig.recovery_id}"
    )
    console.print("[green]signature verified (libsecp256k1) and recovers to the address[/green]")


@app.command()
def serve(
    root: Annotated[
        Path, typer.Option("--dir", help="The cluster directory (`tessera cluster init`).")
    ] = Path("var/cluster"),
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Chain registry TOML (default: the shipped mainnets)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8700,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate chain for TLS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM key of --tls-cert.")
    ] = None,
    pool_depth: Annotated[
        int, typer.Option("--pool-depth", min=0, max=10000, help="Presignatures kept ready.")
    ] = 8,
    webhook: Annotated[
        list[str] | None, typer.Option("--webhook", help="A webhook receiver URL (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    screening_url: Annotated[
        str | None,
        typer.Option("--screening-url", help="The external screen asked about each withdrawal."),
    ] = None,
    screening_key: Annotated[
        str | None,
        typer.Option(
            "--screening-key",
            help="The screen's Ed25519 public key: a file (PEM or base64url) or the base64url.",
        ),
    ] = None,
    screening_timeout: Annotated[
        float,
        typer.Option("--screening-timeout", min=0.1, max=120, help="Seconds per screening."),
    ] = 5.0,
    screening_max_defer: Annotated[
        float,
        typer.Option(
            "--screening-max-defer",
            min=1,
            max=30 * 86400,
            help="Seconds a screen may defer a withdrawal before it is rejected.",
        ),
    ] = 3600.0,
) -> None:
    """The signer API (docs/api.md): withdrawals over HTTP with signed requests, and the
    workers that sign, broadcast, track and report them, until SIGINT/SIGTERM."""
    from coordinator.api.serve_cli import serve_command  # noqa: PLC0415 (start-up time)

    serve_command(
        root,
        registry,
        host,
        port,
        tls_cert,
        tls_key,
        pool_depth,
        webhook or [],
        as_json,
        screening_url=screening_url,
        screening_key=screening_key,
        screening_timeout=screening_timeout,
        screening_max_defer=screening_max_defer,
    )


#: Level of the coordinator's JSON logs on stderr (`signer/logs.py`).  WARNING by default: a
#: failed session or a refused signature is logged, a successful one only at INFO — the
#: operator reading the command's own output on a terminal does not need both.
LOG_LEVEL_VARIABLE = "TESSERA_LOG_LEVEL"


def main() -> None:
    """Entry point of the console script and of `python -m coordinator`.  The process logs as
    the coordinator (JSON lines on stderr); `tessera node run` re-configures as its node."""
    from signer.logs import configure  # noqa: PLC0415 (start-up time)

    level = os.environ.get(LOG_LEVEL_VARIABLE, "WARNING").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        errors.print(f"{LOG_LEVEL_VARIABLE}={level}: use DEBUG, INFO, WARNING or ERROR")
        raise SystemExit(2)
    configure("coordinator", level=level)
    app()


if __name__ == "__main__":
    main()
