"""Re-share and refresh can never lose a key (issue 9 item 4; attacks.md A12 T12c).

A re-share's output is a *pending* version; the old one stays active and signing until every
member of the new committee has signed that it stored its new share and the set of those
statements reaches the node (signer/node/confirmation.py).  One plan per key at a time.

In-process (node_local.py: `NodeService`, real SQLite, real signed envelopes): the store's state
machine — pending → active in one transaction, confirmations forged, incomplete, for another
committee, version or key refused with typed errors naming the sender, one confirmation per
(key, epoch), the in-flight rule and the operator's discard — and the coordinator keeping the
wallet on the old version until the set is complete.

Multi-process (real node processes with SoftHSM2 tokens, `make_cluster`; marked slow): a relay
that withholds the final echo from parties 3 and 4 in 2-of-3 → 3-of-4, runs two plans of one
version concurrently in several interleavings, reorders deliveries, and forks or withholds the
confirmations.  After each case some t nodes sign a message that coincurve verifies, with the
old version or, once confirmed, the new one, and every node is on one of the two versions.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import coincurve
import pytest
from conftest import paillier_key
from node_cluster import make_cluster, run
from node_local import LocalClient, ScriptedNode, make_nodes
from typer.testing import CliRunner

from coordinator.client import NodeClient, NodeRefused, NodeUnavailable
from coordinator.cluster import LocalCluster
from coordinator.console import app as cli
from coordinator.driver import SessionDriver, SessionFailed
from coordinator.engine import Coordinator, ReshareUnconfirmed, SignOutcome, presign_spec
from coordinator.engine import reshare_spec as engine_reshare_spec
from coordinator.store import CoordinatorStore, CoordinatorStoreError, WalletRow
from policies.schema import SchemaOutdated, migrate
from signer.node import codec
from signer.node.api import ReshareReport, join_indices
from signer.node.confirmation import ConfirmationBody, KeyConfirmation
from signer.node.errors import NodeError
from signer.node.migrations import SCHEMA as NODE_SCHEMA
from signer.node.service import SESSION_TTL_SECONDS
from signer.node.spec import SessionSpec
from signer.node.store import KeyConfirmationRow, NodeStore, StoreError
from signer.problems import ErrorCode
from signer.protocol.keygen import KeyPublic
from signer.protocol.sign import HashScheme, message_digest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: Wire rounds of reshare/v1: 1 commit, 2 its echo, 3 openings and shares, 4 acks, 5 their echo.
FINAL_ECHO = 5


# --- shared checks ------------------------------------------------------------------------------


def reshare_spec(
    wallet: WalletRow, dealers: tuple[int, ...], committee: tuple[int, ...], threshold: int
) -> SessionSpec:
    parties = codec.decode_key_public(wallet.key_public).parties
    refresh = dealers == committee == parties and threshold == wallet.threshold
    return engine_reshare_spec(wallet, dealers, committee, threshold, refresh=refresh)


async def signs(coordinator: Coordinator, name: str, key: KeyPublic) -> SignOutcome:
    """Some t nodes sign a fresh message with the wallet's current version; coincurve (not the
    coordinator's own check) verifies it against the key's public key."""
    wallet = coordinator.store.wallet(name)
    assert wallet.key_public == codec.encode_key_public(key)
    message = b"still signing " + secrets.token_bytes(8)
    outcome = await coordinator.sign(name, message, HashScheme.KECCAK256)
    digest = message_digest(message, HashScheme.KECCAK256)
    verifier = coincurve.PublicKey(key.public_key.to_bytes())
    assert verifier.verify(outcome.signature.der(), digest, hasher=None)
    assert len(outcome.signers) == key.threshold and set(outcome.signers) <= set(key.parties)
    return outcome


def code_of(exc: BaseException) -> ErrorCode:
    assert isinstance(exc, NodeRefused | NodeError)
    return ErrorCode(exc.code)


# --- in-process: the node's state machine --------------------------------------------------------


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ScriptedNode]:
    return make_nodes(tmp_path_factory.mktemp("nodes"), 4)


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coordinator") / "coordinator.db"


def local_engine(nodes: dict[int, ScriptedNode], path: Path) -> Coordinator:
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    return Coordinator(clients, 2, CoordinatorStore(path))


def new_wallet(nodes: dict[int, ScriptedNode], path: Path) -> WalletRow:
    """A fresh 2-of-3 wallet on nodes 1, 2, 3 (its own key: the tests change its state)."""
    engine = local_engine(nodes, path)
    return run(engine.create_wallet("w-" + secrets.token_hex(4), (1, 2, 3)))


def run_session(nodes: dict[int, ScriptedNode], spec: SessionSpec) -> KeyPublic:
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    results = run(SessionDriver(clients).run(spec))
    reports = [r for r in results.values() if isinstance(r, ReshareReport)]
    assert len(reports) == len(results) and all(r.state == "pending" for r in reports)
    (encoded,) = {r.key_public for r in reports}
    return codec.decode_key_public(bytes.fromhex(encoded))


def states(node: ScriptedNode, key_id: str) -> dict[int, str]:
    return {row.epoch: row.state for row in node.store.key_versions(key_id)}


def statements(nodes: dict[int, ScriptedNode], key: KeyPublic) -> list[KeyConfirmation]:
    return [nodes[j].confirm(key.key_id, key.epoch) for j in key.parties]


def test_reshare_output_is_pending_and_the_old_version_keeps_signing(
    nodes: dict[int, ScriptedNode], engine_path: Path
) -> None:
    """Regression: `put_key_version` used to retire the old share as soon as the session ended
    on a node.  Now nothing changes for signing until activation."""
    wallet = new_wallet(nodes, engine_path)
    old = codec.decode_key_public(wallet.key_public)
    engine = local_engine(nodes, engine_path)
    pooled = run(engine.presign(wallet, (1, 2), ()))
    new = run_session(nodes, reshare_spec(wallet, (1, 2, 3), (1, 2, 3, 4), 3))
    for j in (1, 2, 3):
        assert states(nodes[j], wallet.key_id) == {old.epoch: "active", new.epoch: "pending"}
    assert states(nodes[4], wallet.key_id) == {new.epoch: "pending"}
    # the old version signs, with the presignature pooled before the re-share
    assert run(signs(engine, wallet.name, old)).presignature_id == pooled.presignature_id
    with pytest.raises(NodeError) as refused:  # node 4 has nothing active to presign with
        nodes[4].start(presign_spec(wallet, (1, 4)))
    assert code_of(refused.value) in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_KEY)


def test_activation_is_one_transaction_and_idempotent(
    nodes: dict[int, ScriptedNode], engine_path: Path
) -> None:
    wallet = new_wallet(nodes, engine_path)
    old = codec.decode_key_public(wallet.key_public)
    engine = local_engine(nodes, engine_path)
    pooled = run(engine.presign(wallet, (1, 3), ()))
    new = run_session(nodes, reshare_spec(wallet, (1, 2, 3), (1, 2, 3), 2))  # a refresh
    full = statements(nodes, new)
    reply = nodes[1].activate(new.key_id, new.epoch, full)
    assert reply.activated and reply.fingerprint == fp(new)
    assert states(nodes[1], wallet.key_id) == {old.epoch: "retired", new.epoch: "active"}
    retired = nodes[1].store.key_version(wallet.key_id, old.epoch)
    assert retired is not None and retired.sealed_share is None  # erased with the activation
    row = nodes[1].store.presignature(pooled.presignature_id)
    assert row is not None and row.state == "revoked"
    kept = nodes[1].store.confirmations(wallet.key_id, new.epoch)
    assert [(r.signer, r.origin) for r in kept] == [(1, "signed"), (2, "received"), (3, "received")]
    actions = [e.action for e in nodes[1].store.key_events(wallet.key_id)]
    assert actions == ["pending", "confirmed", "activated"]
    # the same set again changes nothing; node 1's own statement is the one on record
    assert not nodes[1].activate(new.key_id, new.epoch, full).activated
    assert nodes[1].confirm(new.key_id, new.epoch) == full[0]
    # node 3 has not had the set: it is still on the old version (and could still sign it)
    assert states(nodes[3], wallet.key_id) == {old.epoch: "active", new.epoch: "pending"}
    with pytest.raises(NodeError) as stale:  # the presignature of the old version is dead on 1
        nodes[1].sign(
            bytes.fromhex(wallet.key_id),
            bytes.fromhex(pooled.presignature_id),
            b"old",
            HashScheme.KECCAK256,
        )
    assert code_of(stale.value) in (ErrorCode.STALE_PRESIGNATURE, ErrorCode.PRESIGNATURE_USED)


def test_a_presign_running_across_an_activation_stores_nothing(
    nodes: dict[int, ScriptedNode], engine_path: Path
) -> None:
    """A presign started with the old shares and finished after the refresh was activated: it
    must not be stored under the new epoch (its partials would fail later and blame an honest
    node), so each signer refuses it with STALE_PRESIGNATURE and stores nothing."""
    wallet = new_wallet(nodes, engine_path)
    new = run_session(nodes, reshare_spec(wallet, (1, 2, 3), (1, 2, 3), 2))
    full = statements(nodes, new)

    class ActivateMidway(SessionDriver):
        activated = False

        def _route(
            self, parties: tuple[int, ...], envelopes: list[dict[str, Any]]
        ) -> dict[int, list[dict[str, Any]]]:
            if not self.activated:  # after round 1 was produced with the old shares
                type(self).activated = True
                for j in (1, 2, 3):
                    nodes[j].activate(new.key_id, new.epoch, full)
            return super()._route(parties, envelopes)

    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    with pytest.raises(SessionFailed) as failed:
        run(ActivateMidway(clients).run(presign_spec(wallet, (1, 2))))
    assert failed.value.refused == {
        1: ErrorCode.STALE_PRESIGNATURE,
        2: ErrorCode.STALE_PRESIGNATURE,
    }
    for j in (1, 2):
        assert nodes[j].store.presignature_counts(wallet.key_id) == {}
        # and the session is over there, not left running until it expires
        assert all(s.spec.protocol != "presign/v1" for s in nodes[j]._sessions.values())


def _resign(nodes: dict[int, ScriptedNode], statement: KeyConfirmation, **changes: Any) -> Any:
    """`statement` with `changes`, validly signed by its signer's real identity key: what a
    genuine statement replayed from another context looks like."""
    draft = replace(statement, signature=b"", **changes)
    signer = nodes[draft.signer].endpoint.signer
    return replace(draft, signature=signer.sign_identity(draft.signed_bytes()))


@pytest.mark.parametrize(
    "case",
    ["forged", "missing", "duplicate", "outsider", "fingerprint", "epoch", "cluster", "other_key"],
)
def test_a_bad_confirmation_set_is_refused_naming_its_sender_and_changes_nothing(
    nodes: dict[int, ScriptedNode], engine_path: Path, case: str
) -> None:
    wallet = new_wallet(nodes, engine_path)
    old = codec.decode_key_public(wallet.key_public)
    committee = (1, 2, 3) if case == "outsider" else (1, 2, 3, 4)
    new = run_session(nodes, reshare_spec(wallet, (1, 2, 3), committee, 3))
    full = statements(nodes, new)
    four = full[-1]
    expected: tuple[int | None, str]
    if case == "forged":  # altered after signing: the coordinator cannot make one up
        bad = [*full[:3], replace(four, signature=bytes(len(four.signature)))]
        expected = (4, "SIGNATURE")
    elif case == "missing":  # t′ of n′ is not enough: every member must have stored its share
        bad, expected = full[:3], (None, "COMMITTEE")
        assert len(bad) >= new.threshold
    elif case == "duplicate":
        bad, expected = [*full, full[0]], (1, "DUPLICATE")
    elif case == "outsider":  # node 4's real signature for the right version; not a member
        with pytest.raises(NodeError) as refused:  # (an honest non-member never makes one)
            nodes[4].confirm(new.key_id, new.epoch)
        assert code_of(refused.value) is ErrorCode.NO_PENDING_VERSION
        outsider = KeyConfirmation.issue(nodes[4].endpoint.signer, four.cluster_id, 4, new)
        bad, expected = [*full, outsider], (4, "COMMITTEE")
    elif case == "fingerprint":  # node 4's real signature over another version of the epoch
        bad = [*full[:3], _resign(nodes, four, fingerprint=secrets.token_bytes(32))]
        expected = (4, "FINGERPRINT")
    elif case == "epoch":
        bad = [*full[:3], _resign(nodes, four, epoch=new.epoch + 1)]
        expected = (4, "EPOCH")
    elif case == "cluster":
        bad = [*full[:3], _resign(nodes, four, cluster_id=bytes(32))]
        expected = (4, "CLUSTER")
    else:  # node 4's genuine statement for another key's pending version, replayed here
        other = new_wallet(nodes, engine_path)
        other_new = run_session(nodes, reshare_spec(other, (1, 2, 3), (1, 2, 3, 4), 3))
        replayed = nodes[4].confirm(other_new.key_id, other_new.epoch)
        bad, expected = [*full[:3], replayed], (4, "KEY")
    for j in new.parties:
        with pytest.raises(NodeError) as refused:
            nodes[j].activate(new.key_id, new.epoch, bad)
        error = refused.value
        assert code_of(error) is ErrorCode.CONFIRMATION_REJECTED
        assert (error.culprit, error.check) == expected
        assert states(nodes[j], wallet.key_id).get(old.epoch) in ("active", None)
        assert states(nodes[j], wallet.key_id)[new.epoch] == "pending"
    # the complete, genuine set still activates afterwards
    for j in new.parties:
        assert nodes[j].activate(new.key_id, new.epoch, statements(nodes, new)).activated


def test_a_node_confirms_at_most_one_version_per_epoch(
    nodes: dict[int, ScriptedNode], engine_path: Path
) -> None:
    wallet = new_wallet(nodes, engine_path)
    first = run_session(nodes, reshare_spec(wallet, (1, 2, 3), (1, 2, 3), 3))
    mine = nodes[1].confirm(first.key_id, first.epoch)
    assert nodes[1].confirm(first.key_id, first.epoch) == mine  # asking again: the same one
    # the operator cannot casually drop a version this node vouched for
    with pytest.raises(StoreError, match="signed a storage confirmation"):
        nodes[1].store.discard_pending(wallet.key_id, "try")
    for j in (1, 2, 3):
        nodes[j].store.discard_pending(wallet.key_id, "test: forced", force=True)
    second = run_session(nodes, reshare_spec(wallet, (1, 2, 3), (1, 2, 3), 2))
    assert second.epoch == first.epoch and second.fingerprint() != first.fingerprint()
    with pytest.raises(NodeError) as refused:
        nodes[1].confirm(second.key_id, second.epoch)
    assert code_of(refused.value) is ErrorCode.CONFIRMATION_CONFLICT
    assert nodes[2].confirm(second.key_id, second.epoch).fingerprint == second.fingerprint()
    (event,) = [e for e in nodes[1].store.key_events(wallet.key_id) if e.action == "discarded"]
    assert "forced, after confirming" in event.detail


def test_one_plan_per_key_in_flight_released_by_cancel_expiry_activation_or_discard(
    nodes: dict[int, ScriptedNode], engine_path: Path
) -> None:
    wallet = new_wallet(nodes, engine_path)
    node = nodes[1]

    def start() -> bytes:
        return node.start(reshare_spec(wallet, (1, 2), (1, 2, 3), 2)).session

    def refused() -> str:
        with pytest.raises(NodeError) as error:
            start()
        assert code_of(error.value) is ErrorCode.PLAN_IN_FLIGHT
        return error.value.detail

    running = start()
    assert "session" in refused()  # a running session of the key
    assert node.cancel(running)
    running = start()  # released by the cancel
    node._sessions[running].touched -= SESSION_TTL_SECONDS + 1  # as if it had made no progress
    running = start()  # released by the expiry
    node.cancel(running)
    # another key is independent
    other = new_wallet(nodes, engine_path)
    node.cancel(node.start(reshare_spec(other, (1, 2), (1, 2), 2)).session)
    # a pending version holds the key until it is activated ...
    new = run_session(nodes, reshare_spec(wallet, (1, 2, 3), (1, 2, 3), 2))
    assert "pending" in refused()
    for j in (1, 2, 3):
        nodes[j].activate(new.key_id, new.epoch, statements(nodes, new))
    wallet = replace_wallet(wallet, new)
    node.cancel(start())
    # ... or discarded by the operator (allowed at once when this node confirmed nothing)
    run_session(nodes, reshare_spec(wallet, (1, 2, 3), (1, 2, 3), 2))
    refused()
    node.store.discard_pending(wallet.key_id, "test: the others never finished")
    node.cancel(start())


def replace_wallet(wallet: WalletRow, key: KeyPublic) -> WalletRow:
    encoded = codec.encode_key_public(key)
    return WalletRow(**{**wallet.model_dump(), "epoch": key.epoch, "key_public": encoded})


def test_an_old_database_gains_the_new_tables(tmp_path: Path) -> None:
    """A database from before pending versions (no key_confirmations, no key_events, no
    schema version) is refused until the operator migrates it, then has both tables."""
    NodeStore(tmp_path / "node.db").close()
    with sqlite3.connect(tmp_path / "node.db") as connection:
        connection.execute("DROP TABLE key_confirmations")
        connection.execute("DROP TABLE key_events")
        # Nor did it have the policy tables, which came later still (node_0002).
        for table in (
            "policy_versions",
            "freeze_orders",
            "key_bindings",
            "signed_requests",
            "approvals_used",
            "audit_log",
        ):
            connection.execute(f"DROP TABLE {table}")
        connection.execute("DROP TABLE alembic_version")
    with pytest.raises(SchemaOutdated, match="tessera node migrate"):
        NodeStore(tmp_path / "node.db")
    migrate(tmp_path / "node.db", NODE_SCHEMA)
    store = NodeStore(tmp_path / "node.db")
    assert store.confirmations("00", 1) == [] and store.key_events("00") == []
    store.close()


def test_the_operator_discards_a_confirmed_pending_version_only_with_force(
    tmp_path: Path,
) -> None:
    """`tessera node key discard-pending` on a node directory: refused after this node signed a
    confirmation for the version, done with --force, and logged either way."""
    directory = tmp_path / "node-1"
    directory.mkdir()
    config = {"node_id": "node-1", "index": 1, "url": "http://x", "host": "127.0.0.1", "port": 1}
    (directory / "node.json").write_text(json.dumps(config))
    key = "ab" * 16
    store = NodeStore(directory / "node.db")
    store.put_pending_version(key, 1, b"public", b"sealed share")
    signed = KeyConfirmationRow(
        key_id=key,
        epoch=1,
        signer=1,
        fingerprint="00" * 32,
        signature=b"signature",
        origin="signed",
        created_at=0.0,
    )
    store.record_own_confirmation(signed, b"public")
    store.close()
    command = ["node", "key", "discard-pending", "--dir", str(directory), "--key", key]
    refused = CliRunner().invoke(cli, [*command, "--reason", "the session stalled"])
    assert refused.exit_code == 1
    store = NodeStore(directory / "node.db")
    assert store.pending_key(key) is not None
    store.close()
    forced = CliRunner().invoke(cli, [*command, "--reason", "3 never finished", "--force"])
    assert forced.exit_code == 0, forced.output
    listed = CliRunner().invoke(cli, ["node", "key", "list", "--dir", str(directory), "--key", key])
    doc = json.loads(listed.stdout)
    assert doc["versions"] == []
    assert [e["action"] for e in doc["events"]] == ["pending", "confirmed", "discarded"]
    assert "3 never finished (forced, after confirming)" == doc["events"][-1]["detail"]


class _Flaky:
    """A client that fails the named calls (the node is down for them)."""

    def __init__(self, inner: Any, failing: set[str]) -> None:
        self.inner = inner
        self.failing = failing
        self.index = inner.index

    def __getattr__(self, name: str) -> Any:
        if name in self.failing:

            async def down(*args: Any, **kwargs: Any) -> Any:
                raise NodeUnavailable(self.index, f"test: {name} withheld")

            return down
        return getattr(self.inner, name)


def test_the_wallet_stays_on_the_old_version_until_every_confirmation_is_in(
    nodes: dict[int, ScriptedNode], engine_path: Path
) -> None:
    wallet = new_wallet(nodes, engine_path)
    old = codec.decode_key_public(wallet.key_public)
    engine = local_engine(nodes, engine_path)
    for j, node in nodes.items():  # the re-share's fresh aux-info needs other fixture keys
        node._paillier = lambda j=j: paillier_key(j + 4)  # type: ignore[misc]
    honest = dict(engine.clients)
    engine.clients = {**honest, 4: _Flaky(honest[4], {"confirmation"})}  # type: ignore[dict-item]

    async def body() -> None:
        with pytest.raises(ReshareUnconfirmed) as unconfirmed:
            await engine.reshare(wallet.name, (1, 2, 3, 4), 3)
        assert not unconfirmed.value.confirmed and set(unconfirmed.value.failed) == {4}
        assert "stays on epoch" in str(unconfirmed.value)
        assert engine.store.wallet(wallet.name).epoch == old.epoch
        await signs(engine, wallet.name, old)  # t = 2 of the old committee sign
        with pytest.raises(CoordinatorStoreError, match="pending"):  # no second plan meanwhile
            await engine.refresh(wallet.name)
        engine.clients = {**honest, 3: _Flaky(honest[3], {"activate"})}  # type: ignore[dict-item]
        with pytest.raises(ReshareUnconfirmed) as undelivered:
            await engine.confirm_pending(wallet.name)
        assert undelivered.value.confirmed and set(undelivered.value.failed) == {3}
        assert states(nodes[3], wallet.key_id)[old.epoch + 1] == "pending"
        engine.clients = honest
        moved = await engine.confirm_pending(wallet.name)
        new = codec.decode_key_public(moved.key_public)
        assert new.parties == (1, 2, 3, 4) and new.threshold == 3
        assert engine.store.pending(wallet.key_id) is None
        for j in (1, 2, 3, 4):
            assert states(nodes[j], wallet.key_id)[new.epoch] == "active"
        await signs(engine, wallet.name, new)

    run(body())


# --- multi-process: a withholding, reordering, forking relay --------------------------------------


class Relay(SessionDriver):
    """The coordinator's driver as a compromised relay: `drop(envelope, recipient)` withholds,
    `shuffle` reorders every batch and the order of deliveries."""

    def __init__(
        self,
        clients: Any,
        drop: Callable[[dict[str, Any], int], bool] | None = None,
        shuffle: random.Random | None = None,
    ) -> None:
        super().__init__(clients)
        self.drop = drop
        self.shuffle = shuffle
        self.withheld = 0

    def _route(
        self, parties: tuple[int, ...], envelopes: list[dict[str, Any]]
    ) -> dict[int, list[dict[str, Any]]]:
        routed = super()._route(parties, envelopes)
        out: dict[int, list[dict[str, Any]]] = {}
        for j, batch in routed.items():
            kept = [e for e in batch if self.drop is None or not self.drop(e, j)]
            self.withheld += len(batch) - len(kept)
            if self.shuffle is not None:
                self.shuffle.shuffle(kept)
            out[j] = kept
        if self.shuffle is not None:
            keys = list(out)
            self.shuffle.shuffle(keys)
            out = {j: out[j] for j in keys}
        return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = make_cluster(tmp_path_factory.mktemp("safety"), n=4, t=2)
    run(cluster.up())
    try:
        yield cluster
    finally:
        cluster.down()


async def engine_of(cluster: LocalCluster) -> Coordinator:
    engine = cluster.coordinator()
    # Test-only speed-up: a re-share here reuses the committee's aux-info instead of running a
    # fresh one each time (the prime pools would run dry); test_node_cluster covers the fresh
    # aux-info of a real re-share, and none of these cases is about aux-info.
    fresh = engine.run_aux_info

    async def reuse(parties: tuple[int, ...] | None = None, replaces: str | None = None) -> str:
        existing = engine.store.active_aux(join_indices(parties or engine.parties))
        return existing if existing is not None else await fresh(parties)

    engine.run_aux_info = reuse  # type: ignore[method-assign]
    return engine


def cluster_wallet(cluster: LocalCluster) -> WalletRow:
    async def create() -> WalletRow:
        engine = await engine_of(cluster)
        try:
            await engine.ensure_aux((1, 2, 3, 4))
            return await engine.create_wallet("w-" + secrets.token_hex(4), (1, 2, 3))
        finally:
            await engine.aclose()

    return run(create())


def node_versions(cluster: LocalCluster, key_id: str) -> dict[int, dict[str, str]]:
    """Each node's versions of the key: {index: {fingerprint: state}} (read from its file)."""
    out: dict[int, dict[str, str]] = {}
    for node in cluster.nodes:
        with sqlite3.connect(node.directory / "node.db") as connection:
            rows = connection.execute(
                "SELECT public, state, sealed_share IS NOT NULL FROM key_versions WHERE key_id = ?",
                (key_id,),
            ).fetchall()
        out[node.index] = {
            codec.decode_key_public(public).fingerprint().hex(): state
            + ("" if has_share else "-no-share")
            for public, state, has_share in rows
        }
    return out


def fp(key: KeyPublic) -> str:
    return key.fingerprint().hex()


def assert_on_one_of(
    cluster: LocalCluster, key_id: str, prints: set[str], holders: dict[str, set[int]]
) -> None:
    """Every node's versions (active and pending) are among the fingerprints `prints`, at most
    one active, and for each version every node listed in `holders` still holds a share of it
    (active or pending)."""
    found = node_versions(cluster, key_id)
    for index, versions in found.items():
        active = [f for f, state in versions.items() if state.startswith("active")]
        assert len(active) <= 1
        assert set(active) <= prints, f"node {index} is on a third version"
        assert {f for f, s in versions.items() if s.startswith("pending")} <= prints
    for fingerprint, members in holders.items():
        for index in members:
            state = found[index].get(fingerprint, "absent")
            assert state in ("active", "pending"), f"node {index}: {state} for {fingerprint}"


@pytest.mark.slow
def test_withheld_final_echo_loses_nothing_2_of_3_to_3_of_4(cluster: LocalCluster) -> None:
    """Regression: the relay withholds the final echo (wire round 5) from parties 3 and 4.
    Parties 1 and 2 finish; 3 and 4 wait until the session is cancelled.  On today's main 1
    and 2 erased their old shares at that point: 2 of 3 new shares, 1 of 2 old ones."""
    wallet = cluster_wallet(cluster)
    old = codec.decode_key_public(wallet.key_public)

    async def body() -> None:
        engine = await engine_of(cluster)
        relay = Relay(engine.clients, drop=lambda e, j: e["round"] == FINAL_ECHO and j in (3, 4))
        engine.driver = relay
        try:
            with pytest.raises(SessionFailed) as failed:
                await engine.reshare(wallet.name, (1, 2, 3, 4), 3)
            assert relay.withheld and set(failed.value.stalled) == {3, 4}
            assert engine.store.wallet(wallet.name).epoch == old.epoch
            versions = node_versions(cluster, wallet.key_id)
            pending = {j: f for j, v in versions.items() for f, st in v.items() if st == "pending"}
            assert set(pending) == {1, 2}  # the split the relay made ...
            (split,) = set(pending.values())
            holders = {fp(old): {1, 2, 3}, split: {1, 2}}
            assert_on_one_of(cluster, wallet.key_id, {fp(old), split}, holders)  # ... lost nothing
            await signs(engine, wallet.name, old)
            # the pending copies can never be confirmed (3 and 4 hold none): 3's storage
            # confirmation is refused, and a new plan waits for the operators
            with pytest.raises(NodeRefused) as refused:
                await engine.clients[3].confirmation(wallet.key_id, old.epoch + 1)
            assert refused.value.code is ErrorCode.NO_PENDING_VERSION
            engine.driver = SessionDriver(engine.clients)
            with pytest.raises(SessionFailed) as in_flight:
                await engine.reshare(wallet.name, (1, 2, 3, 4), 3)
            assert set(in_flight.value.refused.values()) == {ErrorCode.PLAN_IN_FLIGHT}
            assert set(in_flight.value.refused) == {1, 2}
            for node in cluster.nodes[:2]:  # nobody confirmed: the operators discard at once
                store = NodeStore(node.directory / "node.db")
                store.discard_pending(wallet.key_id, "the session stalled on 3 and 4")
                store.close()
            moved = await engine.reshare(wallet.name, (1, 2, 3, 4), 3)
            new = codec.decode_key_public(moved.key_public)
            assert_on_one_of(cluster, wallet.key_id, {fp(new)}, {fp(new): {1, 2, 3, 4}})
            await signs(engine, wallet.name, new)
        finally:
            await engine.aclose()

    run(body())


@pytest.mark.slow
def test_withheld_final_echo_from_a_leaving_dealer_still_moves_the_key(
    cluster: LocalCluster,
) -> None:
    """{1, 2, 3} → {1, 2, 4} with the final echo withheld from node 3, which leaves: every new
    member finished, so the coordinator collects their confirmations although the session
    failed, activates the new version, and t′ of the new committee sign."""
    wallet = cluster_wallet(cluster)
    old = codec.decode_key_public(wallet.key_public)

    async def body() -> None:
        engine = await engine_of(cluster)
        engine.driver = Relay(engine.clients, drop=lambda e, j: e["round"] == FINAL_ECHO and j == 3)
        try:
            moved = await engine.reshare(wallet.name, (1, 2, 4), 2)
            new = codec.decode_key_public(moved.key_public)
            assert new.parties == (1, 2, 4) and new.epoch == old.epoch + 1
            versions = node_versions(cluster, wallet.key_id)
            assert versions[3] == {fp(old): "active"}  # never finished: nothing to activate
            holders = {fp(new): {1, 2, 4}}
            assert_on_one_of(cluster, wallet.key_id, {fp(old), fp(new)}, holders)
            assert all(versions[j][fp(new)] == "active" for j in (1, 2, 4))
            await signs(engine, wallet.name, new)
        finally:
            await engine.aclose()

    run(body())


@pytest.mark.slow
@pytest.mark.parametrize(
    "interleaving", ["starts_crossed", "starts_racing", "second_after_first_finished"]
)
def test_two_concurrent_plans_of_one_version_never_split_the_nodes(
    cluster: LocalCluster, interleaving: str
) -> None:
    """Regression: two plans of one version, P to 3-of-4 and Q to 2-of-4, used to both
    complete and leave {1, 2} on one new version and {3, 4} on the other.  `starts_crossed`:
    the relay starts P on {1, 2} and Q on {3, 4}, then each on the others; `starts_racing`:
    both started on every node at once, in a random order per node; and
    `second_after_first_finished`: P runs to its end everywhere (pending), Q is started
    everywhere, then P is confirmed.  No node ever runs both; no node is left without a
    usable share; t nodes sign after each."""
    wallet = cluster_wallet(cluster)
    old = codec.decode_key_public(wallet.key_public)
    p = reshare_spec(wallet, (1, 2, 3), (1, 2, 3, 4), 3)
    q = reshare_spec(wallet, (1, 2, 3), (1, 2, 3, 4), 2)

    async def crossed(engine: Coordinator) -> None:
        clients = engine.clients
        first = await asyncio.gather(
            *(clients[j].start(p.to_json()) for j in (1, 2)),
            *(clients[j].start(q.to_json()) for j in (3, 4)),
        )
        second = await asyncio.gather(
            *(clients[j].start(q.to_json()) for j in (1, 2)),
            *(clients[j].start(p.to_json()) for j in (3, 4)),
            return_exceptions=True,
        )
        assert all(code_of(r) is ErrorCode.PLAN_IN_FLIGHT for r in second)
        # the nodes that started cannot finish (their co-parties refused): the relay gives up
        for j, state in zip((1, 2, 3, 4), first, strict=True):
            assert await clients[j].cancel(state.session)
        assert_on_one_of(cluster, wallet.key_id, {fp(old)}, {fp(old): {1, 2, 3}})
        await signs(engine, wallet.name, old)
        # released: P alone now runs, is confirmed, and is the only new version anywhere
        moved = await engine.reshare(wallet.name, (1, 2, 3, 4), 3)
        new = codec.decode_key_public(moved.key_public)
        assert_on_one_of(cluster, wallet.key_id, {fp(new)}, {fp(new): {1, 2, 3, 4}})
        await signs(engine, wallet.name, new)

    async def racing(engine: Coordinator) -> None:
        clients, rng = engine.clients, random.Random(secrets.randbits(64))

        async def both(j: int) -> list[Any]:
            plans = [p, q]
            rng.shuffle(plans)
            starts = (clients[j].start(s.to_json()) for s in plans)
            return list(await asyncio.gather(*starts, return_exceptions=True))

        started = await asyncio.gather(*(both(j) for j in (1, 2, 3, 4)))
        for j, replies in zip((1, 2, 3, 4), started, strict=True):
            ok = [r for r in replies if not isinstance(r, BaseException)]
            bad = [r for r in replies if isinstance(r, BaseException)]
            assert len(ok) == 1 and [code_of(r) for r in bad] == [ErrorCode.PLAN_IN_FLIGHT]
            assert await clients[j].cancel(ok[0].session)
        assert_on_one_of(cluster, wallet.key_id, {fp(old)}, {fp(old): {1, 2, 3}})
        await signs(engine, wallet.name, old)

    async def sequential(engine: Coordinator) -> None:
        results = await SessionDriver(engine.clients).run(p)
        (encoded,) = {r.key_public for r in results.values() if isinstance(r, ReshareReport)}
        new = codec.decode_key_public(bytes.fromhex(encoded))
        with pytest.raises(SessionFailed) as failed:  # every node holds P pending
            await SessionDriver(engine.clients).run(q)
        assert failed.value.refused == {j: ErrorCode.PLAN_IN_FLIGHT for j in (1, 2, 3, 4)}
        holders = {fp(old): {1, 2, 3}, fp(new): {1, 2, 3, 4}}
        assert_on_one_of(cluster, wallet.key_id, {fp(old), fp(new)}, holders)
        await signs(engine, wallet.name, old)  # P is not confirmed: the old version signs
        statements = await asyncio.gather(
            *(engine.clients[j].confirmation(wallet.key_id, new.epoch) for j in new.parties)
        )
        for j in (4, 2, 3, 1):  # any order
            reply = await engine.clients[j].activate(wallet.key_id, new.epoch, statements)
            assert reply.activated
        aux_id = await engine.ensure_aux((1, 2, 3, 4))
        engine.store.update_wallet(wallet.key_id, new.epoch, bytes.fromhex(encoded), aux_id, 3)
        assert_on_one_of(cluster, wallet.key_id, {fp(new)}, {fp(new): {1, 2, 3, 4}})
        await signs(engine, wallet.name, new)

    async def body() -> None:
        engine = await engine_of(cluster)
        try:
            cases = {
                "starts_crossed": crossed,
                "starts_racing": racing,
                "second_after_first_finished": sequential,
            }
            await cases[interleaving](engine)
        finally:
            await engine.aclose()

    run(body())


class KeepWaiting(NodeClient):
    """A relay's client that never cancels a session: the parties it starved keep waiting."""

    async def cancel(self, session: str) -> bool:
        return False


@pytest.mark.slow
def test_reordered_deliveries_and_a_late_final_echo_keep_the_old_version_signing(
    cluster: LocalCluster,
) -> None:
    """Regression: every batch and every round of deliveries in a random order, and the final
    echo to parties 3 and 4 held back until after parties 1 and 2 have finished.  In between,
    t old holders still sign (on today's main 1 and 2 had erased their old shares by then).
    The late echoes then arrive, in random order; the confirmations are collected and the set
    delivered in random order; everyone ends on the new version, which t′ sign."""
    wallet = cluster_wallet(cluster)
    old = codec.decode_key_public(wallet.key_public)
    rng = random.Random(secrets.randbits(64))
    held: list[tuple[int, dict[str, Any]]] = []

    def late(envelope: dict[str, Any], recipient: int) -> bool:
        if envelope["round"] == FINAL_ECHO and recipient in (3, 4):
            held.append((recipient, envelope))
            return True
        return False

    async def body() -> None:
        engine = await engine_of(cluster)
        clients = {n.index: KeepWaiting(n.index, n.url, n.api_token) for n in cluster.nodes}
        relay = Relay(clients, drop=late, shuffle=rng)
        try:
            with pytest.raises(SessionFailed) as failed:
                await relay.run(reshare_spec(wallet, (1, 2, 3), (1, 2, 3, 4), 3))
            assert set(failed.value.stalled) == {3, 4} and held
            await signs(engine, wallet.name, old)  # 1 and 2 are done, 3 and 4 still waiting
            session = held[0][1]["session"]
            late_order = [4, 3]
            rng.shuffle(late_order)
            results = {}
            for j in late_order:
                batch = [e for k, e in held if k == j]
                rng.shuffle(batch)
                state = await clients[j].deliver(session, batch)
                assert state.status == "done" and state.result is not None
                results[j] = state.result
            (encoded,) = {r.key_public for r in results.values() if isinstance(r, ReshareReport)}
            new = codec.decode_key_public(bytes.fromhex(encoded))
            holders = {fp(old): {1, 2, 3}, fp(new): {1, 2, 3, 4}}
            assert_on_one_of(cluster, wallet.key_id, {fp(old), fp(new)}, holders)
            members = list(new.parties)
            rng.shuffle(members)
            statements = await asyncio.gather(
                *(clients[j].confirmation(wallet.key_id, new.epoch) for j in members)
            )
            rng.shuffle(members)
            for j in members:
                assert (await clients[j].activate(wallet.key_id, new.epoch, statements)).activated
            aux_id = await engine.ensure_aux((1, 2, 3, 4))
            engine.store.update_wallet(wallet.key_id, new.epoch, bytes.fromhex(encoded), aux_id, 3)
            assert_on_one_of(cluster, wallet.key_id, {fp(new)}, {fp(new): {1, 2, 3, 4}})
            await signs(engine, wallet.name, new)
        finally:
            await engine.aclose()
            for client in clients.values():
                await client.aclose()

    run(body())


class Forking(NodeClient):
    """The relay's client to one node: hands it `fork(statements)` instead of the set (None:
    withhold the delivery altogether)."""

    fork: Callable[[list[ConfirmationBody]], list[ConfirmationBody] | None] = staticmethod(
        lambda s: s
    )

    async def activate(self, key_id: str, epoch: int, statements: list[ConfirmationBody]) -> Any:
        forked = type(self).fork(statements)
        if forked is None:
            raise NodeUnavailable(self.index, "test: the relay withheld the confirmations")
        return await super().activate(key_id, epoch, forked)


@pytest.mark.slow
def test_forked_and_withheld_confirmations_never_activate_a_wrong_set(
    cluster: LocalCluster,
) -> None:
    """The relay gives nodes 1 and 2 the genuine set, node 3 a set without node 4's statement,
    and withholds it from node 4.  1 and 2 activate; 3 refuses (COMMITTEE) and 4 never hears:
    both keep their new shares pending, the old version active — nothing is lost, and the
    honest retry (`confirm_pending`) brings everyone onto the new version, which t′ sign."""
    wallet = cluster_wallet(cluster)
    old = codec.decode_key_public(wallet.key_public)

    def client(index: int, url: str, token: str) -> NodeClient:
        forks: dict[int, Callable[[list[ConfirmationBody]], list[ConfirmationBody] | None]] = {
            3: lambda s: [x for x in s if x.signer != 4],
            4: lambda s: None,
        }
        if index not in forks:
            return NodeClient(index, url, token)
        cls = type(f"Fork{index}", (Forking,), {"fork": staticmethod(forks[index])})
        made: NodeClient = cls(index, url, token)
        return made

    async def body() -> None:
        engine = await engine_of(cluster)
        honest = engine.clients
        engine.clients = {n.index: client(n.index, n.url, n.api_token) for n in cluster.nodes}
        try:
            with pytest.raises(ReshareUnconfirmed) as partial:
                await engine.reshare(wallet.name, (1, 2, 3, 4), 3)
            assert partial.value.confirmed and set(partial.value.failed) == {3, 4}
            assert "COMMITTEE" in partial.value.failed[3]
            new = codec.decode_key_public(engine.store.wallet(wallet.name).key_public)
            versions = node_versions(cluster, wallet.key_id)
            assert versions[1][fp(new)] == "active"
            assert versions[3][fp(old)] == "active"  # refused the forked set
            holders = {fp(new): {1, 2, 3, 4}}  # every new share still exists
            assert_on_one_of(cluster, wallet.key_id, {fp(old), fp(new)}, holders)
            engine.clients = honest
            await engine.confirm_pending(wallet.name)
            assert_on_one_of(cluster, wallet.key_id, {fp(new)}, holders)
            await signs(engine, wallet.name, new)
        finally:
            for c in engine.clients.values():
                await c.aclose()

    run(body())
