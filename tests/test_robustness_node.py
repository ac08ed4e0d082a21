"""A node's sessions under hostile input (issue 9 item 2): real `NodeService`s with SQLite
stores and signed, encrypted envelopes (tests/node_local.py), relayed by a minimal in-test relay.

- a pinned node that is not a party of a session cannot abort it with one signed envelope: the
  envelope is dropped and reported, the session completes (attacks.md A19 T19f);
- a deeply nested payload from a party is that party's fault: the session aborts naming it and
  the node quarantines it — no 500, no session left running (A17, A03);
- an unexpected exception inside the party is a terminal INTERNAL abort: an unattributed
  security event that freezes the party set, answered as a normal reply (A03);
- a delivery to a session that already failed gets a typed refusal.
"""

from __future__ import annotations

import dataclasses
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import paillier_key
from node_local import ScriptedNode, make_nodes

from signer.encoding import TAG_LIST, encode
from signer.errors import Check
from signer.node.api import AuxResult, KeyResult
from signer.node.envelope import Envelope
from signer.node.errors import NodeError
from signer.node.service import SessionReply
from signer.node.spec import SessionSpec
from signer.problems import ErrorCode
from signer.protocol.base import Inbox, Message, Outgoing, Party, SessionConfig
from signer.protocol.keygen import KeygenParty

PARTIES = (1, 2, 3)


def keygen_spec() -> SessionSpec:
    return SessionSpec(
        protocol="keygen/v1",
        request=secrets.token_bytes(16),
        parties=PARTIES,
        threshold=2,
        key_id=secrets.token_bytes(16),
    )


def start_all(nodes: dict[int, ScriptedNode], spec: SessionSpec) -> dict[int, SessionReply]:
    return {i: nodes[i].start(spec) for i in spec.parties}


def relay(
    nodes: dict[int, ScriptedNode],
    spec: SessionSpec,
    replies: dict[int, SessionReply],
    *,
    hold: Callable[[Envelope], bool] = lambda _: False,
) -> dict[int, SessionReply]:
    """Deliver every envelope to its recipients (every other party for a broadcast) until no
    node has anything to send; returns each node's last reply."""
    last = dict(replies)
    queue = [e for r in replies.values() for e in r.envelopes]
    while queue:
        envelope = queue.pop(0)
        if hold(envelope):
            continue
        targets = (
            [envelope.recipient]
            if envelope.recipient is not None
            else [j for j in spec.parties if j != envelope.sender]
        )
        for j in targets:
            if last[j].status != "running":
                continue
            reply = nodes[j].deliver(last[j].session, [envelope])
            last[j] = reply
            queue.extend(reply.envelopes)
    return last


def nested(depth: int, leaf: bytes) -> bytes:
    headers, length = [], len(leaf)
    for _ in range(depth):
        length += 4
        headers.append(struct.pack(">BII", TAG_LIST, length, 1))
        length += 5
    return b"".join(reversed(headers)) + leaf


@pytest.fixture
def nodes(tmp_path: Path) -> dict[int, ScriptedNode]:
    return make_nodes(tmp_path, 4)  # node 4 is pinned by everyone but in no session here


def test_pinned_non_party_cannot_abort_a_session(nodes: dict[int, ScriptedNode]) -> None:
    """Node 4 signs and sends round-1 envelopes (broadcast and point-to-point) into a session of
    1, 2, 3.  Before: `PARTY_INDEX`, no culprit, session aborted.  Now: dropped, reported in the
    reply's rejected list, and the session completes on every node."""
    spec = keygen_spec()
    replies = start_all(nodes, spec)
    instance = replies[1].session
    stranger = nodes[4].endpoint
    intrusions = [
        stranger.seal(Message("keygen/v1", instance, 1, 4, None, encode([b"x"]), True)),
        stranger.seal(Message("keygen/v1", instance, 3, 4, 1, encode(5), False)),
    ]
    reply = nodes[1].deliver(instance, intrusions)
    assert reply.status == "running"
    assert reply.abort is not None
    rejected = reply.abort["rejected"]
    assert [r["sender"] for r in rejected] == [4, 4]
    assert all(r["check"] == Check.PARTY_INDEX.value for r in rejected)
    final = relay(nodes, spec, replies)
    assert all(final[i].status == "done" for i in PARTIES), {i: final[i].abort for i in PARTIES}
    keys = {r.key_public for i in PARTIES if isinstance(r := final[i].result, KeyResult)}
    assert len(keys) == 1
    assert nodes[1].store.quarantines() == []


def test_deeply_nested_payload_blames_and_quarantines_its_sender(
    nodes: dict[int, ScriptedNode],
) -> None:
    """Party 3's round-1 broadcast is ~1000 nested lists (18 KB).  Before: RecursionError, a 500
    from `deliver`, the session left running, nothing quarantined.  Now: aborted naming 3, and
    3 quarantined in node 1's own database."""
    spec = keygen_spec()
    replies = start_all(nodes, spec)
    instance = replies[1].session
    deep = nested(1000, encode(bytes(9000)))
    bomb = nodes[3].endpoint.seal(Message("keygen/v1", instance, 1, 3, None, deep, True))
    from_2 = [e for e in replies[2].envelopes if e.recipient in (None, 1)]
    reply = nodes[1].deliver(instance, [*from_2, bomb])
    assert reply.status == "aborted" and reply.abort is not None
    assert reply.abort["culprits"] == [3] and reply.abort["code"] == Check.LENGTH.value
    quarantined = nodes[1].store.quarantines()
    assert [(q.kind, q.parties) for q in quarantined] == [("party", "3")]
    # the session is gone: a later delivery is a typed refusal, not a 500
    with pytest.raises(NodeError) as err:
        nodes[1].deliver(instance, from_2)
    assert err.value.code is ErrorCode.UNKNOWN_SESSION


class Crashes(KeygenParty):
    """An unexpected exception of our own in round `AT` (a bug, not a peer's doing)."""

    AT = 2

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number == self.AT:
            raise ZeroDivisionError("injected")
        return super()._round(number, inbox)


class CrashesAtStart(Crashes):
    AT = 1


class CrashingNode(ScriptedNode):
    keygen_class: type[KeygenParty] = Crashes

    def _party(
        self, spec: SessionSpec, config: SessionConfig
    ) -> tuple[Party[Any], Callable[[Any], dict[str, Any]]]:
        party, finish = super()._party(spec, config)
        if spec.protocol == "keygen/v1":
            party = self.keygen_class(config)
        return party, finish


def _crashing(nodes: dict[int, ScriptedNode], cls: type[KeygenParty]) -> CrashingNode:
    node = nodes[1]
    crashing = CrashingNode(
        node.node_id,
        node.index,
        node.store,
        node.sealer,
        node.endpoint,
        node._paillier,
        enforcement=node.enforcement,  # the same node: raw keys, no policy
    )
    crashing.keygen_class = cls
    nodes[1] = crashing
    return crashing


def test_internal_failure_is_a_terminal_unattributed_security_event(
    nodes: dict[int, ScriptedNode],
) -> None:
    crashing = _crashing(nodes, Crashes)
    spec = keygen_spec()
    replies = start_all(nodes, spec)
    final = relay(nodes, spec, replies)  # deliver never raises for the failure
    abort = final[1].abort
    assert final[1].status == "aborted" and abort is not None
    assert abort["code"] == Check.INTERNAL.value and abort["culprits"] == []
    assert "ZeroDivisionError" in abort["detail"]
    frozen = crashing.store.quarantines()
    assert [(q.kind, q.parties, q.code) for q in frozen] == [("signer_set", "1,2,3", "INTERNAL")]
    with pytest.raises(NodeError) as err:
        crashing.deliver(final[1].session, [])
    assert err.value.code is ErrorCode.UNKNOWN_SESSION


def test_internal_failure_in_round_one_answers_the_start(nodes: dict[int, ScriptedNode]) -> None:
    crashing = _crashing(nodes, CrashesAtStart)
    reply = crashing.start(keygen_spec())
    assert reply.status == "aborted" and reply.abort is not None
    assert reply.abort["code"] == Check.INTERNAL.value and reply.envelopes == []
    assert [q.kind for q in crashing.store.quarantines()] == ["signer_set"]


def aux_spec(aux_id: bytes = b"") -> SessionSpec:
    return SessionSpec(
        protocol="aux_info/v1",
        request=secrets.token_bytes(16),
        parties=PARTIES,
        threshold=2,
        key_id=b"aux",
        aux_id=aux_id,
    )


def test_aux_info_replacing_a_set_refuses_a_reused_modulus(
    nodes: dict[int, ScriptedNode],
) -> None:
    """Refresh runs aux-info with `aux_id` naming the set it replaces (coordinator
    `run_aux_info(replaces=…)`).  A node whose own key would come back refuses to start; nodes
    that are told the old set name a peer that brings its old modulus back (DUPLICATE), even if
    that peer was started without `aux_id`, and quarantine it."""
    spec = aux_spec()
    first = relay(nodes, spec, start_all(nodes, spec))
    assert all(first[i].status == "done" for i in PARTIES)
    result = first[1].result
    assert isinstance(result, AuxResult)
    old = bytes.fromhex(result.aux_id)
    # node 3's key source still yields its old key: told what is replaced, it refuses
    with pytest.raises(NodeError) as err:
        nodes[3].start(aux_spec(old))
    assert err.value.code is ErrorCode.BAD_REQUEST
    # nodes 1 and 2 have fresh keys and the old set's id; node 3 runs without it
    nodes[1]._paillier = lambda: paillier_key(8)
    nodes[2]._paillier = lambda: paillier_key(9)
    replacing = aux_spec(old)
    replies = {i: nodes[i].start(replacing) for i in (1, 2)}
    replies[3] = nodes[3].start(dataclasses.replace(replacing, aux_id=b""))
    final = relay(nodes, replacing, replies)
    for i in (1, 2):
        abort = final[i].abort
        assert final[i].status == "aborted" and abort is not None
        assert abort["culprits"] == [3] and abort["code"] == Check.DUPLICATE.value
        assert [(q.kind, q.parties) for q in nodes[i].store.quarantines()] == [("party", "3")]
