"""Canonical encoding and Fiat–Shamir transcript (attacks.md A04 α-shuffle, A13, A17)."""

from __future__ import annotations

import struct

import pytest
from conftest import paillier_key
from hypothesis import given
from hypothesis import strategies as st

from signer.curve import Point, Q
from signer.encoding import MAX_ENCODED_BYTES, decode, encode
from signer.errors import Check, EncodingError
from signer.transcript import Transcript

points = st.integers(min_value=1, max_value=Q - 1).map(Point.base_mul)
leaves = st.one_of(
    st.binary(max_size=40),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.text(max_size=10),
    points,
)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def _normalise(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_normalise(v) for v in value]
    return value


@given(values)
def test_T04a_round_trip(value: object) -> None:
    assert decode(encode(value)) == _normalise(value)  # type: ignore[arg-type]


@given(values, values)
def test_T04a_encoding_injective(a: object, b: object) -> None:
    if _normalise(a) != _normalise(b):
        assert encode(a) != encode(b)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "left, right",
    [
        (["a$", "b"], ["a", "$b"]),
        ([b"\x01\x02"], [b"\x01", b"\x02"]),
        ([0x0100], [0x01, 0x00]),
        ([b"", b"x"], [b"x", b""]),
        ([1], [b"\x01"]),  # same bytes, different types
        ([-1], [1]),
        ([[1, 2]], [1, 2]),
        (["big.Int"], [b"big.Int"]),
    ],
)
def test_T04c_known_collisions(left: list[object], right: list[object]) -> None:
    assert encode(left) != encode(right)  # type: ignore[arg-type]
    t1, t2 = Transcript("x"), Transcript("x")
    for v in left:
        t1.append("item", v)  # type: ignore[arg-type]
    for v in right:
        t2.append("item", v)  # type: ignore[arg-type]
    assert t1.challenge_signed("e") != t2.challenge_signed("e")


@pytest.mark.parametrize(
    "raw, check",
    [
        (b"", Check.DECODE),
        (b"\x01\x00\x00\x00", Check.DECODE),  # truncated header
        (b"\x01\x00\x00\x00\x05ab", Check.DECODE),  # length past the end
        (encode(b"ab") + b"\x00", Check.DECODE),  # trailing byte
        (b"\x09\x00\x00\x00\x00", Check.DECODE),  # unknown tag
        (b"\x02\x00\x00\x00\x00", Check.DECODE),  # int without sign byte
        (b"\x02\x00\x00\x00\x02\x02\x01", Check.DECODE),  # bad sign byte
        (b"\x02\x00\x00\x00\x02\x00\x00", Check.DECODE),  # leading zero: non-minimal
        (b"\x02\x00\x00\x00\x01\x01", Check.DECODE),  # negative zero
        (b"\x03\x00\x00\x00\x02\x02\x01", Check.BAD_POINT),  # short point
        (b"\x03\x00\x00\x00\x21" + bytes(33), Check.BAD_POINT),  # identity-like point
        (b"\x04\x00\x00\x00\x01\xff", Check.DECODE),  # invalid utf-8
        (b"\x05\x00\x00\x00\x02\x00\x00", Check.DECODE),  # list without count
        (b"\x05\x00\x00\x00\x04\xff\xff\xff\xff", Check.DECODE),  # absurd count
        (
            b"\x05" + struct.pack(">I", 4 + 6) + struct.pack(">I", 1) + encode(b"a") + b"\x00",
            Check.DECODE,
        ),
    ],
)
def test_strict_decoder(raw: bytes, check: Check) -> None:
    with pytest.raises(EncodingError) as err:
        decode(raw)
    assert err.value.check == check


def test_T17e_oversize_input_rejected_before_parsing() -> None:
    with pytest.raises(EncodingError) as err:
        decode(b"\x02" + struct.pack(">I", MAX_ENCODED_BYTES) + bytes(MAX_ENCODED_BYTES))
    assert err.value.check == Check.LENGTH


def test_encode_rejects_bool_and_unknown_types() -> None:
    with pytest.raises(TypeError):
        encode(True)
    with pytest.raises(TypeError):
        encode(1.5)  # type: ignore[arg-type]


# --- transcript ---------------------------------------------------------------------------------


def test_transcript_is_deterministic_and_domain_separated() -> None:
    def run(domain: str, label: str, value: int) -> int:
        t = Transcript(domain)
        t.append(label, value)
        return t.challenge_signed("e")

    assert run("d", "x", 1) == run("d", "x", 1)
    assert run("d", "x", 1) != run("d2", "x", 1)
    assert run("d", "x", 1) != run("d", "y", 1)
    assert run("d", "x", 1) != run("d", "x", 2)


def test_challenges_depend_on_earlier_challenges() -> None:
    t = Transcript("d")
    first = t.challenge_signed("e")
    second = t.challenge_signed("e")
    assert first != second
    fork = Transcript("d")
    fork.challenge_signed("e")
    assert fork.challenge_signed("e") == second


def test_challenge_ranges() -> None:
    seen_negative = seen_positive = False
    for i in range(200):
        t = Transcript("range")
        t.append("i", i)
        e = t.challenge_signed("e")
        assert -Q <= e <= Q
        seen_negative |= e < 0
        seen_positive |= e > 0
        assert 0 <= t.challenge_scalar("s") < Q
    assert seen_negative and seen_positive
    bits = Transcript("bits").challenge_bits("e", 128)
    assert len(bits) == 128 and set(bits) <= {0, 1} and 20 < sum(bits) < 108


def test_T08a_unit_challenges_distinct_and_in_group() -> None:
    from math import gcd

    n = paillier_key(0).n
    ys = Transcript("mod").challenge_units("y", n, 128)
    assert len(set(ys)) == 128
    assert all(0 < y < n and gcd(y, n) == 1 for y in ys)


def test_fork_is_independent() -> None:
    t = Transcript("d")
    t.append("a", 1)
    fork = t.fork()
    fork.append("b", 2)
    t.append("b", 3)
    assert fork.challenge_signed("e") != t.challenge_signed("e")


def test_hash_to_scalar_binds_domain_and_values() -> None:
    from signer.transcript import hash_to_scalar

    a = hash_to_scalar("tessera/test", b"x", 1)
    assert 0 <= a < Q
    assert a == hash_to_scalar("tessera/test", b"x", 1)
    assert a != hash_to_scalar("tessera/test2", b"x", 1)
    assert a != hash_to_scalar("tessera/test", b"x1")
    assert a != hash_to_scalar("tessera/test", b"x", 1, 0)
