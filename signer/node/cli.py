"""`tessera node …`: create and run a key-share node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from starlette.types import ASGIApp

from signer.errors import TesseraError
from signer.node.app import create_app
from signer.node.limits import SERVER_HEAD_BYTES
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
        uvicorn.Server(
            server_config(create_app(runtime), runtime.config.host, runtime.config.port)
        ).run()
    finally:
        runtime.close()


def server_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """How `run` serves the API (the HTTP tests serve through this too).

    The h11 parser (uvicorn's pure-Python HTTP/1.1; httptools is not installed) buffers up to
    `SERVER_HEAD_BYTES` of request head, well above the target and header limits that
    `RequestLimits` answers with 414/431 problems; only a bigger head is dropped by the server
    (a plain 400, connection closed).  Idle keep-alive connections close after 5 s; at most
    512 connections are served at once (more get uvicorn's plain 503: far above the
    coordinator's use, which MAX_SESSIONS bounds at 256 sessions); a shutdown waits 10 s for
    requests in flight.  The body size and read time are enforced by `RequestLimits`."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        log_level="warning",
        h11_max_incomplete_event_size=SERVER_HEAD_BYTES,
        timeout_keep_alive=5,
        limit_concurrency=512,
        timeout_graceful_shutdown=10,
    )


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


key_app = typer.Typer(
    help=(
        "Key versions on this node: a re-share or refresh leaves a *pending* version that "
        "becomes active only with a storage confirmation from every member of the new "
        "committee; until then the old version stays active.  Discarding a pending version "
        "is a local operator action, never an API call."
    ),
    no_args_is_help=True,
)
node_app.add_typer(key_app, name="key")


@key_app.command("list")
def key_list(
    directory: DirOption,
    key_id: Annotated[str, typer.Option("--key", help="Key id (hex).")],
) -> None:
    """Print every version of the key (state, whether a share is held) and its event log."""
    store = _open_store(directory)
    try:
        versions = [
            {"epoch": r.epoch, "state": r.state, "share": r.sealed_share is not None}
            for r in store.key_versions(key_id)
        ]
        events = [e.model_dump() for e in store.key_events(key_id)]
    finally:
        store.close()
    typer.echo(json.dumps({"versions": versions, "events": events}, indent=2))


@key_app.command("discard-pending")
def key_discard_pending(
    directory: DirOption,
    key_id: Annotated[str, typer.Option("--key", help="Key id (hex).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the key's event log).")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help=(
                "Discard even though this node already signed a storage confirmation for it. "
                "Only safe when that version can never be activated (a member of its committee "
                "holds no pending copy of it): otherwise the others may activate it and retire "
                "their old shares while this node drops its new one."
            ),
        ),
    ] = False,
) -> None:
    """Drop the key's pending version (its new share erased) so that another re-share or
    refresh can start; the active version is untouched.  Refused after this node confirmed the
    version, unless --force; the node never confirms another version of that epoch."""
    store = _open_store(directory)
    try:
        row = store.discard_pending(key_id, reason, force=force)
    except TesseraError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    typer.echo(json.dumps({"discarded": {"key_id": row.key_id, "epoch": row.epoch}}, indent=2))
