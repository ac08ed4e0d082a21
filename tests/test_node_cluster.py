"""Multi-process integration: three node processes on loopback, each with its own SoftHSM2
token and SQLite file, driven over HTTP by the coordinator.  DKG, aux-info, presignature pool,
25 verified signatures, a node down, a node returning bad partials, concurrency, crashes at
every step of signing (kill -9 through failpoints), refresh, and what the coordinator sees."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_keys import keys as eth_keys
from node_cluster import extra_pool, make_cluster, run
from sqlalchemy import text

from coordinator.client import NodeClient, NodeRefused
from coordinator.cluster import ClusterError, LocalCluster
from coordinator.driver import SessionFailed
from coordinator.engine import Coordinator, PoolTarget
from coordinator.store import WalletRow
from signer.encoding import decode
from signer.errors import EncodingError
from signer.node import codec
from signer.node.api import SignReply
from signer.node.envelope import Envelope
from signer.problems import ErrorCode
from signer.protocol.sign import HashScheme, Signature, message_digest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = make_cluster(tmp_path_factory.mktemp("cluster"))
    run(cluster.up())
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def wallet(cluster: LocalCluster) -> WalletRow:
    async def create() -> WalletRow:
        coordinator = cluster.coordinator()
        try:
            return await coordinator.create_wallet("hot")
        finally:
            await coordinator.aclose()

    return run(create())


def verify(signature: Signature, message: bytes, wallet: WalletRow) -> None:
    """libsecp256k1 (coincurve) and eth-keys recovery against the wallet's key."""
    key = codec.decode_key_public(wallet.key_public)
    digest = message_digest(message, HashScheme.KECCAK256)
    assert signature.public_key == key.public_key
    assert key.public_key.to_public_key().verify(signature.der(), digest, hasher=None)
    recovered = eth_keys.Signature(
        vrs=(signature.recovery_id, signature.r, signature.s)
    ).recover_public_key_from_msg_hash(digest)
    expected = key.public_key.to_public_key().format(compressed=False)[1:]
    assert recovered.to_bytes() == expected


async def _with(cluster: LocalCluster, body: Any, **kwargs: Any) -> Any:
    coordinator = cluster.coordinator(**kwargs)
    try:
        return await body(coordinator)
    finally:
        await coordinator.aclose()


def test_twenty_five_signatures_from_the_pool_all_verify(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    """Each from its own pooled presignature (50 a run are the benchmark's: bench-cluster)."""

    async def body(coordinator: Coordinator) -> None:
        made = await coordinator.fill_pool(wallet, (1, 2), (), 25)
        assert made == 25
        ids = set()
        for k in range(25):
            message = b"withdrawal %d " % k + secrets.token_bytes(8)
            outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256, preferred=(1, 2))
            assert outcome.signers == (1, 2) and not outcome.attempts
            verify(outcome.signature, message, wallet)
            ids.add(outcome.presignature_id)
        assert len(ids) == 25

    run(_with(cluster, body))


def test_two_of_three_still_sign_with_one_node_stopped(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    third = cluster.nodes[2]
    cluster.stop(third)
    try:

        async def body(coordinator: Coordinator) -> None:
            message = b"node 3 is down"
            outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256)
            assert 3 not in outcome.signers
            verify(outcome.signature, message, wallet)

        run(_with(cluster, body))
    finally:
        run(cluster.up())


def test_a_failed_session_is_cancelled_on_the_nodes_left_waiting(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    third = cluster.nodes[2]
    cluster.stop(third)
    try:

        async def body(coordinator: Coordinator) -> None:
            one = coordinator.clients[1]
            assert (await one.health()).sessions == 0
            with pytest.raises(SessionFailed) as failed:
                await coordinator.presign(wallet, (1, 3), ())
            assert 3 in failed.value.unavailable and failed.value.stalled == (1,)
            assert (await one.health()).sessions == 0  # cancelled, not left to expire
            spec = {
                "protocol": "presign/v1",
                "request": secrets.token_bytes(16).hex(),
                "parties": [1, 2],
                "threshold": 2,
                "key_id": wallet.key_id,
                "aux_id": wallet.aux_id,
                "path": [],
            }
            started = await one.start(spec)
            assert (await one.health()).sessions == 1
            assert await one.cancel(started.session) is True
            assert await one.cancel(started.session) is False
            with pytest.raises(NodeRefused) as refused:
                await one.deliver(started.session, [])
            assert refused.value.code is ErrorCode.UNKNOWN_SESSION

        run(_with(cluster, body))
    finally:
        run(cluster.up())


class LyingClient(NodeClient):
    """Node 2 as a compromised node: its partial signatures are off by one."""

    async def sign(self, *args: Any, **kwargs: Any) -> SignReply:
        reply = await super().sign(*args, **kwargs)
        return reply.model_copy(update={"partial": f"{(int(reply.partial, 16) + 1):064x}"})


def test_node_with_bad_partials_is_blamed_and_others_sign(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    liar = cluster.nodes[1]

    async def body(coordinator: Coordinator) -> None:
        coordinator.clients = {**coordinator.clients, 2: LyingClient(2, liar.url, liar.api_token)}
        message = b"who lies?"
        outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256, preferred=(1, 2))
        assert 2 not in outcome.signers
        assert any("bad partial from [2]" in a for a in outcome.attempts)
        verify(outcome.signature, message, wallet)
        blamed = [row for row in coordinator.store.blame() if row.operation == "sign"]
        assert blamed and all(row.culprit == 2 for row in blamed)
        # node 2 is in the quarantine mirror: no set with it is offered until an operator clears it
        (entry,) = coordinator.store.quarantine_mirror()
        assert entry.kind == "party" and entry.members == {2}
        assert coordinator.signer_sets(codec.decode_key_public(wallet.key_public), set()) == [
            (1, 3)
        ]
        coordinator.store.clear_quarantine(entry.id or 0, "the lie was the test's client")
        assert not coordinator.store.quarantine_mirror()

    run(_with(cluster, body))


def test_twenty_concurrent_requests_never_share_a_presignature(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    async def body(coordinator: Coordinator) -> None:
        await coordinator.fill_pool(wallet, (1, 3), (), 20)
        messages = [b"concurrent %d" % k for k in range(20)]
        outcomes = await asyncio.gather(
            *(coordinator.sign("hot", m, HashScheme.KECCAK256, preferred=(1, 3)) for m in messages)
        )
        used = [o.presignature_id for o in outcomes]
        assert len(set(used)) == 20
        for outcome, message in zip(outcomes, messages, strict=True):
            verify(outcome.signature, message, wallet)

    run(_with(cluster, body))


def test_pool_keeper_refills_in_the_background(cluster: LocalCluster, wallet: WalletRow) -> None:
    async def body(coordinator: Coordinator) -> None:
        target = PoolTarget("hot", (2, 3), (), depth=3)
        stop = asyncio.Event()
        keeper = asyncio.create_task(coordinator.keep_pools([target], stop, interval=0.1))
        try:
            for _ in range(3):
                while coordinator.store.pool_depth(wallet.key_id, wallet.epoch, "2,3", "") < 3:
                    await asyncio.sleep(0.1)
                message = secrets.token_bytes(16)
                outcome = await coordinator.sign(
                    "hot", message, HashScheme.KECCAK256, preferred=(2, 3)
                )
                assert outcome.signers == (2, 3) and "presign" not in outcome.timings
                verify(outcome.signature, message, wallet)
            while coordinator.store.pool_depth(wallet.key_id, wallet.epoch, "2,3", "") < 3:
                await asyncio.sleep(0.1)  # refilled after the last use
        finally:
            stop.set()
            await keeper

    run(_with(cluster, body))


def test_a_drawn_presignature_wakes_an_idle_keeper(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    """A keeper pauses between passes (here 30 s, doubling while idle); a signature that draws
    from its pool wakes it, so the pool is refilled long before the pause would end."""

    async def depth(coordinator: Coordinator) -> int:
        return coordinator.store.pool_depth(wallet.key_id, wallet.epoch, "1,2", "")

    async def body(coordinator: Coordinator) -> None:
        target = PoolTarget("hot", (1, 2), (), depth=1)
        stop = asyncio.Event()
        keeper = asyncio.create_task(
            coordinator.keep_pools([target], stop, interval=30.0, max_interval=600.0)
        )
        try:
            while await depth(coordinator) < 1:
                await asyncio.sleep(0.1)
            outcome = await coordinator.sign(
                "hot", secrets.token_bytes(16), HashScheme.KECCAK256, preferred=(1, 2)
            )
            assert "presign" not in outcome.timings  # drawn from the pool

            async def refilled() -> None:
                while await depth(coordinator) < 1:
                    await asyncio.sleep(0.1)

            # A liveness bound, not a timing assertion: without the wake-up the refill would
            # wait for the keeper's 30 s pause.
            await asyncio.wait_for(refilled(), timeout=20)
        finally:
            stop.set()
            await keeper

    run(_with(cluster, body))


def node_presignature_state(cluster: LocalCluster, index: int, presignature_id: str) -> str:
    db = cluster.nodes[index - 1].directory / "node.db"
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "SELECT state FROM presignatures WHERE presignature_id = ?", (presignature_id,)
        ).fetchone()
    return "absent" if row is None else str(row[0])


@pytest.mark.parametrize(
    "failpoint", ["sign.before_consume", "sign.after_consume", "sign.after_partial"]
)
def test_kill_9_during_signing_never_reuses_a_presignature(
    cluster: LocalCluster, wallet: WalletRow, failpoint: str
) -> None:
    node = cluster.nodes[1]  # node 2 dies

    async def body(coordinator: Coordinator) -> str:
        await coordinator.fill_pool(wallet, (1, 2), (), 1)
        cluster.stop(node)
        cluster.start(node, env={"TESSERA_FAILPOINTS": failpoint})
        await cluster.wait_healthy(node)
        message = b"crash at " + failpoint.encode()
        outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256, preferred=(1, 2))
        verify(outcome.signature, message, wallet)
        assert outcome.signers != (1, 2)  # node 2 died; another set finished the job
        crashed = next(a for a in outcome.attempts if "node 2 unavailable" in a)
        assert crashed
        return outcome.presignature_id

    run(_with(cluster, body))
    assert cluster.pid(node) is None  # the failpoint really killed it
    cluster.stop(node)
    run(cluster.up())

    async def after(coordinator: Coordinator) -> None:
        # the presignature the crash interrupted is never offered again
        with coordinator.store.session() as session:
            rows = session.execute(
                text(
                    "SELECT presignature_id, state FROM presignatures WHERE signers = '1,2' "
                    "ORDER BY created_at DESC LIMIT 1"
                )
            ).all()
        ((pid, state),) = rows
        assert state == "used"
        node1 = node_presignature_state(cluster, 1, pid)
        node2 = node_presignature_state(cluster, 2, pid)
        assert node1 == "consumed"  # node 1 answered before node 2 died
        expected = "available" if failpoint == "sign.before_consume" else "consumed"
        assert node2 == expected
        for index in (1, 2):
            client = coordinator.clients[index]
            if node_presignature_state(cluster, index, pid) == "consumed":
                with pytest.raises(NodeRefused) as refused:
                    await client.sign(wallet.key_id, pid, b"again", "keccak256")
                assert refused.value.code is ErrorCode.PRESIGNATURE_USED
        # and signing with node 2 goes on
        message = b"after the crash"
        outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256, preferred=(1, 2))
        verify(outcome.signature, message, wallet)

    run(_with(cluster, after))


@pytest.mark.parametrize("failpoint", ["session.before_store", "session.after_store"])
def test_kill_9_while_storing_a_presignature_leaves_no_half_state(
    cluster: LocalCluster, wallet: WalletRow, failpoint: str
) -> None:
    node = cluster.nodes[2]  # node 3 dies while finishing a presign
    db = node.directory / "node.db"

    def rows() -> dict[str, tuple[str, int]]:
        with sqlite3.connect(db) as connection:
            found = connection.execute(
                "SELECT presignature_id, state, length(sealed_secret) FROM presignatures"
            ).fetchall()
        return {pid: (state, length) for pid, state, length in found}

    before = rows()

    async def body(coordinator: Coordinator) -> None:
        cluster.stop(node)
        cluster.start(node, env={"TESSERA_FAILPOINTS": failpoint})
        await cluster.wait_healthy(node)
        with pytest.raises(SessionFailed):
            await coordinator.presign(wallet, (2, 3), ())

    run(_with(cluster, body))
    cluster.stop(node)
    run(cluster.up())
    new = {pid: row for pid, row in rows().items() if pid not in before}
    # before_store: nothing written; after_store: one complete row that the coordinator never
    # learned about (it stays unused: the coordinator only offers what every signer reported)
    assert len(new) == (0 if failpoint == "session.before_store" else 1)
    assert all(state == "available" and length > 0 for state, length in new.values())


def test_refresh_keeps_the_address_and_kills_old_presignatures(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    async def body(coordinator: Coordinator) -> None:
        await coordinator.fill_pool(wallet, (2, 3), (), 1)
        before = coordinator.store.wallet("hot")
        with coordinator.store.session() as session:
            old_ids = [
                str(pid)
                for (pid,) in session.execute(
                    text("SELECT presignature_id FROM presignatures WHERE state = 'available'")
                )
            ]
        refreshed = await coordinator.refresh("hot")
        assert refreshed.epoch == before.epoch + 1
        old_key = codec.decode_key_public(before.key_public)
        new_key = codec.decode_key_public(refreshed.key_public)
        assert new_key.public_key == old_key.public_key
        assert new_key.public_shares != old_key.public_shares
        assert old_ids and coordinator.store.pools(refreshed.key_id) == {}
        for pid in old_ids:
            with pytest.raises(NodeRefused) as refused:
                await coordinator.clients[2].sign(refreshed.key_id, pid, b"old", "keccak256")
            assert refused.value.code in (
                ErrorCode.STALE_PRESIGNATURE,
                ErrorCode.PRESIGNATURE_USED,
            )
        message = b"after refresh"
        outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256)
        verify(outcome.signature, message, refreshed)

    run(_with(cluster, body))


# --- what a compromised coordinator sees and can do ------------------------------------------

_SECRETS_SCRIPT = """
import json, sys
from pathlib import Path
from sqlmodel import select
from signer.node.runtime import NodeRuntime
from signer.node.store import AuxRow
runtime = NodeRuntime.open(Path(sys.argv[1]))
service = runtime.service
out = {}
for row in runtime.store.active_keys():
    share = service.key_share(bytes.fromhex(row.key_id))
    out["share"] = share.secret_share.to_bytes(32, "big").hex()
with runtime.store.session() as session:
    aux_id = session.exec(select(AuxRow)).all()[-1].aux_id
aux = service.aux_info(bytes.fromhex(aux_id))
out["p"] = format(aux.own.paillier.p, "x")
out["q"] = format(aux.own.paillier.q, "x")
runtime.close()
print(json.dumps(out))
"""


def node_secrets(directory: Path) -> dict[str, str]:
    """A node's share and Paillier factors, read in a separate process from its token."""
    result = subprocess.run(
        [sys.executable, "-c", _SECRETS_SCRIPT, str(directory)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    secrets_: dict[str, str] = json.loads(result.stdout)
    return secrets_


def test_coordinator_traffic_holds_no_secret(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, per_node=2)
    traffic: list[dict[str, Any]] = []
    run(cluster.up())
    try:

        async def body(coordinator: Coordinator) -> None:
            wallet = await coordinator.create_wallet("cold")
            await coordinator.presign(wallet, (1, 3), (0, 1))

        run(_with(cluster, body, traffic=traffic))
    finally:
        cluster.down()
    assert traffic
    wire = json.dumps(traffic)
    for node in cluster.nodes:
        found = node_secrets(node.directory)
        for name, value in found.items():
            assert value not in wire, f"{node.node_id}'s {name} visible to the coordinator"
    # every point-to-point body is ciphertext: it does not even parse as a protocol encoding
    p2p = [e for e in traffic if not e["broadcast"]]
    assert p2p
    for envelope in p2p:
        with pytest.raises(EncodingError):
            decode(bytes.fromhex(envelope["body"]))
        assert len(bytes.fromhex(envelope["salt"])) == 16


def test_nodes_reject_forged_replayed_and_unpinned_envelopes(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    traffic: list[dict[str, Any]] = []

    async def record(coordinator: Coordinator) -> None:
        await coordinator.presign(wallet, (1, 2), ())

    run(_with(cluster, record, traffic=traffic))
    to_two = next(e for e in traffic if e["sender"] == 1 and e["recipient"] in (2, None))
    client = cluster.client(cluster.nodes[1])

    async def probe() -> None:
        try:
            # replay into the finished session: the node no longer knows it
            with pytest.raises(NodeRefused) as refused:
                await client.deliver(to_two["session"], [to_two])
            assert refused.value.code is ErrorCode.UNKNOWN_SESSION
            # a live session: start one and feed it a forged and an unpinned envelope
            spec = {
                "protocol": "presign/v1",
                "request": secrets.token_bytes(16).hex(),
                "parties": [1, 2],
                "threshold": 2,
                "key_id": wallet.key_id,
                "aux_id": wallet.aux_id,
                "path": [],
            }
            started = await client.start(spec)
            forged = {**to_two, "session": started.session}  # signature no longer matches
            unpinned = {**to_two, "session": started.session, "sender": 9}
            reply = await client.deliver(started.session, [forged, unpinned])
            assert reply.abort is not None
            checks = sorted(r["check"] for r in reply.abort.rejected)
            assert checks == ["SIGNATURE", "UNKNOWN_SENDER"]
            assert reply.status == "running"  # dropped, nothing else changed
            stranger = NodeClient(2, cluster.nodes[1].url, "wrong-token")
            assert (await stranger.health()).index == 2  # liveness is public, nothing else
            with pytest.raises(NodeRefused) as refused:
                await stranger.card()
            assert refused.value.code is ErrorCode.UNAUTHORIZED
            await stranger.aclose()
        finally:
            await client.aclose()

    run(probe())
    Envelope.from_dict(to_two)  # the recorded envelope itself is well-formed


def _share_blob(cluster: LocalCluster, index: int, key_id: str) -> bytes:
    with sqlite3.connect(cluster.nodes[index - 1].directory / "node.db") as connection:
        row = connection.execute(
            "SELECT sealed_share FROM key_versions WHERE key_id = ? AND state = 'active'",
            (key_id,),
        ).fetchone()
    blob: bytes = row[0]
    return blob


def _put_share_blob(cluster: LocalCluster, index: int, key_id: str, blob: bytes) -> None:
    with sqlite3.connect(cluster.nodes[index - 1].directory / "node.db") as connection:
        connection.execute(
            "UPDATE key_versions SET sealed_share = ? WHERE key_id = ? AND state = 'active'",
            (blob, key_id),
        )


def test_sealed_share_moved_to_another_node_or_key_does_not_open(
    cluster: LocalCluster, wallet: WalletRow
) -> None:
    """Node 2's database gets node 1's sealed share of the same key, then its own share of
    another key: the token refuses both (the AAD binds node id and key id), node 2 refuses to
    presign (HSM), and nothing is signed with a wrong share."""

    async def second_wallet(coordinator: Coordinator) -> WalletRow:
        return await coordinator.create_wallet("other")

    other = run(_with(cluster, second_wallet))
    own = _share_blob(cluster, 2, wallet.key_id)
    node = cluster.nodes[1]
    for planted in (_share_blob(cluster, 1, wallet.key_id), _share_blob(cluster, 2, other.key_id)):
        cluster.stop(node)
        _put_share_blob(cluster, 2, wallet.key_id, planted)
        run(cluster.up())

        async def attempt(coordinator: Coordinator) -> None:
            with pytest.raises(SessionFailed) as failed:
                await coordinator.presign(wallet, (2, 3), ())
            assert "HSM" in failed.value.unavailable[2]
            assert "authentication failed" in failed.value.unavailable[2]

        run(_with(cluster, attempt))
    cluster.stop(node)
    _put_share_blob(cluster, 2, wallet.key_id, own)
    run(cluster.up())

    async def healed(coordinator: Coordinator) -> None:
        message = b"own share back"
        outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256, preferred=(2, 3))
        verify(outcome.signature, message, wallet)

    run(_with(cluster, healed))


def test_reshare_over_http_replaces_node_3_by_a_new_node_4(
    cluster: LocalCluster, wallet: WalletRow, tmp_path: Path
) -> None:
    """Runs last: grows the cluster.  Node 4 is initialised and pinned by the operator, the
    wallet moves from {1, 2, 3} to {1, 2, 4} (same address, epoch + 1, fresh aux-info), node 3
    keeps no share, and {2, 4} sign."""
    grown = cluster.add_node(
        base_port=int(cluster.nodes[0].url.rsplit(":", 1)[1]) - 1,
        prime_pool=extra_pool(tmp_path, 4),
    )
    run(grown.up())
    try:

        async def body(coordinator: Coordinator) -> None:
            before = coordinator.store.wallet("hot")
            moved = await coordinator.reshare("hot", (1, 2, 4), 2)
            old_key = codec.decode_key_public(before.key_public)
            new_key = codec.decode_key_public(moved.key_public)
            assert new_key.public_key == old_key.public_key
            assert new_key.parties == (1, 2, 4) and new_key.epoch == old_key.epoch + 1
            message = b"signed by the new committee"
            outcome = await coordinator.sign("hot", message, HashScheme.KECCAK256, preferred=(2, 4))
            assert outcome.signers == (2, 4)
            verify(outcome.signature, message, moved)
            with pytest.raises(SessionFailed) as failed:  # node 3 left: no share any more
                await coordinator.presign(moved, (1, 3), ())
            assert "NO_SHARE" in failed.value.unavailable[3]
            assert "BAD_REQUEST" in failed.value.unavailable[1]  # 3 is not in the committee

        run(_with(grown, body))
        with sqlite3.connect(grown.nodes[2].directory / "node.db") as connection:
            shares = connection.execute(
                "SELECT sealed_share FROM key_versions WHERE key_id = ?", (wallet.key_id,)
            ).fetchall()
        assert shares and all(blob is None for (blob,) in shares)  # retired and erased
    finally:
        grown.stop(grown.nodes[3])


def test_a_node_that_cannot_bind_its_port_is_reported_at_once_with_its_log(
    tmp_path: Path,
) -> None:
    cluster = make_cluster(tmp_path, n=2, per_node=1)
    node = cluster.nodes[0]
    port = int(node.url.rsplit(":", 1)[1])
    # bound, not listening: as the source port of an outgoing connection holds it (refusing
    # connections to it, and the node's bind)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        cluster.start(node)
        started = time.monotonic()
        try:
            with pytest.raises(ClusterError) as failed:
                run(cluster.wait_healthy(node, timeout=60))
        finally:
            cluster.down()
    # not after the whole timeout: the node's exit is seen, and its last words quoted
    assert time.monotonic() - started < 30
    assert f"{node.node_id} exited: " in str(failed.value)
    assert str(tmp_path / "cluster" / "logs" / f"{node.node_id}.log") in str(failed.value)
    assert "address already in use" in str(failed.value).lower()
