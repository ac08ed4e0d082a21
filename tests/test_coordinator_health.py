"""The coordinator spends presignatures only on requests that can succeed (issue 9, item 3):

- a request the nodes would refuse is refused before a presignature is taken;
- a presignature every signer refused before consuming goes back to the pool, and one that any
  signer answered (or did not answer) stays spent;
- a node that failed operationally is not chosen again until a health check with back-off sees
  it back (`coordinator/health.py`), so a dead node does not burn a presignature on its live
  co-signer at every request — in process (node_local.py) and with real node processes.

Clocks are injected: a test moves the health tracker's clock instead of sleeping."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from node_cluster import make_cluster, run
from node_local import LocalClient, ScriptedNode, make_nodes

from coordinator.client import NodeRefused, NodeUnavailable
from coordinator.cluster import LocalCluster
from coordinator.engine import Coordinator, PoolTarget, SigningFailed, SignRequestInvalid
from coordinator.health import NodeHealth
from coordinator.store import CoordinatorStore, WalletRow
from signer.node.api import MAX_SIGN_MESSAGE_BYTES, Health, SignReply
from signer.node.store import QuarantineRow
from signer.problems import ErrorCode, Problem
from signer.protocol.sign import HashScheme


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probe:
    """A node's health endpoint that is up or down as the test says; counts its checks."""

    def __init__(self) -> None:
        self.up = False
        self.checks = 0

    async def health(self) -> Health:
        self.checks += 1
        if not self.up:
            raise NodeUnavailable(3, "ConnectError")
        return Health(node_id="node-3", index=3, pinned=True, sessions=0, quarantined=0)


# --- the tracker on its own -----------------------------------------------------------------------


def test_a_down_node_is_checked_with_exponential_back_off_until_it_answers() -> None:
    clock, probe = Clock(), Probe()
    health = NodeHealth({3: probe}, clock=clock, base=1.0, cap=4.0)
    health.mark_down(3, "refused connection")
    assert run(health.refresh()) == {3} and probe.checks == 0  # not due yet
    waits = []
    for _ in range(4):
        clock.now += 100  # far past any back-off: each refresh checks once
        run(health.refresh())
        waits.append(health._down[3].next_check - clock.now)
    assert waits == [2.0, 4.0, 4.0, 4.0] and probe.checks == 4  # doubled, capped
    health.mark_down(3, "again")  # a node already down keeps its back-off
    assert health._down[3].delay == 4.0
    probe.up = True
    clock.now += 4
    assert run(health.refresh()) == frozenset() and probe.checks == 5
    assert health.reason(3) is None


# --- in process: the real node logic behind LocalClient -----------------------------------------


class Switchable(LocalClient):
    """A node that can be "stopped": then every call fails as an unreachable node's would."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise NodeUnavailable(self.index, "ConnectError: stopped by the test")

    async def health(self) -> Health:
        self._check()
        return await super().health()

    async def start(self, spec: dict[str, Any]) -> Any:
        self._check()
        return await super().start(spec)

    async def deliver(self, session: str, envelopes: list[dict[str, Any]]) -> Any:
        self._check()
        return await super().deliver(session, envelopes)

    async def sign(self, *args: Any) -> SignReply:
        self._check()
        return await super().sign(*args)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ScriptedNode]:
    return make_nodes(tmp_path_factory.mktemp("health-nodes"), 3)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("health-coordinator") / "coordinator.db"


def engine(
    nodes: dict[int, ScriptedNode], store_path: Path, clock: Clock | None = None
) -> Coordinator:
    clients: Any = {i: Switchable(i, node) for i, node in nodes.items()}
    health = NodeHealth(clients, clock=clock or Clock())
    return Coordinator(clients, 2, CoordinatorStore(store_path), health=health)


@pytest.fixture(scope="module")
def wallet(nodes: dict[int, ScriptedNode], store_path: Path) -> WalletRow:
    return run(engine(nodes, store_path).create_wallet("w"))


@pytest.fixture(autouse=True)
def clean(nodes: dict[int, ScriptedNode], store_path: Path) -> Iterator[None]:
    yield
    for node in nodes.values():
        for row in node.store.quarantines():
            node.store.clear_quarantine(row.id or 0, "test teardown")
    store = CoordinatorStore(store_path)
    for entry in store.quarantine_mirror():
        store.clear_quarantine(entry.id or 0, "test teardown")


def consumed(node: ScriptedNode, wallet: WalletRow) -> int:
    return node.store.presignature_counts(wallet.key_id).get("consumed", 0)


def test_a_request_the_nodes_would_refuse_spends_no_presignature(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    coordinator = engine(nodes, store_path)
    run(coordinator.fill_pool(wallet, (1, 2), (), 1))
    before = [consumed(nodes[i], wallet) for i in (1, 2)]
    for message, scheme in (
        (b"", HashScheme.KECCAK256),  # as in the report: an empty message spent two
        (b"x" * (MAX_SIGN_MESSAGE_BYTES + 1), HashScheme.KECCAK256),
        (b"ok", "md5"),
    ):
        with pytest.raises(SignRequestInvalid):
            run(coordinator.sign("w", message, scheme, preferred=(1, 2)))  # type: ignore[arg-type]
    assert coordinator.store.pool_depth(wallet.key_id, wallet.epoch, "1,2", "") == 1
    assert [consumed(nodes[i], wallet) for i in (1, 2)] == before


def test_a_presignature_every_signer_refused_unconsumed_goes_back_to_the_pool(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    coordinator = engine(nodes, store_path)
    run(coordinator.fill_pool(wallet, (1, 2), (), 1))
    (pid,) = nodes[1].store.available_presignatures(wallet.key_id, (1, 2), ())
    for index in (1, 2):  # both signers quarantine the set: both refuse before consuming
        nodes[index].store.quarantine(
            QuarantineRow(
                kind="signer_set",
                parties="1,2",
                key_id=wallet.key_id,
                protocol="presign/v1",
                session="00",
                code="EQUATION",
                detail="set up by the test",
                created_at=0.0,
            )
        )
    outcome = run(coordinator.sign("w", b"around the set", HashScheme.KECCAK256, preferred=(1, 2)))
    assert outcome.signers != (1, 2) and any("QUARANTINED" in a for a in outcome.attempts)
    with sqlite3.connect(store_path) as connection:
        (state,) = connection.execute(
            "SELECT state FROM presignatures WHERE presignature_id = ?", (pid,)
        ).fetchone()
    assert state == "available"  # returned, not burnt (the set is in the mirror meanwhile)
    for index in (1, 2):
        row = nodes[index].store.presignature(pid)
        assert row is not None and row.state == "available"


def test_an_unreadable_pooled_presignature_is_skipped_without_asking_a_node(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    """A pool row the coordinator cannot decode (made before a format change, or damaged) is
    left taken and the request goes on with a fresh presignature; no node sees a request."""
    coordinator = engine(nodes, store_path)
    run(coordinator.fill_pool(wallet, (1, 2), (), 1))
    (pid,) = nodes[1].store.available_presignatures(wallet.key_id, (1, 2), ())
    with sqlite3.connect(store_path) as connection:
        connection.execute(
            "UPDATE presignatures SET public = ? WHERE presignature_id = ?", (b"\x05old", pid)
        )
    message = b"after an upgrade"
    outcome = run(coordinator.sign("w", message, HashScheme.KECCAK256, preferred=(1, 2)))
    assert outcome.presignature_id != pid
    assert any("unreadable" in a for a in outcome.attempts)
    for index in (1, 2):  # never asked: the nodes' copies are untouched
        row = nodes[index].store.presignature(pid)
        assert row is not None and row.state == "available"
        nodes[index].store.consume_presignature(pid)  # the next tests count a clean pool


class RefusesOnce(Switchable):
    """Node 1 refuses the next signature with `code` (as if the request broke its limits)."""

    code = ErrorCode.VALIDATION

    async def sign(self, *args: Any) -> SignReply:
        raise NodeRefused(self.index, Problem.of(self.code, "refused by the test", node=1))


def test_a_presignature_is_spent_if_any_signer_answered(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    coordinator = engine(nodes, store_path)
    run(coordinator.fill_pool(wallet, (1, 2), (), 1))
    (pid,) = nodes[2].store.available_presignatures(wallet.key_id, (1, 2), ())
    coordinator.clients = {**coordinator.clients, 1: RefusesOnce(1, nodes[1])}
    with pytest.raises(SigningFailed):  # VALIDATION: no other set would take the request
        run(coordinator.sign("w", b"half", HashScheme.KECCAK256, preferred=(1, 2)))
    row = nodes[2].store.presignature(pid)
    assert row is not None and row.state == "consumed"  # node 2 issued its partial
    with sqlite3.connect(store_path) as connection:
        (state,) = connection.execute(
            "SELECT state FROM presignatures WHERE presignature_id = ?", (pid,)
        ).fetchone()
    assert state == "used"


def test_a_down_node_is_not_chosen_until_a_health_check_sees_it_back_in_process(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    clock = Clock()
    coordinator = engine(nodes, store_path, clock)
    run(coordinator.fill_pool(wallet, (1, 3), (), 3))
    third: Any = coordinator.clients[3]
    third.down = True
    before = consumed(nodes[1], wallet)
    outcomes = [
        run(coordinator.sign("w", b"m%d" % k, HashScheme.KECCAK256, preferred=(1, 3)))
        for k in range(4)
    ]
    assert all(o.signers == (1, 2) for o in outcomes)
    # only the first request found node 3 down, and spent one (1, 3) presignature doing so
    assert consumed(nodes[1], wallet) - before == len(outcomes) + 1
    assert coordinator.store.pool_depth(wallet.key_id, wallet.epoch, "1,3", "") == 2
    assert coordinator.health.down() == {3}
    third.down = False
    clock.now += 1.0  # the first check is due
    back = run(coordinator.sign("w", b"back", HashScheme.KECCAK256, preferred=(1, 3)))
    assert back.signers == (1, 3) and coordinator.health.down() == frozenset()


def test_a_request_with_no_set_left_checks_the_down_nodes_at_once(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    """Nodes 2 and 3 are back but still in their back-off: the request checks them now
    instead of failing (the clock does not move)."""
    coordinator = engine(nodes, store_path)
    coordinator.health.mark_down(2, "was down")
    coordinator.health.mark_down(3, "was down")
    outcome = run(coordinator.sign("w", b"both back", HashScheme.KECCAK256))
    assert len(outcome.signers) == 2 and coordinator.health.down() == frozenset()


def test_the_pool_keeper_leaves_a_down_node_alone_until_it_is_back(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    clock = Clock()
    coordinator = engine(nodes, store_path, clock)
    coordinator.health.mark_down(3, "stopped")
    starts = nodes[1].starts.get("presign/v1", 0)

    async def keep() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            coordinator.keep_pools([PoolTarget("w", (1, 3), (), 5)], stop, interval=0.01)
        )
        for _ in range(5):
            await asyncio.sleep(0.02)  # passes of the keeper, not a timing assertion
        stop.set()
        await task

    run(keep())
    assert nodes[1].starts.get("presign/v1", 0) == starts  # no presign with the down node


# --- real node processes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = make_cluster(tmp_path_factory.mktemp("health-cluster"))
    run(cluster.up())
    try:
        yield cluster
    finally:
        cluster.down()


def node_consumed(cluster: LocalCluster, index: int, key_id: str) -> int:
    with sqlite3.connect(cluster.nodes[index - 1].directory / "node.db") as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM presignatures WHERE key_id = ? AND state = 'consumed'",
            (key_id,),
        ).fetchone()
    return int(count)


def test_a_stopped_node_burns_no_presignatures_on_its_live_co_signers(
    cluster: LocalCluster,
) -> None:
    """As in the report (10 requests burned 7): node 3 stops, 10 requests prefer (1, 3)."""
    clock = Clock()

    async def body() -> None:
        coordinator = cluster.coordinator(health=lambda c: NodeHealth(c, clock=clock))
        try:
            wallet = await coordinator.create_wallet("live")
            await coordinator.fill_pool(wallet, (1, 3), (), 3)
            third = cluster.nodes[2]
            cluster.stop(third)
            signed = []
            for k in range(10):
                outcome = await coordinator.sign(
                    "live", b"while 3 is down %d" % k, HashScheme.KECCAK256, preferred=(1, 3)
                )
                assert outcome.signers == (1, 2)
                signed.append(outcome.presignature_id)
            # what the signatures used, plus the one (1, 3) presignature of the request that
            # found node 3 down (node 1 issued its partial before node 3's failure was known)
            assert node_consumed(cluster, 1, wallet.key_id) == len(signed) + 1
            assert node_consumed(cluster, 2, wallet.key_id) == len(signed)
            assert coordinator.store.pool_depth(wallet.key_id, wallet.epoch, "1,3", "") == 2
            cluster.start(third)
            await cluster.wait_healthy(third)
            assert coordinator.health.down() == {3}  # not chosen before its check is due
            clock.now += 1.0
            back = await coordinator.sign("live", b"3 is back", HashScheme.KECCAK256, (), (1, 3))
            assert back.signers == (1, 3) and coordinator.health.down() == frozenset()
        finally:
            await coordinator.aclose()

    run(body())
