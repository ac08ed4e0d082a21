"""Commits written without an fsync of their own and the barrier that makes them durable
(policies/sqlite.py `Sync`, `CoordinatorStore.sync`, the signer API's reply barrier), on real
SQLite files and a real killed process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from sqlalchemy import text

import policies.sqlite
from coordinator.api.app import create_app
from coordinator.api.auth import Authenticator, RateLimiter
from coordinator.api.withdrawals import WithdrawalService
from coordinator.payouts import PayoutEngine
from coordinator.store import CoordinatorStore
from policies.sqlite import Sync

ROOT = Path(__file__).resolve().parent.parent
_FULL, _NORMAL = 2, 1  # PRAGMA synchronous values


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CoordinatorStore]:
    s = CoordinatorStore(tmp_path / "c.db")
    with s.session() as session:
        session.execute(text("CREATE TABLE marks (n INTEGER PRIMARY KEY)"))
        session.commit()
    yield s
    s.close()


def _mark(store: CoordinatorStore, n: int, sync: Sync = Sync.NOW) -> None:
    with store.session(sync) as session:
        session.execute(text("INSERT INTO marks (n) VALUES (:n)"), {"n": n})
        session.commit()


def _level(store: CoordinatorStore, sync: Sync = Sync.NOW) -> int:
    with store.session(sync) as session:
        return int(session.execute(text("PRAGMA synchronous")).scalar_one())


@pytest.fixture
def wal_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files `sync_wal` fdatasyncs (by their path), each still synced for real."""
    synced: list[str] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(policies.sqlite.os, "fdatasync", spy)
    return synced


def test_a_deferred_session_commits_at_normal_and_its_connection_returns_at_full(
    store: CoordinatorStore,
) -> None:
    assert _level(store) == _FULL
    for _ in range(3):  # the pool hands the same connections out again
        assert _level(store, Sync.DEFERRED) == _NORMAL
        assert _level(store, Sync.WITH_NEXT) == _NORMAL
        assert _level(store) == _FULL
    _mark(store, 1, Sync.DEFERRED)
    with store.session() as session:
        assert session.execute(text("SELECT n FROM marks")).scalars().all() == [1]


def test_a_failed_deferred_session_still_hands_back_a_full_connection(
    store: CoordinatorStore,
) -> None:
    _mark(store, 1)
    with pytest.raises(Exception, match="UNIQUE"):
        _mark(store, 1, Sync.DEFERRED)
    assert _level(store) == _FULL
    assert store.unsynced()  # counted although it failed: a sync too many, never one too few


def test_only_state_a_reply_may_show_waits_for_the_barrier(
    store: CoordinatorStore, wal_syncs: list[str]
) -> None:
    assert not store.unsynced()
    _mark(store, 1, Sync.WITH_NEXT)  # a request nonce: durable with the next synced commit
    assert not store.unsynced()
    store.sync()
    assert wal_syncs == []  # nothing to make durable: no fdatasync at all
    _mark(store, 2, Sync.DEFERRED)
    assert store.unsynced()
    store.sync()
    assert wal_syncs == [f"{store.path}-wal"]
    assert not store.unsynced()
    store.sync()
    assert len(wal_syncs) == 1  # synced already


def test_the_barrier_covers_only_what_was_committed_before_it(
    store: CoordinatorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferred commit made while the barrier's fdatasync runs (another thread) may not be
    in what it synced: it stays unsynced until the next barrier."""
    real = policies.sqlite.sync_wal

    def slow(path: Path) -> None:
        real(path)
        _mark(store, 99, Sync.DEFERRED)  # lands after the fdatasync

    monkeypatch.setattr("coordinator.store.sync_wal", slow)
    _mark(store, 1, Sync.DEFERRED)
    store.sync()
    assert store.unsynced()


def test_opening_a_store_syncs_what_a_killed_predecessor_left(
    tmp_path: Path, wal_syncs: list[str]
) -> None:
    path = tmp_path / "c.db"
    CoordinatorStore(path).close()  # a new file: its log removed again when it closes
    assert wal_syncs == []
    first = CoordinatorStore(path)
    try:
        second = CoordinatorStore(path)  # the first one's log is there
        second.close()
        assert wal_syncs == [f"{path}-wal"]
    finally:
        first.close()


def test_sync_wal_without_a_log_is_nothing(tmp_path: Path) -> None:
    policies.sqlite.sync_wal(tmp_path / "absent.db")  # no -wal file: nothing to sync


def test_a_deferred_commit_survives_kill_9(tmp_path: Path) -> None:
    """Only a power loss can drop a commit that had no fsync: the killed process's frames are
    in the OS's cache, and the next opener recovers them from the log."""
    path = tmp_path / "c.db"
    CoordinatorStore(path).close()
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from sqlalchemy import text
        from coordinator.store import CoordinatorStore
        from policies.sqlite import Sync
        store = CoordinatorStore(Path({str(path)!r}))
        with store.session() as session:
            session.execute(text("CREATE TABLE marks (n INTEGER PRIMARY KEY)"))
            session.commit()
        for n, sync in enumerate((Sync.DEFERRED, Sync.WITH_NEXT)):
            with store.session(sync) as session:
                session.execute(text("INSERT INTO marks (n) VALUES (:n)"), {{"n": n}})
                session.commit()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], check=False, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # never checkpointed: recovered from the log
    store = CoordinatorStore(path)
    try:
        with store.session() as session:
            assert session.execute(text("SELECT n FROM marks ORDER BY n")).scalars().all() == [
                0,
                1,
            ]
    finally:
        store.close()


def test_every_api_answer_waits_for_the_barrier_and_is_counted(
    store: CoordinatorStore, wal_syncs: list[str]
) -> None:
    """The signer API syncs before an answer starts whenever a withdrawal's step was written
    without its own fsync — so no client (or officer) sees a status a power loss could take
    back.  Any route, even one that reads nothing: the answer is what must not run ahead."""
    service = WithdrawalService(store, cast(PayoutEngine, None))  # /healthz needs no engine
    app = create_app(service, Authenticator(store), RateLimiter())

    async def answers() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            assert (await client.get("/v1/healthz")).status_code == 200
            assert wal_syncs == []  # nothing unsynced: no fdatasync on the answer's way
            _mark(store, 1, Sync.DEFERRED)
            answer = await client.get("/v1/healthz")
            assert answer.status_code == 200
            assert wal_syncs == [f"{store.path}-wal"]
            assert not store.unsynced()
            assert (await client.get("/v1/nowhere")).status_code == 404
            # the same middleware counts every answer by route template and status
            counted = (await client.get("/v1/metrics")).text
            assert 'tessera_api_requests_total{route="/v1/healthz",status="200"} 2.0' in counted
            assert 'tessera_api_requests_total{route="unmatched",status="404"} 1.0' in counted

    asyncio.run(answers())
