"""Webhooks (coordinator/api/webhooks.py) on a real coordinator database and against a real HTTP
receiver on 127.0.0.1: signed and verifiable, numbered per endpoint without gap or repeat (also
under concurrent fan-outs), delivered at least once and strictly in order to a receiver that
fails, is down or is slow and then recovers, backed off (doubling, capped), dead-lettered
without blocking the rest, and resent by event, withdrawal and transaction hash.

Time is an injected clock wherever the dispatcher waits; the receiver checks the signed
timestamp against that same clock."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import OperationalError

from coordinator.api.tables import WebhookDeliveryRow, WithdrawalEventRow
from coordinator.api.webhooks import (
    LEASE_MARGIN,
    WebhookDispatcher,
    WebhookError,
    WebhookVerificationError,
    load_or_create_signing_key,
    public_key_text,
    signed_headers,
    verify_webhook,
)
from coordinator.ports import free_port
from coordinator.store import CoordinatorStore
from signer.problems import ErrorCode

TX = "0x" + "ab" * 32
STATUSES = ["SUBMITTED", "SCREENING", "QUEUED", "SIGNING", "BROADCASTING", "COMPLETED"]


class Clock:
    """Starts at the real time (so `verify_webhook`'s default would accept it too) and moves
    only when told."""

    def __init__(self) -> None:
        self.at = float(int(time.time()))

    def __call__(self) -> float:
        return self.at


class Receiver:
    """A webhook receiver: a ThreadingHTTPServer on 127.0.0.1 that answers 500 (with a long
    body) to its first `failures` requests, can be slow (`delay`), verifies every other
    delivery against `clock` and answers 204 (401 if it does not verify)."""

    def __init__(
        self,
        public_key: str,
        clock: Callable[[], float],
        *,
        failures: int = 0,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        self.public_key = public_key
        self.clock = clock
        self.failures = failures
        self.delay = delay
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                with receiver.lock:
                    receiver.requests.append((headers, body))
                    fail = receiver.failures > 0
                    receiver.failures -= int(fail)
                if receiver.delay:
                    time.sleep(receiver.delay)
                if fail:
                    self.answer(500, b"<html>" + b"x" * 5000)  # never to be stored
                    return
                try:
                    doc = verify_webhook(receiver.public_key, headers, body, now=receiver.clock())
                except WebhookVerificationError:
                    self.answer(401)
                    return
                with receiver.lock:
                    receiver.received.append(doc)
                self.answer(204)

            def answer(self, status: int, content: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *_: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, *_: object) -> None:
                pass  # a client that timed out and hung up: not the test's concern

        self.server = Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def sequences(self) -> list[int]:
        return [d["sequence"] for d in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CoordinatorStore]:
    s = CoordinatorStore(tmp_path / "c.db")
    yield s
    s.close()


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    return load_or_create_signing_key(tmp_path / "webhook.pem")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receivers(key: Ed25519PrivateKey, clock: Clock) -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**options: Any) -> Receiver:
        receiver = Receiver(public_key_text(key), clock, **options)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


def add_events(
    store: CoordinatorStore, n: int, at: float, withdrawal: str = "wd_1", first: int = 0
) -> list[int]:
    """`n` events of one withdrawal as the API service appends them; their ids."""
    rows = []
    with store.session() as session:
        for i in range(first, first + n):
            status = STATUSES[i % len(STATUSES)]
            tx = TX if status in ("BROADCASTING", "COMPLETED") else None
            detail = {"id": withdrawal, "status": status, "sub_status": "x", "tx_hash": tx}
            row = WithdrawalEventRow(
                withdrawal_id=withdrawal,
                status=status,
                sub_status="x",
                detail=json.dumps(detail),
                created_at=at + i,
            )
            session.add(row)
            rows.append(row)
        session.commit()
    return [r.event_id for r in rows if r.event_id is not None]


def drive(dispatcher: WebhookDispatcher) -> tuple[int, int]:
    """One round of the service's loop: (deliveries made, deliveries delivered)."""

    async def once() -> tuple[int, int]:
        return dispatcher.fan_out(), await dispatcher.deliver_due()

    return asyncio.run(once())


def only(rows: list[WebhookDeliveryRow]) -> WebhookDeliveryRow:
    assert len(rows) == 1, rows
    return rows[0]


# --- the signing key ---------------------------------------------------------------------------
def test_the_signing_key_is_made_once_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "webhook.pem"  # its directory is made too
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert sorted(p.name for p in path.parent.iterdir()) == ["webhook.pem"]  # no scratch left
    again = load_or_create_signing_key(path)
    assert public_key_text(again) == public_key_text(first)
    assert len(public_key_text(first)) == 43 and "=" not in public_key_text(first)


def test_a_malformed_or_foreign_key_file_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(WebhookError) as err:
        load_or_create_signing_key(bad)
    assert err.value.code == ErrorCode.CORRUPT and str(bad) in str(err.value)
    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256K1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(WebhookError) as err:
        load_or_create_signing_key(other)
    assert err.value.code == ErrorCode.CORRUPT and "Ed25519" in str(err.value)
    assert bad.read_text() == "not a key"  # never replaced


# --- the wire form and its verification --------------------------------------------------------
def test_a_delivery_verifies_and_fails_when_body_timestamp_or_key_change(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()
    dispatcher = WebhookDispatcher(store, key, clock=clock)
    endpoint = dispatcher.add_endpoint(receiver.url)
    (event_id,) = add_events(store, 1, clock.at)
    assert drive(dispatcher) == (1, 1)
    ((headers, body),) = receiver.requests
    # the wire form: compact JSON, sorted keys, the event's detail as data
    doc = json.loads(body)
    assert body == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc == {
        "event_id": event_id,
        "sequence": 1,
        "endpoint_id": endpoint.endpoint_id,
        "type": "withdrawal.submitted",
        "created_at": clock.at,
        "data": {"id": "wd_1", "status": "SUBMITTED", "sub_status": "x", "tx_hash": None},
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["Tessera-Webhook-Id"] == f"{endpoint.endpoint_id}:1"
    assert headers["Tessera-Webhook-Sequence"] == "1"
    assert headers["Tessera-Webhook-Timestamp"] == str(int(clock.at))
    public = public_key_text(key)
    assert receiver.received == [doc]  # the receiver verified it
    # case-insensitive headers; the key as text or as an object
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify_webhook(public, lowered, body, now=clock.at) == doc
    assert verify_webhook(key.public_key(), headers, body, now=clock.at + 300) == doc

    def refused(
        check: str,
        *,
        pub: Any = public,
        hdrs: Any = headers,
        content: bytes = body,
        now: float = clock.at,
    ) -> None:
        with pytest.raises(WebhookVerificationError) as err:
            verify_webhook(pub, hdrs, content, now=now)
        assert err.value.check == check and check in str(err.value)

    refused("signature", content=body.replace(b"SUBMITTED", b"COMPLETED"))
    refused("signature", content=body + b" ")
    later = str(int(clock.at) + 1)
    refused("signature", hdrs={**headers, "Tessera-Webhook-Timestamp": later})
    refused("timestamp", now=clock.at + 301)  # a replay, later
    refused("timestamp", now=clock.at - 301)
    refused("timestamp", hdrs={**headers, "Tessera-Webhook-Timestamp": "1e9"})
    refused("signature", pub=public_key_text(Ed25519PrivateKey.generate()))
    refused("public_key", pub="not a key")
    refused("signature", hdrs={**headers, "Tessera-Webhook-Signature": "AAAA"})
    for name in ("Tessera-Webhook-Id", "Tessera-Webhook-Sequence", "Tessera-Webhook-Signature"):
        refused("header", hdrs={k: v for k, v in headers.items() if k != name})
    # genuinely signed, but the headers name another delivery than the body
    stamp = int(clock.at)
    wrong_sequence = signed_headers(
        key, body, endpoint_id=endpoint.endpoint_id, sequence=2, timestamp=stamp
    )
    refused("sequence", hdrs=wrong_sequence)
    wrong_endpoint = signed_headers(key, body, endpoint_id="we_other", sequence=1, timestamp=stamp)
    refused("endpoint", hdrs=wrong_endpoint)
    not_json = b"[1, 2]"
    refused(
        "body",
        content=not_json,
        hdrs=signed_headers(key, not_json, endpoint_id="we_x", sequence=1, timestamp=stamp),
    )


# --- delivery ----------------------------------------------------------------------------------
def test_a_receiver_that_fails_3_times_then_recovers_gets_every_event_once_in_order(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(failures=3)
    dispatcher = WebhookDispatcher(store, key, clock=clock)
    endpoint = dispatcher.add_endpoint(receiver.url)
    events = add_events(store, 5, clock.at)
    assert drive(dispatcher) == (5, 0)
    for _ in range(10):
        first = dispatcher.deliveries(endpoint.endpoint_id, "pending")[0]
        assert drive(dispatcher) == (0, 0)  # not due yet: nothing is sent before its time
        clock.at = first.next_attempt_at
        if drive(dispatcher)[1]:
            break
    # only the first in sequence was tried while it failed: the later ones waited behind it
    assert [json.loads(b)["sequence"] for _, b in receiver.requests[:4]] == [1, 1, 1, 1]
    assert len(receiver.requests) == 3 + 5
    assert receiver.sequences() == [1, 2, 3, 4, 5]
    assert [d["event_id"] for d in receiver.received] == events
    rows = dispatcher.deliveries(endpoint.endpoint_id)
    assert [(d.sequence, d.state) for d in rows] == [(i, "delivered") for i in range(1, 6)]
    assert rows[0].attempts == 4 and rows[0].last_error is None and rows[1].attempts == 1
    # the next event gets the next number, and nothing is sent twice
    add_events(store, 1, clock.at, first=5)
    assert drive(dispatcher) == (1, 1)
    assert receiver.sequences() == [1, 2, 3, 4, 5, 6]


def test_back_off_doubles_and_caps_then_the_delivery_is_dead(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(failures=1000)
    dispatcher = WebhookDispatcher(
        store, key, clock=clock, base_delay=1.0, max_delay=5.0, max_attempts=6
    )
    endpoint = dispatcher.add_endpoint(receiver.url)
    add_events(store, 1, clock.at)
    delays = []
    for _ in range(6):
        drive(dispatcher)
        row = only(dispatcher.deliveries(endpoint.endpoint_id))
        if row.state == "dead":
            break
        delays.append(row.next_attempt_at - clock.at)
        clock.at = row.next_attempt_at
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert row.state == "dead" and row.attempts == 6 == len(receiver.requests)
    assert row.last_error == "HTTP 500"  # the status, never the receiver's 5 kB body
    clock.at += 1000
    drive(dispatcher)
    assert len(receiver.requests) == 6  # dead: never tried again on its own


def test_a_dead_delivery_holds_nothing_back_and_a_resend_numbers_it_anew(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(failures=2)
    dispatcher = WebhookDispatcher(store, key, clock=clock, max_attempts=2)
    endpoint = dispatcher.add_endpoint(receiver.url)
    events = add_events(store, 3, clock.at)
    drive(dispatcher)
    clock.at += 1
    assert drive(dispatcher) == (0, 2)  # 1 dies on its 2nd attempt; 2 and 3 go at once
    dead = only(dispatcher.deliveries(state="dead"))
    assert (dead.sequence, dead.event_id, dead.attempts) == (1, events[0], 2)
    assert receiver.sequences() == [2, 3]  # the receiver sees the gap at 1 ...
    assert dispatcher.resend_event(events[0]) == 1  # ... and asks for it again
    assert drive(dispatcher) == (0, 1)
    assert receiver.sequences() == [2, 3, 4]
    assert receiver.received[-1]["event_id"] == events[0]  # the same event, deduped by its id
    states = [(d.sequence, d.state) for d in dispatcher.deliveries(endpoint.endpoint_id)]
    assert states == [(1, "dead"), (2, "delivered"), (3, "delivered"), (4, "delivered")]


def test_resend_by_event_withdrawal_and_tx_hash_delivers_again_with_new_sequences(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    first, second = receivers(), receivers()
    dispatcher = WebhookDispatcher(store, key, clock=clock)
    dispatcher.add_endpoint(first.url)
    dispatcher.add_endpoint(second.url)
    a = add_events(store, 6, clock.at, withdrawal="wd_a")  # a[4], a[5] carry TX
    b = add_events(store, 2, clock.at + 10, withdrawal="wd_b")
    assert drive(dispatcher) == (16, 16)
    assert dispatcher.resend_event(a[2]) == 2  # one per endpoint
    assert dispatcher.resend_withdrawal("wd_b") == 4
    assert dispatcher.resend_tx_hash(TX.upper().replace("0X", "0x")) == 4  # hex case ignored
    assert drive(dispatcher) == (0, 10)  # a resend is not undone by the next fan-out
    for receiver in (first, second):
        assert receiver.sequences() == list(range(1, 14))
        again = receiver.received[8:]
        assert [d["event_id"] for d in again] == [a[2], *b, a[4], a[5]]
        assert [d["data"]["tx_hash"] for d in again[3:]] == [TX, TX]
    for resend, unknown in (
        (dispatcher.resend_event, 999),
        (dispatcher.resend_withdrawal, "wd_none"),
        (dispatcher.resend_tx_hash, "0x" + "cd" * 32),
    ):
        with pytest.raises(WebhookError) as err:
            resend(unknown)  # type: ignore[operator]
        assert err.value.code == ErrorCode.NOT_FOUND
    # a disabled endpoint gets no resend (and no fan-out)
    dispatcher.disable_endpoint(dispatcher.endpoints()[1].endpoint_id)
    assert dispatcher.resend_event(b[0]) == 1
    add_events(store, 1, clock.at + 20, withdrawal="wd_c")
    assert drive(dispatcher) == (1, 2)
    assert len(first.received) == 15 and len(second.received) == 13


def test_concurrent_fan_outs_neither_skip_nor_double_a_sequence(
    store: CoordinatorStore, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """Two dispatchers on two connections to one file, in two threads, racing each other and a
    writer of new events."""
    other = CoordinatorStore(tmp_path / "c.db")
    try:
        a, b = WebhookDispatcher(store, key), WebhookDispatcher(other, key)
        endpoints = [a.add_endpoint(f"http://127.0.0.1:9/hooks/{i}") for i in range(2)]
        at = time.time() + 1  # after the endpoints were added
        start = threading.Barrier(3)
        done = threading.Event()
        errors: list[BaseException] = []

        def fan_out(d: WebhookDispatcher) -> None:
            try:
                start.wait()
                while not done.is_set():
                    d.fan_out()
                d.fan_out()
            except BaseException as exc:
                errors.append(exc)

        def write() -> None:
            start.wait()
            for i in range(20):
                add_events(store, 5, at + i * 5)
            done.set()

        threads = [threading.Thread(target=fan_out, args=(d,)) for d in (a, b)]
        threads.append(threading.Thread(target=write))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert a.fan_out() == 0 and b.fan_out() == 0
        for endpoint in endpoints:
            made = a.deliveries(endpoint.endpoint_id)
            assert [d.sequence for d in made] == list(range(1, 101))
            assert [d.event_id for d in made] == list(range(1, 101))  # each once, in order
            (row,) = [e for e in a.endpoints() if e.endpoint_id == endpoint.endpoint_id]
            assert row.sequence == 100
    finally:
        other.close()


def test_concurrent_fan_outs_in_two_asyncio_tasks(
    store: CoordinatorStore, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    other = CoordinatorStore(tmp_path / "c.db")
    try:
        a, b = WebhookDispatcher(store, key), WebhookDispatcher(other, key)
        endpoint = a.add_endpoint("http://127.0.0.1:9/hooks")
        add_events(store, 30, time.time() + 1)

        async def both() -> list[int]:
            return list(await asyncio.gather(*(asyncio.to_thread(d.fan_out) for d in (a, b))))

        assert sum(asyncio.run(both())) == 30
        made = a.deliveries(endpoint.endpoint_id)
        assert [(d.sequence, d.event_id) for d in made] == [(i, i) for i in range(1, 31)]
    finally:
        other.close()


def test_an_endpoint_gets_only_events_created_after_it_was_added(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()
    dispatcher = WebhookDispatcher(store, key, clock=clock)
    add_events(store, 3, clock.at - 100)
    dispatcher.add_endpoint(receiver.url)
    later = add_events(store, 2, clock.at, first=3)
    assert drive(dispatcher) == (2, 2)
    assert [(d["sequence"], d["event_id"]) for d in receiver.received] == [
        (1, later[0]),
        (2, later[1]),
    ]


def test_a_url_that_is_not_http_is_refused(store: CoordinatorStore, key: Ed25519PrivateKey) -> None:
    dispatcher = WebhookDispatcher(store, key)
    for url in (
        "ftp://example.com/hooks",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "https://:443/x",
        "http://[::1/x",
        "http://host:port/x",
        "http://exa mple.com/",
        "not a url",
        "",
        "https://example.com/" + "x" * 2000,
    ):
        with pytest.raises(WebhookError) as err:
            dispatcher.add_endpoint(url)
        assert err.value.code == ErrorCode.VALIDATION, url
    assert dispatcher.endpoints() == []
    assert dispatcher.add_endpoint("https://exchange.example/hooks").endpoint_id.startswith("we_")
    with pytest.raises(WebhookError) as err:
        dispatcher.disable_endpoint("we_missing")
    assert err.value.code == ErrorCode.NOT_FOUND


def test_a_receiver_that_is_down_is_retried_then_gets_everything_in_order(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    port = free_port()  # nothing listens there yet: connection refused
    dispatcher = WebhookDispatcher(store, key, clock=clock, max_attempts=3)
    endpoint = dispatcher.add_endpoint(f"http://127.0.0.1:{port}/hooks")
    add_events(store, 2, clock.at)
    drive(dispatcher)
    clock.at += 1
    drive(dispatcher)
    first, second = dispatcher.deliveries(endpoint.endpoint_id)
    assert (first.state, first.attempts, first.last_error) == ("pending", 2, "ConnectError")
    assert (second.state, second.attempts) == ("pending", 0)  # waits behind the first
    receiver = receivers(port=port)  # the receiver comes up
    clock.at = first.next_attempt_at
    assert drive(dispatcher) == (0, 2)
    assert receiver.sequences() == [1, 2]


def test_a_slow_receiver_times_out_and_is_retried(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(delay=0.6)
    dispatcher = WebhookDispatcher(store, key, clock=clock, timeout=0.2)
    dispatcher.add_endpoint(receiver.url)
    add_events(store, 1, clock.at)
    began = time.monotonic()
    drive(dispatcher)
    assert time.monotonic() - began < 0.55  # the whole exchange is bounded by `timeout`
    row = only(dispatcher.deliveries())
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error in ("TimeoutError", "ReadTimeout")
    receiver.delay = 0
    clock.at = row.next_attempt_at
    assert drive(dispatcher) == (0, 1)


def test_a_crash_between_the_post_and_its_record_sends_it_again(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
    tmp_path: Path,
) -> None:
    class Crash(BaseException):
        pass

    class Crashing(WebhookDispatcher):
        def _record(self, delivery: WebhookDeliveryRow, error: str | None, **_: bool) -> str:
            raise Crash  # the process dies right after the receiver's 2xx

    receiver = receivers()
    crashing = Crashing(store, key, clock=clock)
    crashing.add_endpoint(receiver.url)
    (event_id,) = add_events(store, 1, clock.at)
    with pytest.raises(Crash):
        drive(crashing)
    assert receiver.sequences() == [1]
    assert only(crashing.deliveries()).state == "pending"
    # the restarted service: the same database, the same key file
    restarted = WebhookDispatcher(
        store, load_or_create_signing_key(tmp_path / "webhook.pem"), clock=clock
    )
    assert drive(restarted) == (0, 0)  # claimed by the dead process: its lease runs out first
    clock.at += restarted.timeout + LEASE_MARGIN + 0.5
    assert drive(restarted) == (0, 1)
    assert [(d["sequence"], d["event_id"]) for d in receiver.received] == [(1, event_id)] * 2
    assert only(restarted.deliveries()).state == "delivered"


def test_run_delivers_until_stopped_and_survives_database_and_receiver_errors(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(failures=1)
    receiver.clock = time.time
    dispatcher = WebhookDispatcher(store, key, base_delay=0.05)
    dispatcher.add_endpoint(receiver.url)
    add_events(store, 3, time.time())
    calls = {"n": 0}
    fan_out = dispatcher.fan_out

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return fan_out()

    dispatcher.fan_out = flaky  # type: ignore[method-assign]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop, poll=0.02))
        deadline = time.monotonic() + 5
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert calls["n"] >= 2
    assert receiver.sequences() == [1, 2, 3]
    assert [d.state for d in dispatcher.deliveries()] == ["delivered"] * 3


def test_deliveries_refuse_an_unknown_state(
    store: CoordinatorStore, key: Ed25519PrivateKey
) -> None:
    with pytest.raises(WebhookError) as err:
        WebhookDispatcher(store, key).deliveries(state="lost")
    assert err.value.code == ErrorCode.VALIDATION
    with pytest.raises(WebhookError):
        WebhookDispatcher(store, key, base_delay=10, max_delay=1)


def test_two_dispatchers_delivering_at_once_send_each_delivery_once_in_order(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
    tmp_path: Path,
) -> None:
    receiver = receivers()
    other = CoordinatorStore(tmp_path / "c.db")
    try:
        a = WebhookDispatcher(store, key, clock=clock)
        b = WebhookDispatcher(other, key, clock=clock)
        a.add_endpoint(receiver.url)
        add_events(store, 6, clock.at)
        a.fan_out()

        async def both() -> list[int]:
            return list(await asyncio.gather(a.deliver_due(), b.deliver_due()))

        for _ in range(6):
            asyncio.run(both())
        # the claim kept the second off each delivery the first was posting
        assert receiver.sequences() == [1, 2, 3, 4, 5, 6]
        assert len(receiver.requests) == 6
    finally:
        other.close()


def test_an_unreadable_event_is_dead_at_once_and_blocks_nothing(
    store: CoordinatorStore,
    key: Ed25519PrivateKey,
    clock: Clock,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()
    dispatcher = WebhookDispatcher(store, key, clock=clock)
    dispatcher.add_endpoint(receiver.url)
    with store.session() as session:
        session.add(
            WithdrawalEventRow(
                withdrawal_id="wd_1",
                status="SUBMITTED",
                sub_status="x",
                detail="[",
                created_at=clock.at,
            )
        )
        session.commit()
    add_events(store, 1, clock.at + 1)
    assert drive(dispatcher) == (2, 1)
    dead = only(dispatcher.deliveries(state="dead"))
    assert (dead.sequence, dead.last_error) == (1, "EventUnreadable")
    assert receiver.sequences() == [2]
