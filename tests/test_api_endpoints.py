"""The signer API's batch submission, policy dry run, wallets, balances and deposit addresses
(docs/api.md), end to end: `tessera serve`'s service over real node processes and Hardhat,
driven over HTTP by the Python client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from api_world import (
    Key,
    ServiceThread,
    api_world,
    async_client,
    client,
    exchange_key,
    issue_key,
    serving,
)
from chain_world import (
    BLOCKED,
    CHAIN_A,
    CHAIN_B,
    RECIPIENT,
    SECOND,
    STRANGER,
    TOKENS,
    World,
)

from coordinator.api.auth import Scope, sign_request
from coordinator.api.client import ApiRefused, TesseraClient
from coordinator.api.lifecycle import Status
from coordinator.api.models import WithdrawalCreate
from coordinator.deposits import DEPOSIT_BRANCH
from coordinator.fees import FeeLevel
from signer.chains.evm import address_of
from signer.node import codec
from signer.problems import ErrorCode
from signer.protocol.hd import derive

#: presignatures: one per withdrawal that reaches the nodes' signature in this module
PRESIGNATURES = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("api-endpoints"), PRESIGNATURES) as w:
        yield w


@pytest.fixture(scope="module")
def keys(world: World) -> dict[str, Key]:
    return {
        "exchange": exchange_key(world),
        "reader": issue_key(world, "reader", [Scope.WITHDRAWALS_READ]),
        "approver": issue_key(world, "approver", [Scope.APPROVALS_WRITE]),
    }


@pytest.fixture(scope="module")
def api(world: World) -> Iterator[ServiceThread]:
    with serving(world) as running:
        yield running


_counter = iter(range(10**6))


def body(
    asset: str = "ETH", amount: str = "0.1", to: str = RECIPIENT, **kw: object
) -> WithdrawalCreate:
    fields: dict[str, object] = {
        "client_request_id": f"ep-{next(_counter)}-{asset}",
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


def waiting(amount: str = "5000") -> WithdrawalCreate:
    """A withdrawal that waits for officers (no presignature, no nonce), to be cancelled."""
    return body("DAI", amount, SECOND)


def stored_ids(api: ServiceThread) -> set[str]:
    assert api.service is not None
    rows, _ = api.service.withdrawals.page(None, limit=200)
    return {r.withdrawal_id for r in rows}


def test_a_batch_of_eth_and_usdt_withdrawals_completes_with_exact_balances(
    world: World, api: ServiceThread, keys: dict[str, Key]
) -> None:
    local = world.chains.local[CHAIN_A]
    token = world.chains.token(CHAIN_A, "USDT")
    nonce = local.nonce(world.sender)
    eth_before, usdt_before = local.balance(RECIPIENT), local.token_balance(token, RECIPIENT)
    second_before = local.balance(SECOND)
    batch = [body("ETH", "0.125"), body("USDT", "7.5"), body("ETH", "0.05", SECOND)]
    with client(api, keys["exchange"]) as exchange:
        accepted = exchange.submit_batch(batch)
        assert [a.client_request_id for a in accepted.items] == [b.client_request_id for b in batch]
        assert all(a.status == Status.SUBMITTED and not a.replayed for a in accepted.items)
        assert len({a.id for a in accepted.items}) == 3
        done = [exchange.wait(a.id) for a in accepted.items]
        # the same batch again: the same withdrawals, nothing new
        again = exchange.submit_batch(batch)
        assert [a.id for a in again.items] == [a.id for a in accepted.items]
        assert all(a.replayed for a in again.items)
    for withdrawal in done:
        assert withdrawal.status == Status.COMPLETED, withdrawal
        assert withdrawal.rule_id == "payouts"
        assert api.service is not None
        seen = [Status(e.status) for e in api.service.withdrawals.events(withdrawal.id)]
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
    assert local.balance(SECOND) - second_before == 5 * 10**16
    assert local.nonce(world.sender) == nonce + 3  # one transaction each, no gap


def test_a_batch_with_one_wrong_withdrawal_stores_nothing_and_burns_no_id(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    before = stored_ids(api)
    good, other = waiting(), waiting("6000")
    wrong_case = "0x" + SECOND[2:].swapcase()
    bad = waiting().model_copy(update={"destination": wrong_case})
    with client(api, keys["exchange"]) as exchange:
        with pytest.raises(ApiRefused) as refused:
            exchange.submit_batch([good, bad, other])
        assert refused.value.status == 422
        assert refused.value.code == ErrorCode.ADDRESS_REFUSED
        assert refused.value.problem.check == "checksum"
        detail = refused.value.problem.detail
        assert "items[1]" in detail and "items[0]" not in detail and "items[2]" not in detail
        assert "nothing stored" in detail and wrong_case not in detail
        # an unknown chain: the code a single submission gets, naming the index
        elsewhere = waiting().model_copy(update={"chain_id": 999_999})
        with pytest.raises(ApiRefused) as unknown:
            exchange.submit_batch([good, elsewhere])
        assert unknown.value.code == ErrorCode.UNKNOWN_CHAIN
        assert "items[1]" in unknown.value.problem.detail
        # the same id twice in one batch
        with pytest.raises(ApiRefused) as twice:
            exchange.submit_batch([good, good])
        assert twice.value.status == 422 and "items[1]" in twice.value.problem.detail
        # the batch is a model: too many, or none, refused at the door
        for items in ([], [waiting() for _ in range(101)]):
            with pytest.raises(ApiRefused) as shape:
                exchange.submit_batch(items)
            assert shape.value.status == 422
        assert stored_ids(api) == before
        for withdrawal in (good, bad, other):
            assert exchange.by_client_request_id(withdrawal.client_request_id) is None
        # fixed, the same ids go through
        fixed = bad.model_copy(update={"destination": SECOND})
        accepted = exchange.submit_batch([good, fixed, other])
        assert [a.client_request_id for a in accepted.items] == [
            good.client_request_id,
            bad.client_request_id,
            other.client_request_id,
        ]
        for item in accepted.items:
            assert exchange.wait(item.id, until={Status.PENDING_APPROVAL}).status == (
                Status.PENDING_APPROVAL
            )
            exchange.cancel(item.id)


def test_a_batch_replays_per_withdrawal_and_a_changed_one_refuses_it_whole(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    first, second = waiting(), waiting("7000")
    with client(api, keys["exchange"]) as exchange:
        made = exchange.submit_batch([first, second], idempotency_key="batch-key-1")
        # the same Idempotency-Key and body: the same answer
        assert exchange.submit_batch([first, second], idempotency_key="batch-key-1") == made
        with pytest.raises(ApiRefused) as key_reused:
            exchange.submit_batch([second, first], idempotency_key="batch-key-1")
        assert key_reused.value.code == ErrorCode.IDEMPOTENCY_CONFLICT
        # one made before and one new: the first given back, the second made
        third = waiting("8000")
        mixed = exchange.submit_batch([first, third])
        assert mixed.items[0].id == made.items[0].id and mixed.items[0].replayed
        assert not mixed.items[1].replayed
        # a withdrawal made before, with another body: 409 naming it, nothing stored
        before = stored_ids(api)
        changed = first.model_copy(update={"amount": "5001"})
        fourth = waiting("9000")
        with pytest.raises(ApiRefused) as conflict:
            exchange.submit_batch([fourth, changed])
        assert conflict.value.status == 409
        assert conflict.value.code == ErrorCode.REQUEST_REUSED
        detail = conflict.value.problem.detail
        assert first.client_request_id in detail and made.items[0].id in detail
        assert "items[1]" in detail
        assert exchange.by_client_request_id(fourth.client_request_id) is None
        assert stored_ids(api) == before
        for withdrawal_id in {made.items[0].id, made.items[1].id, mixed.items[1].id}:
            exchange.wait(withdrawal_id, until={Status.PENDING_APPROVAL})
            assert exchange.cancel(withdrawal_id).status == Status.CANCELLED


def test_concurrent_submissions_of_one_batch_make_its_withdrawals_once(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    """20 clients' copies of one batch at once (the async client): one set of withdrawals."""
    batch = [waiting(), waiting("5500"), waiting("6500")]
    before = stored_ids(api)

    async def storm() -> list[list[str]]:
        exchange = async_client(api, keys["exchange"])
        try:
            answers = await asyncio.gather(*(exchange.submit_batch(batch) for _ in range(20)))
            # the async client's other calls, on the way
            assert (await exchange.evaluate(batch[0])).replay_of == answers[0].items[0].id
            assert [w.name for w in await exchange.wallets()] == ["hot"]
            assert (await exchange.wallet("hot")).name == "hot"
            assert (await exchange.balances("hot")).balances
            made = await exchange.deposit_addresses("hot", CHAIN_A, labels=["async-1"])
            assert made.items[0].label == "async-1"
            return [[item.id for item in answer.items] for answer in answers]
        finally:
            await exchange.aclose()

    answers = asyncio.run(storm())
    assert all(ids == answers[0] for ids in answers) and len(set(answers[0])) == 3
    assert stored_ids(api) - before == set(answers[0])
    with client(api, keys["exchange"]) as exchange:
        for withdrawal_id in answers[0]:
            exchange.wait(withdrawal_id, until={Status.PENDING_APPROVAL})
            assert exchange.cancel(withdrawal_id).status == Status.CANCELLED


def test_the_dry_run_decides_as_the_screen_and_leaves_no_trace(
    world: World, api: ServiceThread, keys: dict[str, Key]
) -> None:
    assert api.service is not None
    store = api.service.coordinator.store
    wallet = store.wallet("hot")
    local = world.chains.local[CHAIN_A]
    nonce = local.nonce(world.sender)
    depth = store.pool_depth(wallet.key_id, wallet.epoch, "1,2", "")
    payouts = len(api.service.engine.payouts())
    before = stored_ids(api)
    allowed, large = body("ETH", "0.01"), body("USDT", "1500", SECOND)
    stranger, sanctioned = body("ETH", "0.1", STRANGER), body("ETH", "0.1", BLOCKED)
    with client(api, keys["exchange"]) as exchange:
        allow = exchange.evaluate(allowed)
        assert allow.outcome == "ALLOW" and allow.rule_id == "payouts"
        assert allow.reason == "rule_allow" and allow.screening_status == Status.QUEUED
        assert allow.policy_hash == world.policy.policy_hash()
        assert allow.policy_version == world.policy.version
        assert allow.approvals_required is None and not allow.blacklisted
        assert allow.replay_of is None and allow.reasons

        approval = exchange.evaluate(large)
        assert approval.outcome == "REQUIRE_APPROVAL" and approval.rule_id == "large"
        assert approval.screening_status == Status.PENDING_APPROVAL
        required = approval.approvals_required
        assert required is not None
        assert (required.group, required.k, required.missing) == ("treasury", 2, 2)

        deny = exchange.evaluate(stranger)
        assert deny.outcome == "DENY" and deny.reason == "no_rule" and deny.rule_id is None
        assert deny.screening_status == Status.QUEUED  # the nodes refuse it themselves
        assert any("payouts" in line for line in deny.reasons)

        block = exchange.evaluate(sanctioned)
        assert block.outcome == "BLOCK" and block.blacklisted
        assert block.screening_status == Status.REJECTED

        # refused as the submission would be
        wrong_case = allowed.model_copy(update={"destination": "0x" + RECIPIENT[2:].swapcase()})
        with pytest.raises(ApiRefused) as refused:
            exchange.evaluate(wrong_case)
        assert refused.value.code == ErrorCode.ADDRESS_REFUSED
        with pytest.raises(ApiRefused) as unknown:
            exchange.evaluate(allowed.model_copy(update={"chain_id": 999_999}))
        assert unknown.value.code == ErrorCode.UNKNOWN_CHAIN

        # no trace: no withdrawal, no payout, no nonce, no presignature, the ids still free
        assert stored_ids(api) == before
        assert len(api.service.engine.payouts()) == payouts
        assert local.nonce(world.sender) == nonce
        assert store.pool_depth(wallet.key_id, wallet.epoch, "1,2", "") == depth
        for evaluated in (allowed, large, stranger, sanctioned):
            assert exchange.by_client_request_id(evaluated.client_request_id) is None

        # the evaluated request, submitted for real under the same id
        accepted = exchange.create_withdrawal(allowed)
        assert exchange.evaluate(allowed).replay_of == accepted.id
        with pytest.raises(ApiRefused) as reused:
            exchange.evaluate(allowed.model_copy(update={"amount": "0.02"}))
        assert reused.value.code == ErrorCode.REQUEST_REUSED
        done = exchange.wait(accepted.id)
    assert done.status == Status.COMPLETED, done
    assert done.rule_id == allow.rule_id and done.policy_hash == allow.policy_hash


def test_wallets_and_their_balances_are_the_chain_s(
    world: World, api: ServiceThread, keys: dict[str, Key]
) -> None:
    with client(api, keys["reader"]) as reader:
        wallets = reader.wallets()
        assert [w.name for w in wallets] == ["hot"]
        hot = wallets[0]
        assert hot.address == world.sender and hot.tier == "hot"
        assert hot.chains == sorted([CHAIN_A, CHAIN_B])  # the service's registry: Hardhat
        assert {(a.chain_id, a.address) for a in hot.addresses} == {
            (CHAIN_A, world.sender),
            (CHAIN_B, world.sender),
        }
        assert reader.wallet("hot") == hot
        with pytest.raises(ApiRefused) as absent:
            reader.wallet("no-such-wallet")
        assert absent.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(ApiRefused) as absent_balances:
            reader.balances("no-such-wallet")
        assert absent_balances.value.code == ErrorCode.NOT_FOUND
        balances = reader.balances("hot")
    assert balances.wallet == "hot" and balances.address == world.sender
    got = {(b.chain_id, b.asset): b for b in balances.balances}
    assert set(got) == {(c, a) for c in (CHAIN_A, CHAIN_B) for a in ("ETH", *TOKENS)}
    for cid in (CHAIN_A, CHAIN_B):
        local = world.chains.local[cid]
        expected: dict[str, tuple[int, int, str | None]] = {
            "ETH": (local.balance(world.sender), 18, None)
        }
        for symbol, decimals in TOKENS.items():
            contract = world.chains.token(cid, symbol)
            expected[symbol] = (local.token_balance(contract, world.sender), decimals, contract)
        for asset, (units, places, held_at) in expected.items():
            answer = got[(cid, asset)]
            assert int(answer.units) == units > 0, (cid, asset)
            assert Decimal(answer.amount) == Decimal(units).scaleb(-places)
            assert "e" not in answer.amount.lower()
            assert answer.decimals == places and answer.contract == held_at


def test_deposit_addresses_are_derived_deterministically_and_are_distinct(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    assert api.service is not None
    key = codec.decode_key_public(api.service.coordinator.store.wallet("hot").key_public)

    def derived(index: int) -> str:
        return address_of(
            derive(key.public_key, key.chain_code, (DEPOSIT_BRANCH, index)).public_key
        )

    with client(api, keys["exchange"]) as exchange:
        start = exchange.wallet("hot").deposit_addresses
        labels = ["cust-1", "cust-2", "cust-3"]
        first = exchange.deposit_addresses("hot", CHAIN_A, labels=labels)
        assert first.wallet == "hot" and first.chain_id == CHAIN_A
        assert [a.label for a in first.items] == labels
        for item in first.items:
            assert item.address == derived(item.index)
            assert item.path == f"m/{DEPOSIT_BRANCH}/{item.index}"
        assert len({a.address for a in first.items}) == 3
        # the same labels again: the same addresses; a new label a new one
        assert exchange.deposit_addresses("hot", CHAIN_A, labels=labels) == first
        more = exchange.deposit_addresses("hot", CHAIN_B, labels=["cust-2", "cust-4"])
        assert more.items[0].address == first.items[1].address
        assert more.items[1].address not in {a.address for a in first.items}
        # unlabelled: fresh ones each time
        fresh = exchange.deposit_addresses("hot", CHAIN_A, 2)
        again = exchange.deposit_addresses("hot", CHAIN_A, 2)
        everything = [a.address for a in (*first.items, *more.items, *fresh.items, *again.items)]
        assert len(set(everything)) == 3 + 1 + 2 + 2
        for item in (*fresh.items, *again.items):
            assert item.address == derived(item.index)
        # an Idempotency-Key makes an unlabelled request safe to retry
        keyed = exchange.deposit_addresses("hot", CHAIN_A, 1, idempotency_key="dep-1")
        assert exchange.deposit_addresses("hot", CHAIN_A, 1, idempotency_key="dep-1") == keyed
        assert exchange.wallet("hot").deposit_addresses == start + len(set(everything)) + 1
        # refused: a count the labels do not match, a chain the wallet does not send on,
        # a label twice, a wallet that does not exist
        with pytest.raises(ApiRefused) as mismatch:
            exchange.deposit_addresses("hot", CHAIN_A, 3, labels=["a-1", "a-2"])
        assert mismatch.value.status == 422
        with pytest.raises(ApiRefused) as chain:
            exchange.deposit_addresses("hot", 999_999, labels=["a-1"])
        assert chain.value.code == ErrorCode.UNKNOWN_CHAIN
        with pytest.raises(ApiRefused) as twice:
            exchange.deposit_addresses("hot", CHAIN_A, labels=["a-1", "a-1"])
        assert twice.value.status == 422
        with pytest.raises(ApiRefused) as absent:
            exchange.deposit_addresses("nope", CHAIN_A, labels=["a-1"])
        assert absent.value.code == ErrorCode.NOT_FOUND
        # a deposit address is one of Tessera's own: never a withdrawal's destination
        with pytest.raises(ApiRefused) as own:
            exchange.evaluate(body("ETH", "0.1", first.items[0].address))
        assert own.value.code == ErrorCode.ADDRESS_REFUSED
        assert own.value.problem.check == "own_address"


def test_the_new_routes_refuse_a_key_without_their_scope(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    with client(api, keys["reader"]) as reader:
        reader.wallets()
        reader.balances("hot")
        for call in (
            lambda: reader.submit_batch([waiting()]),
            lambda: reader.evaluate(waiting()),
            lambda: reader.deposit_addresses("hot", CHAIN_A, labels=["r-1"]),
        ):
            with pytest.raises(ApiRefused) as refused:
                call()
            assert refused.value.status == 403 and refused.value.code == ErrorCode.FORBIDDEN
            assert "withdrawals:create" in refused.value.problem.detail
    with client(api, keys["approver"]) as approver:
        for read in (
            approver.wallets,
            lambda: approver.wallet("hot"),
            lambda: approver.balances("hot"),
        ):
            with pytest.raises(ApiRefused) as refused:
                read()
            assert refused.value.code == ErrorCode.FORBIDDEN
            assert "withdrawals:read" in refused.value.problem.detail
    for path in ("/v1/wallets", "/v1/wallets/hot", "/v1/wallets/hot/balances"):
        assert httpx.get(f"{api.url}{path}").status_code == 401


def test_the_new_routes_answer_bad_input_with_a_problem_never_a_500(
    api: ServiceThread, keys: dict[str, Key]
) -> None:
    marker = "ECHO-" + "z" * 40
    bodies = [
        b"x" * (65 * 1024),
        b"{not json " + marker.encode(),
        b'{"withdrawals": NaN, "count": NaN, "amount": NaN, "wallet": "' + marker.encode() + b'"}',
        b'{"withdrawals": [{"amount": 1.5, "note": "' + marker.encode() + b'"}]}',
        b'{"chain_id": "' + marker.encode() + b'", "count": 1, "labels": ["' + marker.encode()
        + b'", 3]}',
        b"[]",
    ]  # fmt: skip
    signer = keys["exchange"]
    for path in (
        "/v1/withdrawals/batch",
        "/v1/policy/evaluate",
        "/v1/wallets/hot/deposit-addresses",
    ):
        for content in bodies:
            headers = sign_request(signer.private_key, signer.key_id, "POST", path, "", content)
            headers["Content-Type"] = "application/json"
            answer = httpx.post(f"{api.url}{path}", content=content, headers=headers)
            assert 400 <= answer.status_code < 500, (path, answer.status_code)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert marker not in answer.text and len(answer.text) < 2000
    with TesseraClient(api.url, signer.key_id, signer.private_key) as exchange:
        with pytest.raises(ApiRefused) as bad_name:
            exchange.request("GET", "/v1/wallets/-bad name")
        assert bad_name.value.status == 422
