"""Πsch (CGGMP21 Fig. 22): completeness incl. the split commit/prove API, every verifier check,
the identity-point regressions of attacks.md A14 and what the wire lets through (z = q); the wire
format itself is tested for all proofs in test_zk_wire.py."""

from __future__ import annotations

import secrets

import pytest
from conftest import new_context
from hypothesis import example, given, settings
from hypothesis import strategies as st

from signer.curve import Point, Q
from signer.errors import Check, CryptoMisuse, ProofRejected
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


# --- what the wire lets through ---------------------------------------------------------------


def test_z_equal_q_decodes_but_is_rejected(
    ctx: ProofContext, X: Point, proof: sch.SchProof
) -> None:
    """The wire bound is 256 bits; the verifier's exact [0, q) range rejects q."""
    received = sch.SchProof.from_bytes(sch.SchProof(proof.A, Q).to_bytes())
    assert received.z == Q
    check_rejected(ctx, X, received, Check.RANGE, "z")
