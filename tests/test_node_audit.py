"""A node's own audit log (`signer.node.audit`) on a real node directory (SoftHSM2 token made by
`init_node`): records chained in the node database, checkpoints signed with the HSM identity key
and verified by `policies.audit`, tampering and truncation found by `tessera node audit verify`,
exports, and records that roll back with the transaction they belong to."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policies.audit import (
    CSV_COLUMNS,
    Checkpoint,
    TrustedKey,
    parse_jsonl,
    verify_log,
)
from policies.errors import AuditLogError
from signer.node.audit import AuditKind, IdentitySigner, NodeAudit, trusted_key
from signer.node.cli import node_app
from signer.node.runtime import NodeRuntime, init_node
from signer.node.store import StoreError

runner = CliRunner()
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    """A clock that advances a second per reading, so records carry distinct times."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeRuntime]:
    directory = tmp_path / "node-1"
    init_node(directory, "node-1", 1, port=20001)
    runtime = NodeRuntime.open(directory)
    try:
        yield runtime
    finally:
        runtime.close()


def _audit(runtime: NodeRuntime, *, every: int = 1000) -> NodeAudit:
    signer = IdentitySigner(runtime.keystore, runtime.config.node_id)
    return NodeAudit(runtime.store, signer, checkpoint_every=every, clock=Clock())


def _key(runtime: NodeRuntime) -> TrustedKey:
    return trusted_key(runtime.config.node_id, runtime.card.identity)


def _fill(audit: NodeAudit, n: int) -> None:
    for i in range(n):
        audit.record(AuditKind.NODE_SIGNED, {"request_id": f"r{i}", "wallet": "w"})


def _verify(directory: Path, *extra: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(node_app, ["audit", "verify", "--dir", str(directory), "--json", *extra])
    return result.exit_code, json.loads(result.output)


def _db(runtime: NodeRuntime) -> sqlite3.Connection:
    runtime.store.close()  # drop pooled connections before editing the file underneath
    return sqlite3.connect(runtime.config.db_path)


def test_records_chain_and_hsm_signed_checkpoints_verify(node: NodeRuntime) -> None:
    audit = _audit(node, every=3)
    _fill(audit, 5)
    records = audit.records()
    # Seq 3 is followed by the automatic checkpoint (seq 4) over it.
    assert [r.kind for r in records] == [
        "node_signed",
        "node_signed",
        "node_signed",
        "node_checkpoint",
        "node_signed",
        "node_signed",
    ]
    checkpoint = Checkpoint.model_validate(records[3].payload)
    assert (checkpoint.seq, checkpoint.head) == (3, records[2].hash)
    assert checkpoint.signer == "node:node-1"
    assert checkpoint.algorithm == node.card.identity.algorithm
    assert checkpoint.public_key == node.card.identity.public_bytes.hex()
    assert checkpoint.signature_valid()

    report = verify_log(records, trusted_keys={_key(node)})
    assert (report.records, report.checkpoints, report.last_checkpoint_seq) == (6, 1, 3)

    explicit = audit.checkpoint()
    assert explicit.seq == 6 and audit.last_checkpoint() == explicit
    head = audit.head()
    assert head is not None and head.seq == 7 and head.kind == "node_checkpoint"
    report = audit.verify({_key(node)})
    assert (report.checkpoints, report.trusted_head_seq) == (2, 6)
    assert [r.seq for r in audit.records(after_seq=2, limit=2)] == [3, 4]

    with pytest.raises(AuditLogError, match="not a trusted key"):
        audit.verify({TrustedKey("node:node-1", "ed25519", "00" * 32)})


def test_append_commits_and_rolls_back_with_the_callers_session(node: NodeRuntime) -> None:
    audit = _audit(node)
    with node.store.session() as session:
        audit.append(session, AuditKind.NODE_REFUSED, {"request_id": "r1", "reason": "frozen"})
        session.rollback()
    assert audit.records() == [] and audit.head() is None
    with node.store.session() as session:
        record = audit.append(session, AuditKind.NODE_RECEIPT, {"request_id": "r2"})
        session.commit()
    assert record.seq == 1 and audit.records() == [record]

    with (
        node.store.session() as session,
        pytest.raises(StoreError, match="checkpoint"),
    ):
        audit.append(session, AuditKind.NODE_CHECKPOINT, {})
    with pytest.raises(StoreError, match="payload"):
        audit.record(AuditKind.NODE_KEY, {"amount": 1.5})  # floats are not canonical JSON
    assert len(audit.records()) == 1
    with pytest.raises(StoreError, match="read-only"):
        NodeAudit(node.store, None).checkpoint()


def test_a_tampered_payload_makes_verify_exit_1_naming_the_seq(node: NodeRuntime) -> None:
    audit = _audit(node)
    _fill(audit, 3)
    audit.checkpoint()
    code, doc = _verify(node.config.directory)
    assert code == 0, doc
    assert doc["ok"] is True and doc["checkpoints"] == 1 and doc["signer"] == "node:node-1"

    db = _db(node)
    with db:
        db.execute(
            "UPDATE audit_log SET payload = ? WHERE seq = 2",
            ('{"request_id":"r1","wallet":"attacker"}',),
        )
    db.close()
    code, doc = _verify(node.config.directory)
    assert code == 1
    error = doc["error"]
    assert isinstance(error, dict)
    assert error["seq"] == 2 and "edited" in error["reason"]

    plain = runner.invoke(node_app, ["audit", "verify", "--dir", str(node.config.directory)])
    assert plain.exit_code == 1 and "broken at seq 2" in plain.output


def test_a_cut_tail_is_caught_by_the_signed_checkpoint(node: NodeRuntime, tmp_path: Path) -> None:
    audit = _audit(node)
    _fill(audit, 3)
    checkpoint = audit.checkpoint()  # signs seq 3; the checkpoint record is seq 4
    _fill(audit, 1)
    kept = tmp_path / "checkpoint.json"
    kept.write_text(checkpoint.model_dump_json())

    db = _db(node)
    with db:
        db.execute("DELETE FROM audit_log WHERE seq >= 3")  # the signed head and all after it
    db.close()
    # The chain that is left is internally consistent; only a signed head reveals the cut.
    assert verify_log(audit.records()).records == 2
    with pytest.raises(AuditLogError, match="truncated"):
        verify_log(audit.records(), trusted_keys={_key(node)}, head=checkpoint)
    code, doc = _verify(node.config.directory)
    assert code == 1 and "truncated" in str(doc["error"])
    code, doc = _verify(node.config.directory, "--head", str(kept))
    assert code == 1 and "truncated" in str(doc["error"])


def test_export_jsonl_round_trips_and_csv_has_a_header(node: NodeRuntime, tmp_path: Path) -> None:
    audit = _audit(node)
    _fill(audit, 2)
    audit.checkpoint()
    directory = str(node.config.directory)

    out = tmp_path / "audit.jsonl"
    result = runner.invoke(
        node_app,
        ["audit", "export", "--dir", directory, "--format", "jsonl", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records"] == 3
    parsed = parse_jsonl(out.read_text(), str(out))
    assert parsed == audit.records()
    assert verify_log(parsed, trusted_keys={_key(node)}).checkpoints == 1

    result = runner.invoke(node_app, ["audit", "export", "--dir", directory, "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row[2] for row in rows[1:]] == ["node_signed", "node_signed", "node_checkpoint"]

    bad = runner.invoke(
        node_app, ["audit", "export", "--dir", directory, "--format", "xml", "--json"]
    )
    assert bad.exit_code == 2
    assert json.loads(bad.output)["error"]["code"] == "USAGE"


def test_concurrent_writers_keep_one_chain(node: NodeRuntime) -> None:
    """The write lock taken before the head is read: writers in several threads never chain
    two records to the same head."""
    audit = _audit(node, every=7)

    def write(worker: int) -> None:
        for i in range(10):
            audit.record(AuditKind.NODE_RECEIPT, {"request_id": f"w{worker}-{i}"})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = audit.verify({_key(node)})
    assert report.records == 30 + report.checkpoints and report.checkpoints == 4
