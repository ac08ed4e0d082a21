"""`tessera api-client create|rotate|revoke|list`: the signer API's clients and their keys, in
the coordinator's database (`coordinator.api.auth.ApiClients`).  A new private key is written
once, to a new file of mode 0600, and never stored by Tessera."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from hsm import output
from hsm.output import JsonUsageGroup, emit

if TYPE_CHECKING:
    from coordinator.store import CoordinatorStore

clients_app = typer.Typer(
    cls=JsonUsageGroup,
    help="The signer API's clients: scopes, rate limits and Ed25519 request-signing keys.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

DbOption = Annotated[
    Path,
    typer.Option(
        "--db", help="The coordinator's database (CLUSTER/coordinator.db).", dir_okay=False
    ),
]
OutOption = Annotated[
    Path,
    typer.Option("--out", help="New file for the private key (PEM, mode 0600).", dir_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _store(db: Path, as_json: bool) -> CoordinatorStore:
    from coordinator.store import CoordinatorStore  # noqa: PLC0415

    if not db.is_file():
        output.fail(as_json, "NOT_FOUND", f"{db}: no coordinator database", what="refused")
    return CoordinatorStore(db)


def _write_key(out: Path, pem: bytes, as_json: bool) -> None:
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        output.usage(f"{out} exists: the key is written to a new file only", as_json)
    except OSError as exc:
        output.usage(f"{out}: {exc.strerror or exc}", as_json)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _issued(issued_client: str, name: str, key_id: str, out: Path, as_json: bool) -> None:
    doc = {"client_id": issued_client, "name": name, "key_id": key_id, "private_key": str(out)}
    if as_json:
        emit(doc)
    else:
        console.print(f"client {name} ({issued_client}): key {key_id}, private key in {out}")


@clients_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The client's name (a-z 0-9 _ . -).")],
    db: DbOption,
    out: OutOption,
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="withdrawals:create, withdrawals:read, approvals:write or admin (repeatable).",
        ),
    ],
    rate: Annotated[int, typer.Option("--rate", help="Requests per minute.")] = 600,
    as_json: JsonOption = False,
) -> None:
    """A new API client with its first key."""
    from coordinator.api.auth import ApiAuthError, ApiClients  # noqa: PLC0415
    from signer.problems import ErrorCode  # noqa: PLC0415

    if out.exists():
        output.usage(f"{out} exists: the key is written to a new file only", as_json)
    store = _store(db, as_json)
    try:
        issued = ApiClients(store).create(name, scope, rate_per_minute=rate)
    except ApiAuthError as exc:
        if exc.code == ErrorCode.VALIDATION and "exists" not in exc.detail:
            output.usage(exc.detail, as_json)
        output.refuse(exc, as_json, what="not created")
    finally:
        store.close()
    _write_key(out, issued.private_key_pem, as_json)
    _issued(issued.client_id, issued.name, issued.key_id, out, as_json)


@clients_app.command("rotate")
def rotate(
    name: Annotated[str, typer.Argument(help="The client.")],
    db: DbOption,
    out: OutOption,
    as_json: JsonOption = False,
) -> None:
    """A new key beside the current one (two active while the client switches; a third
    rotation revokes the oldest)."""
    from coordinator.api.auth import ApiAuthError, ApiClients  # noqa: PLC0415

    if out.exists():
        output.usage(f"{out} exists: the key is written to a new file only", as_json)
    store = _store(db, as_json)
    try:
        issued = ApiClients(store).rotate(name)
    except ApiAuthError as exc:
        output.refuse(exc, as_json, what="not rotated")
    finally:
        store.close()
    _write_key(out, issued.private_key_pem, as_json)
    _issued(issued.client_id, issued.name, issued.key_id, out, as_json)


@clients_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The client.")],
    db: DbOption,
    key: Annotated[
        str | None, typer.Option("--key", help="Revoke only this key (else the client).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke one key of a client, or the whole client: its requests fail from now on."""
    from coordinator.api.auth import ApiAuthError, ApiClients  # noqa: PLC0415

    store = _store(db, as_json)
    try:
        ApiClients(store).revoke(name, key)
    except ApiAuthError as exc:
        output.refuse(exc, as_json, what="not revoked")
    finally:
        store.close()
    doc = {"name": name, "revoked": key or "client"}
    if as_json:
        emit(doc)
    else:
        console.print(f"revoked {'key ' + key if key else 'client'} of {name}")


@clients_app.command("list")
def list_clients(db: DbOption, as_json: JsonOption = False) -> None:
    """Every client: scopes, rate, active keys."""
    from coordinator.api.auth import ApiClients  # noqa: PLC0415

    store = _store(db, as_json)
    try:
        clients = ApiClients(store).clients()
    finally:
        store.close()
    if as_json:
        emit({"clients": [c.__dict__ for c in clients]})
        return
    table = Table("name", "client", "scopes", "rate/min", "active keys", "revoked")
    for c in clients:
        table.add_row(
            c.name,
            c.client_id,
            ", ".join(c.scopes),
            str(c.rate_per_minute),
            ", ".join(str(k["key_id"]) for k in c.keys),
            "yes" if c.revoked_at else "",
        )
    console.print(table)
