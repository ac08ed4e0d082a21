"""Webhooks: every withdrawal event (`WithdrawalEventRow`) delivered to every receiver, signed,
numbered, at least once and in order (docs/api.md, "Webhooks").

Guarantees:

* **Signed.**  Each delivery carries an Ed25519 signature over
  ``timestamp.encode() + b"." + body`` by the service's key (`load_or_create_signing_key`;
  receivers get the public half as `public_key_text`).  A receiver checks it, the timestamp's
  freshness, and that the body is the delivery the headers name, with `verify_webhook`.
* **Numbered without gap or repeat.**  Each endpoint numbers its own deliveries 1, 2, 3…: the
  endpoint's counter (`WebhookEndpointRow.sequence`) moves and the deliveries it numbers are
  stored in one transaction that holds SQLite's write lock from its first statement, under the
  (endpoint_id, sequence) primary key.  Concurrent fan-outs (threads, processes) and a crash at
  any point therefore leave neither a gap nor a duplicate, so a receiver detects a missed
  delivery by the sequence alone.
* **Every event once per endpoint by fan-out.**  An endpoint's high-water mark is the largest
  `event_id` among its deliveries, read in that same locked transaction; fan-out gives it the
  events above it (an endpoint added later starts with the events created since it was added).
* **At least once, in order.**  A delivery is marked delivered only after the receiver answered
  2xx; a crash between the POST and that write sends it again after a restart, under the same
  sequence and event id — receivers dedupe by `event_id` (a resend reuses it too).  An
  endpoint's deliveries go strictly by sequence: a later one is not sent while an earlier one
  is pending.  A failure (non-2xx, timeout, refused connection) backs off exponentially
  (``base_delay * 2**(attempts-1)``, capped at ``max_delay``); after ``max_attempts`` the
  delivery is dead and holds the later ones back no longer — the receiver sees the gap in the
  sequence and asks for a resend.
* **Resend** by event id, withdrawal id or chain transaction hash: new deliveries with new
  sequence numbers, same event ids, to every enabled endpoint.
* **Administered** over the API (`/v1/webhooks/…`, scope admin; `tessera webhook …`): endpoints
  added, disabled and enabled again (`enable_endpoint`: numbering goes on, and the events of
  the disabled time are fanned out too, so no gap), dead letters listed, resends.
* **Nothing of the receiver's is kept or followed.**  Only a 2xx status counts: a redirect is a
  failure (a signed body never goes to another host than configured), at most 64 KiB of a
  response is read and dropped, and `last_error` holds the status code or the exception's
  class only.  One deadline (`timeout`) bounds each whole POST, so a slow receiver cannot
  stall the others (endpoints are served side by side).

One dispatcher is meant to deliver at a time.  A second one on the same database is safe for
numbering and ordering: a delivery is claimed with a lease (the POST's `timeout` plus
`LEASE_MARGIN`) before it is posted, and an outcome is stored only by the holder of the claim.
The lease is also why, after a crash between a POST and its record, the restarted service
resends that delivery only once the lease has run out (seconds).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import CursorResult, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, func, select

from coordinator.api.tables import WebhookDeliveryRow, WebhookEndpointRow, WithdrawalEventRow
from coordinator.store import CoordinatorStore
from signer.errors import TesseraError
from signer.logs import log_event
from signer.node.faults import failpoint
from signer.problems import ErrorCode

log = logging.getLogger("tessera.api.webhooks")

ID_HEADER: Final = "Tessera-Webhook-Id"
SEQUENCE_HEADER: Final = "Tessera-Webhook-Sequence"
TIMESTAMP_HEADER: Final = "Tessera-Webhook-Timestamp"
SIGNATURE_HEADER: Final = "Tessera-Webhook-Signature"
_SIGNED_HEADERS: Final = (ID_HEADER, SEQUENCE_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)

#: Delivery states (`WebhookDeliveryRow.state`).
PENDING: Final = "pending"
DELIVERED: Final = "delivered"
DEAD: Final = "dead"
STATES: Final = frozenset({PENDING, DELIVERED, DEAD})

#: A URL longer than this is refused: it is stored and logged, and no receiver needs more.
MAX_URL_CHARS: Final = 2000
#: `last_error` is cut to this: a status code or an exception class, never a receiver's text.
MAX_ERROR_CHARS: Final = 100
#: Deliveries numbered per transaction: a long backlog never holds the write lock for long.
_BATCH: Final = 500
#: A claimed delivery is not taken by another dispatcher for the POST's timeout plus this: long
#: enough to store the outcome, short so a restart after a crash mid-POST resends it soon.
LEASE_MARGIN: Final = 2.0
#: At most this much of a response is read (then dropped) so its connection can be reused;
#: a receiver cannot make the dispatcher buffer more.
_DRAIN_BYTES: Final = 64 * 1024
#: Back-off of `run` after an error of its own (database busy, ...): never a hot loop.
_MAX_ERROR_PAUSE: Final = 30.0
_DIGITS = re.compile(r"[0-9]{1,20}")


class WebhookError(TesseraError):
    """A webhook operation refused: `code` is VALIDATION (a bad URL or argument), NOT_FOUND (no
    such endpoint or event) or CORRUPT (an unreadable key file, a row gone under us)."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


class WebhookVerificationError(TesseraError):
    """A received webhook that is not a genuine, fresh delivery of the service: `check` names the
    failed check (header, public_key, timestamp, signature, body, sequence, endpoint)."""

    code: Final = ErrorCode.UNAUTHORIZED

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"{check}: {detail}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text_: str) -> bytes:
    """Unpadded base64url; strict (binascii.Error, a ValueError, on anything else)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text_):
        raise binascii.Error("not base64url")
    return base64.urlsafe_b64decode(text_ + "=" * (-len(text_) % 4))


# --- the service's signing key ------------------------------------------------------------------
def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The service's webhook key at `path` (PEM, PKCS8, unencrypted): loaded if the file exists,
    else made and written with mode 0600.  Creation is atomic — the key is written to a scratch
    file and hard-linked into place, which never replaces a key another process made meanwhile
    (that one is then loaded), so no receiver is ever told a key the service does not use.
    A file that is not an Ed25519 PEM private key raises `WebhookError` (CORRUPT) naming it."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return _create_signing_key(path)
    return _parse_signing_key(path, pem)


def _parse_signing_key(path: Path, pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError: an encrypted PEM; never echo the file's content, only its path
        raise WebhookError(
            ErrorCode.CORRUPT, f"{path}: not an unencrypted PEM private key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise WebhookError(ErrorCode.CORRUPT, f"{path}: not an Ed25519 private key")
    if path.stat().st_mode & 0o077:
        # loaded all the same (refusing would stop the service), but an operator must know
        log_event(log, "webhook.key_mode", level=logging.WARNING, path=str(path))
    return key


def _create_signing_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never write through a planted file or link; 0600 from the start (and fchmod,
    # since the umask could only narrow it) so the key is never readable by others
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())  # on disk before it is visible under its name
        try:
            os.link(scratch, path)
        except FileExistsError:
            # another process made one first: theirs is the key, ours was never seen
            return load_or_create_signing_key(path)
    finally:
        scratch.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return key


def _fsync_dir(directory: Path) -> None:
    """Make the new name durable (a crash right after would otherwise lose the file, and the
    service would come back with another key than the one receivers were given)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse a directory fsync; the link is still there
    finally:
        os.close(fd)


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key receivers verify with: unpadded base64url of its 32 raw bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


# --- the wire form -----------------------------------------------------------------------------
def event_body(event: WithdrawalEventRow, endpoint_id: str, sequence: int) -> bytes:
    """The body of one delivery of `event`: compact JSON with sorted keys, so the bytes signed
    are a function of the delivery alone.  Raises ValueError if the event's detail is not a JSON
    object (never written so by the service)."""
    data = json.loads(event.detail)
    if not isinstance(data, dict):
        raise ValueError("the event's detail is not a JSON object")
    doc = {
        "event_id": event.event_id,
        "sequence": sequence,
        "endpoint_id": endpoint_id,
        "type": "withdrawal." + event.status.lower(),
        "created_at": event.created_at,
        "data": data,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def signed_headers(
    key: Ed25519PrivateKey, body: bytes, *, endpoint_id: str, sequence: int, timestamp: int
) -> dict[str, str]:
    """The headers of one delivery, its signature over ``timestamp + "." + body`` (the timestamp
    is signed so a captured delivery cannot be replayed later under a fresh one)."""
    stamp = str(int(timestamp))
    return {
        "Content-Type": "application/json",
        ID_HEADER: f"{endpoint_id}:{sequence}",
        SEQUENCE_HEADER: str(sequence),
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign_stamped(key, stamp, body),
    }


def sign_stamped(key: Ed25519PrivateKey, timestamp: str, body: bytes) -> str:
    """Unpadded base64url Ed25519 signature of ``timestamp + "." + body``: the signed text of a
    webhook delivery and of a screening request and answer (`coordinator.api.screening`)."""
    return _b64(key.sign(timestamp.encode() + b"." + body))


def stamped_signature_ok(
    public_key: Ed25519PublicKey, timestamp: str, body: bytes, signature: str
) -> bool:
    """Whether `signature` (unpadded base64url) is `public_key`'s over ``timestamp + "." +
    body``; anything malformed is simply False."""
    try:
        public_key.verify(_unb64(signature), timestamp.encode() + b"." + body)
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_public_key(public_key: str | Ed25519PublicKey) -> Ed25519PublicKey:
    """An Ed25519 public key from its unpadded base64url text (`public_key_text`); raises
    `WebhookVerificationError` (check ``public_key``) for anything else."""
    return _public_key(public_key)


def _public_key(public_key: str | Ed25519PublicKey) -> Ed25519PublicKey:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64(public_key.strip()))
    except ValueError:
        raise WebhookVerificationError(
            "public_key", "the public key is not 32 bytes of unpadded base64url"
        ) from None


def verify_webhook(
    public_key: str | Ed25519PublicKey,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """A receiver's check of one delivery; returns the parsed body.

    `headers` are matched case-insensitively (any mapping: a dict, httpx's or Starlette's
    headers).  Raises `WebhookVerificationError` whose `check` names what failed: a missing
    `header`, an unusable `public_key`, a malformed or out-of-`tolerance` `timestamp` (seconds
    either side of `now`, default the current time), a bad `signature`, a `body` that is not a
    JSON object, or a body whose `sequence` or `endpoint` differs from the headers'.  Dedupe by
    the body's `event_id`: delivery is at least once."""
    lowered = {name.lower(): value for name, value in headers.items()}
    values: dict[str, str] = {}
    for name in _SIGNED_HEADERS:
        value = lowered.get(name.lower())
        if value is None:
            raise WebhookVerificationError("header", f"{name} is missing")
        values[name] = value.strip()
    key = _public_key(public_key)
    stamp = values[TIMESTAMP_HEADER]
    if not _DIGITS.fullmatch(stamp):
        raise WebhookVerificationError("timestamp", "the timestamp is not integer Unix seconds")
    if not stamped_signature_ok(key, stamp, body, values[SIGNATURE_HEADER]):
        raise WebhookVerificationError("signature", "the signature does not verify")
    # after the signature: the timestamp is then the service's own, so an old one is a replay
    at = time.time() if now is None else now
    if abs(at - int(stamp)) > tolerance:
        raise WebhookVerificationError(
            "timestamp", f"the timestamp is more than {tolerance:g} s from now"
        )
    try:
        doc = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("body", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise WebhookVerificationError("body", "the body is not a JSON object")
    sequence = doc.get("sequence")
    if (
        not isinstance(sequence, int)
        or isinstance(sequence, bool)
        or values[SEQUENCE_HEADER] != str(sequence)
    ):
        raise WebhookVerificationError("sequence", f"the body's sequence is not {SEQUENCE_HEADER}")
    endpoint_id = doc.get("endpoint_id")
    if not isinstance(endpoint_id, str) or values[ID_HEADER] != f"{endpoint_id}:{sequence}":
        raise WebhookVerificationError("endpoint", f"the body's endpoint is not {ID_HEADER}'s")
    return doc


# --- the dispatcher ----------------------------------------------------------------------------
def _check_url(url: str) -> None:
    refused = WebhookError(
        ErrorCode.VALIDATION, "a webhook URL is http(s)://host[:port][/path], at most 2000 chars"
    )
    if not url or len(url) > MAX_URL_CHARS or any(c.isspace() or not c.isprintable() for c in url):
        raise refused
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a port that is no number raises here, not at the first POST
    except ValueError:
        raise refused from None
    if parts.scheme not in ("http", "https") or not host:
        raise refused


def _locked_endpoint(session: Session, endpoint_id: str) -> WebhookEndpointRow | None:
    """Start the transaction with a write to the endpoint's row (rewriting it as it is), so it
    holds SQLite's write lock before it reads: the high-water mark, the counter and the rows it
    numbers are then one serialised step across threads and processes (the driver would
    otherwise begin the transaction only at the first write, after the reads — the same
    pattern as `signer.node.store._lock_key`)."""
    session.execute(
        text("UPDATE webhook_endpoints SET sequence = sequence WHERE endpoint_id = :id"),
        {"id": endpoint_id},
    )
    return session.get(WebhookEndpointRow, endpoint_id, populate_existing=True)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed (SQLAlchemy types `execute`'s result too loosely for mypy)."""
    if not isinstance(result, CursorResult):  # an UPDATE always gives one
        raise WebhookError(ErrorCode.CORRUPT, "an UPDATE gave no row count")
    return int(result.rowcount)


def _chunks(items: Sequence[int], size: int = _BATCH) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class WebhookDispatcher:
    """Fans withdrawal events out to endpoints (`fan_out`) and delivers them (`deliver_due`);
    `run` does both until stopped.  `clock` (Unix seconds) drives every time it stores or
    signs, so tests move time instead of sleeping."""

    def __init__(
        self,
        store: CoordinatorStore,
        signing_key: Ed25519PrivateKey,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_attempts: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (timeout > 0 and base_delay > 0 and max_delay >= base_delay and max_attempts >= 1):
            raise WebhookError(
                ErrorCode.VALIDATION,
                "timeout and base_delay > 0, max_delay >= base_delay, max_attempts >= 1",
            )
        self.store = store
        self.signing_key = signing_key
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.clock = clock
        # a client we were given is the caller's to close; one we made is ours
        self._owns_client = client is None
        self.client = client if client is not None else self._new_client()

    def _new_client(self) -> httpx.AsyncClient:
        # no redirects: a 3xx is a failed delivery, never a signed body sent to another host
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    # --- endpoints -----------------------------------------------------------------------------
    def add_endpoint(self, url: str) -> WebhookEndpointRow:
        """A new receiver (http or https only, else VALIDATION); it gets the events created from
        now on, numbered from 1."""
        _check_url(url)
        row = WebhookEndpointRow(
            endpoint_id="we_" + secrets.token_hex(8), url=url, created_at=self.clock()
        )
        with self.store.session() as session:
            session.add(row)
            session.commit()
        log_event(log, "webhook.endpoint_added", route=row.endpoint_id)
        return row

    def endpoints(self, *, include_disabled: bool = False) -> list[WebhookEndpointRow]:
        """The endpoints, oldest first: the enabled ones unless `include_disabled`."""
        query = select(WebhookEndpointRow)
        if not include_disabled:
            query = query.where(col(WebhookEndpointRow.disabled_at).is_(None))
        with self.store.session() as session:
            return list(session.exec(query.order_by(col(WebhookEndpointRow.created_at))))

    def disable_endpoint(self, endpoint_id: str) -> WebhookEndpointRow:
        """Stop fanning out and delivering to the endpoint (its rows stay, for inspection); a
        second call keeps the first time.  NOT_FOUND for an unknown id."""
        with self.store.session() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise WebhookError(ErrorCode.NOT_FOUND, f"no webhook endpoint {endpoint_id[:40]}")
            if row.disabled_at is None:
                row.disabled_at = self.clock()
                session.add(row)
                session.commit()
        return row

    def enable_endpoint(self, endpoint_id: str) -> WebhookEndpointRow:
        """Deliver to a disabled endpoint again: its numbering goes on from its counter and the
        next fan-out gives it every event above its high-water mark — those created while it
        was disabled too — so it resumes without a gap.  Enabling an enabled endpoint does
        nothing.  NOT_FOUND for an unknown id."""
        with self.store.session() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise WebhookError(ErrorCode.NOT_FOUND, f"no webhook endpoint {endpoint_id[:40]}")
            if row.disabled_at is not None:
                row.disabled_at = None
                session.add(row)
                session.commit()
                session.refresh(row)
        log_event(log, "webhook.endpoint_enabled", route=endpoint_id[:40])
        return row

    def deliveries(
        self,
        endpoint_id: str | None = None,
        state: str | None = None,
        *,
        after: tuple[str, int] | None = None,
        limit: int | None = None,
    ) -> list[WebhookDeliveryRow]:
        """Deliveries by (endpoint, sequence), optionally of one endpoint and/or one state;
        `after` (endpoint id, sequence) and `limit` page through them."""
        if state is not None and state not in STATES:
            raise WebhookError(ErrorCode.VALIDATION, f"a delivery state is one of {sorted(STATES)}")
        query = select(WebhookDeliveryRow)
        if endpoint_id is not None:
            query = query.where(WebhookDeliveryRow.endpoint_id == endpoint_id)
        if state is not None:
            query = query.where(WebhookDeliveryRow.state == state)
        if after is not None:
            last_endpoint, last_sequence = after
            query = query.where(
                (col(WebhookDeliveryRow.endpoint_id) > last_endpoint)
                | (
                    (col(WebhookDeliveryRow.endpoint_id) == last_endpoint)
                    & (col(WebhookDeliveryRow.sequence) > last_sequence)
                )
            )
        order = (col(WebhookDeliveryRow.endpoint_id), col(WebhookDeliveryRow.sequence))
        query = query.order_by(*order)
        if limit is not None:
            query = query.limit(limit)
        with self.store.session() as session:
            return list(session.exec(query))

    def delivery_counts(self) -> dict[str, dict[str, int]]:
        """Endpoint id → delivery state → how many of its deliveries are in it."""
        query = select(
            WebhookDeliveryRow.endpoint_id, WebhookDeliveryRow.state, func.count()
        ).group_by(col(WebhookDeliveryRow.endpoint_id), col(WebhookDeliveryRow.state))
        counts: dict[str, dict[str, int]] = {}
        with self.store.session() as session:
            for endpoint_id, state, count in session.exec(query):
                counts.setdefault(endpoint_id, {})[state] = int(count)
        return counts

    # --- numbering -----------------------------------------------------------------------------
    def _append(
        self, session: Session, endpoint: WebhookEndpointRow, event_ids: Sequence[int]
    ) -> None:
        """Inside a transaction that holds the lock (`_locked_endpoint`): number `event_ids`
        after the endpoint's counter, move the counter, commit — all or nothing."""
        start = endpoint.sequence
        now = self.clock()
        for offset, event_id in enumerate(event_ids, 1):
            session.add(
                WebhookDeliveryRow(
                    endpoint_id=endpoint.endpoint_id,
                    sequence=start + offset,
                    event_id=event_id,
                    state=PENDING,
                    next_attempt_at=now,
                )
            )
        # conditional on the value read: belt and braces on top of the lock, so a writer that
        # bypassed it could only make this transaction fail, never reuse a number
        moved = session.execute(
            update(WebhookEndpointRow)
            .where(col(WebhookEndpointRow.endpoint_id) == endpoint.endpoint_id)
            .where(col(WebhookEndpointRow.sequence) == start)
            .values(sequence=start + len(event_ids))
        )
        if _rowcount(moved) != 1:
            session.rollback()
            raise WebhookError(ErrorCode.CORRUPT, "an endpoint's sequence moved under its lock")
        # the (endpoint_id, sequence) key refuses a doubled number here; and the commit is a
        # synced one (Sync.NOW): the events it numbers, written without an fsync of their own
        # (policies/sqlite.py `Sync`), are on disk with it before any of them is sent
        session.commit()
        endpoint.sequence = start + len(event_ids)

    # --- fan-out -------------------------------------------------------------------------------
    def fan_out(self) -> int:
        """A pending delivery for every event above each enabled endpoint's high-water mark
        (and created since the endpoint was added); returns how many were made.  Safe to run
        concurrently with itself, in threads or processes."""
        return sum(self._fan_out_to(e) for e in self.endpoints())

    def _has_fresh(self, endpoint: WebhookEndpointRow) -> bool:
        """Without a lock: is there an event above the endpoint's mark?  A stale "no" only
        defers the event to the next round; a "yes" is checked again under the lock.  So an
        idle round takes no write lock from the API service."""
        with self.store.session() as session:
            newest = session.exec(select(func.max(WithdrawalEventRow.event_id))).one()
            if newest is None:
                return False
            high = session.exec(
                select(func.max(WebhookDeliveryRow.event_id)).where(
                    WebhookDeliveryRow.endpoint_id == endpoint.endpoint_id
                )
            ).one()
        return high is None or newest > high

    def _fan_out_to(self, endpoint: WebhookEndpointRow) -> int:
        if not self._has_fresh(endpoint):
            return 0
        endpoint_id = endpoint.endpoint_id
        made = 0
        while True:
            with self.store.session() as session:
                current = _locked_endpoint(session, endpoint_id)
                if current is None or current.disabled_at is not None:
                    session.rollback()
                    return made
                # read under the lock: a concurrent fan-out has either committed its rows (and
                # they count here) or waits for ours
                high = session.exec(
                    select(func.max(WebhookDeliveryRow.event_id)).where(
                        WebhookDeliveryRow.endpoint_id == endpoint_id
                    )
                ).one()
                query = select(WithdrawalEventRow.event_id).where(
                    WithdrawalEventRow.created_at >= current.created_at
                )
                if high is not None:
                    # SQLite has one writer, so event ids commit in increasing order: no event
                    # below the mark can still appear later
                    query = query.where(col(WithdrawalEventRow.event_id) > high)
                fresh = [
                    i
                    for i in session.exec(
                        query.order_by(col(WithdrawalEventRow.event_id)).limit(_BATCH)
                    )
                    if i is not None
                ]
                if not fresh:
                    session.rollback()
                    return made
                self._append(session, current, fresh)
            made += len(fresh)
            if len(fresh) < _BATCH:
                return made

    # --- resend --------------------------------------------------------------------------------
    def _resend(self, event_ids: Sequence[int]) -> int:
        made = 0
        for endpoint in self.endpoints():
            for chunk in _chunks(event_ids):
                with self.store.session() as session:
                    current = _locked_endpoint(session, endpoint.endpoint_id)
                    if current is None or current.disabled_at is not None:
                        session.rollback()
                        break
                    self._append(session, current, chunk)
                made += len(chunk)
        log_event(log, "webhook.resend", count=made)
        return made

    def resend_event(self, event_id: int) -> int:
        """New deliveries (new sequence numbers, the same event id) of one event to every
        enabled endpoint; returns how many.  NOT_FOUND for an unknown event."""
        with self.store.session() as session:
            if session.get(WithdrawalEventRow, event_id) is None:
                raise WebhookError(ErrorCode.NOT_FOUND, f"no withdrawal event {event_id}")
        return self._resend([event_id])

    def resend_withdrawal(self, withdrawal_id: str) -> int:
        """Every event of one withdrawal again, in event order (as `resend_event`).  NOT_FOUND
        when the withdrawal has no event."""
        with self.store.session() as session:
            found = session.exec(
                select(WithdrawalEventRow.event_id)
                .where(WithdrawalEventRow.withdrawal_id == withdrawal_id)
                .order_by(col(WithdrawalEventRow.event_id))
            )
            ids = [i for i in found if i is not None]
        if not ids:
            raise WebhookError(ErrorCode.NOT_FOUND, f"no events of withdrawal {withdrawal_id[:80]}")
        return self._resend(ids)

    def resend_tx_hash(self, tx_hash: str) -> int:
        """Every event whose detail's "tx_hash" is `tx_hash` (hex case ignored) again, in event
        order (as `resend_event`).  NOT_FOUND when no event carries it."""
        wanted = tx_hash.strip().lower()
        if not wanted:
            raise WebhookError(ErrorCode.VALIDATION, "a transaction hash is needed")
        with self.store.session() as session:
            # the text filter only narrows the scan; the parsed JSON decides
            candidates = list(
                session.exec(
                    select(WithdrawalEventRow)
                    .where(func.lower(WithdrawalEventRow.detail).contains(wanted, autoescape=True))
                    .order_by(col(WithdrawalEventRow.event_id))
                )
            )
        ids: list[int] = []
        for event in candidates:
            try:
                found = json.loads(event.detail).get("tx_hash")
            except (ValueError, AttributeError):
                continue  # not a JSON object: carries no tx_hash
            if event.event_id is not None and isinstance(found, str) and found.lower() == wanted:
                ids.append(event.event_id)
        if not ids:
            raise WebhookError(ErrorCode.NOT_FOUND, f"no events of transaction {wanted[:80]}")
        return self._resend(ids)

    # --- delivery ------------------------------------------------------------------------------
    def body_of(self, delivery: WebhookDeliveryRow) -> bytes:
        """The body `delivery` is sent with (`event_body`)."""
        with self.store.session() as session:
            event = session.get(WithdrawalEventRow, delivery.event_id)
        if event is None:  # events are the audit log: never deleted by this service
            raise WebhookError(ErrorCode.CORRUPT, f"withdrawal event {delivery.event_id} is gone")
        return event_body(event, delivery.endpoint_id, delivery.sequence)

    def _backoff(self, attempts: int) -> float:
        # the exponent capped: 2**huge would overflow a float long before max_delay matters
        return min(self.max_delay, self.base_delay * 2.0 ** min(attempts - 1, 64))

    def _first_pending(self, endpoint_id: str) -> WebhookDeliveryRow | None:
        with self.store.session() as session:
            return session.exec(
                select(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.endpoint_id == endpoint_id)
                .where(WebhookDeliveryRow.state == PENDING)
                .order_by(col(WebhookDeliveryRow.sequence))
                .limit(1)
            ).first()

    def _claim(self, delivery: WebhookDeliveryRow, now: float) -> bool:
        """Lease the delivery for one POST (its next attempt moved past the POST's timeout), if
        nobody changed it since it was read: a second dispatcher then sees the endpoint's next
        delivery not due and sends neither it nor a later one."""
        with self.store.session() as session:
            claimed = session.execute(
                update(WebhookDeliveryRow)
                .where(col(WebhookDeliveryRow.endpoint_id) == delivery.endpoint_id)
                .where(col(WebhookDeliveryRow.sequence) == delivery.sequence)
                .where(col(WebhookDeliveryRow.state) == PENDING)
                .where(col(WebhookDeliveryRow.attempts) == delivery.attempts)
                .where(col(WebhookDeliveryRow.next_attempt_at) == delivery.next_attempt_at)
                .values(next_attempt_at=now + self.timeout + LEASE_MARGIN)
            )
            session.commit()
        return _rowcount(claimed) == 1

    def _record(
        self, delivery: WebhookDeliveryRow, error: str | None, *, dead: bool = False
    ) -> str | None:
        """Store the attempt's outcome (one conditional UPDATE, so a stale dispatcher cannot
        overwrite a newer outcome); returns the new state, None if another dispatcher took the
        delivery over meanwhile (its lease ran out)."""
        attempts = delivery.attempts + 1
        now = self.clock()
        values: dict[str, Any] = {"attempts": attempts}
        if error is None:
            state = DELIVERED
            values.update(delivered_at=now, last_error=None)
        else:
            state = DEAD if dead or attempts >= self.max_attempts else PENDING
            values["last_error"] = error[:MAX_ERROR_CHARS]
            if state == PENDING:
                values["next_attempt_at"] = now + self._backoff(attempts)
        values["state"] = state
        with self.store.session() as session:
            recorded = session.execute(
                update(WebhookDeliveryRow)
                .where(col(WebhookDeliveryRow.endpoint_id) == delivery.endpoint_id)
                .where(col(WebhookDeliveryRow.sequence) == delivery.sequence)
                .where(col(WebhookDeliveryRow.state) == PENDING)
                .where(col(WebhookDeliveryRow.attempts) == delivery.attempts)
                .values(**values)
            )
            session.commit()
        return state if _rowcount(recorded) == 1 else None

    async def _post(self, url: str, delivery: WebhookDeliveryRow, body: bytes) -> str | None:
        """POST one delivery, signed now; None on a 2xx, else a short reason (the status code or
        the exception's class — never the receiver's text)."""
        headers = signed_headers(
            self.signing_key,
            body,
            endpoint_id=delivery.endpoint_id,
            sequence=delivery.sequence,
            timestamp=int(self.clock()),
        )
        headers["User-Agent"] = "tessera-webhooks"
        status: int | None = None
        try:
            # one deadline for the whole exchange: httpx's timeout is per read, which a
            # receiver dripping bytes would stretch without end
            async with asyncio.timeout(self.timeout):
                async with self.client.stream(
                    "POST", url, content=body, headers=headers, follow_redirects=False
                ) as reply:
                    status = reply.status_code
                    drained = 0
                    async for chunk in reply.aiter_raw():
                        drained += len(chunk)
                        if drained > _DRAIN_BYTES:
                            break  # the connection is then closed, not reused
        except Exception as exc:
            # whatever the receiver or the network does is a failed attempt, never an error of
            # the dispatcher: timeouts, refused connections, TLS and protocol errors alike —
            # unless the status line was in already (then only the draining failed)
            if status is None:
                return type(exc).__name__
        if status is None:  # unreachable: no status means the exchange raised
            return "NoResponse"
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _deliver_to(self, endpoint: WebhookEndpointRow) -> int:
        """Send the endpoint's pending deliveries strictly by sequence while they succeed."""
        delivered = 0
        while True:
            first = self._first_pending(endpoint.endpoint_id)
            now = self.clock()
            if first is None or first.next_attempt_at > now:
                return delivered  # the endpoint's next in sequence is not due: the rest wait
            if not self._claim(first, now):
                return delivered  # another dispatcher has it
            name = f"{first.endpoint_id}:{first.sequence}"
            try:
                body = self.body_of(first)
            except (ValueError, WebhookError):
                # no attempt could ever send it: dead now, so it holds nothing back
                self._record(first, "EventUnreadable", dead=True)
                log_event(log, "webhook.dead", level=logging.ERROR, request=name, reason="event")
                continue
            error = await self._post(endpoint.url, first, body)
            # the crash window: posted, not yet recorded — after a restart it is sent again
            failpoint("webhook.after_post")
            state = self._record(first, error)
            if state is None:
                return delivered  # taken over by another dispatcher: it goes on from here
            if error is None:
                delivered += 1
                continue
            log_event(
                log,
                "webhook.dead" if state == DEAD else "webhook.failed",
                level=logging.WARNING,
                request=name,
                attempt=first.attempts + 1,
                reason=error,
            )
            if state == PENDING:
                return delivered  # backing off: the later ones wait behind it
            # dead: the next one in sequence goes now

    async def deliver_due(self) -> int:
        """POST every due pending delivery, each endpoint strictly in sequence order (the
        endpoints side by side, so a slow receiver delays only its own); returns how many were
        delivered.  A database error is raised after every endpoint's turn."""
        results = await asyncio.gather(
            *(self._deliver_to(e) for e in self.endpoints()), return_exceptions=True
        )
        delivered = 0
        failure: Exception | None = None
        for result in results:
            if isinstance(result, Exception):
                failure = failure or result
            elif isinstance(result, BaseException):
                raise result  # a cancellation or an exit: not ours to swallow
            else:
                delivered += result
        if failure is not None:
            raise failure
        return delivered

    async def run(self, stop: asyncio.Event, poll: float = 0.2) -> None:
        """Fan out and deliver every `poll` seconds until `stop` is set.  A receiver's failure
        is only a failed attempt; a database error (or any other of its own) is logged and
        retried, pausing longer while it lasts."""
        errors = 0
        try:
            while not stop.is_set():
                pause = poll
                try:
                    self.fan_out()
                    await self.deliver_due()
                    errors = 0
                except SQLAlchemyError as exc:
                    errors += 1
                    log_event(
                        log, "webhook.db_error", level=logging.WARNING, reason=type(exc).__name__
                    )
                except Exception as exc:
                    # the loop must outlive a bug too: events keep accruing and are sent later
                    errors += 1
                    fields = {"reason": type(exc).__name__}
                    log.error(
                        "webhook.error",
                        exc_info=exc,
                        extra={"event": "webhook.error", "fields": fields},
                    )
                if errors:
                    pause = min(_MAX_ERROR_PAUSE, poll * 2.0 ** min(errors, 16))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
        finally:
            if self._owns_client:
                await self.client.aclose()
                self.client = self._new_client()  # usable again, by a later run or a test
