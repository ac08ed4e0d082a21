"""Node-to-node message protection (signer/node/envelope.py): signatures by pinned identity
keys, point-to-point encryption, and a typed rejection for every tampering, replay into another
cluster, unpinned sender or misdirected message."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from node_local import make_endpoints

from signer.node.envelope import Endpoint, Envelope, EnvelopeRejected, NodeCard, Roster
from signer.protocol.base import Message

CLUSTER = b"c" * 32
SESSION = secrets.token_bytes(32)


def make_cluster(n: int = 3, cluster: bytes = CLUSTER) -> dict[int, Endpoint]:
    return make_endpoints(n, cluster)


def p2p(sender: int, recipient: int, payload: bytes = b"share") -> Message:
    return Message("keygen/v1", SESSION, 3, sender, recipient, payload, False)


def broadcast(sender: int, payload: bytes = b"commitment") -> Message:
    return Message("keygen/v1", SESSION, 1, sender, None, payload, True)


def test_round_trip_broadcast_and_p2p() -> None:
    nodes = make_cluster()
    for message in (broadcast(1), p2p(1, 2)):
        envelope = nodes[1].seal(message)
        wire = Envelope.from_dict(envelope.to_dict())
        receiver = 2 if not message.broadcast else 3
        assert nodes[receiver].open(wire) == message


def test_point_to_point_payload_is_not_visible_on_the_wire() -> None:
    nodes = make_cluster()
    secret = secrets.token_bytes(64)
    envelope = nodes[1].seal(p2p(1, 2, secret))
    assert secret not in envelope.body and secret.hex() not in str(envelope.to_dict())
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[3].open(envelope)  # a third node cannot read (or accept) it
    assert caught.value.check == "RECIPIENT" and caught.value.sender == 1


@pytest.mark.parametrize("field", ["body", "salt", "session", "round", "protocol", "recipient"])
def test_any_tampering_is_rejected_naming_the_sender(field: str) -> None:
    nodes = make_cluster()
    envelope = nodes[1].seal(p2p(1, 2))
    changed = {
        "body": bytes([envelope.body[0] ^ 1]) + envelope.body[1:],
        "salt": secrets.token_bytes(16),
        "session": secrets.token_bytes(32),
        "round": envelope.round + 1,
        "protocol": "presign/v1",
        "recipient": 3,
    }[field]
    tampered = replace(envelope, **{field: changed})
    receiver = 3 if field == "recipient" else 2
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[receiver].open(tampered)
    assert caught.value.sender == 1
    assert caught.value.check == "SIGNATURE"


def test_resigned_by_another_node_is_rejected() -> None:
    """Node 3 re-signs node 1's message as if it were its own claim of being 1."""
    nodes = make_cluster()
    envelope = nodes[1].seal(broadcast(1))
    forged = replace(envelope, signature=nodes[3].signer.sign_identity(envelope.signed_bytes()))
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[2].open(forged)
    assert caught.value.check == "SIGNATURE"


def test_unpinned_sender_and_other_cluster_are_rejected() -> None:
    nodes = make_cluster()
    outsider = make_cluster(4, CLUSTER)[4]  # same cluster id, but not in the pinned roster
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[1].open(outsider.seal(broadcast(4)))
    assert caught.value.check == "UNKNOWN_SENDER"
    other = make_cluster(3, b"d" * 32)
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[2].open(other[1].seal(broadcast(1)))
    assert caught.value.check == "CLUSTER"
    # the same index in another cluster's roster has another identity key: a replay fails too
    replayed = replace(other[1].seal(broadcast(1)), cluster_id=CLUSTER)
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[2].open(replayed)
    assert caught.value.check == "SIGNATURE"


def test_p2p_decrypt_failure_is_typed() -> None:
    """A validly signed p2p envelope whose ciphertext was made for another key (the sender's
    bug or attack) fails authentication as DECRYPT, naming the sender."""
    nodes = make_cluster()
    envelope = nodes[1].seal(p2p(1, 2))
    garbage = replace(envelope, body=secrets.token_bytes(len(envelope.body)))
    resigned = replace(garbage, signature=nodes[1].signer.sign_identity(garbage.signed_bytes()))
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[2].open(resigned)
    assert caught.value.check == "DECRYPT" and caught.value.sender == 1


def test_sender_cannot_seal_for_another_party_or_claim_to_be_the_receiver() -> None:
    nodes = make_cluster()
    with pytest.raises(EnvelopeRejected):
        nodes[1].seal(broadcast(2))
    with pytest.raises(EnvelopeRejected) as caught:
        nodes[2].open(nodes[2].seal(broadcast(2)))
    assert caught.value.check == "UNKNOWN_SENDER"


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"sender": 1},
        {"sender": "1", "round": 1},
        {"sender": 1, "round": True, "recipient": None, "broadcast": True},
    ],
)
def test_malformed_envelopes_are_format_errors(doc: dict[str, object]) -> None:
    with pytest.raises(EnvelopeRejected) as caught:
        Envelope.from_dict(doc)
    assert caught.value.check == "FORMAT"


def test_cards_must_be_self_signed_and_consistent() -> None:
    nodes = make_cluster()
    card = nodes[1].roster.card(1)
    with pytest.raises(EnvelopeRejected):
        NodeCard.from_dict({**card.to_dict(), "url": "http://evil"})
    assert NodeCard.from_dict(card.to_dict()) == card
    with pytest.raises(EnvelopeRejected):
        Roster(CLUSTER, {2: card})  # filed under the wrong index
    other = nodes[2].roster.card(2)
    with pytest.raises(EnvelopeRejected):
        Roster(CLUSTER, {1: card, 2: replace(other, node_id="node-1").signed_by(nodes[2].signer)})


@settings(max_examples=25, deadline=None)
@given(payload=st.binary(min_size=0, max_size=2048), to_all=st.booleans())
def test_any_payload_round_trips(payload: bytes, to_all: bool) -> None:
    nodes = _NODES
    message = broadcast(2, payload) if to_all else p2p(2, 3, payload)
    assert nodes[3].open(Envelope.from_dict(nodes[2].seal(message).to_dict())) == message


_NODES = make_cluster()
