"""The one SQLite set-up every Tessera database uses: node, coordinator, policy store and
velocity ledger.

It lives here, in the lowest layer that keeps a database (`policies`), so that the node
(`signer`) and the coordinator use it without importing each other's storage modules.

Every database is a single file in WAL mode with ``synchronous=FULL``: a commit is on disk before
the process replies, so a node never answers for a presignature or a share it could still lose.

A session may ask for less (`Sync`, `defer_sync`): its commit is written to the log without an
fsync of its own (``synchronous=NORMAL`` for that one transaction).  That is sound because of
how SQLite's write-ahead log is recovered: frames are appended in commit order and carry
cumulative checksums, so what survives a power loss is always a *prefix* of the commits, and
the fsync of any later commit (or `sync_wal`) makes every earlier one durable with it.  A crash
of the process alone loses nothing either way (the frames are in the OS's cache).  The rule for
using it: nothing that leaves the process may depend on a deferred commit until a synced commit
or `sync_wal` has followed it.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event
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

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        # Back in the pool (rolled back already): the next session gets FULL again.
        if record is not None and record.info.pop(_DEFERRED, False):
            dbapi_connection.execute("PRAGMA synchronous=FULL")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "checkin", on_checkin)
    if immediate:

        def on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        event.listen(engine, "begin", on_begin)
    return engine


#: The pool record's mark of a connection whose synchronous level `defer_sync` lowered.
_DEFERRED = "tessera_deferred_sync"


class Sync(enum.Enum):
    """When a session's commits reach the disk."""

    #: on disk when the commit returns (``synchronous=FULL``): the default
    NOW = "now"
    #: without an fsync of its own, made durable by the store's barrier, which whatever acts
    #: on it outside the process awaits first (the signer API before it answers, the payout
    #: engine before it asks the nodes): state others act on — a withdrawal, a nonce reserved
    DEFERRED = "deferred"
    #: without an fsync of its own and never waited for: durable with the next synced commit
    #: or barrier; for records no one outside acts on (a request nonce, a presignature taken —
    #: the nodes keep it from a second use on their own)
    WITH_NEXT = "with_next"


def defer_sync(connection: Connection) -> None:
    """Let `connection`'s next transaction commit without an fsync (the module's docstring
    says when that is sound); it gets ``synchronous=FULL`` back when it returns to the pool.
    Called before the transaction's first statement: SQLite refuses the change inside one."""
    connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
    connection.connection.info[_DEFERRED] = True  # the pool record's, kept across checkouts


def sync_wal(path: Path) -> None:
    """fdatasync the write-ahead log of the database `path`: every commit written so far is
    then durable (what SQLite itself does at a FULL commit).  Opened afresh each time: the log
    is a new file after SQLite removes it (when the last connection closes, checkpointed and
    synced first — then there is nothing left to sync)."""
    try:
        fd = os.open(f"{path}-wal", os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
