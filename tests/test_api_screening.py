"""The external screening hook (coordinator/api/screening.py): a real screen on 127.0.0.1 that
verifies the service's signed requests and signs its answers, first against the `Screener`
alone (every fail-closed rule), then through `tessera serve`'s service over real node
processes and Hardhat: approve completes on chain, deny rejects with the screen's reason and
spends nothing, defer asks again and completes, and every failure of the screen denies.  The
policy's sanctions list runs first and a hit never reaches the screen; a deferred withdrawal
survives a kill -9 of the service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from api_world import Key, ServiceThread, api_world, client, free_port, serving
from api_world import exchange_key as issue_exchange_key
from chain_world import BLOCKED, CHAIN_A, RECIPIENT, World, registry_file
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import col, select

from coordinator.api.client import TesseraClient
from coordinator.api.lifecycle import Status
from coordinator.api.models import WithdrawalCreate
from coordinator.api.screening import (
    ID_HEADER,
    Outcome,
    Screener,
    ScreeningError,
    load_screen_key,
    signed_headers,
    verify_request,
)
from coordinator.api.server import SCREENING_KEY_FILE
from coordinator.api.tables import WithdrawalEventRow, WithdrawalRow
from coordinator.api.webhooks import (
    WebhookVerificationError,
    load_or_create_signing_key,
    public_key_text,
)
from coordinator.fees import FeeLevel
from coordinator.store import CoordinatorStore

#: presignatures: one per withdrawal that the screen lets through to the nodes' signature
PRESIGNATURES = 6


@dataclass
class Answer:
    """What the screen answers to one request."""

    outcome: str = "approve"
    reason: str = "clean"
    reference: str | None = None
    retry_after: float | None = None
    status: int = 200
    delay: float = 0.0
    #: sign with this key instead of the screen's (a forged answer)
    key: Ed25519PrivateKey | None = None
    unsigned: bool = False
    #: sign with a timestamp this many seconds in the past
    age: int = 0
    #: answer with an earlier genuine answer, verbatim (a replay for another request)
    replay: bool = False
    #: this body instead of the answer's JSON
    raw: bytes | None = None


class Screen:
    """An external screen: a ThreadingHTTPServer that verifies each request against the
    service's screening key (when it knows it) and answers as planned for the withdrawal's
    amount (a list of answers, the last one repeated), else approves."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public = public_key_text(self.key)
        self.service_key: str | None = None
        self.plans: dict[str, list[Answer]] = {}
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.unverified: list[str] = []
        #: called as each request arrives (what the service had on disk by then), if set
        self.observe: Callable[[], object] | None = None
        self.observed: list[object] = []
        #: the answers signed by the screen's key, fresh: what a replay sends again
        self.genuine: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        screen = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                doc = json.loads(body)
                if screen.service_key is not None:
                    try:
                        verify_request(screen.service_key, headers, body)
                    except WebhookVerificationError as exc:
                        screen.unverified.append(exc.check)
                with screen.lock:
                    if screen.observe is not None:
                        screen.observed.append(screen.observe())
                    screen.requests.append((headers, doc))
                    plan = screen.plans.get(doc["withdrawal"]["amount"], [Answer()])
                    answer = plan.pop(0) if len(plan) > 1 else plan[0]
                if answer.delay:
                    time.sleep(answer.delay)
                out_headers, content = screen.answer(answer, doc["request_id"])
                try:
                    self.send_response(answer.status)
                    for name, value in out_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the service gave up waiting (a timeout test)

            def log_message(self, *_: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, *_: object) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, answer: Answer, request_id: str) -> tuple[dict[str, str], bytes]:
        if answer.replay:
            if not self.genuine:  # this test runs first: a genuine answer to another request
                self.answer(Answer(), f"another-{request_id}")
            return self.genuine[-1]
        doc: dict[str, Any] = {
            "request_id": request_id,
            "outcome": answer.outcome,
            "reason": answer.reason,
        }
        if answer.reference is not None:
            doc["reference"] = answer.reference
        if answer.retry_after is not None:
            doc["retry_after"] = answer.retry_after
        content = answer.raw if answer.raw is not None else json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"}
        if not answer.unsigned:
            key = answer.key or self.key
            headers.update(signed_headers(key, content, int(time.time()) - answer.age))
        with self.lock:
            if answer.key is None and not answer.unsigned and not answer.age:
                self.genuine.append((headers, content))
        return headers, content

    def plan(self, amount: str, *answers: Answer) -> str:
        self.plans[amount] = list(answers)
        return amount

    def asked(self, amount: str) -> list[dict[str, Any]]:
        return [doc for _h, doc in self.requests if doc["withdrawal"]["amount"] == amount]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/screen"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def screen() -> Iterator[Screen]:
    running = Screen()
    try:
        yield running
    finally:
        running.close()


# --- the Screener alone: the wire form and every fail-closed rule -------------------------------
def row(amount: str, wid: str = "wd_" + "ab" * 16) -> WithdrawalRow:
    return WithdrawalRow(
        withdrawal_id=wid,
        client_id="c_1",
        client_request_id="payout-1",
        request_hash="00",
        wallet="hot",
        chain_id=1,
        asset="USDT",
        destination=RECIPIENT,
        amount=amount,
        fee_level="medium",
        note="",
        status=Status.SCREENING.value,
        sub_status="screening_external",
        created_at=time.time(),
        updated_at=time.time(),
    )


def screened(screen: Screen, amount: str, **options: Any) -> tuple[Any, Screener]:
    ours = Ed25519PrivateKey.generate()
    screen.service_key = public_key_text(ours)
    screener = Screener(
        screen.url, load_screen_key(screen.public), ours, **{"timeout": 2.0, **options}
    )

    async def once() -> Any:
        try:
            return await screener.screen(row(amount))
        finally:
            await screener.aclose()

    return asyncio.run(once()), screener


def test_an_approve_and_a_deny_and_the_signed_request_the_screen_verifies(screen: Screen) -> None:
    amount = screen.plan("1.001", Answer(reason="no exposure"))
    verdict, screener = screened(screen, amount)
    assert verdict.outcome == Outcome.APPROVE and verdict.reason_code is None
    assert verdict.reason == "no exposure"
    ((headers, doc),) = [(h, d) for h, d in screen.requests if d["withdrawal"]["amount"] == amount]
    assert screen.unverified == []  # the screen verified the request with our public key
    assert doc["type"] == "withdrawal.screening" and doc["request_id"].startswith("scr_")
    assert headers[ID_HEADER] == doc["request_id"]
    assert doc["withdrawal"] == {
        "id": "wd_" + "ab" * 16,
        "client_id": "c_1",
        "client_request_id": "payout-1",
        "wallet": "hot",
        "chain_id": 1,
        "asset": "USDT",
        "destination": RECIPIENT,
        "amount": amount,
        "fee_level": "medium",
        "note": "",
        "created_at": doc["withdrawal"]["created_at"],
    }
    # the request's signature is over the timestamp and the exact body
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    verify_request(public_key_text(screener.signing_key), headers, body)
    with pytest.raises(WebhookVerificationError) as forged:
        verify_request(screen.public, headers, body)  # not the service's key
    assert forged.value.check == "signature"
    with pytest.raises(WebhookVerificationError) as changed:
        verify_request(public_key_text(screener.signing_key), headers, body.replace(b"1.001", b"9"))
    assert changed.value.check == "signature"
    denied = screen.plan("1.002", Answer("deny", "mixer exposure", reference="case-77"))
    verdict, _ = screened(screen, denied)
    assert (verdict.outcome, verdict.reason_code) == (Outcome.DENY, "screening_denied")
    assert verdict.reason == "mixer exposure" and verdict.reference == "case-77"
    deferred = screen.plan("1.003", Answer("defer", "analyst review", retry_after=12))
    verdict, _ = screened(screen, deferred)
    assert verdict.outcome == Outcome.DEFER and verdict.retry_after == 12


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (Answer(key=Ed25519PrivateKey.generate()), "screening_bad_signature"),
        (Answer(unsigned=True), "screening_bad_signature"),
        (Answer(age=3600), "screening_bad_signature"),
        (Answer(raw=b"{not json"), "screening_bad_response"),
        (Answer(raw=b"[1, 2]"), "screening_bad_response"),
        (Answer(outcome="maybe"), "screening_bad_response"),
        (Answer(retry_after=-1), "screening_bad_response"),
        (Answer(raw=b"x" * (70 * 1024)), "screening_bad_response"),
        (Answer(status=400), "screening_bad_response"),
        (Answer(status=302), "screening_bad_response"),
        (Answer(status=500), "screening_unavailable"),
    ],
)
def test_anything_but_a_fresh_signed_answer_to_this_request_is_a_deny(
    screen: Screen, answer: Answer, code: str
) -> None:
    amount = screen.plan(f"2.{next(_counter)}", answer)
    verdict, _ = screened(screen, amount)
    assert verdict.outcome == Outcome.DENY, verdict
    assert verdict.reason_code == code, verdict
    assert "x" * 50 not in verdict.reason


def test_a_replayed_answer_for_another_request_is_a_mismatch(screen: Screen) -> None:
    first = screen.plan("3.001", Answer(reason="fine"))
    assert screened(screen, first)[0].outcome == Outcome.APPROVE
    # the screen (or someone in the middle) sends the answer signed for the other request
    replayed = screen.plan("3.002", Answer(replay=True))
    verdict, _ = screened(screen, replayed)
    assert (verdict.outcome, verdict.reason_code) == (Outcome.DENY, "screening_mismatch")


def test_transport_failures_are_retried_within_the_deadline_and_a_timeout_is_final(
    screen: Screen,
) -> None:
    flaky = screen.plan("4.001", Answer(status=503), Answer(reason="back"))
    verdict, _ = screened(screen, flaky)
    assert verdict.outcome == Outcome.APPROVE and len(screen.asked(flaky)) == 2
    down = screen.plan("4.002", Answer(status=503))
    verdict, _ = screened(screen, down, attempts=3)
    assert verdict.reason_code == "screening_unavailable" and len(screen.asked(down)) == 3
    # each attempt is its own request: a fresh id and signature
    assert len({d["request_id"] for d in screen.asked(down)}) == 3
    slow = screen.plan("4.003", Answer(delay=2.5))
    started = time.monotonic()
    verdict, _ = screened(screen, slow, timeout=1.0)
    assert verdict.reason_code == "screening_unavailable" and "timed out" in verdict.reason
    assert time.monotonic() - started < 2.0 and len(screen.asked(slow)) == 1
    nobody = Screener(
        f"http://127.0.0.1:{free_port()}/screen",
        load_screen_key(screen.public),
        Ed25519PrivateKey.generate(),
        timeout=2.0,
    )
    refused = asyncio.run(nobody.screen(row("4.004")))
    assert refused.reason_code == "screening_unavailable" and "unreachable" in refused.reason


def test_the_screens_key_from_a_file_or_text_and_bad_configurations_refused(
    screen: Screen, tmp_path: Path
) -> None:
    text = tmp_path / "screen.pub"
    text.write_text(screen.public + "\n")
    pem = tmp_path / "screen.pem"
    pem.write_bytes(
        screen.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for source in (screen.public, str(text), str(pem)):
        assert public_key_text(load_screen_key(source)) == screen.public
    secret = "not-a-key-SECRET-" + "q" * 20
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PUBLIC KEY-----\n" + secret + "\n-----END PUBLIC KEY-----\n")
    for bad in (secret, str(junk)):
        with pytest.raises(ScreeningError) as refused:
            load_screen_key(bad)
        assert secret not in str(refused.value)
    for url in ("ftp://screen/", "http://", "not a url", "http://screen:99999/"):
        with pytest.raises(ScreeningError):
            Screener(url, load_screen_key(screen.public), Ed25519PrivateKey.generate())
    with pytest.raises(ScreeningError):
        Screener(screen.url, load_screen_key(screen.public), screen.key, timeout=0)


# --- through the service: real nodes, Hardhat, the workers ---------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("screening"), PRESIGNATURES) as w:
        yield w


@pytest.fixture(scope="module")
def exchange_key(world: World) -> Key:
    return issue_exchange_key(world)


@pytest.fixture(scope="module")
def service_public_key(world: World) -> str:
    """The key the service signs its screening requests with (made once, in the cluster)."""
    return public_key_text(load_or_create_signing_key(world.cluster.root / SCREENING_KEY_FILE))


@pytest.fixture
def api(world: World, screen: Screen, service_public_key: str) -> Iterator[ServiceThread]:
    """A service per test (as tests/test_api_service.py), asking the screen."""
    screen.service_key = service_public_key
    screen.unverified.clear()
    with serving(
        world, screening_url=screen.url, screening_key=screen.public, screening_timeout=1.5
    ) as running:
        yield running
    assert screen.unverified == []  # every request the service sent verified


_counter = iter(range(10**6))


def body(amount: str, to: str = RECIPIENT) -> WithdrawalCreate:
    return WithdrawalCreate(
        client_request_id=f"screened-{next(_counter)}",
        wallet="hot",
        chain_id=CHAIN_A,
        asset="ETH",
        destination=to,
        amount=amount,
        fee_level=FeeLevel.MEDIUM,
        note="screened",
    )


def trail(world: World, withdrawal_id: str) -> list[tuple[str, str]]:
    store = CoordinatorStore(world.cluster.root / "coordinator.db")
    try:
        with store.session() as session:
            events = session.exec(
                select(WithdrawalEventRow)
                .where(WithdrawalEventRow.withdrawal_id == withdrawal_id)
                .order_by(col(WithdrawalEventRow.event_id))
            )
            return [(e.status, e.sub_status) for e in events]
    finally:
        store.close()


def spent(world: World, api: ServiceThread) -> tuple[int, int]:
    """(presignatures left in the pool, the sender's nonce on chain A)."""
    assert api.service is not None
    store = api.service.coordinator.store
    wallet = store.wallet("hot")
    return (
        store.pool_depth(wallet.key_id, wallet.epoch, "1,2", ""),
        world.chains.local[CHAIN_A].nonce(world.sender),
    )


def test_approved_by_the_screen_it_completes_on_chain(
    world: World, api: ServiceThread, screen: Screen, exchange_key: Key
) -> None:
    amount = screen.plan("0.0101", Answer(reason="clean", reference="kyt-1"))
    local = world.chains.local[CHAIN_A]
    before = local.balance(RECIPIENT)
    assert api.service is not None and api.service.screener is not None
    store, screener = api.service.coordinator.store, api.service.screener
    # what the withdrawal's own task did, in order: the barrier, the screen asked
    steps: list[tuple[object, str]] = []
    barrier, ask = store.barrier, screener.screen

    async def syncing() -> None:
        await barrier()
        steps.append((asyncio.current_task(), "synced"))

    async def asking(row: WithdrawalRow) -> Any:
        steps.append((asyncio.current_task(), "asked"))
        return await ask(row)

    store.barrier, screener.screen = syncing, asking  # type: ignore[method-assign]
    screen.observe, screen.observed = store.unsynced, []
    try:
        with client(api, exchange_key) as exchange:
            done = exchange.wait(exchange.create_withdrawal(body(amount)).id)
    finally:
        store.barrier, screener.screen = barrier, ask  # type: ignore[method-assign]
        screen.observe = None
    # the withdrawal (and its SCREENING) were on disk before it left for the screen: its task
    # synced right before it asked, and nothing was left unsynced when the request arrived
    ((worker, _),) = [(task, what) for task, what in steps if what == "asked"]
    mine = [what for task, what in steps if task is worker]
    assert mine[: mine.index("asked")][-1:] == ["synced"]
    assert screen.observed == [False]
    assert done.status == Status.COMPLETED, done
    assert done.reason_code is None and done.tx_hash is not None
    assert local.balance(RECIPIENT) - before == 101 * 10**14
    assert trail(world, done.id)[:4] == [
        ("SUBMITTED", "received"),
        ("SCREENING", "screening_policy"),
        ("SCREENING", "screening_external"),  # stored before the screen was asked
        ("QUEUED", "ready"),
    ]
    (asked,) = screen.asked(amount)
    assert asked["withdrawal"]["id"] == done.id
    assert asked["withdrawal"]["destination"] == RECIPIENT
    assert asked["withdrawal"]["client_id"] == exchange_key.client_id


def test_denied_by_the_screen_it_is_rejected_with_its_reason_and_spends_nothing(
    world: World, api: ServiceThread, screen: Screen, exchange_key: Key
) -> None:
    amount = screen.plan("0.0102", Answer("deny", "sanctioned cluster", reference="case-9"))
    before = spent(world, api)
    with client(api, exchange_key) as exchange:
        done = exchange.wait(exchange.create_withdrawal(body(amount)).id)
    assert done.status == Status.REJECTED, done
    assert done.sub_status == "screening_denied" and done.reason_code == "screening_denied"
    assert done.reason is not None
    assert "sanctioned cluster" in done.reason and "case-9" in done.reason
    assert done.policy_hash == world.policy.policy_hash()
    assert "SIGNING" not in [s for s, _ in trail(world, done.id)]
    assert spent(world, api) == before  # no presignature, no nonce


def test_deferred_it_is_screened_again_and_then_completes(
    world: World, api: ServiceThread, screen: Screen, exchange_key: Key
) -> None:
    amount = screen.plan(
        "0.0103",
        Answer("defer", "analyst review", retry_after=1),
        Answer("defer", "analyst review", retry_after=1),
        Answer(reason="cleared by analyst"),
    )
    with client(api, exchange_key) as exchange:
        accepted = exchange.create_withdrawal(body(amount))
        waiting = exchange.wait(accepted.id, timeout=30, until={Status.SCREENING}, poll=0.05)
        deadline = time.monotonic() + 20
        while waiting.sub_status != "screening_deferred" and time.monotonic() < deadline:
            waiting = exchange.withdrawal(accepted.id)
            time.sleep(0.05)
        assert waiting.status == Status.SCREENING and waiting.sub_status == "screening_deferred"
        assert waiting.reason_code == "screening_deferred"
        assert waiting.reason is not None and "analyst review" in waiting.reason
        done = exchange.wait(accepted.id, timeout=60)
    assert done.status == Status.COMPLETED, done
    assert done.reason_code is None and done.reason is None  # the deferral's reason is gone
    assert len(screen.asked(amount)) == 3
    subs = [sub for status, sub in trail(world, done.id) if status == "SCREENING"]
    # one event for the deferral (the second, with the same reason, changed nothing)
    assert subs == ["screening_policy", "screening_external", "screening_deferred"]


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (Answer(delay=4.0), "screening_unavailable"),
        (Answer(key=Ed25519PrivateKey.generate()), "screening_bad_signature"),
        (Answer(replay=True), "screening_mismatch"),
        (Answer(raw=b"<html>oops</html>"), "screening_bad_response"),
    ],
)
def test_a_screen_that_fails_rejects_the_withdrawal_fail_closed(
    world: World, api: ServiceThread, screen: Screen, exchange_key: Key, answer: Answer, code: str
) -> None:
    amount = screen.plan(f"0.02{len(screen.plans)}", answer)
    before = spent(world, api)
    with client(api, exchange_key) as exchange:
        done = exchange.wait(exchange.create_withdrawal(body(amount)).id, timeout=60)
    assert done.status == Status.REJECTED, done
    assert done.sub_status == "screening_denied" and done.reason_code == code
    assert spent(world, api) == before


def test_the_sanctions_list_runs_first_and_a_hit_never_reaches_the_screen(
    world: World, api: ServiceThread, screen: Screen, exchange_key: Key
) -> None:
    amount = screen.plan("0.0104", Answer())
    with client(api, exchange_key) as exchange:
        done = exchange.wait(exchange.create_withdrawal(body(amount, BLOCKED)).id)
    assert done.status == Status.REJECTED and done.reason_code == "blacklisted"
    assert screen.asked(amount) == []
    assert ("SCREENING", "screening_external") not in trail(world, done.id)


def test_deferred_past_the_bound_it_is_rejected(
    world: World, screen: Screen, exchange_key: Key, service_public_key: str
) -> None:
    amount = screen.plan("0.0105", Answer("defer", "still looking", retry_after=0.5))
    screen.service_key = service_public_key
    with (
        serving(
            world,
            screening_url=screen.url,
            screening_key=screen.public,
            screening_timeout=1.5,
            screening_max_defer=3.0,
        ) as running,
        client(running, exchange_key) as exchange,
    ):
        done = exchange.wait(exchange.create_withdrawal(body(amount)).id, timeout=60)
    assert done.status == Status.REJECTED, done
    assert done.reason_code == "screening_defer_expired" and "still looking" in (done.reason or "")
    assert len(screen.asked(amount)) >= 2


def serve_process(world: World, port: int, registry: Path, *extra: str) -> tuple[Any, dict]:
    args = [
        sys.executable, "-m", "coordinator", "serve", "--dir", str(world.cluster.root),
        "--registry", str(registry), "--port", str(port), "--pool-depth", "0", "--json", *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TESSERA_FAILPOINTS"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "serving" in line, f"tessera serve did not start: {line!r}"
    return process, json.loads(line)


def test_a_deferred_withdrawal_is_screened_again_after_a_kill_9_of_the_service(
    world: World, screen: Screen, exchange_key: Key, service_public_key: str, tmp_path: Path
) -> None:
    """`tessera serve --screening-url --screening-key FILE`: a withdrawal the screen deferred
    for ten minutes; the service is SIGKILLed; a new one asks the screen again at once (when
    it is due lives in memory) and, approved now, the withdrawal completes."""
    registry = registry_file(world, tmp_path / "chains.toml")
    key_file = tmp_path / "screen.pub"
    key_file.write_text(screen.public)
    flags = ("--screening-url", screen.url, "--screening-key", str(key_file))
    amount = screen.plan("0.0106", Answer("defer", "manual review", retry_after=600))
    screen.service_key = service_public_key
    port = free_port()
    first, started = serve_process(world, port, registry, *flags)
    try:
        assert started["screening_public_key"] == service_public_key
        exchange = TesseraClient(f"http://127.0.0.1:{port}", exchange_key.key_id,
                                 exchange_key.private_key)  # fmt: skip
        accepted = exchange.create_withdrawal(body(amount))
        deadline = time.monotonic() + 60
        while exchange.withdrawal(accepted.id).sub_status != "screening_deferred":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        exchange.close()
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    assert len(screen.asked(amount)) == 1
    screen.plan(amount, Answer(reason="released"))
    second, _ = serve_process(world, port, registry, *flags)
    try:
        exchange = TesseraClient(f"http://127.0.0.1:{port}", exchange_key.key_id,
                                 exchange_key.private_key)  # fmt: skip
        done = exchange.wait(accepted.id, timeout=90)
        exchange.close()
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
    assert done.status == Status.COMPLETED, done
    assert len(screen.asked(amount)) == 2
    assert screen.unverified == []


def test_serve_refuses_half_a_screening_configuration_as_usage(
    world: World, tmp_path: Path
) -> None:
    registry = registry_file(world, tmp_path / "chains.toml")
    base = [
        sys.executable, "-m", "coordinator", "serve", "--dir", str(world.cluster.root),
        "--registry", str(registry), "--port", str(free_port()), "--json",
    ]  # fmt: skip
    for extra in (
        ["--screening-url", "http://127.0.0.1:9/screen"],
        ["--screening-url", "http://127.0.0.1:9/screen", "--screening-key", "SECRET-not-a-key"],
        ["--screening-url", "ftp://x/", "--screening-key", public_key_text(
            Ed25519PrivateKey.generate())],
    ):  # fmt: skip
        done = subprocess.run(
            base + extra, check=False, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, (extra, done.stdout, done.stderr)
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "USAGE" and "SECRET" not in error["detail"]
