"""Schema versions of every Tessera database (node, coordinator, policy store, velocity ledger).

Each database kind has a `Schema`: its name, a package of alembic migration scripts shipped
inside the Python package (``env.py``, ``script.py.mako``, ``versions/``) and the revision this
code needs (its head).  The revision a file is at is alembic's ``alembic_version`` table.

* `ensure` runs when a store opens: an empty file gets the tables at head (the migrations run
  from nothing, so a fresh database and a migrated one are made by the same DDL); a file at
  head opens; anything else is refused with a typed error naming the file, its revision, the
  head and the command to run.  A store never migrates by itself: a node's database holds its
  sealed key shares, and changing it is the operator's decision, taken with a backup.
* `migrate` is that command: a consistent copy of the file first (sqlite3 backup API, so a WAL
  file is copied with what its log holds), then the upgrade in one transaction that either
  commits whole or leaves the file as it was.

Revision ids carry the schema's name (``node_0001``): a file of another kind (a coordinator
database given as a node's) is an unknown revision, never mistaken for an old one.

A database made before versions existed has tables and no ``alembic_version``: it is the
baseline revision (``<name>_0001``, exactly what the code at commit cad499a created; earlier
code created a subset, and created missing tables on open, which the baseline revision does
too).  `migrate` checks its tables are the baseline's before adopting it.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from hsm.output import USAGE
from policies.errors import PolicyError
from policies.sqlite import sqlite_engine

VERSION_TABLE = "alembic_version"

# A table column as SQLite reports it: (name, declared type, not null, primary-key position).
Column = tuple[str, str, bool, int]
# A database's shape: its tables' columns and its indexes (name -> table, unique, columns).
Shape = dict[str, Any]


@dataclass(frozen=True)
class Schema:
    """One database kind: `name` ("node"), `package` (dotted name of its migration scripts),
    `baseline` (the revision of a file made before versions existed), `head` (the revision this
    code needs) and `command`, the operator's fix, with ``{path}`` for the file."""

    name: str
    package: str
    baseline: str
    head: str
    command: str

    @property
    def script_location(self) -> str:
        return str(resources.files(self.package))

    def fix(self, path: Path) -> str:
        return self.command.format(path=shlex.quote(str(path)))

    def config(self, connection: Connection | None = None) -> Config:
        """An alembic configuration without an ini file; `connection` (one in a transaction)
        is the one env.py migrates."""
        cfg = Config()
        cfg.set_main_option("script_location", self.script_location)
        cfg.attributes["connection"] = connection
        return cfg


# --- errors ------------------------------------------------------------------------------------


class SchemaError(PolicyError):
    """A database whose schema revision this code cannot use as it is (a `PolicyError`, the base
    of what `policies` raises, so a `TesseraError`).  Names the file and what is wrong."""

    code = "SCHEMA_ERROR"

    def __init__(self, path: Path, schema: str, detail: str) -> None:
        self.done: tuple[MigrationReport, ...] = ()  # see `migrate_all`
        self.path = path
        self.schema = schema
        self.detail = detail
        super().__init__(f"{schema} database {path}: {detail}")


class SchemaOutdated(SchemaError):
    """The file is at an older revision (or unversioned, the baseline): migrate it."""

    code = "SCHEMA_OUTDATED"

    def __init__(self, path: Path, schema: Schema, revision: str | None) -> None:
        self.revision = revision
        self.head = schema.head
        self.command = schema.fix(path)
        at = (
            f"has no schema version (made before versions existed: baseline {schema.baseline})"
            if revision is None
            else f"is at schema revision {revision}"
        )
        super().__init__(
            path,
            schema.name,
            f"{at}, this code needs {schema.head}; refusing to open it. Stop every process "
            f"using it and run `{self.command}` (it backs the file up first).",
        )


class SchemaTooNew(SchemaError):
    """The file is at a revision this code does not know: newer code, or another kind of file."""

    code = "SCHEMA_TOO_NEW"

    def __init__(self, path: Path, schema: Schema, revision: str) -> None:
        self.revision = revision
        self.head = schema.head
        super().__init__(
            path,
            schema.name,
            f"is at schema revision {revision!r}, unknown to this code (its head is "
            f"{schema.head}): it was migrated by a newer Tessera or is not a {schema.name} "
            "database; refusing to touch it (run the newer version, or restore the backup "
            "taken before its migration).",
        )


class SchemaMismatch(SchemaError):
    """The file's tables are not those of the revision it claims (or of the baseline)."""

    code = "SCHEMA_MISMATCH"


class DatabaseMissing(SchemaError):
    """`migrate` was given a file that does not exist or holds no tables."""

    code = "DATABASE_MISSING"


class MigrationFailed(SchemaError):
    """The upgrade failed and was rolled back: the file is as it was (the backup too)."""

    code = "MIGRATION_FAILED"


# --- reading a database ------------------------------------------------------------------------


def _tables(connection: Connection) -> list[str]:
    rows = connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )
    return [str(row[0]) for row in rows if row[0] != VERSION_TABLE]


def _quoted(name: str) -> str:
    """An SQL identifier for a table name read from sqlite_master (which may hold anything)."""
    return '"' + name.replace('"', '""') + '"'


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def shape(connection: Connection) -> Shape:
    """The tables (columns as SQLite reports them) and indexes of the database, without the
    version table: what two databases must share to be the same schema."""
    tables: dict[str, list[Column]] = {}
    indexes: dict[str, tuple[str, bool, tuple[str, ...]]] = {}
    for table in _tables(connection):
        info = connection.exec_driver_sql(f"PRAGMA table_info({_quoted(table)})")
        tables[table] = [(str(r[1]), str(r[2]).upper(), bool(r[3]), int(r[5])) for r in info]
        for index in connection.exec_driver_sql(f"PRAGMA index_list({_quoted(table)})"):
            name, unique = str(index[1]), bool(index[2])
            columns = connection.exec_driver_sql(f"PRAGMA index_info({_quoted(name)})")
            indexes[name] = (table, unique, tuple(str(c[2]) for c in columns))
    return {"tables": tables, "indexes": indexes}


def row_counts(connection: Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in _tables(connection):
        query = f"SELECT count(*) FROM {_quoted(table)}"  # noqa: S608 (a quoted identifier)
        counts[table] = int(connection.exec_driver_sql(query).scalar_one())
    return counts


@functools.cache
def _script(schema: Schema) -> ScriptDirectory:
    return ScriptDirectory.from_config(schema.config())


def known_revisions(schema: Schema) -> frozenset[str]:
    return frozenset(script.revision for script in _script(schema).walk_revisions())


@functools.cache
def shape_at(schema: Schema, revision: str) -> Shape:
    """The shape a database has at `revision`: the migrations run on an in-memory database."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as connection, connection.begin():
            command.upgrade(schema.config(connection), revision)
            return shape(connection)
    finally:
        engine.dispose()


# --- opening a store ---------------------------------------------------------------------------


def _refuse(schema: Schema, path: Path, revision: str | None, tables: list[str]) -> None:
    """Raise the error for a file that is not empty and not usable as it is; return if it is
    at head with every table of head."""
    if revision is not None and revision not in known_revisions(schema):
        raise SchemaTooNew(path, schema, revision)
    if revision != schema.head:
        raise SchemaOutdated(path, schema, revision)
    missing = sorted(set(shape_at(schema, schema.head)["tables"]) - set(tables))
    if missing:
        # Never re-created empty here: a missing key_confirmations table would let a node
        # confirm two versions of one epoch; the file was damaged and needs an operator.
        raise SchemaMismatch(
            path,
            schema.name,
            f"is at {revision} but lacks the tables {', '.join(missing)}; refusing to open it "
            "(restore it from a backup)",
        )


def ensure(engine: Engine, schema: Schema, path: Path) -> None:
    """Make the store's database usable at `schema.head` or refuse it (see the module
    docstring): an empty file gets the tables at head and is stamped head; a file at head is
    left alone; an older or unversioned file raises `SchemaOutdated`, an unknown revision
    `SchemaTooNew`.  Nothing is ever changed in a file that is not empty."""
    with engine.connect() as connection:
        revision, tables = _revision(connection), _tables(connection)
        connection.rollback()
    if revision is not None or tables:
        _refuse(schema, path, revision, tables)  # returns only at head, every table there
        return
    # Empty: create under BEGIN IMMEDIATE on an engine of our own, so the DDL is one
    # transaction (pysqlite would otherwise commit each CREATE on its own, and a crash would
    # leave a half-made unversioned file) and two processes opening a new file do not both
    # create it: the second waits, then finds it at head.
    creator = sqlite_engine(path, immediate=True)
    try:
        with creator.connect() as connection, connection.begin():
            revision, tables = _revision(connection), _tables(connection)
            if revision is None and not tables:
                command.upgrade(schema.config(connection), schema.head)
                return
        _refuse(schema, path, revision, tables)
    finally:
        creator.dispose()


# --- migrating ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationReport:
    """What `migrate` did: the revisions, the backup (None when already at head) and the rows
    of every table before and after."""

    path: Path
    schema: str
    old_revision: str | None
    new_revision: str
    backup: Path | None
    rows_before: dict[str, int] = field(default_factory=dict)
    rows_after: dict[str, int] = field(default_factory=dict)

    @property
    def migrated(self) -> bool:
        return self.backup is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "database": str(self.path),
            "schema": self.schema,
            "status": "migrated" if self.migrated else "current",
            "old_revision": self.old_revision,
            "new_revision": self.new_revision,
            "backup": None if self.backup is None else str(self.backup),
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
        }

    def describe(self) -> str:
        if not self.migrated:
            return f"{self.schema} database {self.path}: already at {self.new_revision}, unchanged"
        old = self.old_revision or "unversioned (baseline)"
        return (
            f"{self.schema} database {self.path}: migrated {old} -> {self.new_revision}, "
            f"{sum(self.rows_after.values())} rows kept; backup {self.backup}"
        )


def _backup_path(path: Path, revision: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = path.with_name(f"{path.name}.pre-{revision}-{stamp}")
    candidate, n = base.with_name(base.name + ".bak"), 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}.bak"), n + 1
    return candidate


def backup(path: Path, schema: Schema, revision: str, expected: dict[str, int]) -> Path:
    """Copy `path` next to itself (mode 0600: it holds what the database holds, sealed shares
    included) through the sqlite3 backup API: a consistent snapshot, WAL content included, even
    with the file open elsewhere.  The copy is one self-contained file (rollback journal) and is
    checked (integrity, row counts equal to `expected`) before it is trusted."""
    target = _backup_path(path, revision)
    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    source, copy = sqlite3.connect(path), sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()
        source.close()
    check = sa.create_engine(f"sqlite:///{target}")
    try:
        with check.connect() as connection:
            ok = connection.exec_driver_sql("PRAGMA integrity_check").scalar_one()
            counts = row_counts(connection)
    finally:
        check.dispose()
    if ok != "ok" or counts != expected:
        raise MigrationFailed(
            path,
            schema.name,
            f"the backup {target} does not match the database (integrity {ok}, rows {counts} "
            f"instead of {expected}); nothing was migrated",
        )
    return target


def _check_baseline(connection: Connection, schema: Schema, path: Path) -> None:
    """An unversioned file is adopted as the baseline only if every table it has is a baseline
    table with the baseline's columns (tables it lacks are created, as the old code did on
    open); anything else is not a database this code knows how to upgrade."""
    expected = shape_at(schema, schema.baseline)["tables"]
    actual = shape(connection)["tables"]
    foreign = sorted(set(actual) - set(expected))
    if foreign:
        raise SchemaMismatch(
            path,
            schema.name,
            f"has no schema version and tables the {schema.name} baseline never had "
            f"({', '.join(foreign)}): not a {schema.name} database, refusing to migrate it",
        )
    for table, columns in actual.items():
        if columns != expected[table]:
            raise SchemaMismatch(
                path,
                schema.name,
                f"has no schema version and its table {table} differs from the baseline "
                f"{schema.baseline} ({columns} instead of {expected[table]}); refusing to "
                "migrate it",
            )


def migrate(path: Path, schema: Schema) -> MigrationReport:
    """Bring the file at `path` to `schema.head`: back it up, then (unversioned files adopted as
    the baseline) run the migrations in one transaction, which is rolled back if anything fails
    or a row is missing afterwards.  At head: nothing is done and no copy made.  Refused (typed
    error, the file untouched): a missing or empty file, an unknown revision, an unversioned
    file that is not the baseline."""
    # Refusals first, on a plain read-only look (no WAL switch, no lock): a refused file is
    # left byte for byte as it was.
    check(path, schema)
    engine = sqlite_engine(path, immediate=True)
    try:
        # BEGIN IMMEDIATE: no other writer from here to the commit, so the backup taken inside
        # (a reader on its own connection) is exactly the state the migration starts from.
        with engine.connect() as connection, connection.begin():
            # Again under the lock: the file may have changed since `check`.
            revision = _refusals(connection, schema, path)
            if revision == schema.head:
                counts = row_counts(connection)
                return MigrationReport(path, schema.name, revision, revision, None, counts, counts)
            before = row_counts(connection)
            copy = backup(path, schema, revision or "unversioned", before)
            try:
                cfg = schema.config(connection)
                if revision is None:
                    # The baseline revision creates only the tables the file lacks, then
                    # stamps it: the same as `alembic stamp` for a complete baseline file.
                    command.upgrade(cfg, schema.baseline)
                command.upgrade(cfg, schema.head)
            except SQLAlchemyError as exc:
                raise MigrationFailed(
                    path,
                    schema.name,
                    f"upgrade to {schema.head} failed and was rolled back "
                    f"({exc.__class__.__name__}: {exc}); backup {copy}",
                ) from exc
            after = row_counts(connection)
            new = _revision(connection)
            # A migration may rename or reshape tables, never drop rows: a lost sealed share is
            # a lost key.  Raising here rolls the whole upgrade back.
            if sum(after.values()) < sum(before.values()) or new != schema.head:
                raise MigrationFailed(
                    path,
                    schema.name,
                    f"upgrade ended at {new} with rows {after} (before {before}); rolled back, "
                    f"backup {copy}",
                )
        return MigrationReport(path, schema.name, revision, schema.head, copy, before, after)
    finally:
        engine.dispose()


# --- what the scripts call ---------------------------------------------------------------------


def table_missing(name: str) -> bool:
    """In a migration: the table does not exist yet (the baseline revision creates only the
    tables an unversioned file lacks, like the create_all of the code before versions)."""
    return not sa.inspect(op.get_bind()).has_table(name)


def run_env() -> None:
    """The body of every migration package's env.py: migrate the connection `migrate` or
    `ensure` passes (inside its transaction), or, for a developer's `alembic` command, the
    ``sqlalchemy.url`` of the ini file.  Batch mode, so ALTERs SQLite lacks are table copies."""
    config = context.config
    connection: Connection | None = config.attributes.get("connection")
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    if connection is not None:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as own:
            context.configure(connection=own, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


# --- what the operator commands share ----------------------------------------------------------


def check(path: Path, schema: Schema) -> str | None:
    """What `migrate` would refuse, raised without changing anything (a read): a missing or empty
    file, an unknown revision, a damaged file at head, an unversioned file that is not the
    baseline.  Returns the file's revision (None: unversioned)."""
    if not path.is_file():
        raise DatabaseMissing(path, schema.name, "no such file; nothing to migrate")
    # A plain engine: the stores' set-up would switch a file to WAL, a write.
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            revision = _refusals(connection, schema, path)
            connection.rollback()
            return revision
    finally:
        engine.dispose()


def _refusals(connection: sa.Connection, schema: Schema, path: Path) -> str | None:
    """Raise what `migrate` refuses on this connection's view of the file (see `check`);
    return the file's revision (None: an unversioned file that is the baseline)."""
    revision, tables = _revision(connection), _tables(connection)
    if revision is None and not tables:
        raise DatabaseMissing(path, schema.name, f"holds no tables: not a {schema.name} database")
    if revision is not None and revision not in known_revisions(schema):
        raise SchemaTooNew(path, schema, revision)
    if revision == schema.head:
        _refuse(schema, path, revision, tables)
    if revision is None:
        _check_baseline(connection, schema, path)
    return revision


def migrate_all(targets: list[tuple[Path, Schema]]) -> list[MigrationReport]:
    """Migrate several databases (a cluster's coordinator and nodes, a policy store and its
    ledger): every one is checked first, so a refusal of any changes none of them.  Should one
    fail after others were migrated, the error carries their reports (`SchemaError.done`)."""
    for path, schema in targets:
        check(path, schema)
    reports: list[MigrationReport] = []
    for path, schema in targets:
        try:
            reports.append(migrate(path, schema))
        except SchemaError as exc:
            exc.done = tuple(reports)
            raise
    return reports


def error_json(exc: SchemaError) -> dict[str, Any]:
    """The ``--json`` form of a refusal: ``{"error": {"code", "detail", "database"}}`` (and
    "migrated", the databases done before it, if any)."""
    error: dict[str, Any] = {"code": exc.code, "detail": str(exc), "database": str(exc.path)}
    if exc.done:
        error["migrated"] = [report.to_json() for report in exc.done]
    return {"error": error}


@dataclass(frozen=True)
class CommandResult:
    """What a ``migrate`` command prints and its exit code: 0 migrated or already current,
    1 refused or failed, 2 usage (`output` for stdout, `error` for stderr)."""

    exit_code: int
    output: str = ""
    error: str = ""


def run_migrate_command(targets: list[tuple[Path, Schema]], *, as_json: bool) -> CommandResult:
    """The body the three operator commands share (`tessera node|cluster|policy migrate`).  With
    `as_json` everything, a refusal included, is one JSON object on stdout:
    ``{"databases": [report, …]}`` or ``{"error": {…}}``."""
    try:
        reports = migrate_all(targets)
    except SchemaError as exc:
        if as_json:
            return CommandResult(1, output=json.dumps(error_json(exc), indent=2))
        done = "".join(f"{report.describe()}\n" for report in exc.done)
        return CommandResult(1, output=done.rstrip("\n"), error=f"error: {exc}")
    if as_json:
        doc = {"databases": [report.to_json() for report in reports]}
        return CommandResult(0, output=json.dumps(doc, indent=2))
    return CommandResult(0, output="\n".join(report.describe() for report in reports))


def usage_result(detail: str, *, as_json: bool) -> CommandResult:
    """A command line that names no database, or two ways of naming one (exit code 2)."""
    if as_json:
        doc = {"error": {"code": USAGE, "detail": detail}}
        return CommandResult(2, output=json.dumps(doc, indent=2))
    return CommandResult(2, error=f"error: {detail}")
