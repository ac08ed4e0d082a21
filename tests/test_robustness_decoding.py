"""Decoder robustness (issue 9 item 2, attacks.md A17): nesting is capped with a typed error that
names the sender, no nesting level copies its payload, and a deep payload reaching a party
through `receive` makes it blame the sender — never a RecursionError or MemoryError."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import pytest
from conftest import paillier_key, ring_pedersen
from harness import raw_rewrite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wirekit import frame_list, wire

from signer.encoding import MAX_DEPTH, TAG_BYTES, TAG_LIST, Encodable, decode, encode
from signer.errors import Check, EncodingError
from signer.node import codec
from signer.paillier import PaillierPublicKey, PaillierSecretKey
from signer.params import M_ITERATIONS, MODULUS_BITS, PRIME_BITS
from signer.protocol.base import Message, MessageRefused, ProtocolAbort, SessionConfig
from signer.protocol.keygen import KeygenParty
from signer.protocol.simulate import run
from signer.ring_pedersen import RingPedersenParams, RingPedersenSecret
from signer.zk.mod import ModProof
from signer.zk.sch import SchProof

SENDER = 3


def nested(depth: int, leaf: bytes) -> bytes:
    """`leaf` (an encoded value) inside `depth` one-item lists, built without copying per level
    (the test must not need the memory the old decoder did)."""
    headers = []
    length = len(leaf)
    for _ in range(depth):
        length += 4  # the count
        headers.append(struct.pack(">BII", TAG_LIST, length, 1))
        length += 5
    return b"".join(reversed(headers)) + leaf


def depth_of(value: Encodable) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def parties() -> list[KeygenParty]:
    request = b"robustness-decoding-request"
    return [
        KeygenParty(SessionConfig("keygen/v1", (1, 2, 3), i, 2, b"key", request)) for i in (1, 2, 3)
    ]


def round1_from_sender(victim: KeygenParty, payload: bytes) -> Message:
    """A round-1 broadcast from SENDER to `victim` carrying `payload` (authenticated)."""
    return Message("keygen/v1", victim.config.instance(), 1, SENDER, None, payload, True)


def victim_waiting_for_sender() -> KeygenParty:
    """Party 1, started, holding party 2's real round-1 broadcast: SENDER's completes the round
    (a party decodes a round once it holds all of it)."""
    victim, second, _ = parties()
    victim.start()
    (from_second,) = second.start()
    assert victim.receive(from_second) == []
    return victim


# --- the cap -----------------------------------------------------------------------------------


def test_deepest_legitimate_messages_are_well_within_the_cap() -> None:
    """The cap's margin, measured: a Wire message with ListOf fields (Πmod), the round-1 wrapper
    around presign identification's round-1 broadcast, and a whole keygen run's payloads."""
    ones, zeros = (1,) * M_ITERATIONS, (0,) * M_ITERATIONS
    proof = ModProof(3, ones, zeros, zeros, ones)
    assert depth_of(decode(proof.to_bytes())) == 4
    identify_round1: Encodable = [bytes(32), b"", [5, [[2, 7, 8, b"proof"], [4, 7, 8, b"p"]]]]
    assert depth_of(decode(encode(identify_round1))) == 4
    deepest = 0
    queue = [(p, p.start()) for p in parties()]
    by_index = {p.me: p for p, _ in queue}
    pending = [m for _, out in queue for m in out]
    while pending:
        message = pending.pop()
        deepest = max(deepest, depth_of(decode(message.payload)))
        targets = [j for j in by_index if j != message.sender]
        for j in targets if message.recipient is None else [message.recipient]:
            if not by_index[j].done:
                pending.extend(by_index[j].receive(message))
    assert all(p.done for p in by_index.values())
    assert 1 <= deepest <= 4 and 4 * 4 <= MAX_DEPTH


def test_cap_accepts_max_depth_and_refuses_one_more() -> None:
    leaf = encode(b"x")
    assert depth_of(decode(nested(MAX_DEPTH, leaf))) == MAX_DEPTH
    with pytest.raises(EncodingError) as err:
        decode(nested(MAX_DEPTH + 1, leaf), "round 1 from party 3")
    assert err.value.check is Check.LENGTH
    assert err.value.where.startswith("round 1 from party 3")


def test_encoding_unchanged_byte_for_byte() -> None:
    """The offset decoder reads the same frames: a hand-built encoding round-trips exactly."""
    value: Encodable = [b"\x00\x01", 0, -1, 255, "é", [[], [b""]]]
    data = encode(value)
    expected = frame_list(
        [
            struct.pack(">BI", TAG_BYTES, 2) + b"\x00\x01",
            bytes.fromhex("020000000100"),
            bytes.fromhex("02000000020101"),
            bytes.fromhex("020000000200ff"),
            bytes.fromhex("0400000002c3a9"),
            frame_list([frame_list([]), frame_list([struct.pack(">BI", TAG_BYTES, 0)])]),
        ]
    )
    assert data == expected and decode(data) == value


# --- through a party ---------------------------------------------------------------------------


def test_1000_deep_round1_broadcast_of_18kb_blames_its_sender() -> None:
    """The issue's input: ~1000 nested lists (18 KB) as a round-1 broadcast.  Before the cap it
    raised RecursionError out of `blame()` and left the party half-advanced."""
    victim = victim_waiting_for_sender()
    payload = nested(1000, encode(bytes(9000)))
    assert 17_000 < len(payload) < 19_000
    with pytest.raises(ProtocolAbort) as err:
        victim.receive(round1_from_sender(victim, payload))
    abort = err.value
    assert abort.culprits == frozenset({SENDER}) and abort.code is Check.LENGTH
    assert f"from party {SENDER}" in abort.detail
    with pytest.raises(ProtocolAbort) as again:  # terminal: the same verdict for everything
        victim.receive(round1_from_sender(victim, encode([bytes(32), b"", [bytes(32)]])))
    assert again.value is abort


def test_1mib_payload_nested_900_deep_is_rejected_with_bounded_memory() -> None:
    """Each level used to copy its payload: ~900 MiB of peak allocation for this 1 MiB
    broadcast.  Offsets only: the peak stays far below 16 MiB."""
    victim = victim_waiting_for_sender()
    depth = 900
    leaf_size = (1 << 20) - 9 * depth - 5
    payload = nested(depth, encode(bytes(leaf_size)))
    assert len(payload) == 1 << 20
    message = round1_from_sender(victim, payload)
    tracemalloc.start()
    try:
        with pytest.raises(EncodingError):
            decode(payload, "direct")
        with pytest.raises(ProtocolAbort) as err:
            victim.receive(message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.culprits == frozenset({SENDER})
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_shallow_1mib_payload_decodes_with_one_copy_of_its_leaf() -> None:
    """Within the cap, a large leaf costs about its own size once (no per-level copies)."""
    payload = nested(MAX_DEPTH - 1, encode(bytes(1 << 20)))
    tracemalloc.start()
    try:
        decode(payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * (1 << 20)


# --- fuzz --------------------------------------------------------------------------------------

depths = st.one_of(
    st.integers(MAX_DEPTH - 2, MAX_DEPTH + 2), st.integers(MAX_DEPTH + 3, 5000), st.just(5000)
)
leaves = st.one_of(
    st.binary(max_size=64).map(encode),
    st.integers(-(2**64), 2**64).map(encode),
    st.binary(max_size=16),  # raw bytes: usually not a frame at all
)


@settings(max_examples=200, deadline=None)
@given(depth=depths, leaf=leaves, trailing=st.binary(max_size=3))
def test_fuzz_decode_at_any_depth_is_typed(depth: int, leaf: bytes, trailing: bytes) -> None:
    data = nested(depth, leaf) + trailing
    try:
        value = decode(data, "round 2 from party 7")
    except EncodingError as exc:
        assert exc.where.startswith("round 2 from party 7")
        if depth > MAX_DEPTH:
            assert exc.check is Check.LENGTH
        return
    assert depth <= MAX_DEPTH and depth_of(value) >= depth


WIRE_KINDS: list[type[Any]] = [ModProof, SchProof, PaillierPublicKey, RingPedersenParams]


@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from(WIRE_KINDS),
    depth=depths,
    leaf=leaves,
    where=st.sampled_from(["name", "body", "field"]),
)
def test_fuzz_wire_from_bytes_at_any_depth_is_typed(
    kind: type[Any], depth: int, leaf: bytes, where: str
) -> None:
    """Deep nesting in place of the whole message, the field list, or one field's value."""
    deep = nested(depth, leaf)
    if where == "name":
        data = deep
    elif where == "body":
        data = frame_list([encode(kind.WIRE_NAME), deep])
    else:
        first = next(iter(kind.SCHEMA))
        data = frame_list([encode(kind.WIRE_NAME), frame_list([frame_list([encode(first), deep])])])
    with pytest.raises(EncodingError) as err:
        kind.from_bytes(data)
    assert err.value.where.startswith(kind.WIRE_NAME)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=depths, leaf=leaves, position=st.sampled_from(["whole", "payload", "nonce"]))
def test_fuzz_round1_through_receive_blames_the_sender(
    depth: int, leaf: bytes, position: str
) -> None:
    """Deep nesting as the whole round-1 broadcast, as its protocol payload or as its nonce,
    sent by SENDER to everyone through the simulator: every other party aborts naming exactly
    the sender (a shallow payload that decodes fails its round-2 parsing instead — still
    SENDER, whatever the echo says), and stays failed."""
    deep = nested(depth, leaf)
    if position == "whole":
        payload = deep
    elif position == "payload":
        payload = frame_list([encode(bytes(32)), encode(b""), deep])
    else:
        payload = frame_list([deep, encode(b""), encode([bytes(32)])])
    ps = parties()
    outcome = run(ps, mutators={SENDER: raw_rewrite(1, lambda _: payload)})
    for i in (1, 2):
        abort = outcome.aborts[i]
        assert abort.culprits == frozenset({SENDER}), abort
        assert abort.code is not Check.INTERNAL
        with pytest.raises(ProtocolAbort) as again:
            ps[i - 1].receive(round1_from_sender(ps[i - 1], payload))
        assert again.value is abort


def test_message_from_outside_the_party_set_is_refused_without_effect() -> None:
    """A sender outside the session (on a node: another pinned node) is refused and nothing
    changes: the run still completes (issue 9 item 2, A19 T19f)."""
    ps = parties()
    victim = ps[0]
    out = {p.me: p.start() for p in ps}
    stranger = Message("keygen/v1", victim.config.instance(), 1, 4, None, b"\x00" * 8, True)
    with pytest.raises(MessageRefused) as err:
        victim.receive(stranger)
    assert err.value.check is Check.PARTY_INDEX and err.value.sender == 4
    assert victim.aborted is None
    for sender in (2, 3):
        for message in out[sender]:
            victim.receive(message)
    assert victim.aborted is None


# --- sealed Paillier / ring-Pedersen secrets: typed errors, never ZeroDivisionError -----------


def _sharing_factor_pair() -> tuple[int, int]:
    """p = 3·k1, q = 3·k2, both ≡ 3 (mod 4) and of 1536 bits, N of 3072 bits: everything the
    constructor checked before except coprimality."""
    top = (1 << PRIME_BITS) // 3
    k1 = top - (top - 1) % 4  # ≡ 1 (mod 4), so 3·k1 ≡ 3 (mod 4)
    k2 = k1 - 4
    p, q = 3 * k1, 3 * k2
    assert p % 4 == q % 4 == 3 and (p * q).bit_length() == MODULUS_BITS
    return p, q


def _secret_wire(p: int, q: int, s: int, t: int, lam: int) -> bytes:
    values = {"p": p, "q": q, "s": s, "t": t, "lam": lam}
    return wire("ring_pedersen_secret", [(k, encode(v)) for k, v in values.items()])


def _aux_public() -> bytes:
    params = [ring_pedersen(1).params, ring_pedersen(2).params]
    return encode([[1, 2], [[p.n, p.s, p.t] for p in params]])


@pytest.mark.parametrize("case", ["shared-factor", "equal"])
def test_paillier_secret_with_non_coprime_factors_is_an_encoding_error(case: str) -> None:
    p, q = _sharing_factor_pair() if case == "shared-factor" else (paillier_key(1).p,) * 2
    data = wire("paillier_secret_key", [("p", encode(p)), ("q", encode(q))])
    with pytest.raises(EncodingError) as err:
        PaillierSecretKey.from_bytes(data)
    assert err.value.check is Check.MODULUS_FORM


def test_ring_pedersen_secret_with_t_divisible_by_p_is_an_encoding_error() -> None:
    """t ≡ 0 (mod p): the CRT exponentiation used to raise ZeroDivisionError."""
    key = paillier_key(1)
    own = ring_pedersen(1)
    data = _secret_wire(key.p, key.q, own.params.s, key.p, own.lam)
    with pytest.raises(EncodingError) as err:
        RingPedersenSecret.from_bytes(data)
    assert err.value.check is Check.NOT_UNIT
    with pytest.raises(EncodingError):  # the node's path: codec.aux_info on a sealed record
        codec.aux_info(_aux_public(), 1, data)


def test_codec_aux_info_with_non_coprime_factors_is_an_encoding_error() -> None:
    p, q = _sharing_factor_pair()
    own = ring_pedersen(1)
    with pytest.raises(EncodingError) as err:
        codec.aux_info(_aux_public(), 1, _secret_wire(p, q, own.params.s, own.params.t, 5))
    assert err.value.check is Check.MODULUS_FORM
