"""`tessera node …`: create and run a key-share node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from signer.errors import TesseraError
from signer.node.app import create_app
from signer.node.runtime import NodeConfig, NodeRuntime, grow_roster, init_node, roster_from_json
from signer.node.store import NodeStore

node_app = typer.Typer(
    help=(
        "A key-share node: one per share holder, each with its own HSM token and database. "
        "Create one with `init`, start it with `run`; `tessera cluster up` does both for a "
        "local cluster."
    ),
    no_args_is_help=True,
)
errors = Console(stderr=True, soft_wrap=True)

DirOption = Annotated[
    Path, typer.Option("--dir", help="The node's directory (created by `init`).", file_okay=False)
]


@node_app.command("init")
def init(
    directory: DirOption,
    node_id: Annotated[str, typer.Option("--node-id", help="Unique name, e.g. node-1.")],
    index: Annotated[int, typer.Option("--index", min=1, max=255, help="Party index (1..255).")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    url: Annotated[
        str | None, typer.Option("--url", help="URL peers and the coordinator use.")
    ] = None,
    prime_pool: Annotated[
        Path | None,
        typer.Option("--prime-pool", help="Safe-prime pool for aux-info (tessera primes)."),
    ] = None,
) -> None:
    """Create the node directory: SoftHSM2 token (KEK + identity key), sealed X25519 key,
    API token, database, and card.json for the other nodes to pin."""
    try:
        card = init_node(
            directory, node_id, index, host=host, port=port, url=url, prime_pool=prime_pool
        )
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(card.to_dict(), indent=2))


@node_app.command("run")
def run(directory: DirOption) -> None:
    """Serve the node's API until interrupted (uvicorn, the host/port of node.json)."""
    try:
        runtime = NodeRuntime.open(directory)
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] node refuses to start: {exc}")
        raise typer.Exit(1) from exc
    try:
        uvicorn.run(
            create_app(runtime),
            host=runtime.config.host,
            port=runtime.config.port,
            log_level="warning",
        )
    finally:
        runtime.close()


@node_app.command("pin")
def pin(
    directory: DirOption,
    roster: Annotated[
        Path, typer.Option("--roster", help="Roster JSON: cluster_id and every node's card.")
    ],
) -> None:
    """Pin (or grow) the cluster roster on this node, as its operator.  Cards already pinned
    can never change; new ones can be added (to re-share a key to new nodes).  A running node
    picks the new roster up at its next session."""
    try:
        grow_roster(directory, roster_from_json(json.loads(roster.read_text())))
    except (OSError, ValueError) as exc:
        errors.print(f"[red]error:[/red] cannot read {roster}: {exc}")
        raise typer.Exit(1) from exc
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    typer.echo("roster pinned")


quarantine_app = typer.Typer(
    help=(
        "Parties this node refuses to work with after a failed session (attacks.md A03): a "
        "named culprit, or a party set whose failure named nobody.  Entries are cleared only "
        "here, by the node's operator, never over the API."
    ),
    no_args_is_help=True,
)
node_app.add_typer(quarantine_app, name="quarantine")


def _open_store(directory: Path) -> NodeStore:
    try:
        return NodeStore(NodeConfig.load(directory).db_path)
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@quarantine_app.command("list")
def quarantine_list(
    directory: DirOption,
    include_cleared: Annotated[
        bool, typer.Option("--all", help="Also show cleared entries.")
    ] = False,
) -> None:
    """Print the entries as JSON (active ones unless --all)."""
    store = _open_store(directory)
    try:
        rows = store.quarantines(include_cleared=include_cleared)
    finally:
        store.close()
    typer.echo(json.dumps([row.to_json() for row in rows], indent=2))


@quarantine_app.command("clear")
def quarantine_clear(
    directory: DirOption,
    entry: Annotated[int, typer.Option("--entry", min=1, help="Entry id (from `list`).")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why it no longer applies (kept with the entry).")
    ],
) -> None:
    """Lift one entry after investigation; the entry and the reason stay on record."""
    store = _open_store(directory)
    try:
        row = store.clear_quarantine(entry, reason)
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    typer.echo(json.dumps(row.to_json(), indent=2))
