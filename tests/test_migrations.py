"""Schema versions and migrations of the four databases (`policies.schema`), on real SQLite files.

The old databases are built from tests/fixtures/schemas/*_0001.sql: the sqlite_master of the
databases the code at commit cad499a (the last before versions) created, dumped verbatim.  The
node's is filled with secrets sealed by a real SoftHSM2 token, and every one of them must unseal
to its plaintext after the migration.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel
from typer.testing import CliRunner

import coordinator.api.tables  # noqa: F401  (the API's tables are in the coordinator's metadata)
from coordinator.console import app
from coordinator.migrations import SCHEMA as COORDINATOR
from coordinator.store import CoordinatorStore, _CoordinatorTable
from hsm.config import write_pin_file
from hsm.keystore import KeyStore
from hsm.softhsm import init_token
from policies.migrations.store import SCHEMA as POLICY_STORE
from policies.migrations.velocity import SCHEMA as VELOCITY
from policies.schema import (
    DatabaseMissing,
    Schema,
    SchemaMismatch,
    SchemaOutdated,
    SchemaTooNew,
    migrate,
    shape,
    shape_at,
)
from policies.store import PolicyStore
from policies.velocity import VelocityLedger
from signer.node.migrations import SCHEMA as NODE
from signer.node.store import NodeStore
from signer.node.tables import NodeTable

FIXTURES = Path(__file__).parent / "fixtures" / "schemas"
SCHEMAS = {"node": NODE, "coordinator": COORDINATOR, "policy_store": POLICY_STORE}
SCHEMAS["velocity"] = VELOCITY
runner = CliRunner()
NODE_ID = "node-1"
PIN = "Pin-Migrate-5e21aa"
SO_PIN = "So-Migrate-0b77c3"
KEY = "ab" * 32


def old_database(path: Path, kind: str) -> sqlite3.Connection:
    """A database as cad499a's code made it (WAL, as every Tessera database), open for filling."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript((FIXTURES / f"{kind}_0001.sql").read_text())
    return connection


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2').fetchall()


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.pre-*.bak"))


# --- the node: real sealed rows ----------------------------------------------------------------


@pytest.fixture
def keystore(tmp_path: Path) -> Iterator[KeyStore]:
    pin_file = tmp_path / "token.pin"
    write_pin_file(pin_file, PIN)
    config = init_token(tmp_path / "hsm", NODE_ID, PIN, SO_PIN, pin_file=pin_file)
    store = KeyStore.open(config)
    try:
        store.ensure_node_keys(NODE_ID)
        yield store
    finally:
        store.close()


Secret = tuple[str, str, int, str, bytes]  # (where, key id, version, purpose, plaintext)


def fill_node(connection: sqlite3.Connection, keystore: KeyStore) -> list[Secret]:
    """Rows in every table of the old node schema, secrets sealed by the token as the node seals
    them (results.py, runtime.py); returns what each sealed column must unseal to."""
    made: list[Secret] = []

    def seal(where: str, key_id: str, version: int, purpose: str) -> bytes:
        plaintext = secrets.token_bytes(64)
        made.append((where, key_id, version, purpose, plaintext))
        return keystore.seal(
            plaintext, node_id=NODE_ID, key_id=key_id, share_version=version, purpose=purpose
        )

    execute = connection.execute
    execute("INSERT INTO settings VALUES (?, ?)", ("kex", seal("setting kex", "kex", 0, "x25519")))
    execute("INSERT INTO settings VALUES (?, ?)", ("card", b'{"index": 1}'))
    execute(
        "INSERT INTO key_versions VALUES (?, ?, ?, ?, ?, ?)",
        (KEY, 1, b"public-1", None, "retired", 1.0),
    )
    execute(
        "INSERT INTO key_versions VALUES (?, ?, ?, ?, ?, ?)",
        (KEY, 2, b"public-2", seal("share 2", KEY, 2, "key_share"), "active", 2.0),
    )
    execute(
        "INSERT INTO key_versions VALUES (?, ?, ?, ?, ?, ?)",
        (KEY, 3, b"public-3", seal("share 3", KEY, 3, "key_share"), "pending", 3.0),
    )
    execute(
        "INSERT INTO key_confirmations VALUES (?, ?, ?, ?, ?, ?, ?)",
        (KEY, 3, 1, "00" * 32, b"signature", "signed", 3.5),
    )
    execute(
        "INSERT INTO key_events (key_id, epoch, action, detail, at) VALUES (?, ?, ?, ?, ?)",
        (KEY, 3, "pending", "re-share", 3.0),
    )
    aux_id = "cd" * 32
    execute(
        "INSERT INTO aux_info VALUES (?, ?, ?, ?, ?, ?)",
        (aux_id, "1,2,3", b"aux-public", seal("aux", aux_id, 0, "aux_info"), "active", 1.5),
    )
    for n, state in enumerate(("available", "consumed", "revoked", "available")):
        pid = f"{n:02x}" * 32
        execute(
            "INSERT INTO presignatures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pid,
                KEY,
                2,
                "1,2",
                "0/5",
                aux_id,
                b"presign-public",
                seal(f"presignature {pid}", pid, 2, "presignature"),
                state,
                4.0 + n,
                5.0 if state == "consumed" else None,
            ),
        )
    execute("INSERT INTO session_starts VALUES (?, ?, ?)", ("ee" * 32, "sign/v1", 6.0))
    quarantine = (
        "INSERT INTO quarantine (kind, parties, key_id, created_at, cleared_at, cleared_reason,"
        " protocol, session, code, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    execute(quarantine, ("party", "3", KEY, 7.0, None, None, "sign", "ff" * 32, "BAD_PROOF", "x"))
    execute(
        quarantine,
        ("signer_set", "1,2", KEY, 8.0, 9.0, "false alarm", "presign", "aa" * 32, "ABORT", "y"),
    )
    connection.commit()
    return made


def unseal_all(store: NodeStore, keystore: KeyStore, made: list[Secret]) -> None:
    """Every secret, read through the current NodeStore, unseals to its plaintext."""

    def unseal(blob: bytes | None, key_id: str, version: int, purpose: str) -> bytes:
        assert blob is not None
        return keystore.unseal(
            blob, node_id=NODE_ID, key_id=key_id, share_version=version, purpose=purpose
        )

    for where, key_id, version, purpose, plaintext in made:
        if where == "setting kex":
            blob = store.setting("kex")
        elif where.startswith("share"):
            row = store.key_version(KEY, version)
            blob = None if row is None else row.sealed_share
        elif where == "aux":
            blob = store.aux(key_id).sealed_secret
        else:
            presignature = store.presignature(key_id)
            blob = None if presignature is None else presignature.sealed_secret
        assert unseal(blob, key_id, version, purpose) == plaintext, where


def test_an_old_node_database_is_refused_then_migrated_without_losing_a_secret(
    tmp_path: Path, keystore: KeyStore
) -> None:
    path = tmp_path / "node.db"
    connection = old_database(path, "node")
    made = fill_node(connection, keystore)
    connection.close()
    before = {t: rows(path, t) for t in shape_at(NODE, NODE.baseline)["tables"]}
    untouched = digest(path)

    with pytest.raises(SchemaOutdated) as refused:
        NodeStore(path)
    assert str(path) in str(refused.value) and "tessera node migrate --db" in str(refused.value)
    assert refused.value.revision is None and refused.value.head == NODE.head
    assert digest(path) == untouched and backups(path) == []

    report = migrate(path, NODE)
    assert report.migrated and report.old_revision is None and report.new_revision == NODE.head
    counts = {t: len(r) for t, r in before.items()}
    assert report.rows_before == counts
    # every old table keeps its rows; the tables later revisions add start empty
    assert report.rows_after == {**dict.fromkeys(report.rows_after, 0), **counts}
    assert report.backup is not None and report.backup.name.startswith("node.db.pre-unversioned-")
    assert stat.S_IMODE(report.backup.stat().st_mode) == 0o600
    assert {t: rows(path, t) for t in before} == before  # every row, byte for byte

    store = NodeStore(path)
    try:
        unseal_all(store, keystore, made)
        assert len(store.quarantines(include_cleared=True)) == 2
        assert [r.epoch for r in store.key_versions(KEY)] == [1, 2, 3]
    finally:
        store.close()
    # The backup is the old file: it opens, holds every row, and the old code's shape.
    assert {t: rows(report.backup, t) for t in before} == before
    with sa.create_engine(f"sqlite:///{report.backup}").connect() as copy:
        assert shape(copy) == shape_at(NODE, NODE.baseline)
        assert MigrationContext.configure(copy).get_current_revision() is None


def test_a_node_database_older_than_the_baseline_gains_its_missing_tables(tmp_path: Path) -> None:
    """Files made before re-share confirmations existed lack two tables; the code of the time
    created them on open, the baseline revision does too (rows elsewhere kept)."""
    path = tmp_path / "node.db"
    connection = old_database(path, "node")
    connection.execute("DROP TABLE key_confirmations")
    connection.execute("DROP TABLE key_events")
    connection.execute("INSERT INTO settings VALUES ('card', x'00')")
    connection.commit()
    connection.close()
    report = migrate(path, NODE)
    assert report.rows_after["settings"] == 1 and report.rows_after["key_events"] == 0
    store = NodeStore(path)
    assert store.setting("card") == b"\x00" and store.key_events(KEY) == []
    store.close()


def test_an_unversioned_file_that_is_not_the_baseline_is_refused_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "coordinator.db"
    old_database(path, "coordinator").close()
    untouched = digest(path)
    with pytest.raises(SchemaMismatch, match="not a node database"):
        migrate(path, NODE)
    assert digest(path) == untouched and backups(path) == []


# --- the coordinator: suspensions become the quarantine mirror ---------------------------------


def fill_coordinator(connection: sqlite3.Connection) -> None:
    suspension = (
        "INSERT INTO suspensions (kind, parties, key_id, created_at, cleared_at, cleared_reason,"
        " operation, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    connection.execute(suspension, ("party", "3", KEY, 1.0, None, None, "sign", "bad proof"))
    connection.execute(suspension, ("signer_set", "1,2", KEY, 2.0, 3.0, "cleared", "presign", "x"))
    connection.execute(suspension, ("party", "2", "aux", 4.0, None, None, "aux_info", "abort"))
    connection.execute(
        "INSERT INTO wallets VALUES (?, ?, ?, ?, ?, ?, ?)",
        (KEY, "treasury", 2, 1, b"key-public", "cd" * 32, 1.0),
    )
    connection.commit()


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "at-0001"])
def test_the_coordinator_upgrade_keeps_every_suspension_as_the_quarantine_mirror(
    tmp_path: Path, versioned: bool
) -> None:
    path = tmp_path / "coordinator.db"
    connection = old_database(path, "coordinator")
    fill_coordinator(connection)
    if versioned:  # a file a first versioned release stamped coordinator_0001
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('coordinator_0001')")
        connection.commit()
    connection.close()
    suspended = rows(path, "suspensions")

    with pytest.raises(SchemaOutdated, match="tessera cluster migrate") as refused:
        CoordinatorStore(path)
    assert refused.value.revision == ("coordinator_0001" if versioned else None)

    report = migrate(path, COORDINATOR)
    assert report.old_revision == ("coordinator_0001" if versioned else None)
    assert report.rows_before["suspensions"] == report.rows_after["quarantine_mirror"] == 3
    assert "suspensions" not in report.rows_after
    assert rows(path, "quarantine_mirror") == suspended
    store = CoordinatorStore(path)
    try:
        mirror = store.quarantine_mirror(include_cleared=True)
        assert [(e.id, e.parties, e.cleared_reason) for e in mirror] == [
            (1, "3", None),
            (2, "1,2", "cleared"),
            (3, "2", None),
        ]
        assert store.quarantined((2, 3)) is not None and store.wallet("treasury").threshold == 2
    finally:
        store.close()


# --- the policy store and the velocity ledger --------------------------------------------------


def unversion(path: Path) -> None:
    """What a file of the code before versions is: these tables (the baseline, which is today's
    head: checked below) without the version table."""
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE alembic_version")


def test_an_old_policy_store_migrates_and_its_history_reads(tmp_path: Path) -> None:
    from test_policy_cli import Env

    from policies.cli import policy_app
    from policies.document import load_policy

    env = Env(tmp_path)
    env.fast_keys()
    now = datetime.now(UTC)
    with PolicyStore(env.store) as store:
        proposed = store.propose(load_policy(env.policy_file()), source="policy.json", now=now)
        records = store.audit_records()
        proposals = store.proposals(now=now)
    unversion(env.store)
    assert shape_at(POLICY_STORE, POLICY_STORE.head) == shape_at(
        POLICY_STORE, POLICY_STORE.baseline
    )
    with pytest.raises(SchemaOutdated, match="tessera policy migrate --store"):
        PolicyStore(env.store)
    failed = env.run(policy_app, "status")  # a policy command reports it as an error
    assert failed.exit_code == 1 and "tessera policy migrate" in failed.output

    report = migrate(env.store, POLICY_STORE)
    assert report.rows_before == report.rows_after and report.rows_after["policy_proposals"] == 1
    with PolicyStore(env.store) as store:
        assert store.audit_records() == records
        assert store.proposals(now=now) == proposals
    status = env.ok_json(policy_app, "status")
    assert proposed.proposal.policy_hash in json.dumps(status)


def test_an_old_velocity_ledger_migrates_and_its_entries_read(tmp_path: Path) -> None:
    path = tmp_path / "velocity.db"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ledger = VelocityLedger(path)
    for n in range(3):
        ledger.reserve(
            f"request-{n}",
            "treasury",
            "ETH",
            Decimal("1.5"),
            limits=[],
            now=now,
            expires_at=now + timedelta(hours=1),
        )
    ledger.commit("request-0", now=now)
    ledger.close()
    unversion(path)
    with pytest.raises(SchemaOutdated, match="tessera policy migrate --ledger"):
        VelocityLedger(path)
    report = migrate(path, VELOCITY)
    assert report.rows_after == {"velocity_ledger": 3}
    ledger = VelocityLedger(path)
    try:
        entries = [ledger.entry(f"request-{n}") for n in range(3)]
        assert [e.state if e else None for e in entries] == ["committed", "reserved", "reserved"]
        assert all(e is not None and e.amount == Decimal("1.5") for e in entries)
    finally:
        ledger.close()


# --- unknown revisions, idempotence ------------------------------------------------------------

OPENERS: dict[str, Callable[[Path], Any]] = {
    "node": NodeStore,
    "coordinator": CoordinatorStore,
    "policy_store": PolicyStore,
    "velocity": VelocityLedger,
}


@pytest.mark.parametrize("kind", list(OPENERS))
def test_an_unknown_revision_is_refused_by_the_store_and_by_migrate(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.db"
    OPENERS[kind](path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (f"{kind}_9999",))
    connection.close()
    untouched = digest(path)
    with pytest.raises(SchemaTooNew) as refused:
        OPENERS[kind](path)
    assert f"{kind}_9999" in str(refused.value) and str(path) in str(refused.value)
    with pytest.raises(SchemaTooNew):
        migrate(path, SCHEMAS[kind])
    assert digest(path) == untouched and backups(path) == []


def test_another_kind_of_database_is_an_unknown_revision(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    CoordinatorStore(path).close()
    with pytest.raises(SchemaTooNew, match="not a node database"):
        NodeStore(path)


@pytest.mark.parametrize("kind", list(OPENERS))
def test_a_fresh_database_is_made_at_head_and_migrate_leaves_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.db"
    OPENERS[kind](path).close()
    OPENERS[kind](path).close()  # at head: opens again
    untouched = digest(path)
    report = migrate(path, SCHEMAS[kind])
    assert not report.migrated and report.old_revision == report.new_revision == SCHEMAS[kind].head
    assert report.backup is None and backups(path) == [] and digest(path) == untouched


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    fill_coordinator(old_database(path, "coordinator"))
    first = migrate(path, COORDINATOR)
    second = migrate(path, COORDINATOR)
    assert first.migrated and not second.migrated and second.rows_after == first.rows_after
    assert backups(path) == [first.backup]


def test_migrate_refuses_a_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissing, match="no such file"):
        migrate(tmp_path / "absent.db", NODE)
    assert not (tmp_path / "absent.db").exists()
    (tmp_path / "empty.db").touch()
    with pytest.raises(DatabaseMissing, match="holds no tables"):
        migrate(tmp_path / "empty.db", NODE)


def test_a_damaged_database_at_head_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    NodeStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE key_confirmations")
    connection.close()
    with pytest.raises(SchemaMismatch, match="lacks the tables key_confirmations"):
        NodeStore(path)


# --- the models and the migrations agree -------------------------------------------------------


def model_tables(kind: str) -> list[sa.Table]:
    if kind == "node":
        return list(NodeTable.metadata.sorted_tables)
    if kind == "coordinator":
        return list(_CoordinatorTable.metadata.sorted_tables)
    prefix = "policy_" if kind == "policy_store" else "velocity_"
    return [t for t in SQLModel.metadata.sorted_tables if t.name.startswith(prefix)]


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_no_drift_between_the_models_and_the_migrations(tmp_path: Path, kind: str) -> None:
    """A database migrated from nothing to head and one made by the models' create_all are the
    same schema; alembic's own comparison finds nothing to change."""
    schema = SCHEMAS[kind]
    tables = model_tables(kind)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    metadata = sa.MetaData()
    for table in tables:
        table.to_metadata(metadata)
    metadata.create_all(engine)
    with engine.connect() as connection:
        assert shape(connection) == shape_at(schema, schema.head)
    engine.dispose()
    migrated = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with migrated.connect() as connection, connection.begin():
        command.upgrade(schema.config(connection), "head")
    with migrated.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    migrated.dispose()


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_the_baseline_is_what_the_code_before_versions_created(tmp_path: Path, kind: str) -> None:
    old_database(tmp_path / "old.db", kind).close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.connect() as connection:
        assert shape(connection) == shape_at(SCHEMAS[kind], SCHEMAS[kind].baseline)
    engine.dispose()
    assert SCHEMAS[kind].baseline == f"{kind}_0001"


def test_the_declared_heads_are_the_scripts_heads() -> None:
    for schema in SCHEMAS.values():
        from alembic.script import ScriptDirectory

        assert ScriptDirectory.from_config(schema.config()).get_heads() == [schema.head]
        assert Path(schema.script_location, "script.py.mako").is_file()
        assert Path(schema.script_location, "env.py").is_file()


# --- the operator commands ---------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_node_migrate_command(tmp_path: Path) -> None:
    directory = tmp_path / "node-1"
    directory.mkdir()
    config = {"node_id": "node-1", "index": 1, "url": "http://x", "host": "127.0.0.1", "port": 1}
    (directory / "node.json").write_text(json.dumps(config))
    old_database(directory / "node.db", "node").close()
    code, doc = invoke("node", "migrate", "--config", str(directory / "node.json"))
    assert code == 0, doc
    [done] = doc["databases"]
    assert done["status"] == "migrated" and done["old_revision"] is None
    assert done["new_revision"] == NODE.head and Path(done["backup"]).is_file()
    code, doc = invoke("node", "migrate", "--dir", str(directory))
    assert code == 0 and doc["databases"][0]["status"] == "current"
    assert doc["databases"][0]["backup"] is None
    code, doc = invoke("node", "migrate", "--db", str(tmp_path / "absent.db"))
    assert code == 1 and doc["error"]["code"] == "DATABASE_MISSING"
    code, doc = invoke("node", "migrate", "--db", str(directory / "node.db"), "--dir", "x")
    assert code == 2 and doc["error"]["code"] == "USAGE"
    code, doc = invoke("node", "migrate", "--dir", str(tmp_path))
    assert code == 1 and doc["error"]["code"] == "NODE_SETUP"
    text = runner.invoke(app, ["node", "migrate", "--db", str(tmp_path / "absent.db")])
    assert text.exit_code == 1 and "no such file" in text.stderr


def make_local_cluster(root: Path) -> list[Path]:
    """cluster.json and two node directories, as `cluster up` lays them out (no processes)."""
    nodes = []
    for index in (1, 2):
        directory = root / "nodes" / f"node-{index}"
        directory.mkdir(parents=True)
        config = {
            "node_id": f"node-{index}",
            "index": index,
            "url": f"http://127.0.0.1:{18100 + index}",
            "host": "127.0.0.1",
            "port": 18100 + index,
        }
        (directory / "node.json").write_text(json.dumps(config))
        nodes.append({**config, "directory": f"nodes/node-{index}"})
    doc = {"cluster_id": "ab" * 32, "threshold": 2, "nodes": nodes}
    (root / "cluster.json").write_text(json.dumps(doc))
    return [root / "nodes" / f"node-{i}" / "node.db" for i in (1, 2)]


def test_cluster_migrate_command(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    node_dbs = make_local_cluster(root)
    fill_coordinator(old_database(root / "coordinator.db", "coordinator"))
    old_database(node_dbs[0], "node").close()
    NodeStore(node_dbs[1]).close()  # already at head
    code, doc = invoke("cluster", "migrate", "--root", str(root))
    assert code == 0, doc
    states = [(Path(d["database"]).name, d["status"]) for d in doc["databases"]]
    assert states == [
        ("coordinator.db", "migrated"),
        ("node.db", "migrated"),
        ("node.db", "current"),
    ]
    assert doc["databases"][0]["rows_after"]["quarantine_mirror"] == 3
    code, doc = invoke("cluster", "migrate", "--dir", str(root))
    assert code == 0 and {d["status"] for d in doc["databases"]} == {"current"}


def test_cluster_migrate_refuses_all_when_one_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    node_dbs = make_local_cluster(root)
    old_database(root / "coordinator.db", "coordinator").close()
    old_database(node_dbs[0], "node").close()
    NodeStore(node_dbs[1]).close()
    with sqlite3.connect(node_dbs[1]) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'node_0042'")
    connection.close()
    untouched = [digest(p) for p in (root / "coordinator.db", *node_dbs)]
    code, doc = invoke("cluster", "migrate", "--root", str(root))
    assert code == 1 and doc["error"]["code"] == "SCHEMA_TOO_NEW"
    assert doc["error"]["database"] == str(node_dbs[1])
    assert [digest(p) for p in (root / "coordinator.db", *node_dbs)] == untouched
    code, doc = invoke("cluster", "migrate", "--root", str(tmp_path / "nowhere"))
    assert code == 1 and doc["error"]["code"] == "CLUSTER"
    code, doc = invoke("cluster", "migrate", "--root", str(root), "--db", str(node_dbs[0]))
    assert code == 2 and doc["error"]["code"] == "USAGE"


def test_policy_migrate_command(tmp_path: Path) -> None:
    store, ledger = tmp_path / "store.db", tmp_path / "velocity.db"
    PolicyStore(store).close()
    VelocityLedger(ledger).close()
    unversion(store)
    unversion(ledger)
    code, doc = invoke("policy", "migrate", "--store", str(store), "--ledger", str(ledger))
    assert code == 0, doc
    assert [d["schema"] for d in doc["databases"]] == ["policy_store", "velocity"]
    assert all(d["status"] == "migrated" and Path(d["backup"]).is_file() for d in doc["databases"])
    code, doc = invoke("policy", "migrate", "--ledger", str(ledger))
    assert code == 0 and [d["schema"] for d in doc["databases"]] == ["velocity"]
    code, doc = invoke("policy", "--store", str(store), "migrate")  # the group's --store
    assert code == 0 and doc["databases"][0]["status"] == "current"
    code, doc = invoke("policy", "migrate", "--store", str(tmp_path / "absent.db"))
    assert code == 1 and doc["error"]["code"] == "DATABASE_MISSING"
    assert not (tmp_path / "absent.db").exists()


def test_schemas_are_distinct() -> None:
    names = [s.name for s in SCHEMAS.values()]
    assert len(set(names)) == 4 and all(isinstance(s, Schema) for s in SCHEMAS.values())
