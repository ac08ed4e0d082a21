"""Πsch (CGGMP21 Fig. 22): completeness incl. the split commit/prove API, every verifier check,
the identity-point regressions of attacks.md A14, and the wire format."""

from __future__ import annotations

import json
import secrets
import struct

import pytest
from conftest import new_context
from hypothesis import example, given, settings
from hypothesis import strategies as st

from signer.curve import Point, Q
from signer.encoding import TAG_LIST, encode
from signer.errors import Check, CryptoMisuse, EncodingError, ProofRejected
from signer.params import MAX_PARTY_INDEX
from signer.zk import sch
from signer.zk.common import ProofContext

EQ = "z·G = A + e·X"
scalars = st.integers(min_value=1, max_value=Q - 1)


def check_rejected(
    ctx: ProofContext, X: Point, proof: sch.SchProof, check: Check, field: str
) -> ProofRejected:
    with pytest.raises(ProofRejected) as info:
        sch.verify(ctx, X, proof)
    err = info.value
    assert (err.proof, err.check, err.field) == (sch.NAME, check, field), err
    assert err.prover == ctx.prover
    return err


@pytest.fixture(scope="module")
def ctx() -> ProofContext:
    return new_context(5)


@pytest.fixture(scope="module")
def witness() -> int:
    return secrets.randbelow(Q - 1) + 1


@pytest.fixture(scope="module")
def X(witness: int) -> Point:
    return Point.base_mul(witness)


@pytest.fixture(scope="module")
def proof(ctx: ProofContext, X: Point, witness: int) -> sch.SchProof:
    return sch.prove(ctx, X, witness)


# --- completeness -----------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(x=scalars, prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX))
@example(x=1, prover=1)
@example(x=Q - 1, prover=MAX_PARTY_INDEX)
def test_completeness(x: int, prover: int) -> None:
    ctx = new_context(prover)
    X = Point.base_mul(x)
    proof = sch.prove(ctx, X, x)
    assert sch.verify(ctx, X, proof) is None
    assert 0 <= proof.z < Q
    received = sch.SchProof.from_bytes(proof.to_bytes())
    assert received == proof
    assert sch.verify(ctx, X, received) is None


@settings(max_examples=10, deadline=None)
@given(x=scalars, alpha=scalars)
@example(x=1, alpha=1)
@example(x=Q - 1, alpha=Q - 1)
def test_completeness_with_given_commitment(x: int, alpha: int) -> None:
    """Keygen commits to A before the challenge exists: prove() must use exactly that A."""
    ctx = new_context(2)
    X = Point.base_mul(x)
    commitment = sch.SchCommitment(alpha, Point.base_mul(alpha))
    proof = sch.prove(ctx, X, x, commitment)
    assert proof.A == commitment.A
    e = sch._challenge(ctx, X, commitment.A)
    assert proof.z == (alpha + e * x) % Q
    assert sch.verify(ctx, X, proof) is None


def test_witness_may_be_unreduced() -> None:
    ctx = new_context(2)
    x = secrets.randbelow(Q - 1) + 1
    X = Point.base_mul(x)
    for unreduced in (x + Q, x - Q, x + 5 * Q):
        proof = sch.prove(ctx, X, unreduced)
        assert 0 <= proof.z < Q
        assert sch.verify(ctx, X, proof) is None


def test_commitment_generate() -> None:
    first, second = sch.SchCommitment.generate(), sch.SchCommitment.generate()
    for c in (first, second):
        assert 1 <= c.alpha < Q
        assert c.A == Point.base_mul(c.alpha)
        assert not c.A.is_identity
    assert first.alpha != second.alpha


def test_fresh_commitment_per_proof(ctx: ProofContext, X: Point, witness: int) -> None:
    """Without a given commitment every proof uses a fresh nonce (a repeated A leaks x)."""
    assert sch.prove(ctx, X, witness).A != sch.prove(ctx, X, witness).A


def test_valid_proof_returns_none(ctx: ProofContext, X: Point, proof: sch.SchProof) -> None:
    assert sch.verify(ctx, X, proof) is None


# --- identity points (attacks.md A14) -----------------------------------------------------------


def test_T14a_statement_identity(ctx: ProofContext) -> None:
    """X = O with A = α·G, z = α satisfies z·G = A + e·X for every e; only X ≠ O stops it."""
    alpha = secrets.randbelow(Q - 1) + 1
    A = Point.base_mul(alpha)
    assert Point.base_mul(alpha) == A + Point.identity() * secrets.randbelow(Q)
    check_rejected(ctx, Point.identity(), sch.SchProof(A, alpha), Check.IDENTITY_POINT, "X")


def test_T14a_trivial_proof_of_zero_share(ctx: ProofContext) -> None:
    """The zero-share PoK of attacks.md T14a: X = O, A = O, z = 0."""
    proof = sch.SchProof(Point.identity(), 0)
    check_rejected(ctx, Point.identity(), proof, Check.IDENTITY_POINT, "X")


def test_T14a_commitment_identity(ctx: ProofContext, X: Point) -> None:
    for z in (0, 1, Q - 1):
        check_rejected(ctx, X, sch.SchProof(Point.identity(), z), Check.IDENTITY_POINT, "A")


def test_T14a_identity_has_no_encoding(proof: sch.SchProof) -> None:
    """A peer cannot even send A = O: the identity has no wire form."""
    with pytest.raises(CryptoMisuse):
        sch.SchProof(Point.identity(), proof.z).to_bytes()


def test_points_must_be_points(ctx: ProofContext, X: Point, proof: sch.SchProof) -> None:
    check_rejected(ctx, X.to_bytes(), proof, Check.BAD_POINT, "X")  # type: ignore[arg-type]
    bad = sch.SchProof(proof.A.to_bytes(), proof.z)  # type: ignore[arg-type]
    check_rejected(ctx, X, bad, Check.BAD_POINT, "A")


# --- z range: reject, never reduce ------------------------------------------------------------


@pytest.mark.parametrize(
    "make_z",
    [
        lambda z: Q,
        lambda z: z + Q,  # ≡ z (mod q): would verify if the verifier reduced
        lambda z: z - Q,  # negative representative of the same residue
        lambda z: -1,
        lambda z: 1 << 256,
        lambda z: z + (Q << 10),
    ],
    ids=["q", "z_plus_q", "z_minus_q", "minus_one", "2^256", "z_plus_1024q"],
)
def test_z_out_of_range(ctx: ProofContext, X: Point, proof: sch.SchProof, make_z: object) -> None:
    z = make_z(proof.z)  # type: ignore[operator]
    check_rejected(ctx, X, sch.SchProof(proof.A, z), Check.RANGE, "z")


@pytest.mark.parametrize("z", [0, 1, Q - 1])
def test_z_in_range_but_wrong(ctx: ProofContext, X: Point, proof: sch.SchProof, z: int) -> None:
    if z == proof.z:  # pragma: no cover - probability 3/q
        z = (z + 1) % Q
    check_rejected(ctx, X, sch.SchProof(proof.A, z), Check.EQUATION, EQ)


# --- equation ---------------------------------------------------------------------------------


def test_wrong_witness(ctx: ProofContext, X: Point, witness: int) -> None:
    check_rejected(ctx, X, sch.prove(ctx, X, witness + 1), Check.EQUATION, EQ)


def test_other_statement(ctx: ProofContext, X: Point, proof: sch.SchProof) -> None:
    check_rejected(ctx, X + Point.generator(), proof, Check.EQUATION, EQ)


def test_negated_statement(ctx: ProofContext, X: Point, proof: sch.SchProof) -> None:
    check_rejected(ctx, -X, proof, Check.EQUATION, EQ)


def test_other_commitment(ctx: ProofContext, X: Point, proof: sch.SchProof) -> None:
    check_rejected(ctx, X, sch.SchProof(-proof.A, proof.z), Check.EQUATION, EQ)


def test_challenge_covers_commitment_and_statement(
    ctx: ProofContext, X: Point, proof: sch.SchProof
) -> None:
    """Shifting A by G and z by 1 (or X by G and z by e) keeps z·G = A + e·X for the *old* e;
    only the challenge's dependence on A and X rejects the shifted proofs."""
    e = sch._challenge(ctx, X, proof.A)
    shifted_a = sch.SchProof(proof.A + Point.generator(), (proof.z + 1) % Q)
    assert Point.base_mul(shifted_a.z) == shifted_a.A + X * e
    check_rejected(ctx, X, shifted_a, Check.EQUATION, EQ)
    shifted_x = sch.SchProof(proof.A, (proof.z + e) % Q)
    assert Point.base_mul(shifted_x.z) == proof.A + (X + Point.generator()) * e
    check_rejected(ctx, X + Point.generator(), shifted_x, Check.EQUATION, EQ)


# --- wire format ------------------------------------------------------------------------------


def tlv(tag: int, payload: bytes) -> bytes:
    return struct.pack(">BI", tag, len(payload)) + payload


def tlv_list(*items: bytes) -> bytes:
    return tlv(TAG_LIST, struct.pack(">I", len(items)) + b"".join(items))


def wire(fields: list[tuple[str, bytes]], name: str = sch.SchProof.WIRE_NAME) -> bytes:
    return tlv_list(encode(name), tlv_list(*(tlv_list(encode(n), v) for n, v in fields)))


def decode_error(data: bytes, check: Check) -> None:
    with pytest.raises(EncodingError) as info:
        sch.SchProof.from_bytes(data)
    assert info.value.check == check, info.value


def json_error(doc: object, check: Check) -> EncodingError:
    with pytest.raises(EncodingError) as info:
        sch.SchProof.from_json(doc)
    assert info.value.check == check, info.value
    return info.value


def test_wire_builder_matches_encoder(proof: sch.SchProof) -> None:
    assert wire([("A", encode(proof.A)), ("z", encode(proof.z))]) == proof.to_bytes()


def test_bytes_round_trip(proof: sch.SchProof) -> None:
    assert sch.SchProof.from_bytes(proof.to_bytes()) == proof


def test_json_round_trip(proof: sch.SchProof) -> None:
    doc = json.loads(json.dumps(proof.to_json()))
    assert doc == {"A": proof.A.to_bytes().hex(), "z": hex(proof.z)}
    assert sch.SchProof.from_json(doc) == proof


def test_z_equal_q_decodes_but_is_rejected(
    ctx: ProofContext, X: Point, proof: sch.SchProof
) -> None:
    """The wire bound is 256 bits; the verifier's exact [0, q) range rejects q."""
    received = sch.SchProof.from_bytes(sch.SchProof(proof.A, Q).to_bytes())
    assert received.z == Q
    check_rejected(ctx, X, received, Check.RANGE, "z")


def test_truncated_and_trailing(proof: sch.SchProof) -> None:
    data = proof.to_bytes()
    for bad in (data[:-1], data[:4], data[:-34], data + b"\x00", data + data):
        decode_error(bad, Check.DECODE)


@pytest.mark.parametrize("tag", [0x01, 0x04, 0x07])
def test_wrong_type_tag(proof: sch.SchProof, tag: int) -> None:
    decode_error(bytes([tag]) + proof.to_bytes()[1:], Check.DECODE)


def test_outer_tag_int_is_an_oversized_integer(proof: sch.SchProof) -> None:
    # The whole message read as one integer exceeds the schema's largest field: rejected by
    # length before any integer is built.
    decode_error(b"\x02" + proof.to_bytes()[1:], Check.RANGE)


def test_outer_tag_point_is_a_bad_point(proof: sch.SchProof) -> None:
    decode_error(b"\x03" + proof.to_bytes()[1:], Check.BAD_POINT)


def test_wrong_message_name(proof: sch.SchProof) -> None:
    fields = [("A", encode(proof.A)), ("z", encode(proof.z))]
    decode_error(wire(fields, name="zk_sch2"), Check.DECODE)
    decode_error(wire(fields, name="ZK_SCH"), Check.DECODE)


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ([("z", encode(1)), ("A", encode(Point.generator()))], Check.FIELD),  # swapped
        ([("A", encode(Point.generator()))], Check.FIELD),  # missing z
        ([("A", encode(Point.generator())), ("z", encode(1)), ("e", encode(1))], Check.FIELD),
        ([("A", encode(Point.generator())), ("Z", encode(1))], Check.FIELD),
        ([("A", encode(Point.generator())), ("z", encode(-1))], Check.RANGE),  # negative nat
        ([("A", encode(Point.generator())), ("z", encode(1 << 256))], Check.RANGE),
        ([("A", encode(Point.generator())), ("z", encode(b"\x01"))], Check.DECODE),
        ([("A", encode(1)), ("z", encode(1))], Check.BAD_POINT),
        ([("A", encode(Point.generator().to_bytes())), ("z", encode(1))], Check.BAD_POINT),
    ],
    ids=[
        "swapped",
        "missing",
        "extra",
        "renamed",
        "negative",
        "oversize",
        "bytes_for_int",
        "int_for_point",
        "bytes_for_point",
    ],
)
def test_malformed_fields(fields: list[tuple[str, bytes]], check: Check) -> None:
    decode_error(wire(fields), check)


@pytest.mark.parametrize(
    ("doc_changes", "check"),
    [
        ({"z": "0x0" + "1"}, Check.DECODE),
        ({"z": "0X1"}, Check.DECODE),
        ({"z": "1"}, Check.DECODE),
        ({"z": 1}, Check.DECODE),
        ({"z": "-0x1"}, Check.RANGE),
        ({"z": hex(1 << 256)}, Check.RANGE),
        ({"A": "02" + "00" * 31 + "05"}, Check.BAD_POINT),  # not on the curve
        ({"A": "04" + "00" * 31 + "01"}, Check.BAD_POINT),
        ({"A": "02"}, Check.BAD_POINT),
        ({"A": "xy" * 33}, Check.DECODE),
        ({"e": "0x1"}, Check.FIELD),
    ],
)
def test_json_malformed(proof: sch.SchProof, doc_changes: dict[str, object], check: Check) -> None:
    json_error({**proof.to_json(), **doc_changes}, check)


def test_json_missing_field(proof: sch.SchProof) -> None:
    json_error({"A": proof.to_json()["A"]}, Check.FIELD)
    json_error({"z": proof.to_json()["z"]}, Check.FIELD)
    json_error({}, Check.FIELD)
