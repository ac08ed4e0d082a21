"""`tessera node …`: create and run a key-share node.

Every command takes `--json` (`hsm.output`): its result, or its error as
``{"error": {"code", "detail"}}``, is one JSON object on stdout.  Exit codes: 0 done, 1 refused,
2 usage.  `run` writes the node's logs as JSON lines on stderr (`signer.logs`, component
``node-<index>``; docs/nodes.md).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import uvicorn
from rich.console import Console
from starlette.types import ASGIApp

from hsm.output import EXIT_REFUSED, JsonUsageGroup, emit, error_code, fail, refuse, usage
from policies.audit import TrustedKey, export_csv, export_jsonl, load_checkpoint
from policies.errors import AuditLogError
from signer import logs
from signer.errors import TesseraError
from signer.logs import log_event
from signer.node.app import create_app
from signer.node.audit import NodeAudit
from signer.node.audit import trusted_key as audit_trusted_key
from signer.node.envelope import NodeCard
from signer.node.limits import SERVER_HEAD_BYTES
from signer.node.runtime import (
    _CARD_SETTING,
    NodeConfig,
    NodeRuntime,
    grow_roster,
    init_node,
    roster_from_json,
)
from signer.node.store import NodeStore

node_app = typer.Typer(
    help=(
        "A key-share node: one per share holder, each with its own HSM token and database. "
        "Create one with `init`, start it with `run`; `tessera cluster up` does both for a "
        "local cluster."
    ),
    no_args_is_help=True,
    cls=JsonUsageGroup,
)
errors = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("tessera.node")

DirOption = Annotated[
    Path, typer.Option("--dir", help="The node's directory (created by `init`).", file_okay=False)
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Machine-readable output (errors too) on stdout.")
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
    genesis_policy: Annotated[
        str | None,
        typer.Option(
            "--genesis-policy",
            help="Hash of the genesis policy version (tessera policy hash), pinned for good.",
        ),
    ] = None,
    raw_keys: Annotated[
        bool,
        typer.Option(
            "--raw-keys",
            help="Also hold keys of no wallet, which sign raw bytes (benchmarks, tests only).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create the node directory: SoftHSM2 token (KEK + identity key), sealed X25519 key,
    API token, database, and card.json for the other nodes to pin.  The genesis policy hash
    comes from the officers, out of band, like the roster: the node accepts the policy chain
    from that version on, and signs no wallet transaction before it has it."""
    try:
        card = init_node(
            directory,
            node_id,
            index,
            host=host,
            port=port,
            url=url,
            prime_pool=prime_pool,
            genesis_policy=genesis_policy,
            raw_keys=raw_keys,
        )
    except TesseraError as exc:
        refuse(exc, as_json)
    emit(card.to_dict())  # the card is JSON with or without --json


def _refuse_start(exc: TesseraError, as_json: bool) -> NoReturn:
    fail(as_json, error_code(exc), f"node refuses to start: {exc}")


@node_app.command("run")
def run(directory: DirOption, as_json: JsonFlag = False) -> None:
    """Serve the node's API until interrupted (uvicorn, the host/port of node.json).  Logs are
    JSON lines on stderr; --json makes a start-up refusal a JSON error on stdout too."""
    try:
        config = NodeConfig.load(directory)
    except TesseraError as exc:
        _refuse_start(exc, as_json)
    logs.configure(f"node-{config.index}")
    try:
        runtime = NodeRuntime.open(directory)
    except TesseraError as exc:
        # The code only (the message may name files; it goes to the operator below).
        log_event(log, "node.refused", level=logging.ERROR, code=error_code(exc))
        logs.reset()
        _refuse_start(exc, as_json)
    log_event(
        log,
        "node.start",
        node=config.node_id,
        party=config.index,
        port=config.port,
        detail="roster pinned" if runtime.service is not None else "no roster pinned yet",
    )
    try:
        uvicorn.Server(
            server_config(create_app(runtime), runtime.config.host, runtime.config.port)
        ).run()
    finally:
        runtime.close()
        log_event(log, "node.stop", node=config.node_id, party=config.index)


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
        # Logging is `signer.logs` (JSON lines): uvicorn must not install its own text
        # handlers, and the app writes the access records itself (request id, route template).
        log_config=None,
        access_log=False,
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
    as_json: JsonFlag = False,
) -> None:
    """Pin (or grow) the cluster roster on this node, as its operator.  Cards already pinned
    can never change; new ones can be added (to re-share a key to new nodes).  A running node
    picks the new roster up at its next session."""
    try:
        grow_roster(directory, roster_from_json(json.loads(roster.read_text())))
    except (OSError, ValueError) as exc:
        fail(as_json, "ROSTER_UNREADABLE", f"cannot read {roster}: {exc}")
    except TesseraError as exc:
        refuse(exc, as_json)
    if as_json:
        emit({"pinned": True, "roster": str(roster)})
    else:
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


def _open_store(directory: Path, as_json: bool = False) -> NodeStore:
    try:
        return NodeStore(NodeConfig.load(directory).db_path)
    except TesseraError as exc:
        refuse(exc, as_json)


@quarantine_app.command("list")
def quarantine_list(
    directory: DirOption,
    include_cleared: Annotated[
        bool, typer.Option("--all", help="Also show cleared entries.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Print the entries as JSON (active ones unless --all)."""
    store = _open_store(directory, as_json)
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
    as_json: JsonFlag = False,
) -> None:
    """Lift one entry after investigation; the entry and the reason stay on record."""
    store = _open_store(directory, as_json)
    try:
        row = store.clear_quarantine(entry, reason)
    except TesseraError as exc:
        refuse(exc, as_json)
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
    as_json: JsonFlag = False,
) -> None:
    """Print every version of the key (state, whether a share is held) and its event log."""
    store = _open_store(directory, as_json)
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
    as_json: JsonFlag = False,
) -> None:
    """Drop the key's pending version (its new share erased) so that another re-share or
    refresh can start; the active version is untouched.  Refused after this node confirmed the
    version, unless --force; the node never confirms another version of that epoch."""
    store = _open_store(directory, as_json)
    try:
        row = store.discard_pending(key_id, reason, force=force)
    except TesseraError as exc:
        refuse(exc, as_json)
    finally:
        store.close()
    typer.echo(json.dumps({"discarded": {"key_id": row.key_id, "epoch": row.epoch}}, indent=2))


@node_app.command("migrate")
def migrate_db(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The node's directory (its node.db).", file_okay=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="The node's node.json (its directory's node.db).", dir_okay=False
        ),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="The database file itself.", dir_okay=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Bring the node's database to the schema this code needs (the node refuses to start on an
    older one).  A copy of the file is made first, next to it (node.db.pre-<revision>-<UTC
    time>.bak, mode 0600); sealed shares are moved as they are, never unsealed.  Stop the node
    first.  Exit 0 migrated or already current, 1 refused, 2 usage."""
    # Imported here: only this command needs alembic's machinery.
    from policies.schema import CommandResult, run_migrate_command, usage_result  # noqa: PLC0415
    from signer.node.migrations import SCHEMA  # noqa: PLC0415
    from signer.node.runtime import CONFIG_FILE  # noqa: PLC0415

    given = [option for option in (directory, config, db) if option is not None]
    if len(given) != 1:
        result = usage_result("give exactly one of --dir, --config, --db", as_json=as_json)
    elif config is not None and config.name != CONFIG_FILE:
        result = usage_result(
            f"--config names a node's {CONFIG_FILE}, not {config}", as_json=as_json
        )
    elif db is not None:
        result = run_migrate_command([(db, SCHEMA)], as_json=as_json)
    else:
        node_dir = directory if directory is not None else given[0].parent
        try:
            path = NodeConfig.load(node_dir).db_path
        except TesseraError as exc:
            doc = {"error": {"code": error_code(exc), "detail": str(exc)}}
            result = (
                CommandResult(1, output=json.dumps(doc, indent=2))
                if as_json
                else CommandResult(1, error=f"error: {exc}")
            )
        else:
            result = run_migrate_command([(path, SCHEMA)], as_json=as_json)
    if result.output:
        typer.echo(result.output)
    if result.error:
        errors.print(result.error, markup=False)
    raise typer.Exit(result.exit_code)


audit_app = typer.Typer(
    help=(
        "The node's own audit log: hash-chained records of what it signed, refused, received "
        "and changed, with checkpoints signed by its HSM identity key (docs/nodes.md, "
        "section Audit log).  Both commands read the database only; no token login."
    ),
    no_args_is_help=True,
)
node_app.add_typer(audit_app, name="audit")


def _node_identity(store: NodeStore, directory: Path, as_json: bool) -> TrustedKey:
    """The checkpoint key the log is held to: the identity key of the node's own card, as the
    node itself stores it (and checks against its token at start-up); the card must still be
    self-signed."""
    card_doc = store.setting(_CARD_SETTING)
    if card_doc is None:
        fail(as_json, "NODE_SETUP", f"{directory}: no node card (initialisation incomplete)")
    try:
        card = NodeCard.from_dict(json.loads(card_doc))
        card.verify()
    except (ValueError, TesseraError) as exc:
        fail(as_json, "NODE_SETUP", f"{directory}: the node card is unusable: {exc}")
    return audit_trusted_key(card.node_id, card.identity)


@audit_app.command("verify")
def audit_verify(
    directory: DirOption,
    head: Annotated[
        Path | None,
        typer.Option(
            "--head",
            help=(
                "A checkpoint JSON kept outside the node: a tail cut after the node's newest "
                "checkpoint shows only against it."
            ),
            dir_okay=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify the chain and every checkpoint signature against the node card's identity key.
    Exit 0 intact, 1 broken (the first broken seq and why)."""
    store = _open_store(directory, as_json)
    try:
        key = _node_identity(store, directory, as_json)
        try:
            held = None if head is None else load_checkpoint(head)
            report = NodeAudit(store, None).verify({key}, head=held)
        except AuditLogError as exc:
            if as_json:
                doc = {
                    "code": error_code(exc),
                    "detail": str(exc),
                    "seq": exc.seq,
                    "position": exc.position,
                    "reason": exc.reason,
                }
                typer.echo(json.dumps({"error": doc}))
            else:
                where = f"seq {exc.seq}" if exc.seq is not None else f"position {exc.position}"
                errors.print(f"audit log broken at {where}: {exc.reason}", markup=False)
            raise typer.Exit(EXIT_REFUSED) from None
        except TesseraError as exc:
            refuse(exc, as_json)
    finally:
        store.close()
    if as_json:
        emit({**report.to_json_object(), "signer": key.signer})
    else:
        typer.echo(
            f"audit log intact: {report.records} records, {report.checkpoints} checkpoints "
            f"(last at seq {report.last_checkpoint_seq}), head seq {report.head_seq}"
        )


@audit_app.command("export")
def audit_export(
    directory: DirOption,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (exact records) or csv.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write here instead of stdout.", dir_okay=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Export the records as JSONL (the exact canonical records, hashes included: verifiable
    again with policies.audit) or CSV for spreadsheets.  An unknown format is a usage error
    (exit 2)."""
    writers = {"jsonl": export_jsonl, "csv": export_csv}
    writer = writers.get(fmt)
    if writer is None:
        usage(f"unknown --format {fmt!r}; expected jsonl or csv", as_json)
    store = _open_store(directory, as_json)
    try:
        records = NodeAudit(store, None).records()
    except TesseraError as exc:
        refuse(exc, as_json)
    finally:
        store.close()
    buffer = io.StringIO()
    count = writer(records, buffer)
    if out is not None:
        try:
            out.write_text(buffer.getvalue(), encoding="utf-8")
        except OSError as exc:
            fail(as_json, "EXPORT_UNWRITABLE", f"cannot write {out}: {exc}")
        if as_json:
            emit({"format": fmt, "records": count, "out": str(out)})
        else:
            errors.print(f"{count} records written to {out}", markup=False)
    elif as_json:
        emit({"format": fmt, "records": count, "content": buffer.getvalue()})
    else:
        typer.echo(buffer.getvalue(), nl=False)
