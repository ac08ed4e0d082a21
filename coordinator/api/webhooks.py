"""Webhooks: every withdrawal event (`WithdrawalEventRow`) delivered to every receiver,
signed, at least once, in order (docs/api.md, "Webhooks").

Guarantees:

* **Signed**: Ed25519 over `timestamp + "." + body` with the service's key
  (`load_or_create_signing_key`, public half from `public_key_text`); receivers check with
  `verify_webhook`.
* **Numbered**: each endpoint numbers its deliveries 1, 2, 3… with no gap and no repeat (the
  counter moves and the delivery is stored in one transaction, under the (endpoint,
  sequence) key), so a receiver detects a missed event by the sequence alone.
* **At least once, in order**: a delivery is marked delivered only after a 2xx, so a crash
  between the POST and that write sends it again (receivers dedupe by `event_id`).  An
  endpoint's deliveries go strictly in sequence: a later one waits while an earlier one is
  pending; failures back off exponentially; after the last attempt a delivery is dead and
  no longer holds the ones after it back (the receiver sees the gap and asks for a resend).
* **Resend** by event id, by withdrawal id or by chain transaction hash: new deliveries (new
  sequence numbers) of the same events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import col, func, select

from coordinator.api.tables import WebhookDeliveryRow, WebhookEndpointRow, WithdrawalEventRow
from coordinator.store import CoordinatorStore
from signer.errors import TesseraError
from signer.logs import log_event
from signer.problems import ErrorCode

log = logging.getLogger("tessera.api.webhooks")

ID_HEADER: Final = "Tessera-Webhook-Id"
SEQUENCE_HEADER: Final = "Tessera-Webhook-Sequence"
TIMESTAMP_HEADER: Final = "Tessera-Webhook-Timestamp"
SIGNATURE_HEADER: Final = "Tessera-Webhook-Signature"


class WebhookError(TesseraError):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


class WebhookVerificationError(TesseraError):
    """A received webhook that is not the service's: `check` says which check failed."""

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        super().__init__(detail)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The service's webhook key: loaded, or made and written 0600 (atomically) the first
    time."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise WebhookError(ErrorCode.CORRUPT, f"{path}: not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise WebhookError(ErrorCode.CORRUPT, f"{path}: not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    try:
        os.link(scratch, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        scratch.unlink()
    return load_or_create_signing_key(path)


def public_key_text(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _b64(raw)


def _signed(key: Ed25519PrivateKey, timestamp: str, body: bytes) -> str:
    return _b64(key.sign(timestamp.encode() + b"." + body))


def verify_webhook(
    public_key: str | Ed25519PublicKey,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """A receiver's check of one delivery: signature, time, and that the body is the one the
    headers name; returns the parsed body."""
    lowered = {k.lower(): v for k, v in headers.items()}
    values = {}
    for name in (ID_HEADER, SEQUENCE_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER):
        value = lowered.get(name.lower())
        if value is None:
            raise WebhookVerificationError("header", f"{name} is missing")
        values[name] = value
    key = (
        Ed25519PublicKey.from_public_bytes(_unb64(public_key))
        if isinstance(public_key, str)
        else public_key
    )
    timestamp = values[TIMESTAMP_HEADER]
    try:
        key.verify(_unb64(values[SIGNATURE_HEADER]), timestamp.encode() + b"." + body)
    except (InvalidSignature, ValueError):
        raise WebhookVerificationError("signature", "the signature does not verify") from None
    try:
        at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("timestamp", "the timestamp is not a number") from None
    if abs((time.time() if now is None else now) - at) > tolerance:
        raise WebhookVerificationError("timestamp", f"the timestamp is over {tolerance:.0f} s off")
    doc: dict[str, Any] = json.loads(body)
    if (
        str(doc.get("sequence")) != values[SEQUENCE_HEADER]
        or f"{doc.get('endpoint_id')}:{doc.get('sequence')}" != values[ID_HEADER]
    ):
        raise WebhookVerificationError("body", "the body is not the delivery the headers name")
    return doc


class WebhookDispatcher:
    """Fans events out to endpoints and delivers them (`run`)."""

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
        self.store = store
        self.signing_key = signing_key
        self.client = client or httpx.AsyncClient(timeout=timeout)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.clock = clock

    # --- endpoints -----------------------------------------------------------------------------
    def add_endpoint(self, url: str) -> WebhookEndpointRow:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2000:
            raise WebhookError(ErrorCode.VALIDATION, "a webhook URL is http(s)://host[:port]/path")
        row = WebhookEndpointRow(
            endpoint_id="we_" + secrets.token_hex(8), url=url, created_at=self.clock()
        )
        with self.store.session() as session:
            session.add(row)
            session.commit()
        return row

    def endpoints(self) -> list[WebhookEndpointRow]:
        with self.store.session() as session:
            return list(
                session.exec(
                    select(WebhookEndpointRow)
                    .where(col(WebhookEndpointRow.disabled_at).is_(None))
                    .order_by(col(WebhookEndpointRow.created_at))
                )
            )

    def disable_endpoint(self, endpoint_id: str) -> None:
        with self.store.session() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise WebhookError(ErrorCode.NOT_FOUND, f"no webhook endpoint {endpoint_id[:40]}")
            row.disabled_at = self.clock()
            session.add(row)
            session.commit()

    def deliveries(
        self, endpoint_id: str | None = None, state: str | None = None
    ) -> list[WebhookDeliveryRow]:
        query = select(WebhookDeliveryRow)
        if endpoint_id is not None:
            query = query.where(WebhookDeliveryRow.endpoint_id == endpoint_id)
        if state is not None:
            query = query.where(WebhookDeliveryRow.state == state)
        order = (col(WebhookDeliveryRow.endpoint_id), col(WebhookDeliveryRow.sequence))
        with self.store.session() as session:
            return list(session.exec(query.order_by(*order)))

    # --- fan-out -------------------------------------------------------------------------------
    def _enqueue(self, endpoint: WebhookEndpointRow, event_id: int, *, once: bool) -> bool:
        """One delivery with the endpoint's next sequence number: the counter moves only if
        nobody moved it since it was read (else False: read again).  With `once` (fan-out),
        nothing is made when the endpoint already has the event or a later one — checked in
        the same transaction, so two fan-outs never both make it."""
        with self.store.session() as session:
            if once:
                high = session.exec(
                    select(func.max(WebhookDeliveryRow.event_id)).where(
                        WebhookDeliveryRow.endpoint_id == endpoint.endpoint_id
                    )
                ).one()
                if high is not None and high >= event_id:
                    return True
            current = session.get(WebhookEndpointRow, endpoint.endpoint_id, populate_existing=True)
            if current is None:  # deleted under us: never by this service
                raise WebhookError(ErrorCode.CORRUPT, "current vanished during the update")
            sequence = current.sequence + 1  # read before the UPDATE refreshes `current`
            moved = session.execute(
                update(WebhookEndpointRow)
                .where(col(WebhookEndpointRow.endpoint_id) == current.endpoint_id)
                .where(col(WebhookEndpointRow.sequence) == sequence - 1)
                .values(sequence=sequence)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return False
            session.add(
                WebhookDeliveryRow(
                    endpoint_id=current.endpoint_id,
                    sequence=sequence,
                    event_id=event_id,
                    state="pending",
                    next_attempt_at=self.clock(),
                )
            )
            try:
                session.commit()
            except (IntegrityError, OperationalError):
                session.rollback()  # another writer got there first (or SQLite was busy)
                return False
        return True

    def _enqueue_surely(self, endpoint: WebhookEndpointRow, event_id: int, *, once: bool) -> None:
        while not self._enqueue(endpoint, event_id, once=once):
            pass

    def fan_out(self) -> int:
        """Deliveries for every event newer than what each endpoint has (an endpoint added
        later starts with the events after it was added)."""
        made = 0
        for endpoint in self.endpoints():
            with self.store.session() as session:
                high = session.exec(
                    select(func.max(WebhookDeliveryRow.event_id)).where(
                        WebhookDeliveryRow.endpoint_id == endpoint.endpoint_id
                    )
                ).one()
                query = select(WithdrawalEventRow.event_id).where(
                    WithdrawalEventRow.created_at >= endpoint.created_at
                )
                if high is not None:
                    query = query.where(col(WithdrawalEventRow.event_id) > high)
                fresh = list(session.exec(query.order_by(col(WithdrawalEventRow.event_id))))
            for event_id in fresh:
                if event_id is not None:
                    self._enqueue_surely(endpoint, event_id, once=True)
                    made += 1
        return made

    # --- resend --------------------------------------------------------------------------------
    def _resend(self, event_ids: list[int]) -> int:
        made = 0
        for endpoint in self.endpoints():
            for event_id in event_ids:
                self._enqueue_surely(endpoint, event_id, once=False)
                made += 1
        return made

    def resend_event(self, event_id: int) -> int:
        with self.store.session() as session:
            if session.get(WithdrawalEventRow, event_id) is None:
                raise WebhookError(ErrorCode.NOT_FOUND, f"no event {event_id}")
        return self._resend([event_id])

    def resend_withdrawal(self, withdrawal_id: str) -> int:
        with self.store.session() as session:
            ids = list(
                session.exec(
                    select(WithdrawalEventRow.event_id)
                    .where(WithdrawalEventRow.withdrawal_id == withdrawal_id)
                    .order_by(col(WithdrawalEventRow.event_id))
                )
            )
        return self._resend([i for i in ids if i is not None])

    def resend_tx_hash(self, tx_hash: str) -> int:
        with self.store.session() as session:
            events = list(
                session.exec(select(WithdrawalEventRow).order_by(col(WithdrawalEventRow.event_id)))
            )
        wanted = tx_hash.lower()
        ids = [
            e.event_id
            for e in events
            if e.event_id is not None
            and str(json.loads(e.detail).get("tx_hash") or "").lower() == wanted
        ]
        return self._resend(ids)

    # --- delivery ------------------------------------------------------------------------------
    def body_of(self, delivery: WebhookDeliveryRow) -> bytes:
        with self.store.session() as session:
            event = session.get(WithdrawalEventRow, delivery.event_id)
        if event is None:  # deleted under us: never by this service
            raise WebhookError(ErrorCode.CORRUPT, "event vanished during the update")
        doc = {
            "event_id": delivery.event_id,
            "sequence": delivery.sequence,
            "endpoint_id": delivery.endpoint_id,
            "type": "withdrawal." + event.status.lower(),
            "created_at": event.created_at,
            "data": json.loads(event.detail),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    async def _post(self, url: str, delivery: WebhookDeliveryRow) -> str | None:
        """None on a 2xx, else what went wrong (short)."""
        body = self.body_of(delivery)
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: f"{delivery.endpoint_id}:{delivery.sequence}",
            SEQUENCE_HEADER: str(delivery.sequence),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: _signed(self.signing_key, timestamp, body),
        }
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _record(self, delivery: WebhookDeliveryRow, error: str | None) -> None:
        now = self.clock()
        with self.store.session() as session:
            row = session.get(WebhookDeliveryRow, (delivery.endpoint_id, delivery.sequence))
            if row is None:  # deleted under us: never by this service
                raise WebhookError(ErrorCode.CORRUPT, "row vanished during the update")
            row.attempts += 1
            if error is None:
                row.state, row.delivered_at, row.last_error = "delivered", now, None
            else:
                row.last_error = error[:100]
                if row.attempts >= self.max_attempts:
                    row.state = "dead"
                else:
                    delay = min(self.max_delay, self.base_delay * 2 ** (row.attempts - 1))
                    row.next_attempt_at = now + delay
            session.add(row)
            session.commit()

    async def deliver_due(self) -> int:
        """Send, per endpoint, its oldest pending delivery while they succeed; returns how
        many were delivered."""
        delivered = 0
        for endpoint in self.endpoints():
            while True:
                with self.store.session() as session:
                    first = session.exec(
                        select(WebhookDeliveryRow)
                        .where(WebhookDeliveryRow.endpoint_id == endpoint.endpoint_id)
                        .where(WebhookDeliveryRow.state == "pending")
                        .order_by(col(WebhookDeliveryRow.sequence))
                        .limit(1)
                    ).first()
                if first is None or first.next_attempt_at > self.clock():
                    break  # the endpoint's next in sequence is not due: the rest wait
                error = await self._post(endpoint.url, first)
                self._record(first, error)
                if error is not None:
                    log_event(
                        log,
                        "webhook.failed",
                        level=logging.WARNING,
                        endpoint=endpoint.endpoint_id,
                        sequence=first.sequence,
                        reason=error,
                    )
                    break
                delivered += 1
        return delivered

    async def run(self, stop: asyncio.Event, poll: float = 0.2) -> None:
        while not stop.is_set():
            try:
                self.fan_out()
                await self.deliver_due()
            except OperationalError as exc:  # the database busy: next round
                log_event(log, "webhook.db_error", level=logging.WARNING, reason=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
        await self.client.aclose()
