"""Webhook administration over the signer API (`/v1/webhooks/…`, scope `admin`) and its CLI
(`tessera webhook …`): endpoints added, disabled and enabled over HTTP against real receivers
on 127.0.0.1, dead letters listed, resends by event, withdrawal and transaction hash.

The service here is the API's app (`coordinator.api.app.create_app`) with the real webhook
dispatcher running beside it in uvicorn's loop, on a coordinator database of its own: the
routes need no node and no chain, so the withdrawal events are written as the withdrawal
service writes them (tests/test_api_service.py drives real withdrawals end to end)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import requests.auth
import schemathesis
import uvicorn
from api_world import Key, Receiver, free_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from coordinator.api.app import create_app
from coordinator.api.auth import (
    ApiClients,
    Authenticator,
    RateLimiter,
    Scope,
    load_private_key,
    sign_request,
)
from coordinator.api.client import ApiRefused, AsyncTesseraClient, TesseraClient
from coordinator.api.tables import WithdrawalEventRow
from coordinator.api.webhooks import WebhookDispatcher, load_or_create_signing_key, public_key_text
from coordinator.api.withdrawals import WithdrawalService
from coordinator.payouts import PayoutEngine
from coordinator.store import CoordinatorStore
from signer.problems import ErrorCode

OPENAPI = Path(__file__).parent.parent / "docs" / "openapi.json"
STATUSES = ["SUBMITTED", "SCREENING", "QUEUED", "SIGNING", "BROADCASTING", "COMPLETED"]
_tx_counter = iter(range(1, 10**6))


class AdminService:
    """The API's routes and the webhook dispatcher on one database, served by uvicorn in a
    thread of its own (as `tessera serve` runs them, minus the nodes and chains)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = CoordinatorStore(root / "coordinator.db")
        self.key = load_or_create_signing_key(root / "webhook-signing.pem")
        # quick back-off and two attempts: a failing receiver's deliveries die in a second
        self.dispatcher = WebhookDispatcher(
            self.store, self.key, timeout=2.0, base_delay=0.05, max_delay=0.2, max_attempts=2
        )
        service = WithdrawalService(self.store, cast(PayoutEngine, None))  # no route calls it
        app = create_app(
            service, Authenticator(self.store), RateLimiter(), webhooks=self.dispatcher
        )
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
            lifespan="off",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.02)

    def _main(self) -> None:
        async def serve() -> None:
            stop = asyncio.Event()
            hooks = asyncio.create_task(self.dispatcher.run(stop, poll=0.05))
            try:
                await self.server.serve()
            finally:
                stop.set()
                await hooks

        asyncio.run(serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def issue(self, name: str, scopes: list[Scope]) -> Key:
        issued = ApiClients(self.store).create(name, scopes, rate_per_minute=10**6)
        return Key(issued.key_id, load_private_key(issued.private_key_pem), issued.client_id)

    def events(self, n: int, withdrawal: str, tx_hash: str | None = None) -> list[int]:
        """`n` events of `withdrawal` as the withdrawal service appends them (the last ones
        carrying `tx_hash`); their ids."""
        rows = []
        with self.store.session() as session:
            for i in range(n):
                status = STATUSES[i % len(STATUSES)]
                tx = tx_hash if status in ("BROADCASTING", "COMPLETED") else None
                detail = {"id": withdrawal, "status": status, "sub_status": "x", "tx_hash": tx}
                row = WithdrawalEventRow(
                    withdrawal_id=withdrawal,
                    status=status,
                    sub_status="x",
                    detail=json.dumps(detail),
                    created_at=time.time(),
                )
                session.add(row)
                rows.append(row)
            session.commit()
        return [r.event_id for r in rows if r.event_id is not None]

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.store.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminService]:
    running = AdminService(tmp_path_factory.mktemp("webhook-admin"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def keys(svc: AdminService) -> dict[str, Key]:
    return {
        "admin": svc.issue("operator", [Scope.ADMIN]),
        "exchange": svc.issue("exchange", [Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ]),
        "officers": svc.issue("officers", [Scope.APPROVALS_WRITE, Scope.WITHDRAWALS_READ]),
    }


@pytest.fixture
def receivers(svc: AdminService) -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(failures: int = 0) -> Receiver:
        receiver = Receiver(public_key_text(svc.key), failures=failures)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def admin(svc: AdminService, keys: dict[str, Key]) -> Iterator[TesseraClient]:
    with TesseraClient(svc.url, keys["admin"].key_id, keys["admin"].private_key) as api:
        yield api
        # each test leaves no endpoint of its own delivering into the next one
        for endpoint in api.webhook_endpoints():
            if endpoint.enabled:
                api.disable_webhook_endpoint(endpoint.id)


def wid(n: int) -> str:
    return f"wd_{n:032x}"


def new_tx() -> str:
    return "0x" + f"{next(_tx_counter):064x}"


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def of(receiver: Receiver, withdrawal: str) -> list[dict[str, Any]]:
    return [d for d in receiver.received if d["data"]["id"] == withdrawal]


def test_an_endpoint_added_over_the_api_receives_events_numbered_on_its_own(
    svc: AdminService, admin: TesseraClient, receivers: Callable[..., Receiver]
) -> None:
    first, second = receivers(), receivers()
    one = admin.add_webhook_endpoint(first.url)
    assert one.enabled and one.sequence == 0 and one.id.startswith("we_")
    events = svc.events(3, wid(1))
    wait_for(lambda: len(first.received) == 3)
    two = admin.add_webhook_endpoint(second.url)
    later = svc.events(2, wid(2))
    wait_for(lambda: len(first.received) == 5 and len(second.received) == 2)
    # each endpoint numbers its own deliveries from 1, without gap
    assert [d["sequence"] for d in first.received] == [1, 2, 3, 4, 5]
    assert [d["sequence"] for d in second.received] == [1, 2]
    assert {d["endpoint_id"] for d in second.received} == {two.id}
    assert [d["event_id"] for d in first.received] == events + later
    assert [d["event_id"] for d in second.received] == later  # only events since it was added
    listed = {e.id: e for e in admin.webhook_endpoints()}
    assert listed[one.id].sequence == 5 and listed[two.id].sequence == 2
    assert listed[one.id].pending == 0 and listed[one.id].dead == 0
    # the same URL again is the same endpoint (a retried add makes none twice)
    again = admin.request("POST", "/v1/webhooks/endpoints", body={"url": second.url})
    assert again["id"] == two.id
    content = json.dumps({"url": second.url}).encode()
    path = "/v1/webhooks/endpoints"
    headers = sign_request(admin.private_key, admin.key_id, "POST", path, "", content)
    headers["Content-Type"] = "application/json"
    raw = httpx.post(f"{svc.url}{path}", content=content, headers=headers)
    assert raw.status_code == 200 and raw.headers["Idempotent-Replayed"] == "true"
    assert len(admin.webhook_endpoints()) == len(listed)


def test_disable_stops_deliveries_and_enable_resumes_without_a_gap(
    svc: AdminService, admin: TesseraClient, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    endpoint = admin.add_webhook_endpoint(receiver.url)
    before = svc.events(2, wid(10))
    wait_for(lambda: len(receiver.received) == 2)
    off = admin.disable_webhook_endpoint(endpoint.id)
    assert not off.enabled and off.disabled_at is not None
    assert admin.disable_webhook_endpoint(endpoint.id).disabled_at == off.disabled_at
    during = svc.events(3, wid(11))
    time.sleep(1.0)  # twenty rounds of the dispatcher: nothing for a disabled endpoint
    assert len(receiver.received) == 2
    on = admin.enable_webhook_endpoint(endpoint.id)
    assert on.enabled and on.disabled_at is None
    after = svc.events(1, wid(12))
    wait_for(lambda: len(receiver.received) == 6)
    # the events of the disabled time too, numbered on from where it stopped
    assert [d["sequence"] for d in receiver.received] == [1, 2, 3, 4, 5, 6]
    assert [d["event_id"] for d in receiver.received] == before + during + after
    assert admin.enable_webhook_endpoint(endpoint.id).enabled  # idempotent


def test_resend_by_event_by_withdrawal_and_by_transaction_hash(
    svc: AdminService, admin: TesseraClient, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    admin.add_webhook_endpoint(receiver.url)
    tx = new_tx()
    events = svc.events(6, wid(20), tx_hash=tx)  # BROADCASTING and COMPLETED carry the hash
    wait_for(lambda: len(receiver.received) == 6)
    assert admin.resend_webhooks(event_id=events[0]).deliveries == 1
    assert admin.resend_webhooks(withdrawal_id=wid(20)).deliveries == 6
    assert admin.resend_webhooks(tx_hash=tx.upper().replace("0X", "0x")).deliveries == 2
    wait_for(lambda: len(receiver.received) == 15)
    got = [d["event_id"] for d in receiver.received]
    assert got == [*events, events[0], *events, events[4], events[5]]
    assert [d["sequence"] for d in receiver.received] == list(range(1, 16))  # new numbers
    for unknown in ({"event_id": 10**12}, {"withdrawal_id": wid(99)}, {"tx_hash": new_tx()}):
        with pytest.raises(ApiRefused) as missing:
            admin.request("POST", "/v1/webhooks/resend", body=unknown)
        assert missing.value.status == 404 and missing.value.code == ErrorCode.NOT_FOUND
    for wrong in ({}, {"event_id": events[0], "withdrawal_id": wid(20)}, {"event_id": None}):
        with pytest.raises(ApiRefused) as refused:
            admin.request("POST", "/v1/webhooks/resend", body=wrong)
        assert refused.value.status == 422 and refused.value.code == ErrorCode.VALIDATION


def test_dead_letters_are_listed_page_by_page(
    svc: AdminService, admin: TesseraClient, receivers: Callable[..., Receiver]
) -> None:
    failing = receivers(failures=10**9)
    endpoint = admin.add_webhook_endpoint(failing.url)
    events = svc.events(3, wid(30))

    def dead_ones() -> list[Any]:
        page = admin.webhook_deliveries("dead", endpoint_id=endpoint.id)
        return page.items

    wait_for(lambda: len(dead_ones()) == 3)
    dead = dead_ones()
    assert [d.event_id for d in dead] == events
    assert all(d.state == "dead" and d.attempts == 2 and d.last_error == "HTTP 500" for d in dead)
    listed = {e.id: e for e in admin.webhook_endpoints()}
    assert listed[endpoint.id].dead == 3 and listed[endpoint.id].pending == 0
    # page by page: one at a time, by cursor, none repeated or skipped
    seen, cursor = [], None
    while True:
        page = admin.webhook_deliveries("dead", endpoint_id=endpoint.id, cursor=cursor, limit=1)
        seen.extend(d.sequence for d in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [1, 2, 3]
    everything = admin.webhook_deliveries(limit=500).items
    assert {d.state for d in everything} <= {"pending", "delivered", "dead"}
    with pytest.raises(ApiRefused) as bad:
        admin.webhook_deliveries("lost")
    assert bad.value.status == 422


def test_only_admins_and_bad_input_is_a_problem_never_an_echo(
    svc: AdminService, keys: dict[str, Key]
) -> None:
    endpoint = "we_" + "0" * 16
    routes: list[tuple[str, str, Any]] = [
        ("GET", "/v1/webhooks/endpoints", None),
        ("POST", "/v1/webhooks/endpoints", {"url": "http://127.0.0.1:9/x"}),
        ("POST", f"/v1/webhooks/endpoints/{endpoint}/disable", None),
        ("POST", f"/v1/webhooks/endpoints/{endpoint}/enable", None),
        ("GET", "/v1/webhooks/deliveries", None),
        ("POST", "/v1/webhooks/resend", {"event_id": 1}),
    ]
    for name in ("exchange", "officers"):
        key = keys[name]
        with TesseraClient(svc.url, key.key_id, key.private_key) as other:
            for method, path, body in routes:
                with pytest.raises(ApiRefused) as refused:
                    other.request(method, path, body=body)
                assert refused.value.status == 403, (name, method, path)
                assert refused.value.code == ErrorCode.FORBIDDEN
    for method, path, _body in routes:
        unsigned = httpx.request(method, f"{svc.url}{path}", content=b"{}")
        assert unsigned.status_code == 401
        assert unsigned.headers["content-type"].startswith("application/problem+json")
    marker = "ECHO-" + "z" * 30
    key = keys["admin"]
    with TesseraClient(svc.url, key.key_id, key.private_key) as admin:
        for url in (f"ftp://{marker}/", f"http://{marker}:99999/", f"not a url {marker}", ""):
            with pytest.raises(ApiRefused) as refused:
                admin.request("POST", "/v1/webhooks/endpoints", body={"url": url})
            assert refused.value.status == 422, url
            assert marker not in refused.value.problem.detail
        with pytest.raises(ApiRefused) as absent:
            admin.disable_webhook_endpoint(endpoint)
        assert absent.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(ApiRefused) as malformed:
            admin.enable_webhook_endpoint("we_" + marker)
        assert malformed.value.status == 422
        assert marker not in malformed.value.problem.detail
        bad_bodies = [
            ("/v1/webhooks/resend", b"{not json " + marker.encode()),
            ("/v1/webhooks/resend", b"x" * (65 * 1024)),
            ("/v1/webhooks/resend", b"[]"),
            ("/v1/webhooks/resend", b'{"event_id": NaN}'),
            ("/v1/webhooks/resend", b'{"event_id": "' + marker.encode() + b'"}'),
            ("/v1/webhooks/endpoints", b'{"url": 5}'),
            ("/v1/webhooks/endpoints", b'{"url": NaN}'),
        ]
        for path, body in bad_bodies:
            headers = sign_request(key.private_key, key.key_id, "POST", path, "", body)
            headers["Content-Type"] = "application/json"
            answer = httpx.post(f"{svc.url}{path}", content=body, headers=headers)
            assert 400 <= answer.status_code < 500
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert marker not in answer.text


def test_the_async_client_administers_endpoints_too(
    svc: AdminService, keys: dict[str, Key], receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    key = keys["admin"]

    async def administer() -> list[str]:
        api = AsyncTesseraClient(svc.url, key.key_id, key.private_key)
        try:
            endpoint = await api.add_webhook_endpoint(receiver.url)
            svc.events(1, wid(40))
            while not receiver.received:
                await asyncio.sleep(0.05)
            resent = await api.resend_webhooks(withdrawal_id=wid(40))
            assert resent.deliveries >= 1
            off = await api.disable_webhook_endpoint(endpoint.id)
            assert not off.enabled
            on = await api.enable_webhook_endpoint(endpoint.id)
            dead = await api.webhook_deliveries("dead", endpoint_id=endpoint.id)
            assert dead.items == []
            listed = await api.webhook_endpoints()
            await api.disable_webhook_endpoint(on.id)
            return [e.id for e in listed]
        finally:
            await api.aclose()

    ids = asyncio.run(administer())
    assert ids


# --- the CLI, as an operator runs it ----------------------------------------------------------
def _key_file(tmp_path: Path, key: Key) -> Path:
    path = tmp_path / f"{key.key_id}.pem"
    private: Ed25519PrivateKey = key.private_key
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def cli(
    svc: AdminService, key: Key, key_file: Path, *args: str, process: bool = False
) -> tuple[int, Any]:
    """`tessera webhook ARGS … --json`: its exit code and its one JSON document — in a
    process of its own as an operator runs it (`process`), else in this one (CliRunner: the
    same command, without a second's start-up on a loaded machine)."""
    argv = [
        "webhook", *args, "--server", svc.url, "--api-key-id", key.key_id,
        "--api-key", str(key_file), "--json",
    ]  # fmt: skip
    if process:
        env = {k: v for k, v in os.environ.items() if k != "TESSERA_FAILPOINTS"}
        done = subprocess.run(
            [sys.executable, "-m", "coordinator", *argv],
            check=False, capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        code, out = done.returncode, done.stdout
    else:
        from typer.testing import CliRunner

        from coordinator.console import app

        result = CliRunner().invoke(app, argv)
        code, out = result.exit_code, result.stdout
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError(f"not one JSON document: {out!r}") from None
    return code, doc


def test_the_webhook_cli_with_json_and_exit_codes(
    svc: AdminService,
    admin: TesseraClient,
    keys: dict[str, Key],
    receivers: Callable[..., Receiver],
    tmp_path: Path,
) -> None:
    key = keys["admin"]
    key_file = _key_file(tmp_path, key)
    receiver, failing = receivers(), receivers(failures=10**9)
    code, added = cli(svc, key, key_file, "add", receiver.url, process=True)
    assert code == 0 and added["enabled"] and added["url"] == receiver.url
    code, bad_one = cli(svc, key, key_file, "add", failing.url)
    assert code == 0
    tx = new_tx()
    events = svc.events(6, wid(50), tx_hash=tx)
    wait_for(lambda: len(receiver.received) == 6)
    code, listed = cli(svc, key, key_file, "list")
    assert code == 0 and added["id"] in [e["id"] for e in listed["endpoints"]]
    wait_for(lambda: len(svc.dispatcher.deliveries(bad_one["id"], "dead")) == 6)
    code, dead = cli(svc, key, key_file, "dead", "--endpoint", bad_one["id"])
    assert code == 0 and [d["event_id"] for d in dead["deliveries"]] == events
    assert dead["more"] is False
    code, off = cli(svc, key, key_file, "disable", bad_one["id"])
    assert code == 0 and off["enabled"] is False
    code, resent = cli(svc, key, key_file, "resend", "--event-id", str(events[0]))
    assert code == 0 and resent == {"deliveries": 1}
    code, resent = cli(svc, key, key_file, "resend", "--withdrawal", wid(50), process=True)
    assert code == 0 and resent == {"deliveries": 6}
    code, resent = cli(svc, key, key_file, "resend", "--tx-hash", tx)
    assert code == 0 and resent == {"deliveries": 2}
    wait_for(lambda: len(receiver.received) == 15)
    code, off = cli(svc, key, key_file, "disable", added["id"])
    assert code == 0 and off["enabled"] is False
    code, on = cli(svc, key, key_file, "enable", added["id"])
    assert code == 0 and on["enabled"] is True
    # refused: exit 1 with the service's code
    code, missing = cli(svc, key, key_file, "disable", "we_" + "0" * 16, process=True)
    assert code == 1 and missing["error"]["code"] == "NOT_FOUND"
    code, missing = cli(svc, key, key_file, "resend", "--withdrawal", wid(98))
    assert code == 1 and missing["error"]["code"] == "NOT_FOUND"
    other = keys["exchange"]
    code, forbidden = cli(svc, other, _key_file(tmp_path, other), "list")
    assert code == 1 and forbidden["error"]["code"] == "FORBIDDEN"
    # usage: exit 2
    code, usage = cli(svc, key, key_file, "resend", process=True)
    assert code == 2 and usage["error"]["code"] == "USAGE"
    code, usage = cli(svc, key, key_file, "resend", "--event-id", "1", "--tx-hash", tx)
    assert code == 2 and usage["error"]["code"] == "USAGE"
    broken = tmp_path / "broken.pem"
    broken.write_text("not a key")
    code, usage = cli(svc, key, broken, "list")
    assert code == 2 and usage["error"]["code"] == "USAGE"
    # the service away: exit 1, UNREACHABLE
    down = subprocess.run(
        [sys.executable, "-m", "coordinator", "webhook", "list", "--server",
         f"http://127.0.0.1:{free_port()}", "--api-key-id", key.key_id, "--api-key",
         str(key_file), "--json"],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert down.returncode == 1 and json.loads(down.stdout)["error"]["code"] == "UNREACHABLE"


# --- property-based: the schema of the webhook routes, with an admin key ---------------------
class _Signed(requests.auth.AuthBase):
    def __init__(self, key: Key) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(request.url or "")
        raw = request.body or b""
        content = raw.encode() if isinstance(raw, str) else raw
        request.headers.update(
            sign_request(
                self.key.private_key,
                self.key.key_id,
                request.method or "GET",
                parts.path,
                parts.query,
                content,
            )
        )
        return request


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_webhook_routes_match_the_schema_and_never_answer_5xx(
    svc: AdminService, keys: dict[str, Key], mode: GenerationMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests generated from docs/openapi.json for every `/v1/webhooks` route, signed with an
    admin key (test_api_service.py runs every route with a key that is not admin).  Nothing is
    delivered meanwhile: the generated endpoints' URLs name arbitrary hosts."""

    async def nothing() -> int:
        return 0

    monkeypatch.setattr(svc.dispatcher, "deliver_due", nothing)
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))
    session = requests.Session()
    session.auth = _Signed(keys["admin"])
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path.startswith("/v1/webhooks")
    ]
    assert len(operations) == 6
    try:
        for operation in operations:
            takes = [operation.path_parameters, operation.query, operation.headers, operation.body]
            if mode == GenerationMode.NEGATIVE and not any(len(part) for part in takes):
                continue  # nothing to mutate (the endpoint list)

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=15,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=svc.url, session=session)

            check()
    finally:
        # endpoints the generator added (unreachable URLs) deliver nothing into other tests
        for endpoint in svc.dispatcher.endpoints():
            svc.dispatcher.disable_endpoint(endpoint.endpoint_id)
