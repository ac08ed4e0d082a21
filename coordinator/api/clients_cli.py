"""`tessera api-client …`: the signer API's clients and their Ed25519 keys (docs/api.md).

- `create NAME --scope S [--scope S …] [--rate N] --db PATH --out FILE` adds a client and its
  first key; the private key is written to FILE (mode 0600, never over an existing file) and
  stored nowhere else;
- `rotate NAME --db PATH --out FILE` issues a second key (a third rotation revokes the oldest);
- `revoke NAME [--key KEY_ID] --db PATH` revokes one key, or the client with all its keys;
- `list --db PATH` shows clients, scopes, rates and active keys.

Exit codes as every command group: 0 done, 1 refused (an unknown client, a duplicate name, an
unknown scope, an existing --out file), 2 usage; with `--json` the result, or the error as
`{"error": {"code", "detail"}}`, is one JSON object on stdout (`hsm.output`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hsm import output
from hsm.output import JsonUsageGroup, emit

if TYPE_CHECKING:
    from coordinator.api.auth import IssuedKey
    from coordinator.store import CoordinatorStore

clients_app = typer.Typer(
    cls=JsonUsageGroup,
    help=(
        "The signer API's clients: their scopes, rates and Ed25519 keys (created, rotated "
        "with two active during a switch, revoked)."
    ),
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

DbOption = Annotated[
    Path,
    typer.Option("--db", help="The coordinator's database (SQLite file).", dir_okay=False),
]
OutOption = Annotated[
    Path,
    typer.Option(
        "--out", help="File the new private key (PEM) is written to; must not exist.",
        dir_okay=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (errors too) on stdout.")
]
NameArgument = Annotated[str, typer.Argument(help="Client name (a-z 0-9 _ . -).")]


def _open(db: Path, as_json: bool) -> CoordinatorStore:
    from coordinator.store import CoordinatorStore  # noqa: PLC0415 (start-up time)
    from signer.errors import TesseraError  # noqa: PLC0415

    try:
        return CoordinatorStore(db)
    except TesseraError as exc:
        output.refuse(exc, as_json, what="cannot open the database")


def _check_out(out: Path, as_json: bool) -> None:
    """Refused before anything is created: a key that cannot be written must not exist."""
    if out.exists():
        output.fail(
            as_json,
            "OUT_EXISTS",
            f"--out {out} exists: refusing to overwrite a key file",
            what="refused",
        )


def _write_key(out: Path, pem: bytes) -> None:
    # O_EXCL: never over a file that appeared since the check; 0600 from the first byte, so
    # the private key is never readable by others, not even for a moment.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _issued(issued: IssuedKey, out: Path, as_json: bool, verb: str) -> None:
    try:
        _write_key(out, issued.private_key_pem)
    except OSError as exc:
        # the key exists in the database but its private half is lost: say which to revoke
        output.fail(
            as_json,
            "OUT_UNWRITABLE",
            f"cannot write --out {out} ({exc.strerror}); revoke key {issued.key_id}",
            what="refused",
        )
    if as_json:
        emit(
            {
                "name": issued.name,
                "client_id": issued.client_id,
                "key_id": issued.key_id,
                "private_key_file": str(out),
            }
        )
        return
    console.print(
        f"[green]{verb}[/green] client {issued.name} ({issued.client_id}): key "
        f"{issued.key_id}, private key in {out}"
    )


@clients_app.command("create")
def create(
    name: NameArgument,
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="A scope (repeatable): withdrawals:create, withdrawals:read, "
            "approvals:write, admin.",
        ),
    ],
    db: DbOption,
    out: OutOption,
    rate: Annotated[
        int, typer.Option("--rate", min=1, help="Requests per minute (token bucket).")
    ] = 600,
    as_json: JsonOption = False,
) -> None:
    """Add an API client with its first key."""
    from coordinator.api.auth import ApiAuthError, ApiClients  # noqa: PLC0415

    _check_out(out, as_json)
    store = _open(db, as_json)
    try:
        issued = ApiClients(store).create(name, scopes, rate)
    except ApiAuthError as exc:
        output.refuse(exc, as_json, what="refused")
    finally:
        store.close()
    _issued(issued, out, as_json, "created")


@clients_app.command("rotate")
def rotate(name: NameArgument, db: DbOption, out: OutOption, as_json: JsonOption = False) -> None:
    """Issue a new key; with two active, the older one is revoked."""
    from coordinator.api.auth import ApiAuthError, ApiClients  # noqa: PLC0415

    _check_out(out, as_json)
    store = _open(db, as_json)
    try:
        issued = ApiClients(store).rotate(name)
    except ApiAuthError as exc:
        output.refuse(exc, as_json, what="refused")
    finally:
        store.close()
    _issued(issued, out, as_json, "rotated")


@clients_app.command("revoke")
def revoke(
    name: NameArgument,
    db: DbOption,
    key: Annotated[
        str | None, typer.Option("--key", help="Revoke only this key (default: the client).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke one key of a client, or the client and all its keys."""
    from coordinator.api.auth import ApiAuthError, ApiClients  # noqa: PLC0415

    store = _open(db, as_json)
    try:
        ApiClients(store).revoke(name, key)
    except ApiAuthError as exc:
        output.refuse(exc, as_json, what="refused")
    finally:
        store.close()
    if as_json:
        emit({"name": name, "revoked": key if key is not None else "client"})
    else:
        console.print(f"revoked {'key ' + key if key else 'client'} of {name}")


@clients_app.command("list")
def list_clients(db: DbOption, as_json: JsonOption = False) -> None:
    """The clients, their scopes, rates and active keys."""
    from coordinator.api.auth import ApiClients  # noqa: PLC0415

    store = _open(db, as_json)
    try:
        views = ApiClients(store).list()
    finally:
        store.close()
    docs: list[dict[str, Any]] = [
        {
            "name": v.name,
            "client_id": v.client_id,
            "scopes": list(v.scopes),
            "rate_per_minute": v.rate_per_minute,
            "created_at": v.created_at,
            "revoked_at": v.revoked_at,
            "active_keys": [
                {"key_id": k.key_id, "created_at": k.created_at} for k in v.active_keys
            ],
        }
        for v in views
    ]
    if as_json:
        emit({"clients": docs})
        return
    table = Table("name", "client id", "scopes", "rate/min", "state", "active keys")
    for doc in docs:
        state = "revoked" if doc["revoked_at"] is not None else "active"
        keys = ", ".join(k["key_id"] for k in doc["active_keys"]) or "—"
        table.add_row(
            doc["name"], doc["client_id"], ", ".join(doc["scopes"]),
            str(doc["rate_per_minute"]), state, keys,
        )
    console.print(table)
