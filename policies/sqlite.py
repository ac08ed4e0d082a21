"""The one SQLite set-up every Tessera database uses: node, coordinator, policy store and
velocity ledger.

It lives here, in the lowest layer that keeps a database (`policies`), so that the node
(`signer`) and the coordinator use it without importing each other's storage modules.

Every database is a single file in WAL mode with ``synchronous=FULL``: a commit is on disk before
the process replies, so a node never answers for a presignature or a share it could still lose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import create_engine


def sqlite_engine(
    path: Path, *, immediate: bool = False, busy_timeout_seconds: float = 10.0
) -> Engine:
    """An engine on the SQLite file `path`, usable from several threads; a writer waits up to
    `busy_timeout_seconds` for another's lock.

    With `immediate`, every transaction starts with ``BEGIN IMMEDIATE`` and so holds the write
    lock from its first read: a check-then-write is atomic across processes (the policy store and
    the velocity ledger rely on it).  Without it, pysqlite's deferred ``BEGIN`` applies and the
    caller takes the lock with its first write (the node and coordinator stores do so on purpose,
    see `signer.node.store._lock_key`)."""
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": busy_timeout_seconds},
    )
    busy_ms = int(busy_timeout_seconds * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if immediate:
            # Autocommit at the driver level; the "begin" listener below issues the BEGIN.
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    if immediate:

        def on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        event.listen(engine, "begin", on_begin)
    return engine
