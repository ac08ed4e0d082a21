"""Audit log: hash chain, signed checkpoints, every kind of tampering located, exports."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.audit import (
    GENESIS_PREV_HASH,
    AuditRecord,
    Checkpoint,
    TrustedHead,
    TrustedKey,
    export_csv,
    export_jsonl,
    export_text,
    next_record,
    parse_checkpoint,
    parse_jsonl,
    sign_checkpoint,
    verify_log,
)
from policies.errors import AuditFormatError, AuditLogError
from policies.keys import generate_officer_key

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OFFICER = generate_officer_key("alice", "ed25519")
P256_OFFICER = generate_officer_key("bob", "p256")
TRUSTED = frozenset(
    TrustedKey(s.officer_id, s.algorithm, s.public_key_hex) for s in (OFFICER, P256_OFFICER)
)


def build_log(n: int, checkpoint_every: int = 0) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        prev = records[-1] if records else None
        at = T0 + timedelta(seconds=i)
        if checkpoint_every and prev is not None and i % checkpoint_every == 0:
            signer = OFFICER if i % 2 else P256_OFFICER
            payload = sign_checkpoint(signer, prev).model_dump()
            records.append(next_record(prev, "checkpoint", payload, at))
        else:
            payload = {"request_id": f"r{i}", "amount": f"{i}.5", "officer": "alice"}
            records.append(next_record(prev, "decision", payload, at))
    return records


def rehash_from(records: list[AuditRecord], start: int) -> list[AuditRecord]:
    """What an attacker with write access does: recompute every link from ``start`` on."""
    out = list(records[:start])
    for rec in records[start:]:
        prev_hash = out[-1].hash if out else GENESIS_PREV_HASH
        fixed = rec.model_copy(update={"prev_hash": prev_hash, "seq": len(out) + 1})
        out.append(fixed.model_copy(update={"hash": fixed.computed_hash()}))
    return out


def located(records: list[AuditRecord], **kwargs: object) -> AuditLogError:
    with pytest.raises(AuditLogError) as info:
        verify_log(records, trusted_keys=TRUSTED, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_clean_log_verifies_with_checkpoints() -> None:
    records = build_log(12, checkpoint_every=4)
    report = verify_log(records, trusted_keys=TRUSTED)
    assert (report.records, report.head_seq, report.head_hash) == (12, 12, records[-1].hash)
    assert report.checkpoints == 2 and report.last_checkpoint_seq == 8
    assert records[0].prev_hash == GENESIS_PREV_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))


def test_empty_log_verifies() -> None:
    report = verify_log([])
    assert report.records == 0 and report.head_hash == GENESIS_PREV_HASH


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_edited_record_is_located(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    p = data.draw(st.integers(0, n - 1))
    field = data.draw(st.sampled_from(["payload", "kind", "timestamp"]))
    change: dict[str, object] = {
        "payload": {**records[p].payload, "amount": "1000000"},
        "kind": "approval",
        "timestamp": "2030-01-01T00:00:00.000000Z",
    }
    records[p] = records[p].model_copy(update={field: change[field]})
    err = located(records)
    assert (err.position, err.seq) == (p, p + 1) and "edited" in err.reason


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 12), data=st.data())
def test_edited_and_rehashed_record_breaks_the_next_link(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    p = data.draw(st.integers(0, n - 2))
    edited = records[p].model_copy(update={"payload": {"amount": "999"}})
    records[p] = edited.model_copy(update={"hash": edited.computed_hash()})
    err = located(records)
    assert err.position == p + 1 and f"position {p}" in err.reason


def test_rehashed_last_record_is_caught_by_the_trusted_head() -> None:
    records = build_log(6)
    head = TrustedHead(6, records[-1].hash)
    edited = records[-1].model_copy(update={"payload": {"amount": "999"}})
    records[-1] = edited.model_copy(update={"hash": edited.computed_hash()})
    err = located(records, head=head)
    assert err.position == 5 and "trusted head" in err.reason


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 12), data=st.data())
def test_removed_record_is_located(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    p = data.draw(st.integers(0, n - 2))  # removing the last one is truncation, below
    del records[p]
    err = located(records)
    assert err.position == p and "removed" in err.reason and f"seq {p + 1}" in err.reason


def test_removed_run_of_records_is_named() -> None:
    records = build_log(10)
    del records[3:6]
    err = located(records)
    assert err.position == 3 and "seq 4..6 missing" in err.reason


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_inserted_well_formed_record_is_located(n: int, data: st.DataObject) -> None:
    """The forger chains the new record to its predecessor and gives it the next seq."""
    records = build_log(n)
    p = data.draw(st.integers(0, n - 1))
    prev = records[p - 1] if p else None
    forged = next_record(prev, "approval", {"officer": "mallory"}, T0)
    records.insert(p, forged)
    err = located(records)
    assert err.position == p and "inserted" in err.reason


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_inserted_out_of_sequence_record_is_located(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    p = data.draw(st.integers(0, n - 1))
    forged = next_record(records[-1], "approval", {"officer": "mallory"}, T0)
    records.insert(p, forged.model_copy(update={"seq": 500}))
    err = located(records)
    assert err.position == p and "inserted" in err.reason


def test_inserted_record_at_the_end_breaks_the_link() -> None:
    records = build_log(5)
    forged = next_record(records[-1], "approval", {"officer": "mallory"}, T0)
    records.append(forged.model_copy(update={"prev_hash": "ab" * 32}))
    forged = records[-1]
    records[-1] = forged.model_copy(update={"hash": forged.computed_hash()})
    err = located(records)
    assert err.position == 5 and "inserted" in err.reason


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_reordered_records_are_located(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    p = data.draw(st.integers(0, n - 2))
    q = data.draw(st.integers(p + 1, n - 1))
    records[p], records[q] = records[q], records[p]
    err = located(records)
    assert err.position == p and "reordered" in err.reason


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_truncation_is_located_against_an_exported_checkpoint(n: int, data: st.DataObject) -> None:
    records = build_log(n)
    exported = sign_checkpoint(OFFICER, records[-1])
    keep = data.draw(st.integers(1, n - 1))
    err = located(records[:keep], head=exported)
    assert err.position == keep and "truncated" in err.reason


def test_truncation_against_a_trusted_head_hash() -> None:
    records = build_log(8)
    head = TrustedHead(8, records[-1].hash)
    err = located(records[:5], head=head)
    assert err.position == 5 and "records 6..8 were truncated" in err.reason
    assert verify_log(records, head=head).trusted_head_seq == 8


def test_whole_tail_rewrite_is_caught_by_the_next_checkpoint() -> None:
    records = build_log(12, checkpoint_every=4)  # checkpoints at positions 4 and 8
    edited = records[5].model_copy(update={"payload": {"amount": "999"}})
    records[5] = edited
    records = rehash_from(records, 5)
    err = located(records)
    assert err.position == 8 and "rewritten" in err.reason


def test_checkpoint_from_an_untrusted_key_is_refused() -> None:
    records = build_log(4)
    mallory = generate_officer_key("mallory", "ed25519")
    cp = sign_checkpoint(mallory, records[-1])
    records.append(next_record(records[-1], "checkpoint", cp.model_dump(), T0))
    err = located(records)
    assert err.position == 4 and "'mallory' is not a trusted key" in err.reason
    trusted = TRUSTED | {TrustedKey("mallory", "ed25519", mallory.public_key_hex)}
    assert verify_log(records, trusted_keys=trusted).checkpoints == 1


def test_checkpoint_with_a_forged_signature_is_refused() -> None:
    records = build_log(4)
    cp = sign_checkpoint(OFFICER, records[-1])
    bad = cp.model_copy(update={"signature": ("00" * 64)})
    records.append(next_record(records[-1], "checkpoint", bad.model_dump(), T0))
    err = located(records)
    assert err.position == 4 and "does not verify" in err.reason


def test_exported_checkpoint_must_be_trusted() -> None:
    records = build_log(3)
    mallory = generate_officer_key("mallory", "p256")
    err = located(records, head=sign_checkpoint(mallory, records[-1]))
    assert err.position == 3 and "not a trusted key" in err.reason


def test_jsonl_round_trip_verifies() -> None:
    records = build_log(9, checkpoint_every=3)
    text = export_text(records, "jsonl")
    assert text.count("\n") == 9
    again = parse_jsonl(text, "log.jsonl")
    assert again == records
    assert verify_log(again, trusted_keys=TRUSTED).records == 9


def test_jsonl_edit_in_the_file_is_located() -> None:
    records = build_log(5)
    lines = export_text(records, "jsonl").splitlines()
    obj = json.loads(lines[2])
    obj["payload"]["amount"] = "0.1"
    lines[2] = json.dumps(obj)
    err = located(parse_jsonl("\n".join(lines), "log.jsonl"))
    assert err.position == 2


def test_jsonl_with_a_float_payload_is_an_edit() -> None:
    records = build_log(3)
    lines = export_text(records, "jsonl").splitlines()
    obj = json.loads(lines[1])
    obj["payload"]["amount"] = 1.5
    lines[1] = json.dumps(obj)
    err = located(parse_jsonl("\n".join(lines), "log.jsonl"))
    assert err.position == 1 and "edited" in err.reason


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ('{"seq": 1}', "timestamp"),
        ("[1, 2]", "record"),
    ],
)
def test_malformed_jsonl_names_the_line(line: str, message: str) -> None:
    good = export_text(build_log(2), "jsonl")
    with pytest.raises(AuditFormatError, match=message) as info:
        parse_jsonl(good + line + "\n", "log.jsonl")
    assert info.value.line == 3 and info.value.source == "log.jsonl"


def test_csv_export_has_one_row_per_record_and_escapes_formulas() -> None:
    records = build_log(3)
    records.append(
        next_record(records[-1], "decision", {"request_id": "=HYPERLINK(1)", "wallet": "hot"}, T0)
    )
    buffer = io.StringIO()
    assert export_csv(records, buffer) == 4
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4]
    assert rows[3]["request_id"] == "'=HYPERLINK(1)" and rows[3]["wallet"] == "hot"
    assert json.loads(rows[0]["payload"]) == records[0].payload
    assert rows[2]["hash"] == records[2].hash


def test_jsonl_export_counts() -> None:
    buffer = io.StringIO()
    assert export_jsonl(build_log(4), buffer) == 4


def test_unknown_export_format() -> None:
    with pytest.raises(AuditFormatError, match="unknown format 'xml'"):
        export_text([], "xml")


@pytest.mark.parametrize(
    ("kind", "payload", "at", "message"),
    [
        ("decision", {"amount": 1.5}, T0, "floats are not allowed"),
        ("gossip", {}, T0, "unknown kind 'gossip'"),
        ("decision", {}, datetime(2026, 1, 1), "no time zone"),
    ],
)
def test_next_record_refuses_bad_input(
    kind: str, payload: dict[str, object], at: datetime, message: str
) -> None:
    with pytest.raises(AuditFormatError, match=message):
        next_record(None, kind, payload, at)


def test_checkpoint_parse_errors_name_the_field() -> None:
    cp = sign_checkpoint(OFFICER, build_log(1)[0])
    obj = cp.model_dump()
    obj["head"] = "XYZ"
    with pytest.raises(AuditFormatError, match="head"):
        parse_checkpoint(obj, "cp.json")
    assert parse_checkpoint(cp.model_dump(), "cp.json") == cp
    assert isinstance(cp, Checkpoint) and cp.signature_valid()
