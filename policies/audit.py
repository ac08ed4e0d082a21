"""Tamper-evident audit log: append-only, hash-chained canonical records with signed checkpoints.

Record ``seq`` (1, 2, …) carries ``hash = SHA-256(canonical_json({format, seq, timestamp, kind,
payload, prev_hash}))`` and ``prev_hash`` = the previous record's hash (64 zeros for seq 1).  A
checkpoint is a record of kind ``checkpoint`` (a node's log: ``node_checkpoint``) whose payload is
a `Checkpoint`: an officer's (or a node's identity key's) signature over the seq and hash of the
record just before it.

`verify_log` walks the records and names the first position where the log stops being the one
that was written: an edited record (its hash no longer matches), a removed one (a gap in seq), an
inserted one (a repeated seq, or a successor that chains past it), reordered ones (a seq out of
place), a link that no longer holds, or a checkpoint whose signature or signed head fails.  A
rewrite of the whole tail (every hash recomputed) is caught by the first signed checkpoint after
the change; truncation of the tail is only visible against a head held elsewhere — a signed
`Checkpoint` exported from the log or a `TrustedHead` (seq and hash) kept by the verifier.

This module is pure: records in, records or a report out.  `policies.store` persists them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TextIO, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from policies.canonical import canonical_hash_hex, canonical_json
from policies.errors import AuditFormatError, AuditLogError, CanonicalizationError
from policies.keys import Algorithm, OfficerSigner, Purpose, sign_statement, verify_statement

RECORD_FORMAT = "tessera-audit/1"
GENESIS_PREV_HASH = "0" * 64

AuditKind = Literal[
    "policy_proposed",
    "policy_signed",
    "policy_activated",
    "policy_cancelled",
    "withdrawal_requested",
    "approval",
    "rejection",
    "decision",
    "freeze_signed",
    "freeze",
    "unfreeze",
    "checkpoint",
    # A key-share node's own log (signer.node.audit): what the node signed, refused, received
    # and changed, and its checkpoints, signed with the node's HSM identity key.
    "node_signed",
    "node_cancelled",
    "node_allowance",
    "node_internal",
    "node_refused",
    "node_receipt",
    "node_quarantine",
    "node_governance",
    "node_key",
    "node_checkpoint",
]
AUDIT_KINDS: tuple[str, ...] = get_args(AuditKind)
# Kinds whose payload is a `Checkpoint` that `verify_log` checks in place.
CHECKPOINT_KINDS: frozenset[str] = frozenset({"checkpoint", "node_checkpoint"})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def format_timestamp(at: datetime) -> str:
    """RFC 3339 UTC with microseconds, the one timestamp form records carry."""
    if at.tzinfo is None:
        raise AuditFormatError("timestamp", None, f"{at.isoformat()} has no time zone")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditRecord(BaseModel):
    """One log record.  ``payload`` is canonical-JSON data (no floats)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    seq: int = Field(ge=1)
    timestamp: str
    kind: AuditKind
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        if not _TIMESTAMP.fullmatch(value):
            raise ValueError("expected YYYY-MM-DDTHH:MM:SS.ffffffZ")
        return value

    @field_validator("prev_hash", "hash")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _HEX64.fullmatch(value):
            raise ValueError("expected 64 lowercase hex digits")
        return value

    def body(self) -> dict[str, Any]:
        """What the hash covers."""
        return {
            "format": RECORD_FORMAT,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "kind": self.kind,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
        }

    def computed_hash(self) -> str:
        return canonical_hash_hex(self.body())

    def to_json_object(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "timestamp": self.timestamp,
            "kind": self.kind,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class ChainLink(Protocol):
    """What a new record chains to: the previous record's seq and hash (an `AuditRecord`, or
    `Link` when only those two columns were read)."""

    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...


class Link(NamedTuple):
    seq: int
    hash: str


def next_record(
    previous: ChainLink | None, kind: str, payload: Mapping[str, Any], at: datetime
) -> AuditRecord:
    """The record that follows ``previous`` (None: the first record of a log)."""
    if kind not in AUDIT_KINDS:
        raise AuditFormatError("record", None, f"unknown kind {kind!r}; expected {AUDIT_KINDS}")
    try:
        # Round-trip through canonical JSON: refuses floats and non-JSON values up front and
        # stores exactly what is hashed.
        data = json.loads(canonical_json(dict(payload)))
    except CanonicalizationError as exc:
        raise AuditFormatError(f"{kind} payload", None, str(exc)) from exc
    seq = 1 if previous is None else previous.seq + 1
    prev_hash = GENESIS_PREV_HASH if previous is None else previous.hash
    draft = {
        "seq": seq,
        "timestamp": format_timestamp(at),
        "kind": kind,
        "payload": data,
        "prev_hash": prev_hash,
        "hash": GENESIS_PREV_HASH,
    }
    record = AuditRecord.model_validate(draft)
    return record.model_copy(update={"hash": record.computed_hash()})


class Checkpoint(BaseModel):
    """A signer's statement that record ``seq`` of the log has hash ``head``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    seq: int = Field(ge=1)
    head: str
    signer: str
    algorithm: Algorithm
    public_key: str
    signature: str

    @field_validator("head")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _HEX64.fullmatch(value):
            raise ValueError("expected 64 lowercase hex digits")
        return value

    def statement(self) -> dict[str, Any]:
        return {"seq": self.seq, "head": self.head, "signer": self.signer}

    def signature_valid(self) -> bool:
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return False
        return verify_statement(
            self.algorithm, self.public_key, Purpose.CHECKPOINT, self.statement(), signature
        )


@dataclass(frozen=True)
class TrustedKey:
    """A key whose checkpoints the verifier accepts."""

    signer: str
    algorithm: str
    public_key: str


@dataclass(frozen=True)
class TrustedHead:
    """A head (seq, hash) the verifier holds independently of the log, e.g. from a past export."""

    seq: int
    hash: str


def sign_checkpoint(signer: OfficerSigner, head: AuditRecord) -> Checkpoint:
    """``signer``'s checkpoint over ``head`` (normally the newest record)."""
    body = {"seq": head.seq, "head": head.hash, "signer": signer.officer_id}
    signature = sign_statement(signer, Purpose.CHECKPOINT, body)
    return Checkpoint(
        seq=head.seq,
        head=head.hash,
        signer=signer.officer_id,
        algorithm=signer.algorithm,
        public_key=signer.public_key_hex,
        signature=signature.hex(),
    )


def parse_checkpoint(obj: object, source: str) -> Checkpoint:
    try:
        return Checkpoint.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "checkpoint"
        raise AuditFormatError(source, None, f"{where}: {first['msg']}") from exc


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditFormatError(str(path), None, f"cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise AuditFormatError(str(path), exc.lineno, f"not JSON: {exc.msg}") from exc
    return parse_checkpoint(obj, str(path))


@dataclass(frozen=True)
class AuditReport:
    """What a successful verification established."""

    records: int
    head_seq: int
    head_hash: str
    checkpoints: int
    last_checkpoint_seq: int | None
    trusted_head_seq: int | None

    def to_json_object(self) -> dict[str, Any]:
        return {
            "ok": True,
            "records": self.records,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoints": self.checkpoints,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "trusted_head_seq": self.trusted_head_seq,
        }


def _sequence_error(records: Sequence[AuditRecord], j: int) -> AuditLogError:
    rec, expected = records[j], j + 1
    before = GENESIS_PREV_HASH if j == 0 else records[j - 1].hash
    following = records[j + 1] if j + 1 < len(records) else None
    # A record of this log chains to the record whose seq is one less; a forged one does not.
    genuine = rec.prev_hash in {r.hash for r in records if r.seq == rec.seq - 1} or (
        rec.seq == 1 and rec.prev_hash == GENESIS_PREV_HASH
    )
    chains_past = following is not None and following.prev_hash == before
    if not genuine and chains_past and following is not None and following.seq == expected:
        return AuditLogError(j, rec.seq, "inserted: the next record chains past it")
    if rec.seq < expected:
        # seq repeats: something was inserted.  If this record chains two places back, the
        # record just before it is the intruder.
        two_back = GENESIS_PREV_HASH if j < 2 else records[j - 2].hash
        if j >= 1 and rec.prev_hash == two_back:
            intruder = records[j - 1]
            return AuditLogError(j - 1, intruder.seq, "inserted: the next record chains past it")
        return AuditLogError(
            j, rec.seq, f"seq {rec.seq} repeats where {expected} belongs: inserted"
        )
    later = next((k for k in range(j + 1, len(records)) if records[k].seq == expected), None)
    if later is not None:
        return AuditLogError(
            j,
            rec.seq,
            f"holds seq {rec.seq} where seq {expected} belongs (found at position {later}): "
            "records were reordered",
        )
    gap = f"seq {expected}" if rec.seq == expected + 1 else f"seq {expected}..{rec.seq - 1}"
    return AuditLogError(j, rec.seq, f"{gap} missing before this record: records removed")


def _content_intact(rec: AuditRecord) -> bool:
    try:
        return rec.computed_hash() == rec.hash
    except CanonicalizationError:
        return False  # a float or other non-canonical value was written into the payload


def _verify_checkpoint(
    records: Sequence[AuditRecord], j: int, trusted: Collection[TrustedKey]
) -> Checkpoint:
    rec = records[j]
    try:
        checkpoint = Checkpoint.model_validate(rec.payload)
    except ValidationError as exc:
        reason = f"checkpoint payload malformed ({exc.errors()[0]['msg']})"
        raise AuditLogError(j, rec.seq, reason) from exc
    if j == 0 or checkpoint.seq != records[j - 1].seq or checkpoint.head != rec.prev_hash:
        raise AuditLogError(
            j,
            rec.seq,
            f"checkpoint signs seq {checkpoint.seq} / head {checkpoint.head[:16]}…, "
            "not the record before it: history before this checkpoint was rewritten",
        )
    _check_signer(checkpoint, trusted, j, rec.seq)
    return checkpoint


def _check_signer(
    checkpoint: Checkpoint, trusted: Collection[TrustedKey], position: int, seq: int | None
) -> None:
    key = TrustedKey(checkpoint.signer, checkpoint.algorithm, checkpoint.public_key)
    if key not in trusted:
        raise AuditLogError(
            position, seq, f"checkpoint signer {checkpoint.signer!r} is not a trusted key"
        )
    if not checkpoint.signature_valid():
        raise AuditLogError(
            position, seq, f"checkpoint signature by {checkpoint.signer!r} does not verify"
        )


def verify_log(
    records: Sequence[AuditRecord],
    *,
    trusted_keys: Collection[TrustedKey] = (),
    head: Checkpoint | TrustedHead | None = None,
) -> AuditReport:
    """Verify the whole log; raise `AuditLogError` at the first inconsistent position.  ``head``
    (a signed checkpoint kept outside the log, or a trusted seq/hash) also catches truncation."""
    checkpoints, last_checkpoint = 0, None
    for j, rec in enumerate(records):
        if rec.seq != j + 1:
            raise _sequence_error(records, j)
        if not _content_intact(rec):
            raise AuditLogError(j, rec.seq, "edited: its hash does not match its content")
        if j == 0 and rec.prev_hash != GENESIS_PREV_HASH:
            raise AuditLogError(0, rec.seq, "the first record does not chain to the genesis hash")
        if j > 0 and rec.prev_hash != records[j - 1].hash:
            raise AuditLogError(
                j,
                rec.seq,
                f"prev_hash is not the hash of the record at position {j - 1}: that record was "
                "altered and re-hashed, or this one was inserted",
            )
        if rec.kind in CHECKPOINT_KINDS:
            last_checkpoint = _verify_checkpoint(records, j, trusted_keys).seq
            checkpoints += 1
    trusted_head_seq = None
    if head is not None:
        if isinstance(head, Checkpoint):
            _check_signer(head, trusted_keys, len(records), None)
            head_seq, head_hash = head.seq, head.head
        else:
            head_seq, head_hash = head.seq, head.hash
        if head_seq > len(records):
            raise AuditLogError(
                len(records),
                None,
                f"log ends at seq {len(records)} but the trusted head is "
                f"seq {head_seq}: records {len(records) + 1}..{head_seq} were truncated",
            )
        if records[head_seq - 1].hash != head_hash:
            raise AuditLogError(
                head_seq - 1, head_seq, "differs from the trusted head: history was rewritten"
            )
        trusted_head_seq = head_seq
    last = records[-1] if records else None
    return AuditReport(
        records=len(records),
        head_seq=last.seq if last else 0,
        head_hash=last.hash if last else GENESIS_PREV_HASH,
        checkpoints=checkpoints,
        last_checkpoint_seq=last_checkpoint,
        trusted_head_seq=trusted_head_seq,
    )


def export_jsonl(records: Iterable[AuditRecord], out: TextIO) -> int:
    """One canonical JSON record per line (hash included); returns the number written."""
    count = 0
    for rec in records:
        out.write(canonical_json(rec.to_json_object()).decode("utf-8") + "\n")
        count += 1
    return count


def parse_jsonl(text: str, source: str) -> list[AuditRecord]:
    """Records from a JSONL export; `AuditFormatError` names the line.  Parsing checks the
    shape only; `verify_log` checks the chain."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditFormatError(source, number, f"not JSON: {exc.msg}") from exc
        try:
            records.append(AuditRecord.model_validate(obj))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "record"
            raise AuditFormatError(source, number, f"{where}: {first['msg']}") from exc
    return records


CSV_COLUMNS = (
    "seq",
    "timestamp",
    "kind",
    "policy_hash",
    "request_id",
    "wallet",
    "officer",
    "payload",
    "prev_hash",
    "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells starting with these as formulas (CSV injection); the JSONL export
    # stays the exact form.
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_csv(records: Iterable[AuditRecord], out: TextIO) -> int:
    """CSV for spreadsheets: the commonly filtered payload fields as columns, the whole payload
    as canonical JSON.  Returns the number of records written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for rec in records:
        payload = rec.payload
        writer.writerow(
            [
                _cell(rec.seq),
                _cell(rec.timestamp),
                _cell(rec.kind),
                _cell(payload.get("policy_hash")),
                _cell(payload.get("request_id")),
                _cell(payload.get("wallet")),
                _cell(payload.get("officer") or payload.get("signer")),
                _cell(canonical_json(payload).decode("utf-8")),
                _cell(rec.prev_hash),
                _cell(rec.hash),
            ]
        )
        count += 1
    return count


def export_text(records: Iterable[AuditRecord], fmt: str) -> str:
    """``export_jsonl`` or ``export_csv`` into a string."""
    buffer = io.StringIO()
    if fmt == "jsonl":
        export_jsonl(records, buffer)
    elif fmt == "csv":
        export_csv(records, buffer)
    else:
        raise AuditFormatError("export", None, f"unknown format {fmt!r}; expected jsonl or csv")
    return buffer.getvalue()
