"""The signer API end to end: `tessera serve`'s service (uvicorn, its workers) over real node
processes and Hardhat, driven over HTTP by the Python client as the exchange's withdrawal
service would (docs/api.md)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import requests.auth
import schemathesis
from api_world import (
    Key,
    Receiver,
    ServiceThread,
    api_world,
    async_client,
    client,
    exchange_key,
    free_port,
    issue_key,
    serving,
)
from chain_world import (
    BLOCKED,
    CHAIN_A,
    RECIPIENT,
    SECOND,
    STRANGER,
    World,
    registry_file,
)
from hypothesis import HealthCheck, given, settings
from policy_world import INITIATOR, approve
from schemathesis import GenerationMode
from sqlmodel import select

from coordinator.api.auth import Scope, sign_request
from coordinator.api.client import ApiRefused, TesseraClient
from coordinator.api.lifecycle import RANK, Status
from coordinator.api.models import WithdrawalCreate
from coordinator.api.server import WEBHOOK_KEY_FILE
from coordinator.api.tables import WithdrawalEventRow
from coordinator.api.webhooks import WebhookDispatcher, load_or_create_signing_key, public_key_text
from coordinator.fees import FeeLevel
from coordinator.store import CoordinatorStore
from policies.intent import TransactionIntent
from signer.problems import ErrorCode

OPENAPI = Path(__file__).parent.parent / "docs" / "openapi.json"
#: presignatures: one per withdrawal that reaches the nodes' signature in this module
PRESIGNATURES = 18


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("api"), PRESIGNATURES) as w:
        yield w


@pytest.fixture(scope="module")
def keys(world: World) -> dict[str, Key]:
    return {
        "exchange": exchange_key(world),
        "reader": issue_key(world, "reader", [Scope.WITHDRAWALS_READ]),
        "officers": issue_key(world, "officers", [Scope.APPROVALS_WRITE, Scope.WITHDRAWALS_READ]),
        "everything": issue_key(
            world,
            "schemathesis",
            [Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ, Scope.APPROVALS_WRITE],
            rate=10**6,
        ),
    }


@pytest.fixture
def api(world: World) -> Iterator[ServiceThread]:
    """A service per test (about a second to start): the crash tests run their own."""
    with serving(world) as running:
        yield running


_counter = iter(range(10**6))


def body(
    asset: str = "ETH", amount: str = "0.1", to: str = RECIPIENT, **kw: object
) -> WithdrawalCreate:
    fields: dict[str, object] = {
        "client_request_id": f"ex-{next(_counter)}-{asset}",
        "wallet": "hot",
        "chain_id": CHAIN_A,
        "asset": asset,
        "destination": to,
        "amount": amount,
        "fee_level": FeeLevel.MEDIUM,
        "note": "test",
    }
    fields.update(kw)
    return WithdrawalCreate.model_validate(fields)


def statuses(api: ServiceThread, withdrawal_id: str) -> list[Status]:
    assert api.service is not None
    return [Status(e.status) for e in api.service.withdrawals.events(withdrawal_id)]


def test_small_eth_and_token_withdrawals_complete_with_every_status_in_order(
    world: World, api: ServiceThread, keys: dict[str, Key]
) -> None:
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "USDT")
    eth_before, usdt_before = local.balance(RECIPIENT), local.token_balance(token, RECIPIENT)
    with client(api, keys["exchange"]) as exchange:
        eth = exchange.create_withdrawal(body("ETH", "0.125"))
        usdt = exchange.create_withdrawal(body("USDT", "7.5"))
        assert eth.status == Status.SUBMITTED and usdt.status == Status.SUBMITTED
        done = [exchange.wait(eth.id), exchange.wait(usdt.id)]
    for withdrawal in done:
        assert withdrawal.status == Status.COMPLETED, withdrawal
        assert withdrawal.tx_hash is not None and withdrawal.terminal
        assert withdrawal.policy_hash == world.policy.policy_hash()
        assert withdrawal.rule_id == "payouts"
        seen = statuses(api, withdrawal.id)
        assert seen == [
            Status.SUBMITTED,
            Status.SCREENING,
            Status.QUEUED,
            Status.SIGNING,
            Status.BROADCASTING,
            Status.CONFIRMING,
            Status.COMPLETED,
        ]
    assert local.balance(RECIPIENT) - eth_before == 125 * 10**15
    assert local.token_balance(token, RECIPIENT) - usdt_before == 7_500_000
    receipt = local.receipt(bytes.fromhex(done[0].tx_hash[2:]))  # type: ignore[index]
    assert receipt.success


def test_a_replay_gives_the_same_withdrawal_and_another_body_is_a_conflict(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    first = body("ETH", "0.01")
    with client(api, keys["exchange"]) as exchange:
        accepted = exchange.create_withdrawal(first)
        again = exchange.create_withdrawal(first)
        assert again.id == accepted.id
        with pytest.raises(ApiRefused) as conflict:
            exchange.create_withdrawal(first.model_copy(update={"amount": "0.02"}))
        assert conflict.value.status == 409
        assert conflict.value.code == ErrorCode.REQUEST_REUSED
        assert accepted.id in conflict.value.problem.detail
        assert conflict.value.problem.request_id
        found = exchange.by_client_request_id(first.client_request_id)
        assert found is not None and found.id == accepted.id
        assert exchange.wait(accepted.id).status == Status.COMPLETED


def test_a_request_refused_before_it_is_stored_does_not_burn_its_id(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    good = body("ETH", "0.01")
    wrong_case = "0x" + RECIPIENT[2:].swapcase()
    bad = good.model_copy(update={"destination": wrong_case})
    with client(api, keys["exchange"]) as exchange:
        with pytest.raises(ApiRefused) as refused:
            exchange.create_withdrawal(bad)
        assert refused.value.code == ErrorCode.ADDRESS_REFUSED
        assert refused.value.problem.check == "checksum"
        assert exchange.by_client_request_id(good.client_request_id) is None
        accepted = exchange.create_withdrawal(good)
        assert exchange.wait(accepted.id).status == Status.COMPLETED


def test_a_hundred_concurrent_submissions_make_one_withdrawal(
    world: World, api: ServiceThread, keys: dict[str, Key]
) -> None:
    same = body("ETH", "0.003")
    local = world.chains.local[CHAIN_A]
    before = local.balance(RECIPIENT)

    async def storm() -> set[str]:
        exchange = async_client(api, keys["exchange"])
        try:
            answers = await asyncio.gather(*(exchange.create_withdrawal(same) for _ in range(100)))
            return {a.id for a in answers}
        finally:
            await exchange.aclose()

    ids = asyncio.run(storm())
    assert len(ids) == 1
    with client(api, keys["exchange"]) as exchange:
        page = exchange.withdrawals(client_request_id=same.client_request_id)
        assert [w.id for w in page.items] == list(ids)
        assert exchange.wait(ids.pop()).status == Status.COMPLETED
    assert local.balance(RECIPIENT) - before == 3 * 10**15


def test_an_idempotency_key_replays_its_answer_and_refuses_another_body(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    first, other = body("ETH", "0.001"), body("ETH", "0.002")
    with client(api, keys["exchange"]) as exchange:
        one = exchange.create_withdrawal(first, idempotency_key="key-1")
        two = exchange.create_withdrawal(first, idempotency_key="key-1")
        assert one == two
        with pytest.raises(ApiRefused) as conflict:
            exchange.create_withdrawal(other, idempotency_key="key-1")
        assert conflict.value.code == ErrorCode.IDEMPOTENCY_CONFLICT
        assert exchange.by_client_request_id(other.client_request_id) is None
        assert exchange.wait(one.id).status == Status.COMPLETED


def test_off_the_whitelist_is_rejected_by_the_nodes_and_a_sanctioned_one_by_screening(
    world: World, api: ServiceThread, keys: dict[str, Key]
) -> None:
    assert api.service is not None
    store = api.service.coordinator.store
    wallet = store.wallet("hot")
    depth_before = store.pool_depth(wallet.key_id, wallet.epoch, "1,2", "")
    with client(api, keys["exchange"]) as exchange:
        stranger = exchange.wait(exchange.create_withdrawal(body("ETH", "0.1", STRANGER)).id)
        sanctioned = exchange.wait(exchange.create_withdrawal(body("ETH", "0.1", BLOCKED)).id)
    assert stranger.status == Status.REJECTED
    assert stranger.reason_code == ErrorCode.POLICY_DENIED.value
    assert stranger.sub_status == "nodes_refused"
    assert stranger.reason is not None and "refused" in stranger.reason
    assert stranger.policy_hash == world.policy.policy_hash()
    assert Status.SIGNING in statuses(api, stranger.id)
    assert sanctioned.status == Status.REJECTED
    assert sanctioned.reason_code == "blacklisted"
    assert sanctioned.sub_status == "screening_denied"
    assert Status.SIGNING not in statuses(api, sanctioned.id)
    # neither spent a presignature (the nodes refuse before one is consumed)
    assert store.pool_depth(wallet.key_id, wallet.epoch, "1,2", "") == depth_before


def test_a_large_withdrawal_waits_for_two_officers_and_is_then_signed(
    world: World, api: ServiceThread, keys: dict[str, Key]
) -> None:
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "USDT")
    before = local.token_balance(token, SECOND)
    with client(api, keys["exchange"]) as exchange, client(api, keys["officers"]) as desk:
        accepted = exchange.create_withdrawal(body("USDT", "1500", SECOND))
        waiting = exchange.wait(accepted.id, until={Status.PENDING_APPROVAL})
        assert waiting.status == Status.PENDING_APPROVAL
        assert accepted.id in [w.id for w in desk.pending_approvals()]
        intent = desk.intent(accepted.id)
        assert intent["initiator"] == INITIATOR and intent["amount"] == "1500"
        claim = TransactionIntent.model_validate(intent)
        signed = approve(
            [world.officers["alice"], world.officers["bob"]],
            claim,
            world.policy,
            now=datetime.now(UTC),
        )
        desk.approve(accepted.id, signed[0].model_dump(mode="json"))
        with pytest.raises(ApiRefused) as forged:
            tampered = signed[1].model_dump(mode="json")
            tampered["signature"] = "00" * (len(tampered["signature"]) // 2)
            desk.approve(accepted.id, tampered)
        assert forged.value.code == ErrorCode.VALIDATION
        # one approval is not enough
        assert exchange.withdrawal(accepted.id).status == Status.PENDING_APPROVAL
        desk.approve(accepted.id, signed[1].model_dump(mode="json"))
        done = exchange.wait(accepted.id)
    assert done.status == Status.COMPLETED, done
    assert done.approvals == ["alice", "bob"]
    assert local.token_balance(token, SECOND) - before == 1500 * 10**6
    seen = statuses(api, done.id)
    assert Status.PENDING_APPROVAL in seen and seen[-1] == Status.COMPLETED


def test_cancel_before_signing_only(api: ServiceThread, keys: dict[str, Key]) -> None:
    with client(api, keys["exchange"]) as exchange:
        large = exchange.create_withdrawal(body("ETH", "2000", SECOND))
        exchange.wait(large.id, until={Status.PENDING_APPROVAL})
        cancelled = exchange.cancel(large.id)
        assert cancelled.status == Status.CANCELLED and cancelled.terminal
        assert exchange.cancel(large.id).status == Status.CANCELLED  # idempotent
        small = exchange.create_withdrawal(body("ETH", "0.001"))
        done = exchange.wait(small.id)
        assert done.status == Status.COMPLETED
        with pytest.raises(ApiRefused) as late:
            exchange.cancel(small.id)
        assert late.value.code == ErrorCode.NOT_CANCELLABLE


def test_statuses_only_move_forward(api: ServiceThread, keys: dict[str, Key]) -> None:
    assert api.service is not None
    with client(api, keys["reader"]) as reader:
        page = reader.withdrawals(limit=200)
    # the reader's own client made none: it sees none of the exchange's
    assert page.items == []
    service = api.service.withdrawals
    rows, _ = service.page(None, limit=200)
    assert rows
    for row in rows:
        ranks = [RANK[s] for s in statuses(api, row.withdrawal_id)]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


def test_listing_pages_by_cursor_with_filters(api: ServiceThread, keys: dict[str, Key]) -> None:
    with client(api, keys["exchange"]) as exchange:
        # five of its own, waiting for officers (no presignature spent), then cancelled
        mine = [exchange.create_withdrawal(body("DAI", "5000", SECOND)).id for _ in range(5)]
        for withdrawal_id in mine:
            exchange.wait(withdrawal_id, until={Status.PENDING_APPROVAL})
        everything = []
        cursor = None
        while True:
            page = exchange.withdrawals(limit=2, cursor=cursor)
            everything.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        ids = [w.id for w in everything]
        assert len(ids) == len(set(ids)) and set(mine) <= set(ids)
        assert [w.created_at for w in everything] == sorted(w.created_at for w in everything)
        waiting = exchange.withdrawals(status=["PENDING_APPROVAL"], asset="DAI", limit=200)
        assert {w.id for w in waiting.items} >= set(mine)
        assert all(w.asset == "DAI" for w in waiting.items)
        for withdrawal_id in mine:
            exchange.cancel(withdrawal_id)
        assert not {w.id for w in exchange.withdrawals(status=["PENDING_APPROVAL"]).items} & set(
            mine
        )
        with pytest.raises(ApiRefused) as bad:
            exchange.withdrawals(cursor="not-a-cursor")
        assert bad.value.code == ErrorCode.VALIDATION
        # a filter that takes a list may repeat; one that takes one value may not (it would be
        # read as its last value: a list of DAI withdrawals answering `asset=ETH&asset=DAI`)
        both = exchange.withdrawals(status=["PENDING_APPROVAL", "CANCELLED"], asset="DAI")
        assert set(mine) <= {w.id for w in both.items}
        for name, values in (("asset", ["ETH", "DAI"]), ("limit", [1, 1, 1])):
            with pytest.raises(ApiRefused) as repeated:
                exchange.withdrawals(**{name: values})
            assert repeated.value.status == 422 and repeated.value.code == ErrorCode.VALIDATION
            assert f"query.{name}: given {len(values)} times" in repeated.value.problem.detail


def test_unsigned_wrong_scope_and_bad_input_are_problems_never_500(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    raw = httpx.post(f"{api.url}/v1/withdrawals", json=body().model_dump(mode="json"))
    assert raw.status_code == 401
    problem = raw.json()
    assert raw.headers["content-type"].startswith("application/problem+json")
    assert (
        problem["code"] == "UNAUTHORIZED" and problem["request_id"] == raw.headers["x-request-id"]
    )
    with client(api, keys["reader"]) as reader:
        with pytest.raises(ApiRefused) as scope:
            reader.create_withdrawal(body())
        assert scope.value.code == ErrorCode.FORBIDDEN and "withdrawals:create" in str(scope.value)
    with client(api, keys["exchange"]) as exchange:
        for broken in (
            {"amount": 1.5},
            {"amount": "1e3"},
            {"amount": "NaN"},
            {"chain_id": "x"},
            {"destination": "0x12"},
            {"extra": True},
        ):
            doc = {**body().model_dump(mode="json"), **broken}
            with pytest.raises(ApiRefused) as refused:
                exchange.request("POST", "/v1/withdrawals", body=doc)
            assert refused.value.status == 422, broken
            assert len(refused.value.problem.detail) < 500
        for missing_chain in ({"chain_id": 999_999},):
            doc = {**body().model_dump(mode="json"), **missing_chain}
            with pytest.raises(ApiRefused) as unknown:
                exchange.request("POST", "/v1/withdrawals", body=doc)
            assert unknown.value.code == ErrorCode.UNKNOWN_CHAIN
        with pytest.raises(ApiRefused) as absent:
            exchange.withdrawal("wd_" + "0" * 32)
        assert absent.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(ApiRefused) as malformed:
            exchange.withdrawal("nope")
        assert malformed.value.status == 422


def test_health_readiness_metrics_and_the_checked_in_openapi(api: ServiceThread) -> None:
    assert httpx.get(f"{api.url}/v1/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{api.url}/v1/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert "tessera_api_requests" in httpx.get(f"{api.url}/v1/metrics").text
    served = httpx.get(f"{api.url}/openapi.json").json()
    assert served == json.loads(OPENAPI.read_text()), (
        "docs/openapi.json is stale: `.venv/bin/python -m coordinator.api.openapi` rewrites it"
    )


# --- property-based: the schema against the running service ---------------------------------


class _Signed(requests.auth.AuthBase):
    """Signs each request schemathesis makes, as the Python client would."""

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


def _each_id_once(case: schemathesis.Case) -> bool:
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("withdrawals"), list):
        return True
    ids = [w.get("client_request_id") for w in body["withdrawals"] if isinstance(w, dict)]
    return len(ids) == len(set(ids))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gets_a_5xx_and_every_answer_matches_the_schema(
    api: ServiceThread, keys: dict[str, Key], mode: GenerationMode
) -> None:
    """Requests generated from docs/openapi.json (valid ones, and mutated ones), signed with a
    key of every scope the routes ask for: no 5xx, and every answer (problems included) as
    documented.  A generated withdrawal names a wallet that does not exist, so nothing reaches
    the nodes."""
    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text()))
    session = requests.Session()
    session.auth = _Signed(keys["everything"])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:
        takes = [operation.path_parameters, operation.query, operation.headers, operation.body]
        if mode == GenerationMode.NEGATIVE and not any(len(part) for part in takes):
            continue  # nothing to mutate (healthz, metrics…)

        strategy = operation.as_strategy(generation_mode=mode)
        if mode == GenerationMode.POSITIVE:
            # the one rule across fields the schema cannot state: a batch names each
            # client_request_id once (else 422, docs/api.md "Batches")
            strategy = strategy.filter(_each_id_once)

        @given(case=strategy)
        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=api.url, session=session)

        check()


# --- webhooks and crashes, with real service processes ------------------------------------------


def test_a_webhook_receiver_gets_every_event_of_a_withdrawal_in_sequence(
    world: World, keys: dict[str, Key]
) -> None:
    receiver: Receiver | None = None
    with serving(world) as probe:
        assert probe.service is not None
        public = public_key_text(probe.service.webhooks.signing_key)
    receiver = Receiver(public)
    try:
        with serving(world, webhook_urls=[receiver.url]) as running:
            with client(running, keys["exchange"]) as exchange:
                done = exchange.wait(exchange.create_withdrawal(body("ETH", "0.002")).id)
            assert done.status == Status.COMPLETED
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                mine = [d for d in receiver.received if d["data"]["id"] == done.id]
                if mine and mine[-1]["data"]["status"] == "COMPLETED":
                    break
                time.sleep(0.1)
            assert running.service is not None
            for endpoint in running.service.webhooks.endpoints():
                running.service.webhooks.disable_endpoint(endpoint.endpoint_id)
        sequences = [d["sequence"] for d in receiver.received]
        assert sequences == list(range(1, len(sequences) + 1))  # no gap, no repeat
        mine = [d for d in receiver.received if d["data"]["id"] == done.id]
        assert [d["data"]["status"] for d in mine] == [
            "SUBMITTED",
            "SCREENING",
            "QUEUED",
            "SIGNING",
            "BROADCASTING",
            "CONFIRMING",
            "COMPLETED",
        ]
        assert mine[-1]["type"] == "withdrawal.completed" and mine[-1]["data"]["tx_hash"]
    finally:
        receiver.close()


def serve_process(
    world: World, port: int, registry: Path, failpoint: str | None, *extra: str
) -> subprocess.Popen[str]:
    args = [
        sys.executable, "-m", "coordinator", "serve", "--dir", str(world.cluster.root),
        "--registry", str(registry), "--port", str(port), "--pool-depth", "0", "--json", *extra,
    ]  # fmt: skip
    env = {**os.environ}
    env.pop("TESSERA_FAILPOINTS", None)
    if failpoint is not None:
        env["TESSERA_FAILPOINTS"] = failpoint
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # {"serving": …} once it listens
    assert "serving" in line, f"tessera serve did not start: {line!r}"
    return process


@pytest.mark.parametrize(
    "failpoint",
    ["withdrawal.SIGNING", "withdrawal.BROADCASTING", "payout.after_send", "webhook.after_post"],
)
def test_kill_9_of_the_service_at_each_step_ends_in_one_transaction_and_no_lost_webhook(
    world: World, keys: dict[str, Key], tmp_path: Path, failpoint: str
) -> None:
    """`tessera serve` is SIGKILLed right after a step was stored (a failpoint); a new process
    on the same database finishes the withdrawal with exactly one transaction, and a webhook
    whose delivery was not recorded is sent again."""
    registry = registry_file(world, tmp_path / "chains.toml")
    local = world.chains.local[CHAIN_A]
    start, before = local.nonce(world.sender), local.balance(SECOND)
    receiver = Receiver(public_key_text(load_or_create_signing_key(
        world.cluster.root / WEBHOOK_KEY_FILE
    )))  # fmt: skip
    port = free_port()
    hooks = ("--webhook", receiver.url) if failpoint.startswith("webhook") else ()
    first = serve_process(world, port, registry, failpoint, *hooks)
    request = body("ETH", "0.004", SECOND)
    try:
        exchange = TesseraClient(f"http://127.0.0.1:{port}", **vars_of(keys["exchange"]))
        try:
            accepted = exchange.create_withdrawal(request)
        except httpx.TransportError:
            # Killed before its 202 went out: the answer waits for the disk barrier while the
            # worker already moves the withdrawal on.  The client's recovery is the same
            # request again, once the service is back (below).
            accepted = None
        assert first.wait(60) == -signal.SIGKILL
        exchange.close()
        second = serve_process(world, port, registry, None)
        try:
            exchange = TesseraClient(f"http://127.0.0.1:{port}", **vars_of(keys["exchange"]))
            if accepted is None:
                accepted = exchange.create_withdrawal(request)  # the one stored: no second
            done = exchange.wait(accepted.id, timeout=90)
            exchange.close()
            if hooks:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not any(
                    d["data"]["status"] == "COMPLETED" for d in receiver.received
                ):
                    time.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
        receiver.close()
    assert done.status == Status.COMPLETED, done
    assert local.nonce(world.sender) == start + 1  # one transaction at one nonce
    assert local.balance(SECOND) - before == 4 * 10**15  # paid once
    if hooks:
        events = [d["event_id"] for d in receiver.received]
        # the first delivery was posted before the kill and again after: at least once
        assert events[0] == events[1]
        assert set(events) >= {e.event_id for e in events_of(world, accepted.id)}
        statuses_seen = [d["data"]["status"] for d in receiver.received]
        assert statuses_seen[-1] == "COMPLETED"
        store = CoordinatorStore(world.cluster.root / "coordinator.db")
        try:
            dispatcher = WebhookDispatcher(store, load_or_create_signing_key(
                world.cluster.root / WEBHOOK_KEY_FILE
            ))  # fmt: skip
            for endpoint in dispatcher.endpoints():
                dispatcher.disable_endpoint(endpoint.endpoint_id)
        finally:
            store.close()


def events_of(world: World, withdrawal_id: str) -> list[WithdrawalEventRow]:
    store = CoordinatorStore(world.cluster.root / "coordinator.db")
    try:
        with store.session() as session:
            return list(
                session.exec(
                    select(WithdrawalEventRow).where(
                        WithdrawalEventRow.withdrawal_id == withdrawal_id
                    )
                )
            )
    finally:
        store.close()


def vars_of(key: Key) -> dict[str, object]:
    return {"key_id": key.key_id, "private_key": key.private_key}


def test_the_listener_serves_tls_with_a_configured_certificate(
    world: World, keys: dict[str, Key], tmp_path: Path
) -> None:
    """`--tls-cert/--tls-key`: the service answers over HTTPS only, with that certificate."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert = tmp_path / "cert.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private = tmp_path / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with serving(world, certfile=cert, keyfile=private) as running:
        url = f"https://127.0.0.1:{running.options.port}"
        assert httpx.get(f"{url}/v1/healthz", verify=str(cert)).json() == {"status": "ok"}
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{running.options.port}/v1/healthz")
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it
            httpx.get(f"{url}/v1/healthz")
        signed = TesseraClient(url, **vars_of(keys["reader"]), verify=str(cert))
        try:
            assert signed.withdrawals().items == []
        finally:
            signed.close()


def test_officers_approve_with_the_cli_against_the_server(
    world: World, api: ServiceThread, keys: dict[str, Key], tmp_path: Path
) -> None:
    """`tessera officer approve WITHDRAWAL_ID --server URL`, run as each officer would: the
    withdrawal waits for two, each CLI run signs under the officer's own policy store and key
    file, and the withdrawal completes."""
    from cryptography.hazmat.primitives import serialization
    from policy_world import officers_store
    from typer.testing import CliRunner

    from coordinator.console import app
    from policies.keys import write_key_file

    store = officers_store(tmp_path / "officers.db", world.officers, world.policy)
    store.close()
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("officer-passphrase-7731")
    desk = tmp_path / "desk.pem"
    desk.write_bytes(
        keys["officers"].private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with client(api, keys["exchange"]) as exchange:
        accepted = exchange.create_withdrawal(body("USDT", "1200", SECOND))
        exchange.wait(accepted.id, until={Status.PENDING_APPROVAL})
        runner = CliRunner()
        for name in ("alice", "bob"):
            key_file = tmp_path / f"{name}.key"
            write_key_file(key_file, world.officers[name], passphrase.read_bytes())
            result = runner.invoke(
                app,
                [
                    "officer", "approve", accepted.id, "--server", api.url,
                    "--api-key-id", keys["officers"].key_id, "--api-key", str(desk),
                    "--key", str(key_file), "--passphrase-file", str(passphrase),
                    "--store", str(tmp_path / "officers.db"), "--json",
                ],
            )  # fmt: skip
            assert result.exit_code == 0, result.stdout[-2000:]
            doc = json.loads(result.stdout)
            assert doc["officer"] == name and name in doc["approvals"]
        done = exchange.wait(accepted.id)
    assert done.status == Status.COMPLETED, done
    assert done.approvals == ["alice", "bob"]
    refused = CliRunner().invoke(
        app,
        [
            "officer", "approve", "wd_" + "0" * 32, "--server", api.url,
            "--api-key-id", keys["officers"].key_id, "--api-key", str(desk),
            "--key", str(tmp_path / "alice.key"), "--passphrase-file", str(passphrase),
            "--store", str(tmp_path / "officers.db"), "--json",
        ],
    )  # fmt: skip
    assert refused.exit_code == 1 and "NOT_FOUND" in refused.stdout


def test_every_route_answers_bad_input_with_a_problem_never_a_500(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    """Oversized, non-JSON, NaN and wrong-typed bodies, and unsigned calls, on every route
    that takes input: a 4xx problem+json that does not echo the input."""
    wid = "wd_" + "0" * 32
    routes = [
        ("POST", "/v1/withdrawals"),
        ("POST", f"/v1/withdrawals/{wid}/cancel"),
        ("POST", f"/v1/withdrawals/{wid}/approvals"),
        ("GET", f"/v1/withdrawals/{wid}"),
        ("GET", f"/v1/withdrawals/{wid}/events"),
        ("GET", f"/v1/withdrawals/{wid}/intent"),
        ("GET", "/v1/withdrawals"),
        ("GET", "/v1/approvals"),
    ]
    bad_query = {"/v1/withdrawals": "limit=NaN&created_after=nan", "/v1/approvals": "status=all"}
    marker = "ECHO-" + "z" * 40
    bodies = [
        b"x" * (65 * 1024),  # over the 64 KiB limit
        b"{not json " + marker.encode(),
        b'{"amount": NaN, "wallet": "' + marker.encode() + b'"}',
        b'{"chain_id": [1], "amount": {"a": 1}, "note": "' + marker.encode() + b'"}',
        b"[]",
    ]
    signer = keys["everything"]
    for method, path in routes:
        unsigned = httpx.request(method, f"{api.url}{path}", content=b"{}")
        assert unsigned.status_code == 401, (method, path)
        assert unsigned.headers["content-type"].startswith("application/problem+json")
        for content in bodies if method == "POST" else [b""]:
            query = bad_query.get(path, "")
            headers = sign_request(signer.private_key, signer.key_id, method, path, query, content)
            headers["Content-Type"] = "application/json"
            target = f"{api.url}{path}" + (f"?{query}" if query else "")
            answer = httpx.request(method, target, content=content, headers=headers)
            assert 400 <= answer.status_code < 500, (method, path, answer.status_code)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert marker not in answer.text and len(answer.text) < 2000


def test_the_signature_covers_the_path_as_sent_percent_escapes_kept(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    """A path with an escaped character authenticates when signed as sent (the client does
    so), and reaches validation; one signed over its decoded form does not verify."""
    with client(api, keys["exchange"]) as exchange:
        with pytest.raises(ApiRefused) as invalid:
            exchange.request("GET", "/v1/withdrawals/wd_é")
        assert invalid.value.problem.status == 422  # authenticated; the id is not one
        key = keys["exchange"]
        decoded = sign_request(key.private_key, key.key_id, "GET", "/v1/withdrawals/wd_é", "", b"")
        answer = httpx.get(f"{api.url}/v1/withdrawals/wd_%C3%A9", headers=decoded)
        assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"
