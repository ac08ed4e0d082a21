"""The `tessera` console script: one command line over every layer (typer + rich).

It lives in the top layer because it assembles the command groups of all of them: `hsm`
(`tessera hsm`), `policies` (`tessera officer`, `tessera policy`), `signer` (`tessera node`,
`tessera primes`) and the coordinator's own (`tessera cluster`, `tessera demo`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from coordinator.cli import cluster_app, demo_command
from hsm.cli import hsm_app
from policies.cli import officer_app, policy_app
from signer.cli import primes_app
from signer.errors import TesseraError
from signer.node.cli import node_app

app = typer.Typer(
    help="Tessera: MPC threshold-signing custody engine (CGGMP21 threshold ECDSA).",
    no_args_is_help=True,
)
app.add_typer(primes_app, name="primes")
app.add_typer(hsm_app, name="hsm")
app.add_typer(node_app, name="node")
app.add_typer(cluster_app, name="cluster")
app.add_typer(officer_app, name="officer")
app.add_typer(policy_app, name="policy")
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
    ] = 3,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave the node processes running.")
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
    """The whole engine on this machine: a 2-of-3 cluster of node processes (SoftHSM2 tokens,
    SQLite, identity keys, set up under --dir on first run), a wallet (aux-info + DKG), a
    presignature pool, an EIP-1559 ETH transfer signed through the nodes, checked to recover to
    the wallet's address and mined by an in-process EVM; balances and per-phase timings.
    A second run reuses the cluster and the wallet."""
    if not in_process and not proofs:
        if pool is not None:
            errors.print("--pool applies to --in-process and --proofs only")
            raise typer.Exit(2)
        demo_command(root, pool_depth, keep_running, as_json)
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


def main() -> None:
    """Entry point of the console script and of `python -m coordinator`."""
    app()


if __name__ == "__main__":
    main()
