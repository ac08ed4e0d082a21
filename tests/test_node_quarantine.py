"""Failures as security events (attacks.md A03): the nodes' quarantine and the coordinator's
failure classification, with a malicious node's protocol behaviour behind the real node logic
(real SQLite stores, signed and encrypted envelopes, the real coordinator; see node_local.py).

T03b over nodes: a δ lie makes every signer keep its identification state, the coordinator runs
presign identification, the liar is named and quarantined by the honest node, and signing goes
on without it.  T03c: after one failure that names nobody, the honest nodes refuse every further
session with that party set — even when the coordinator is compromised and keeps asking — so a
liar who fails sessions as a function of a secret bit learns at most one bit.  T03d: only
operational failures are ever retried with the same party set."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import paillier_key
from hypothesis import given
from hypothesis import strategies as st
from node_cluster import run
from node_local import LocalClient, ScriptedNode, make_nodes
from test_protocol_presign_identify import LyingDelta

from coordinator.driver import SessionDriver, SessionFailed
from coordinator.engine import Coordinator, PoolTarget, SetQuarantined, SigningFailed, presign_spec
from coordinator.failures import CONFIGURATION_CODES, FailureKind, classify
from coordinator.store import CoordinatorStore, WalletRow
from signer.encoding import encode
from signer.node import codec
from signer.node.api import SessionState
from signer.node.envelope import Envelope
from signer.node.errors import NodeError
from signer.node.service import NodeService
from signer.node.store import NodeStore, QuarantineRow, StoreError
from signer.problems import ErrorCode
from signer.protocol.base import Message
from signer.protocol.presign import PresignParty
from signer.protocol.sign import HashScheme, message_digest


class BadEcho(PresignParty):
    """Sends an echo digest that matches nobody's view: every honest signer aborts with
    EQUIVOCATION and cannot tell who lied (the sender of the broadcast or the echoer)."""

    def _send_echo(self, number: int) -> list[Message]:
        return [self._message(self._wire_round(number, True), None, encode(bytes(32)))]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ScriptedNode]:
    return make_nodes(tmp_path_factory.mktemp("nodes"), 3)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coordinator") / "coordinator.db"


def coordinator(nodes: dict[int, ScriptedNode], threshold: int, store_path: Path) -> Coordinator:
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    return Coordinator(clients, threshold, CoordinatorStore(store_path))


@pytest.fixture(scope="module")
def wallets(nodes: dict[int, ScriptedNode], store_path: Path) -> dict[str, WalletRow]:
    """A 2-of-3 and a 3-of-3 wallet over one aux-info of nodes 1, 2, 3."""
    two = run(coordinator(nodes, 2, store_path).create_wallet("two"))
    three = run(coordinator(nodes, 3, store_path).create_wallet("three"))
    return {"two": two, "three": three}


@pytest.fixture(autouse=True)
def operator_clears_everything(
    nodes: dict[int, ScriptedNode], store_path: Path
) -> Iterator[None]:
    """After each test the nodes are honest again and their operators (and the coordinator's)
    clear what the test quarantined."""
    yield
    for node in nodes.values():
        node.presign_class = None
        for row in node.store.quarantines():
            node.store.clear_quarantine(row.id or 0, "test teardown")
    store = CoordinatorStore(store_path)
    for entry in store.quarantine_mirror():
        store.clear_quarantine(entry.id or 0, "test teardown")


def entries(node: ScriptedNode) -> set[tuple[str, frozenset[int]]]:
    return {(row.kind, row.members) for row in node.store.quarantines()}


def verify(signature: Any, message: bytes, wallet: WalletRow) -> None:
    key = codec.decode_key_public(wallet.key_public)
    digest = message_digest(message, HashScheme.KECCAK256)
    assert signature.public_key == key.public_key
    assert key.public_key.to_public_key().verify(signature.der(), digest, hasher=None)


def test_T03b_delta_lie_over_nodes_is_identified_and_the_liar_quarantined(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow], store_path: Path
) -> None:
    engine = coordinator(nodes, 2, store_path)

    async def body() -> None:
        wallet = await engine.create_wallet("t03b")  # its own: this test re-shares it at the end
        pooled = await engine.presign(wallet, (1, 3), ())  # honest, before the lie
        nodes[3].presign_class = LyingDelta
        with pytest.raises(SessionFailed) as failed:
            await engine.presign(wallet, (1, 3), ())
        verdict = classify(failed.value)
        assert verdict.kind is FailureKind.ATTRIBUTED and verdict.culprits == {3}
        assert failed.value.identified[1] == {3}
        assert {row.culprit for row in engine.store.blame() if row.reporter == 1} == {3}

        # node 1 froze the set when the output check failed, and named 3 once identified;
        # node 2 took no part and holds nothing against anybody (A20)
        assert entries(nodes[1]) == {("signer_set", frozenset({1, 3})), ("party", frozenset({3}))}
        assert entries(nodes[2]) == set()

        # node 1 refuses a presignature made with 3 before the lie, and keeps it unconsumed
        with pytest.raises(NodeError) as refused:
            nodes[1].sign(
                bytes.fromhex(wallet.key_id),
                bytes.fromhex(pooled.presignature_id),
                b"with the liar",
                HashScheme.KECCAK256,
            )
        assert refused.value.code is ErrorCode.QUARANTINED
        assert "[1,3]" in refused.value.detail or "party 3" in refused.value.detail
        row = nodes[1].store.presignature(pooled.presignature_id)
        assert row is not None and row.state == "available"

        # a new session with 3 is refused by node 1 itself, whoever asks
        spec = presign_spec(wallet, (1, 3))
        with pytest.raises(NodeError, match="QUARANTINED"):
            nodes[1].start(spec)
        # the coordinator stops using 3 as well, and signs with the others
        with pytest.raises(SetQuarantined):
            await engine.presign(wallet, (1, 3), ())
        message = b"after the liar"
        outcome = await engine.sign("t03b", message, HashScheme.KECCAK256, preferred=(1, 3))
        assert outcome.signers == (1, 2)
        verify(outcome.signature, message, wallet)

        # the way out: re-share the key to the honest nodes; the liar is no dealer by default
        # (its fresh aux-info must not bring back a replaced modulus: other fixture keys)
        sources = {j: node._paillier for j, node in nodes.items()}
        for j, node in nodes.items():
            node._paillier = lambda j=j: paillier_key(j + 6)  # type: ignore[misc]
        try:
            moved = await engine.reshare("t03b", (1, 2), 2)
        finally:
            for j, node in nodes.items():
                node._paillier = sources[j]
        assert moved.epoch == wallet.epoch + 1 and moved.key_public != wallet.key_public
        assert codec.decode_key_public(moved.key_public).parties == (1, 2)
        outcome = await engine.sign("t03b", b"moved", HashScheme.KECCAK256)
        verify(outcome.signature, b"moved", moved)

    run(body())


def test_T03c_no_oracle_even_through_a_compromised_coordinator(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow]
) -> None:
    """Party 3 fails session j iff bit j of a target is set; the coordinator is the attacker's
    too and keeps starting sessions (it skips the engine, so nothing of the coordinator's own
    quarantine mirror applies).  The honest nodes 1 and 2 run one failed session, then refuse."""
    wallet = wallets["three"]
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    driver = SessionDriver(clients)
    target = [1 if secrets.randbits(1) else 0 for _ in range(300)]
    target[0], target[1] = 0, 1  # one success, then the first failure

    async def body() -> tuple[int, int, int]:
        succeeded = failed = refused = 0
        for bit in target:
            nodes[3].presign_class = BadEcho if bit else None
            try:
                await driver.run(presign_spec(wallet, (1, 2, 3)))
                succeeded += 1
            except SessionFailed as failure:
                if failure.aborts:
                    failed += 1
                    assert set(failure.aborts) >= {1, 2}
                    assert all(a["code"] == "EQUIVOCATION" for a in failure.aborts.values())
                else:
                    assert failure.refused == {
                        1: ErrorCode.QUARANTINED,
                        2: ErrorCode.QUARANTINED,
                    }
                    refused += 1
        return succeeded, failed, refused

    succeeded, failed, refused = run(body())
    assert (succeeded, failed, refused) == (1, 1, 298)
    for honest in (1, 2):
        assert entries(nodes[honest]) == {("signer_set", frozenset({1, 2, 3}))}
        assert nodes[honest].running_sessions == 0


def test_T03c_concurrent_sessions_stop_with_the_first_failure(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow]
) -> None:
    """Several sessions of the same set in flight: when one fails, the others are halted at
    their next delivery (QUARANTINED), so running sessions side by side multiplies nothing."""
    wallet = wallets["three"]
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    driver = SessionDriver(clients)
    nodes[3].presign_class = BadEcho

    async def body() -> list[BaseException | dict[int, Any]]:
        specs = [presign_spec(wallet, (1, 2, 3)) for _ in range(3)]
        return await asyncio.gather(*(driver.run(s) for s in specs), return_exceptions=True)

    outcomes = run(body())
    assert all(isinstance(o, SessionFailed) for o in outcomes)
    codes = sorted(
        {a["code"] for o in outcomes if isinstance(o, SessionFailed) for a in o.aborts.values()}
    )
    assert "EQUIVOCATION" in codes and set(codes) <= {"EQUIVOCATION", "QUARANTINED"}
    for failure in outcomes:
        assert isinstance(failure, SessionFailed)
        assert classify(failure).kind in (FailureKind.UNATTRIBUTED, FailureKind.QUARANTINED)
    assert nodes[1].running_sessions == 0 and nodes[2].running_sessions == 0


def test_T03d_honest_coordinator_never_retries_a_set_after_a_cryptographic_failure(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow], store_path: Path
) -> None:
    engine = coordinator(nodes, 3, store_path)
    nodes[3].presign_class = BadEcho
    before = nodes[1].starts.get("presign/v1", 0)

    async def body() -> None:
        with pytest.raises(SigningFailed) as first:
            await engine.sign("three", b"first", HashScheme.KECCAK256)
        assert len(first.value.attempts) == 1 and "unattributed" in first.value.attempts[0]
        (entry,) = engine.store.quarantine_mirror()
        assert entry.kind == "signer_set" and entry.members == {1, 2, 3}
        # the only set of a 3-of-3 wallet is in the quarantine mirror: nothing is even started
        with pytest.raises(SigningFailed) as second:
            await engine.sign("three", b"second", HashScheme.KECCAK256)
        assert second.value.attempts == []

    run(body())
    assert nodes[1].starts.get("presign/v1", 0) == before + 1


def test_pool_keeper_leaves_a_target_alone_after_a_security_event(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow], store_path: Path
) -> None:
    engine = coordinator(nodes, 3, store_path)
    nodes[3].presign_class = BadEcho
    before = nodes[3].starts.get("presign/v1", 0)

    async def body() -> None:
        stop = asyncio.Event()
        keeper = asyncio.create_task(
            engine.keep_pools([PoolTarget("three", (1, 2, 3), (), depth=1)], stop, interval=0.05)
        )
        await asyncio.sleep(2.0)  # about forty keeper passes
        stop.set()
        await keeper

    run(body())
    assert nodes[3].starts.get("presign/v1", 0) == before + 1


class Equivocating(LocalClient):
    """Node 3 signs a second, different round-1 broadcast and hands both to the (honest)
    coordinator, which relays every envelope to every other party."""

    async def start(self, spec: dict[str, Any]) -> SessionState:
        reply = await super().start(spec)
        twins = []
        for doc in reply.envelopes:
            envelope = Envelope.from_dict(doc)
            if envelope.broadcast:
                body = envelope.body[:-1] + bytes([envelope.body[-1] ^ 1])
                message = Message(
                    envelope.protocol, envelope.session, envelope.round, 3, None, body, True
                )
                twins.append(self.node.endpoint.seal(message).to_dict())
        return reply.model_copy(update={"envelopes": [*reply.envelopes, *twins]})


def test_T12a_equivocation_is_proven_by_two_signatures_and_the_sender_quarantined(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow]
) -> None:
    wallet = wallets["three"]
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    clients[3] = Equivocating(3, nodes[3])
    with pytest.raises(SessionFailed) as failed:
        run(SessionDriver(clients).run(presign_spec(wallet, (1, 2, 3))))
    for honest in (1, 2):
        abort = failed.value.aborts[honest]
        assert (abort["code"], abort["culprits"], abort["round"]) == ("EQUIVOCATION", [3], 1)
        assert entries(nodes[honest]) == {("party", frozenset({3}))}
    assert classify(failed.value).culprits == {3}


def test_A20_a_replayed_request_cannot_make_an_honest_node_sign_twice(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow]
) -> None:
    """A coordinator that cancels a session and starts the same request again — on the same
    node or after a restart — would get two different signed round-1 messages of an honest node,
    enough to frame it for equivocation.  The node refuses the second start, durably."""
    wallet = wallets["two"]
    spec = presign_spec(wallet, (1, 2))
    first = nodes[2].start(spec)
    assert first.status == "running" and first.envelopes
    assert nodes[2].cancel(first.session)
    with pytest.raises(NodeError) as again:
        nodes[2].start(spec)
    assert again.value.code is ErrorCode.DUPLICATE_SESSION
    node = nodes[2]
    restarted = NodeService(
        node.node_id,
        node.index,
        NodeStore(node.store.path),
        node.sealer,
        node.endpoint,
        node._paillier,
    )
    with pytest.raises(NodeError) as after_restart:
        restarted.start(spec)
    assert after_restart.value.code is ErrorCode.DUPLICATE_SESSION
    restarted.store.close()


def test_coordinator_mirrors_a_nodes_quarantine_and_signs_around_it(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow], store_path: Path
) -> None:
    """Node 1 holds an entry against 3 that the coordinator never saw (an earlier failure under
    another coordinator): the refusal is mirrored in the quarantine mirror, the request is served by
    another set, and the next request does not ask node 1 about 3 again."""
    wallet = wallets["two"]
    nodes[1].store.quarantine(
        QuarantineRow(
            kind="party",
            parties="3",
            key_id=wallet.key_id,
            protocol="presign/v1",
            session="00" * 32,
            code="RANGE",
            detail="an earlier Πenc of party 3 failed",
            created_at=time.time(),
        )
    )
    engine = coordinator(nodes, 2, store_path)

    async def body() -> None:
        first = await engine.sign("two", b"around", HashScheme.KECCAK256, preferred=(1, 3))
        assert first.signers != (1, 3) and any("QUARANTINED" in a for a in first.attempts)
        verify(first.signature, b"around", wallet)
        assert [(r.kind, r.members) for r in engine.store.quarantine_mirror()] == [
            ("signer_set", frozenset({1, 3}))
        ]
        before = nodes[1].starts.get("presign/v1", 0)
        second = await engine.sign("two", b"again", HashScheme.KECCAK256, preferred=(1, 3))
        assert second.signers != (1, 3) and not any("QUARANTINED" in a for a in second.attempts)
        assert nodes[1].starts.get("presign/v1", 0) <= before + 1  # at most the (1, 2) presign

    run(body())


def test_clearing_is_the_operators_and_lifts_exactly_one_entry(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow]
) -> None:
    wallet = wallets["two"]
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    driver = SessionDriver(clients)
    nodes[3].presign_class = LyingDelta
    with pytest.raises(SessionFailed):
        run(driver.run(presign_spec(wallet, (1, 3))))
    (frozen,) = nodes[1].store.quarantines()  # no identification ran: the set is frozen
    assert frozen.kind == "signer_set" and frozen.members == {1, 3}
    assert frozen.code == "EQUATION" and frozen.protocol == "presign/v1"
    with pytest.raises(NodeError, match="QUARANTINED"):
        nodes[1].start(presign_spec(wallet, (1, 3)))
    assert nodes[1].store.blocking((1, 2)) is None  # other sets are unaffected
    cleared = nodes[1].store.clear_quarantine(frozen.id or 0, "node 3 rebuilt from scratch")
    assert cleared.cleared_reason == "node 3 rebuilt from scratch"
    assert nodes[1].store.blocking((1, 3)) is None
    kept = {row.id: row for row in nodes[1].store.quarantines(include_cleared=True)}
    assert kept[frozen.id].cleared_at is not None  # kept on record, marked cleared
    with pytest.raises(StoreError, match="already cleared"):
        nodes[1].store.clear_quarantine(frozen.id or 0, "again")
    with pytest.raises(StoreError, match="needs a reason"):
        nodes[1].store.clear_quarantine(frozen.id or 0, "  ")


def test_configuration_mismatch_is_not_a_security_event(
    nodes: dict[int, ScriptedNode], wallets: dict[str, WalletRow]
) -> None:
    """A node given another derivation path than its peers (a coordinator's mistake or lie):
    the round-1 session contexts differ, found before any secret is used — nothing is frozen,
    nobody is blamed, and the failure classifies as configuration (not retried either)."""
    wallet = wallets["two"]
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}

    class OtherPath(LocalClient):
        async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
            return await super().start({**spec, "path": [7]})

    clients[2] = OtherPath(2, nodes[2])
    with pytest.raises(SessionFailed) as failed:
        run(SessionDriver(clients).run(presign_spec(wallet, (1, 2))))
    assert {a["code"] for a in failed.value.aborts.values()} == {"MISMATCH"}
    verdict = classify(failed.value)
    assert verdict.kind is FailureKind.CONFIGURATION
    assert not verdict.retry_same_set and not verdict.security_event
    assert entries(nodes[1]) == set() and entries(nodes[2]) == set()


# --- the classifier on its own (T03d) ---------------------------------------------------------

CRYPTO_CODES = ["EQUATION", "RANGE", "EQUIVOCATION", "DECODE", "NOT_UNIT", "ON_CURVE"]


def failure(
    aborts: dict[int, dict[str, Any]] | None = None,
    unavailable: dict[int, str] | None = None,
    stalled: tuple[int, ...] = (),
    refused: dict[int, str] | None = None,
) -> SessionFailed:
    return SessionFailed("presign/v1", aborts or {}, unavailable or {}, stalled, refused)


def test_T03d_timeouts_and_cryptographic_failures_are_distinct() -> None:
    stalled = classify(failure(stalled=(1, 2)))
    assert stalled.kind is FailureKind.UNAVAILABLE and stalled.retry_same_set
    down = classify(failure(unavailable={3: "node 3 unavailable: ConnectError"}, stalled=(1,)))
    assert down.kind is FailureKind.UNAVAILABLE and down.exclude == {3}
    crypto = classify(failure({1: {"code": "EQUIVOCATION", "culprits": []}}))
    assert crypto.kind is FailureKind.UNATTRIBUTED and not crypto.retry_same_set
    named = classify(failure({1: {"code": "RANGE", "culprits": [3]}}, stalled=(2,)))
    assert named.kind is FailureKind.ATTRIBUTED and named.exclude == {3}
    pending = classify(failure({1: {"code": "EQUATION", "culprits": [], "identification": "ab"}}))
    assert pending.kind is FailureKind.IDENTIFICATION and pending.identification == "ab"
    quarantined = classify(
        failure(unavailable={1: "refused"}, refused={1: ErrorCode.QUARANTINED}, stalled=(2,))
    )
    assert quarantined.kind is FailureKind.QUARANTINED and quarantined.exclude == frozenset()
    assert not quarantined.retry_same_set
    mismatch = classify(failure({1: {"code": "MISMATCH", "culprits": []}}))
    assert mismatch.kind is FailureKind.CONFIGURATION and not mismatch.security_event


@given(
    st.dictionaries(
        st.integers(1, 5),
        st.fixed_dictionaries(
            {
                "code": st.sampled_from(CRYPTO_CODES + sorted(CONFIGURATION_CODES)),
                "culprits": st.lists(st.integers(1, 5), max_size=2),
            }
        ),
        min_size=1,
    ),
    st.dictionaries(st.integers(1, 5), st.just("down"), max_size=2),
)
def test_T03d_no_cryptographic_failure_is_ever_retryable(
    aborts: dict[int, dict[str, Any]], unavailable: dict[int, str]
) -> None:
    verdict = classify(failure(aborts, unavailable))
    crypto = any(a["code"] not in CONFIGURATION_CODES or a["culprits"] for a in aborts.values())
    assert not verdict.retry_same_set
    assert verdict.security_event == crypto
