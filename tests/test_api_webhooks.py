"""Webhooks (coordinator/api/webhooks.py): signed, numbered without gaps, delivered at least
once and in order to a real HTTP receiver that fails and recovers, backed off, dead-lettered,
and resent by event, withdrawal and transaction hash — on a real coordinator database."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.api.tables import WithdrawalEventRow
from coordinator.api.webhooks import (
    WebhookDispatcher,
    WebhookError,
    WebhookVerificationError,
    load_or_create_signing_key,
    public_key_text,
    verify_webhook,
)
from coordinator.store import CoordinatorStore
from signer.problems import ErrorCode


class Receiver:
    """A webhook receiver on a free port: answers 500 to its first `failures` requests."""

    def __init__(self, public_key: str, failures: int = 0) -> None:
        self.failures = failures
        self.public_key = public_key
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                doc = verify_webhook(receiver.public_key, dict(self.headers), body)
                receiver.received.append(doc)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    """Starts at the real time (receivers check the signed timestamp against theirs)."""

    def __init__(self) -> None:
        self.at = time.time()

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CoordinatorStore]:
    s = CoordinatorStore(tmp_path / "coordinator.db")
    yield s
    s.close()


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(tmp_path / "webhook.pem")


def add_events(store: CoordinatorStore, n: int, at: float, withdrawal: str = "wd_1") -> None:
    statuses = ["SUBMITTED", "SCREENING", "QUEUED", "SIGNING", "BROADCASTING", "COMPLETED"]
    with store.session() as session:
        for i in range(n):
            status = statuses[i % len(statuses)]
            tx = "0x" + "ab" * 32 if status in ("BROADCASTING", "COMPLETED") else None
            detail = {"id": withdrawal, "status": status, "sub_status": "x", "tx_hash": tx}
            session.add(
                WithdrawalEventRow(
                    withdrawal_id=withdrawal,
                    status=status,
                    sub_status="x",
                    detail=json.dumps(detail),
                    created_at=at + i,
                )
            )
        session.commit()


def drive(dispatcher: WebhookDispatcher) -> None:
    async def once() -> None:
        dispatcher.fan_out()
        await dispatcher.deliver_due()

    asyncio.run(once())


def test_the_signing_key_is_made_once_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_text(load_or_create_signing_key(path)) == public_key_text(first)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(WebhookError) as err:
        load_or_create_signing_key(tmp_path / "bad.pem")
    assert err.value.code == ErrorCode.CORRUPT and "bad.pem" in str(err.value)


def test_a_receiver_that_fails_then_recovers_gets_every_event_once_in_order(
    store: CoordinatorStore, key: Ed25519PrivateKey
) -> None:
    clock = Clock()
    receiver = Receiver(public_key_text(key), failures=3)
    try:
        dispatcher = WebhookDispatcher(store, key, clock=clock, base_delay=1.0, max_delay=4.0)
        endpoint = dispatcher.add_endpoint(receiver.url)
        add_events(store, 6, clock.at)
        delays = []
        for _ in range(4):
            drive(dispatcher)
            pending = dispatcher.deliveries(endpoint.endpoint_id, "pending")
            if pending:
                delays.append(pending[0].next_attempt_at - clock.at)
                clock.at = pending[0].next_attempt_at
        drive(dispatcher)
        assert delays[:3] == [1.0, 2.0, 4.0]  # doubled, then capped at max_delay
        assert [d["sequence"] for d in receiver.received] == [1, 2, 3, 4, 5, 6]
        assert [d["event_id"] for d in receiver.received] == [1, 2, 3, 4, 5, 6]
        assert receiver.received[0]["type"] == "withdrawal.submitted"
        assert all(d.state == "delivered" for d in dispatcher.deliveries())
        # a later event gets the next number
        add_events(store, 1, clock.at)
        drive(dispatcher)
        assert receiver.received[-1]["sequence"] == 7
    finally:
        receiver.close()


def test_a_delivery_is_dead_after_its_attempts_and_holds_nothing_back(
    store: CoordinatorStore, key: Ed25519PrivateKey
) -> None:
    clock = Clock()
    receiver = Receiver(public_key_text(key), failures=3)
    try:
        dispatcher = WebhookDispatcher(store, key, clock=clock, max_attempts=3)
        dispatcher.add_endpoint(receiver.url)
        add_events(store, 3, clock.at)
        for _ in range(6):
            drive(dispatcher)
            clock.at += 10  # past every back-off, within receivers' tolerance
        (dead,) = dispatcher.deliveries(state="dead")
        assert dead.sequence == 1 and dead.attempts == 3 and dead.last_error == "HTTP 500"
        assert [d["sequence"] for d in receiver.received] == [2, 3]
        # the receiver sees the gap at 1 and asks for the event again: a new number
        assert dispatcher.resend_event(dead.event_id) == 1
        drive(dispatcher)
        assert receiver.received[-1]["event_id"] == dead.event_id
        assert receiver.received[-1]["sequence"] == 4
    finally:
        receiver.close()


def test_resend_by_withdrawal_and_by_transaction_hash(
    store: CoordinatorStore, key: Ed25519PrivateKey
) -> None:
    clock = Clock()
    receiver = Receiver(public_key_text(key))
    try:
        dispatcher = WebhookDispatcher(store, key, clock=clock)
        dispatcher.add_endpoint(receiver.url)
        add_events(store, 6, clock.at, withdrawal="wd_a")
        add_events(store, 2, clock.at + 10, withdrawal="wd_b")
        drive(dispatcher)
        assert len(receiver.received) == 8
        assert dispatcher.resend_withdrawal("wd_b") == 2
        assert dispatcher.resend_tx_hash("0x" + "AB" * 32) == 2  # BROADCASTING, COMPLETED
        drive(dispatcher)
        again = receiver.received[8:]
        assert [d["sequence"] for d in again] == [9, 10, 11, 12]
        assert {d["data"]["id"] for d in again[:2]} == {"wd_b"}
        assert [d["data"]["status"] for d in again[2:]] == ["BROADCASTING", "COMPLETED"]
        with pytest.raises(WebhookError):
            dispatcher.resend_event(999)
    finally:
        receiver.close()


def test_concurrent_fan_outs_neither_skip_nor_double_a_sequence(
    store: CoordinatorStore, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    other = CoordinatorStore(tmp_path / "coordinator.db")
    try:
        a = WebhookDispatcher(store, key)
        b = WebhookDispatcher(other, key)
        endpoint = a.add_endpoint("http://127.0.0.1:9/hooks")
        add_events(store, 40, 1.0e10)  # after the endpoint was added
        threads = [threading.Thread(target=d.fan_out) for d in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        made = a.deliveries(endpoint.endpoint_id)
        assert [d.sequence for d in made] == list(range(1, 41))
        assert sorted(d.event_id for d in made) == list(range(1, 41))
    finally:
        other.close()


def test_a_receiver_that_is_down_is_retried_not_dead(
    store: CoordinatorStore, key: Ed25519PrivateKey
) -> None:
    clock = Clock()
    dispatcher = WebhookDispatcher(store, key, clock=clock, timeout=1.0)
    dispatcher.add_endpoint("http://127.0.0.1:9/hooks")  # nothing listens on port 9
    add_events(store, 1, clock.at)
    drive(dispatcher)
    (delivery,) = dispatcher.deliveries()
    assert delivery.state == "pending" and delivery.attempts == 1
    assert delivery.last_error == "ConnectError"


def test_endpoints_must_be_http_urls(store: CoordinatorStore, key: Ed25519PrivateKey) -> None:
    dispatcher = WebhookDispatcher(store, key)
    for url in ("ftp://x/y", "file:///etc/passwd", "http://", "not a url"):
        with pytest.raises(WebhookError) as err:
            dispatcher.add_endpoint(url)
        assert err.value.code == ErrorCode.VALIDATION


def test_verification_refuses_a_changed_body_timestamp_or_key(
    store: CoordinatorStore, key: Ed25519PrivateKey
) -> None:
    clock = Clock()
    captured: list[tuple[dict[str, str], bytes]] = []

    class Capture(WebhookDispatcher):
        async def _post(self, url: str, delivery: Any) -> str | None:
            body = self.body_of(delivery)
            timestamp = str(int(self.clock()))
            from coordinator.api.webhooks import _signed

            captured.append(
                (
                    {
                        "Tessera-Webhook-Id": f"{delivery.endpoint_id}:{delivery.sequence}",
                        "Tessera-Webhook-Sequence": str(delivery.sequence),
                        "Tessera-Webhook-Timestamp": timestamp,
                        "Tessera-Webhook-Signature": _signed(self.signing_key, timestamp, body),
                    },
                    body,
                )
            )
            return None

    dispatcher = Capture(store, key, clock=clock)
    dispatcher.add_endpoint("http://127.0.0.1:9/hooks")
    add_events(store, 1, clock.at)
    drive(dispatcher)
    ((headers, body),) = captured
    public = public_key_text(key)
    assert verify_webhook(public, headers, body, now=clock.at)["sequence"] == 1
    checks = [
        (public, headers, body.replace(b"SUBMITTED", b"COMPLETED"), clock.at, "signature"),
        (public, headers, body, clock.at + 301, "timestamp"),
        (public_key_text(Ed25519PrivateKey.generate()), headers, body, clock.at, "signature"),
        (
            public,
            {k: v for k, v in headers.items() if "Sequence" not in k},
            body,
            clock.at,
            "header",
        ),
    ]
    for pub, hdrs, content, now, check in checks:
        with pytest.raises(WebhookVerificationError) as err:
            verify_webhook(pub, hdrs, content, now=now)
        assert err.value.check == check
