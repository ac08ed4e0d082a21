"""Wire format of every proof (the `Wire` schema codec of signer/encoding.py): round trips,
truncation, trailing bytes, type tags, message names, missing / unknown / misordered fields,
non-canonical and out-of-schema integers, points and lists — in bytes and in JSON.

Every test runs over every proof class (or every field of every class); each decoding failure
asserts the exact `Check` and, where the schema names it, the exact location (`zk_enc.z1`,
`zk_mod.a[5]`).  What is particular to one proof (e.g. Πsch's z = q, Πfac's loose schema bounds)
stays in that proof's test file.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import isqrt
from typing import Any

import pytest
from conftest import new_context, paillier_key, ring_pedersen
from hypothesis import given, settings
from hypothesis import strategies as st
from wirekit import (
    decode_error,
    frame_list,
    int_frame,
    json_error,
    max_int_bytes,
    proof_wire,
    tlv,
    wire,
    wire_items,
)

from signer.curve import Point, Q
from signer.encoding import TAG_BYTES, TAG_INT, TAG_POINT, ListOf, Nat, PointField, Wire, encode
from signer.errors import Check, InvalidPoint
from signer.params import ELL, ELL_PRIME, EPSILON, M_ITERATIONS
from signer.zk import aff_g, dec, fac, log_star, mod, mul, prm, sch
from signer.zk import enc as zk_enc

M = M_ITERATIONS
KEY = paillier_key(0)  # the prover's Paillier key (N0; N1 of Πaff-g)
VERIFIER_KEY = paillier_key(1)  # N0 of Πaff-g
RP = ring_pedersen(0)  # the prover's ring-Pedersen secret (Πprm)
AUX = ring_pedersen(1).params  # the verifier's ring-Pedersen parameters
B1 = 1 << (ELL + EPSILON)
B2 = 1 << (ELL_PRIME + EPSILON)
DOS = AUX.n << (ELL + EPSILON + 1)
FAC_Z = isqrt(KEY.n) << (ELL + EPSILON)
FAC_SIGMA = (KEY.n * AUX.n) << ELL
FAC_W = AUX.n << (ELL + EPSILON + 1)
FAC_V = (KEY.n * AUX.n) << (ELL + EPSILON + 1)
MUL_Z = 1 << mul.Z_BITS
DEC_B1 = 1 << (dec.PLAINTEXT_BITS + EPSILON)
DEC_DOS = AUX.n << (dec.PLAINTEXT_BITS + EPSILON + 1)


# --- one honest proof of each kind (as signer/demo.py makes them) ------------------------------


def _enc() -> Wire:
    k = secrets.randbelow(Q)
    K, rho = KEY.encrypt(k)
    public = zk_enc.EncPublic(KEY.public, K)
    return zk_enc.prove(new_context(2), public, zk_enc.EncPrivate(k, rho), AUX, KEY)


def _log_star() -> Wire:
    k = secrets.randbelow(Q - 1) + 1
    K, rho = KEY.encrypt(k)
    g = Point.base_mul(secrets.randbelow(Q - 1) + 1)
    public = log_star.LogStarPublic(KEY.public, K, g * k, g)
    return log_star.prove(new_context(2), public, log_star.LogStarPrivate(k, rho), AUX, KEY)


def _aff_g() -> Wire:
    k0 = VERIFIER_KEY.public
    K, _ = k0.encrypt(secrets.randbelow(Q))
    x, y = secrets.randbelow(Q - 1) + 1, secrets.randbelow(1 << ELL_PRIME)
    masked, rho = k0.encrypt(y)
    D = k0.add(k0.scalar_mul(K, x), masked)
    Y, rho_y = KEY.encrypt(y)
    public = aff_g.AffGPublic(k0, KEY.public, K, D, Y, Point.base_mul(x))
    return aff_g.prove(new_context(2), public, aff_g.AffGPrivate(x, y, rho, rho_y), AUX, KEY)


def _mul() -> Wire:
    x = secrets.randbelow(Q)
    X, rho_x = KEY.encrypt(x)
    Y, rho = KEY.encrypt(secrets.randbelow(Q))
    C = KEY.powmod_n2(Y, x) * KEY.encrypt_with(0, rho) % KEY.public.n2
    public = mul.MulPublic(KEY.public, X, Y, C)
    return mul.prove(new_context(2), public, mul.MulPrivate(x, rho, rho_x), KEY)


def _mul_star() -> Wire:
    x = secrets.randbelow(Q - 1) + 1
    C, rho = KEY.encrypt(secrets.randbelow(Q))
    D = KEY.powmod_n2(C, x) * KEY.encrypt_with(0, rho) % KEY.public.n2
    public = mul.MulStarPublic(KEY.public, C, D, Point.base_mul(x))
    return mul.prove_star(new_context(2), public, mul.MulStarPrivate(x, rho), AUX, KEY)


def _dec() -> Wire:
    y = secrets.randbelow(1 << dec.PLAINTEXT_BITS)
    C, rho = KEY.encrypt(y)
    public = dec.DecPublic(KEY.public, C, y % Q)
    return dec.prove(new_context(2), public, dec.DecPrivate(y, rho), AUX, KEY)


def _dec_group() -> Wire:
    y = -secrets.randbelow(1 << dec.PLAINTEXT_BITS)
    C, rho = KEY.encrypt(y)
    g = Point.base_mul(secrets.randbelow(Q - 1) + 1)
    public = dec.DecGroupPublic(KEY.public, C, g * y, g)
    return dec.prove_group(new_context(2), public, dec.DecPrivate(y, rho), AUX, KEY)


def _sch() -> Wire:
    x = secrets.randbelow(Q - 1) + 1
    return sch.prove(new_context(5), Point.base_mul(x), x)


@dataclass(frozen=True)
class Kind:
    cls: type[Wire]
    make: Callable[[], Wire]
    #: honest values at the ends of the verifier's ranges: sign +1 the upper, −1 the lower end
    extremes: Callable[[int], dict[str, Any]]


def _ends(sign: int, upper: int, lower: int) -> int:
    return upper if sign > 0 else lower


KINDS: dict[str, Kind] = {
    "enc": Kind(zk_enc.EncProof, _enc, lambda s: {"z1": s * B1, "z3": s * DOS}),
    "log_star": Kind(log_star.LogStarProof, _log_star, lambda s: {"z1": s * B1, "z3": s * DOS}),
    "aff_g": Kind(
        aff_g.AffGProof,
        _aff_g,
        lambda s: {"z1": s * B1, "z2": s * B2, "z3": s * DOS, "z4": -s * DOS},
    ),
    "sch": Kind(sch.SchProof, _sch, lambda s: {"z": _ends(s, Q - 1, 0)}),
    "mul": Kind(mul.MulProof, _mul, lambda s: {"z": s * MUL_Z}),
    "mul_star": Kind(mul.MulStarProof, _mul_star, lambda s: {"z1": s * B1, "z2": -s * DOS}),
    "dec": Kind(
        dec.DecProof,
        _dec,
        lambda s: {"z1": s * DEC_B1, "z2": s * DEC_DOS, "gamma": _ends(s, Q - 1, 0)},
    ),
    "dec_group": Kind(
        dec.DecGroupProof, _dec_group, lambda s: {"z1": -s * DEC_B1, "z2": s * DEC_DOS}
    ),
    "mod": Kind(
        mod.ModProof,
        lambda: mod.prove(new_context(7), KEY),
        lambda s: {
            "w": _ends(s, KEY.n - 1, 1),
            "x": (_ends(s, KEY.n - 1, 1),) * M,
            "a": (_ends(s, 1, 0),) * M,
            "b": (_ends(s, 1, 0),) * M,
            "z": (_ends(s, KEY.n - 1, 1),) * M,
        },
    ),
    "prm": Kind(
        prm.PrmProof,
        lambda: prm.prove(new_context(9), RP),
        lambda s: {
            "A": (_ends(s, RP.params.n - 1, 1),) * M,
            "z": (_ends(s, RP.params.n - 1, 0),) * M,
        },
    ),
    "fac": Kind(
        fac.FacProof,
        lambda: fac.prove(new_context(4), KEY, AUX),
        lambda s: {
            "z1": s * FAC_Z,
            "z2": -s * FAC_Z,
            "sigma": s * FAC_SIGMA,
            "w1": s * FAC_W,
            "w2": -s * FAC_W,
            "v": s * FAC_V,
        },
    ),
}
SIGNS = [pytest.param(1, id="upper"), pytest.param(-1, id="lower")]


@functools.cache
def honest(kind: str) -> Wire:
    return KINDS[kind].make()


def cls_of(kind: str) -> type[Wire]:
    return KINDS[kind].cls


# --- slots: one integer or point position of a message (a field, or one item of a list) ---------

#: list items looked at: both ends and the positions earlier tests named (a[5], z[3], A[4], ...)
LIST_POSITIONS = (0, 2, 3, 4, 5, M - 1)


@dataclass(frozen=True)
class Slot:
    kind: str
    field: str
    index: int | None = None

    @property
    def cls(self) -> type[Wire]:
        return cls_of(self.kind)

    @property
    def schema(self) -> Nat | PointField:
        field = self.cls.SCHEMA[self.field]
        return field.item if isinstance(field, ListOf) else field

    @property
    def where(self) -> str:
        suffix = "" if self.index is None else f"[{self.index}]"
        return f"{self.cls.WIRE_NAME}.{self.field}{suffix}"

    def value(self, proof: Wire) -> Any:
        value = getattr(proof, self.field)
        return value if self.index is None else value[self.index]

    def wire_with(self, proof: Wire, raw: bytes) -> bytes:
        """The message with this slot's frame replaced by `raw`."""
        if self.index is not None:
            items = [encode(v) for v in getattr(proof, self.field)]
            items[self.index] = raw
            raw = frame_list(items)
        return proof_wire(proof, **{self.field: raw})

    def json_with(self, proof: Wire, value: object) -> dict[str, Any]:
        doc = proof.to_json()
        if self.index is None:
            doc[self.field] = value
        else:
            doc[self.field] = [*doc[self.field]]
            doc[self.field][self.index] = value
        return doc

    def __str__(self) -> str:
        return self.where


def _slots(of: type, *, signed: bool | None = None) -> list[Slot]:
    """Every field of kind `of` of every proof; a list field gives its LIST_POSITIONS items."""
    slots = []
    for kind, spec in KINDS.items():
        for name, field in spec.cls.SCHEMA.items():
            item = field.item if isinstance(field, ListOf) else field
            if not isinstance(item, of) or (signed is not None and item.signed != signed):
                continue
            positions = LIST_POSITIONS if isinstance(field, ListOf) else (None,)
            slots.extend(Slot(kind, name, i) for i in positions)
    return slots


INT_SLOTS = _slots(Nat)
NAT_SLOTS = _slots(Nat, signed=False)
POINT_SLOTS = _slots(PointField)
FIELDS = [(kind, name) for kind, spec in KINDS.items() for name in spec.cls.SCHEMA]
LIST_FIELDS = [
    (kind, name)
    for kind, spec in KINDS.items()
    for name, field in spec.cls.SCHEMA.items()
    if isinstance(field, ListOf)
]
PAIRS = [(a, b) for a in KINDS for b in KINDS if a != b]


def _minimal(magnitude: int) -> bytes:
    return magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")


def _expected_json(schema: Any, value: Any) -> Any:
    """The JSON form written out independently of the codec: canonical lower-case hex."""
    if isinstance(schema, ListOf):
        return [_expected_json(schema.item, v) for v in value]
    if isinstance(schema, PointField):
        return value.to_bytes().hex()
    return ("-" if value < 0 else "") + hex(abs(value))


def _json_wire(proof: Wire) -> dict[str, Any]:
    return json.loads(json.dumps(proof.to_json()))


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_wire_builder_matches_encoder(kind: str) -> None:
    proof = honest(kind)
    assert wire(cls_of(kind).WIRE_NAME, wire_items(proof)) == proof.to_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_bytes_round_trip(kind: str) -> None:
    proof, cls = honest(kind), cls_of(kind)
    data = proof.to_bytes()
    assert cls.from_bytes(data) == proof
    assert cls.from_bytes(bytearray(data)) == proof
    assert cls.from_bytes(data).to_bytes() == data


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip(kind: str) -> None:
    proof, cls = honest(kind), cls_of(kind)
    doc = _json_wire(proof)
    assert doc == {n: _expected_json(k, getattr(proof, n)) for n, k in cls.SCHEMA.items()}
    assert cls.from_json(doc) == proof
    assert cls.from_json(doc).to_json() == proof.to_json()


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("kind", KINDS)
def test_extreme_honest_values_survive_the_wire(kind: str, sign: int) -> None:
    cls = cls_of(kind)
    proof = replace(honest(kind), **KINDS[kind].extremes(sign))  # type: ignore[type-var]
    data = proof.to_bytes()
    assert wire(cls.WIRE_NAME, wire_items(proof)) == data
    assert cls.from_bytes(data) == proof
    doc = _json_wire(proof)
    assert doc == {n: _expected_json(k, getattr(proof, n)) for n, k in cls.SCHEMA.items()}
    assert cls.from_json(doc) == proof


# --- framing ------------------------------------------------------------------------------------

PREFIXES = [0, 1, 3, 4]  # keep only the first n bytes
CUTS = [1, 5, 20, 33, 34, 100]  # drop the last n bytes


@pytest.mark.parametrize("kind", KINDS)
def test_truncated(kind: str) -> None:
    data = honest(kind).to_bytes()
    for bad in [data[:n] for n in PREFIXES] + [data[:-n] for n in CUTS]:
        decode_error(cls_of(kind), bad, Check.DECODE)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=0, max_value=200_000))
def test_truncated_anywhere(kind: str, cut: int) -> None:
    data = honest(kind).to_bytes()
    decode_error(cls_of(kind), data[: cut % len(data)], Check.DECODE)


TRAILERS = {
    "zero_byte": b"\x00",
    "int_zero": b"\x02\x00\x00\x00\x01\x00",
    "empty_list": b"\x05\x00\x00\x00\x04\x00\x00\x00\x00",
    "ff_x100": b"\xff" * 100,
}


@pytest.mark.parametrize("trailer", [*TRAILERS, "whole_message"])
@pytest.mark.parametrize("kind", KINDS)
def test_trailing_bytes(kind: str, trailer: str) -> None:
    data = honest(kind).to_bytes()
    decode_error(cls_of(kind), data + TRAILERS.get(trailer, data), Check.DECODE)


OUTER_TAGS = {
    0x00: Check.DECODE,
    TAG_BYTES: Check.DECODE,
    # read as one integer the message exceeds the largest field: refused by length (RANGE)
    TAG_INT: Check.RANGE,
    TAG_POINT: Check.BAD_POINT,  # a "point" of the message's length
    0x04: Check.DECODE,
    0x06: Check.DECODE,
    0x07: Check.DECODE,
    0xFF: Check.DECODE,
}


@pytest.mark.parametrize("tag", OUTER_TAGS, ids=lambda t: f"{t:#04x}")
@pytest.mark.parametrize("kind", KINDS)
def test_wrong_outer_type_tag(kind: str, tag: int) -> None:
    data = honest(kind).to_bytes()
    decode_error(cls_of(kind), bytes([tag]) + data[1:], OUTER_TAGS[tag])


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_message_name(kind: str) -> None:
    cls, items = cls_of(kind), wire_items(honest(kind))
    name = cls.WIRE_NAME
    others = [c.WIRE_NAME for c in map(cls_of, KINDS) if c is not cls]
    for bad in [*others, name + "2", name.upper(), name[:-1], ""]:
        decode_error(cls, wire(bad, items), Check.DECODE)


def _longest_integer(proof: Wire) -> int:
    """Bytes of the proof's longest integer."""
    values: list[int] = []
    for name, field in type(proof).SCHEMA.items():
        if isinstance(field, ListOf):
            values.extend(getattr(proof, name))
        elif isinstance(field, Nat):
            values.append(getattr(proof, name))
    return max(len(_minimal(abs(int(v)))) for v in values)


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}-as-{b}" for a, b in PAIRS])
def test_other_proof_type_bytes(source: str, target: str) -> None:
    """A proof never decodes as another kind: the message name tells them apart, unless an
    integer of the source is longer than any field of the target (refused first, by length)."""
    proof = honest(source)
    too_long = _longest_integer(proof) > max_int_bytes(cls_of(target))
    decode_error(cls_of(target), proof.to_bytes(), Check.RANGE if too_long else Check.DECODE)


# --- fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "field"), FIELDS)
def test_missing_field_bytes(kind: str, field: str) -> None:
    items = [item for item in wire_items(honest(kind)) if item[0] != field]
    decode_error(cls_of(kind), wire(cls_of(kind).WIRE_NAME, items), Check.FIELD)


@pytest.mark.parametrize("kind", KINDS)
def test_no_fields_bytes(kind: str) -> None:
    decode_error(cls_of(kind), wire(cls_of(kind).WIRE_NAME, []), Check.FIELD)


EXTRA_FIELDS = [("e", encode(1)), ("e", encode([1] * M)), ("extra", encode([3, 5, 7]))]


@pytest.mark.parametrize("kind", KINDS)
def test_extra_field_bytes(kind: str) -> None:
    cls, items = cls_of(kind), wire_items(honest(kind))
    for extra in EXTRA_FIELDS:
        decode_error(cls, wire(cls.WIRE_NAME, [*items, extra]), Check.FIELD)
        decode_error(cls, wire(cls.WIRE_NAME, [extra, *items]), Check.FIELD)
    # the verifier's parameters smuggled in: an unknown field, unless N̂ is already longer than
    # any integer the message may hold (Πsch), which the decoder refuses first
    aux = ("aux", encode([AUX.n, AUX.s, AUX.t]))
    fits = len(_minimal(AUX.n)) <= max_int_bytes(cls)
    decode_error(cls, wire(cls.WIRE_NAME, [*items, aux]), Check.FIELD if fits else Check.RANGE)


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_field_bytes(kind: str) -> None:
    cls, items = cls_of(kind), wire_items(honest(kind))
    decode_error(cls, wire(cls.WIRE_NAME, [*items[:-1], items[-2]]), Check.FIELD)
    decode_error(cls, wire(cls.WIRE_NAME, [*items, items[-1]]), Check.FIELD)


@pytest.mark.parametrize("kind", KINDS)
def test_fields_out_of_order(kind: str) -> None:
    cls, items = cls_of(kind), wire_items(honest(kind))
    decode_error(cls, wire(cls.WIRE_NAME, [items[1], items[0], *items[2:]]), Check.FIELD)
    decode_error(cls, wire(cls.WIRE_NAME, items[::-1]), Check.FIELD)


@pytest.mark.parametrize(("kind", "field"), FIELDS)
def test_renamed_field(kind: str, field: str) -> None:
    cls, items = cls_of(kind), wire_items(honest(kind))
    for renamed in (field.swapcase(), field + "_hat", ""):
        bad = [(renamed if n == field else n, v) for n, v in items]
        decode_error(cls, wire(cls.WIRE_NAME, bad), Check.FIELD)


# --- integers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("slot", INT_SLOTS, ids=str)
def test_integer_frame_builder_control(slot: Slot) -> None:
    proof = honest(slot.kind)
    value = int(slot.value(proof))
    raw = int_frame(1 if value < 0 else 0, _minimal(abs(value)))
    assert slot.wire_with(proof, raw) == proof.to_bytes()


@pytest.mark.parametrize("slot", INT_SLOTS, ids=str)
def test_non_canonical_integer(slot: Slot) -> None:
    proof, cls = honest(slot.kind), slot.cls
    value = int(slot.value(proof))
    sign, body, width = (1 if value < 0 else 0), _minimal(abs(value)), max_int_bytes(cls)
    bad = [
        (tlv(TAG_INT, b""), Check.DECODE),  # no sign byte
        (int_frame(2, body), Check.DECODE),  # sign byte other than 00/01
        (tlv(TAG_INT, b"\x02\x05"), Check.DECODE),
        (int_frame(7, body), Check.DECODE),
        (int_frame(0xFF, body), Check.DECODE),
        (int_frame(sign, b"\x00" + body[1:]), Check.DECODE),  # leading zero byte, same length
        (int_frame(0, b"\x00\x05"), Check.DECODE),  # leading zero byte on a short integer
        (int_frame(0, b"\x00\x07"), Check.DECODE),
        (int_frame(1, b"\x00\x05"), Check.DECODE),
        (int_frame(1, b""), Check.DECODE),  # negative zero
        # one byte longer than the largest field: refused by length before anything else
        (int_frame(sign, b"\x00" + abs(value).to_bytes(width, "big")), Check.RANGE),
    ]
    if len(body) < width:  # a leading zero byte that keeps it within the decoder's length
        bad.append((int_frame(sign, b"\x00" + body), Check.DECODE))
    for raw, check in bad:
        decode_error(cls, slot.wire_with(proof, raw), check)


@pytest.mark.parametrize("slot", INT_SLOTS, ids=str)
def test_oversize_integer_bytes(slot: Slot) -> None:
    """One bit beyond the schema is RANGE: at the field when the decoder can read it, else by
    the decoder's length bound (before the integer is built); so is a 125 kB integer."""
    proof, cls = honest(slot.kind), slot.cls
    bits = slot.schema.max_bits
    fits = bits // 8 + 1 <= max_int_bytes(cls)
    for value in [1 << bits, -(1 << bits)] if slot.schema.signed else [1 << bits]:
        decode_error(
            cls, slot.wire_with(proof, encode(value)), Check.RANGE, slot.where if fits else None
        )
    for value in (1 << 10**6, -(1 << 10**6)):
        decode_error(cls, slot.wire_with(proof, encode(value)), Check.RANGE)


@pytest.mark.parametrize("slot", INT_SLOTS, ids=str)
def test_oversize_integer_json(slot: Slot) -> None:
    proof, cls = honest(slot.kind), slot.cls
    bits = slot.schema.max_bits
    values = [hex(1 << bits), hex(1 << 10**6)]
    if slot.schema.signed:
        values += ["-" + hex(1 << bits), "-" + hex(1 << 10**6)]
    for value in values:
        json_error(cls, slot.json_with(proof, value), Check.RANGE, slot.where)


@pytest.mark.parametrize("slot", NAT_SLOTS, ids=str)
def test_negative_natural(slot: Slot) -> None:
    proof, cls = honest(slot.kind), slot.cls
    value = int(slot.value(proof))
    for negative in {-1, -5, -7, -value or -1}:
        decode_error(cls, slot.wire_with(proof, encode(negative)), Check.RANGE, slot.where)
        json_error(cls, slot.json_with(proof, hex(negative)), Check.RANGE, slot.where)


NON_CANONICAL_HEX = [
    "0x0abc",  # leading zero
    "0x01",
    "0x00ff",
    "0xABC",  # upper case
    "0xFF",
    "0XABC",
    "-0xAb",
    "abc",  # no prefix
    "1",
    "0b101",
    "-0x0",  # negative zero
    "+0x1",
    " 0x1",
    "0x1\n",
    "0x",
    "",
    "0x1_0",
]


@pytest.mark.parametrize("slot", INT_SLOTS, ids=str)
def test_non_canonical_hex_json(slot: Slot) -> None:
    proof, cls = honest(slot.kind), slot.cls
    value = int(slot.value(proof))
    canonical = _expected_json(slot.schema, value)
    sign, digits = ("-" if value < 0 else ""), hex(abs(value))[2:]
    derived = [sign + "0x0" + digits, canonical.upper(), "+" + canonical, str(value), sign + "0x"]
    for bad in NON_CANONICAL_HEX + derived:
        json_error(cls, slot.json_with(proof, bad), Check.DECODE, slot.where)


@pytest.mark.parametrize("slot", INT_SLOTS, ids=str)
def test_integer_of_wrong_kind(slot: Slot) -> None:
    """A bytes, string, list or point value where an integer belongs; in JSON, anything but a
    hex string (a number, a boolean, null, an array)."""
    proof, cls = honest(slot.kind), slot.cls
    value = slot.value(proof)
    for raw in (
        encode(b"\x01\x02"),
        encode("0x1234"),
        encode([1, 2]),
        encode([value]),
        encode(Point.generator()),
    ):
        decode_error(cls, slot.wire_with(proof, raw), Check.DECODE, slot.where)
    canonical = _expected_json(slot.schema, value)
    for bad in (int(value), 255, True, None, [canonical], {"value": canonical}, 1.5):
        json_error(cls, slot.json_with(proof, bad), Check.DECODE, slot.where)


# --- points -------------------------------------------------------------------------------------

BAD_POINT_FRAMES = [
    b"\x02" + b"\x00" * 30 + b"\x01",  # 32 bytes
    b"\x02" + b"\x00" * 32 + b"\x01",  # 34 bytes
    b"\x02" + b"\x00" * 31 + b"\x05",  # x = 5 is not on secp256k1
    b"\x05" + b"\x00" * 31 + b"\x01",  # prefix 05
]


@pytest.mark.parametrize("slot", POINT_SLOTS, ids=str)
def test_point_frame_builder_control(slot: Slot) -> None:
    proof = honest(slot.kind)
    point = slot.value(proof)
    assert slot.wire_with(proof, tlv(TAG_POINT, point.to_bytes())) == proof.to_bytes()
    other = Point.base_mul(7)
    decoded = slot.cls.from_bytes(slot.wire_with(proof, tlv(TAG_POINT, other.to_bytes())))
    assert getattr(decoded, slot.field) == other


@pytest.mark.parametrize("slot", POINT_SLOTS, ids=str)
def test_bad_point_bytes(slot: Slot) -> None:
    proof, cls = honest(slot.kind), slot.cls
    for raw in BAD_POINT_FRAMES:
        err = decode_error(cls, slot.wire_with(proof, tlv(TAG_POINT, raw)), Check.BAD_POINT)
        assert isinstance(err, InvalidPoint) == (len(raw) == 33)  # 33 bytes reach the SEC1 decoder


@pytest.mark.parametrize("slot", POINT_SLOTS, ids=str)
def test_point_of_wrong_kind(slot: Slot) -> None:
    """An integer, the point's own bytes as a bytes value, a string or a list where a point
    belongs; in JSON, anything but a 66-character string."""
    proof, cls = honest(slot.kind), slot.cls
    point = slot.value(proof).to_bytes()
    as_bytes = (encode(point), encode(b"\x02" + b"\x00" * 31 + b"\x01"), encode(b""))
    for raw in (encode(5), *as_bytes, encode(point.hex()), encode([5])):
        decode_error(cls, slot.wire_with(proof, raw), Check.BAD_POINT, slot.where)
    for bad in (2, None, True, [point.hex()]):
        json_error(cls, slot.json_with(proof, bad), Check.BAD_POINT, slot.where)


BAD_POINT_HEX = [
    ("03" + "ff" * 32, Check.BAD_POINT),  # x ≥ p
    ("02" + "00" * 31 + "05", Check.BAD_POINT),  # not on the curve
    ("04" + "00" * 32, Check.BAD_POINT),
    ("04" + "00" * 31 + "01", Check.BAD_POINT),
    ("05" + "00" * 31 + "01", Check.BAD_POINT),
    ("00" * 33, Check.BAD_POINT),
    ("02" + "00" * 32 + "01", Check.BAD_POINT),  # 34 bytes
    ("02" + "ff" * 31, Check.BAD_POINT),  # 32 bytes
    ("02", Check.BAD_POINT),
    ("0g" + "00" * 32, Check.DECODE),
    ("zz" * 33, Check.DECODE),
    ("xy" * 33, Check.DECODE),
]


@pytest.mark.parametrize("slot", POINT_SLOTS, ids=str)
def test_bad_point_json(slot: Slot) -> None:
    proof, cls = honest(slot.kind), slot.cls
    for value, check in BAD_POINT_HEX:
        json_error(cls, slot.json_with(proof, value), check, slot.where)
    canonical = slot.value(proof).to_bytes().hex()
    json_error(cls, slot.json_with(proof, canonical.upper()), Check.DECODE, slot.where)


# --- lists --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [M - 1, M + 1, 0, 1])
@pytest.mark.parametrize(("kind", "field"), LIST_FIELDS)
def test_wrong_list_length(kind: str, field: str, length: int) -> None:
    proof, cls = honest(kind), cls_of(kind)
    where = f"{cls.WIRE_NAME}.{field}"
    values = list((getattr(proof, field) * 2)[:length])
    assert len(values) == length
    decode_error(cls, proof_wire(proof, **{field: values}), Check.LENGTH, where)
    doc = proof.to_json()
    doc[field] = (doc[field] * 2)[:length]
    json_error(cls, doc, Check.LENGTH, where)


@pytest.mark.parametrize(("kind", "field"), LIST_FIELDS)
def test_list_of_wrong_kind(kind: str, field: str) -> None:
    proof, cls = honest(kind), cls_of(kind)
    where = f"{cls.WIRE_NAME}.{field}"
    first = getattr(proof, field)[0]
    decode_error(cls, proof_wire(proof, **{field: first}), Check.DECODE, where)
    decode_error(cls, proof_wire(proof, **{field: [b"\x01"] * M}), Check.DECODE, where + "[0]")
    doc = proof.to_json()
    for bad in (doc[field][0], None, {"0": doc[field][0]}):
        json_error(cls, {**doc, field: bad}, Check.DECODE, where)


# --- JSON documents -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "field"), FIELDS)
def test_json_missing_field(kind: str, field: str) -> None:
    doc = honest(kind).to_json()
    del doc[field]
    json_error(cls_of(kind), doc, Check.FIELD, cls_of(kind).WIRE_NAME)


@pytest.mark.parametrize("kind", KINDS)
def test_json_no_fields(kind: str) -> None:
    json_error(cls_of(kind), {}, Check.FIELD)
    for field, value in honest(kind).to_json().items():  # any single field alone
        json_error(cls_of(kind), {field: value}, Check.FIELD)


@pytest.mark.parametrize("kind", KINDS)
def test_json_unknown_field(kind: str) -> None:
    cls, doc = cls_of(kind), honest(kind).to_json()
    extras = {
        "aux": [hex(AUX.n), hex(AUX.s), hex(AUX.t)],
        "verifier_aux": "0x5",
        "N_hat": "0x1",
        "s": "0x1",
        "e": "0x1",
        "X": Point.generator().to_bytes().hex(),
        "y": next(iter(doc.values())),
        "extra": ["0x1"] * M,
    }
    for name, value in extras.items():
        assert name not in cls.SCHEMA
        json_error(cls, {**doc, name: value}, Check.FIELD, cls.WIRE_NAME)


@pytest.mark.parametrize("kind", KINDS)
def test_json_not_an_object(kind: str) -> None:
    doc = honest(kind).to_json()
    for bad in ([], "proof", None, 5, [doc], json.dumps(doc), list(doc.items())):
        json_error(cls_of(kind), bad, Check.DECODE, cls_of(kind).WIRE_NAME)
