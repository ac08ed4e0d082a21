"""Πlog* (CGGMP21 Fig. 25): completeness, each verifier check in isolation
(the wire format: test_zk_wire.py).

Statement: C = enc_N0(x; ρ) under the prover's key, X = x·g for a base point g; proven over the
verifier's ring-Pedersen parameters.  Each rejection asserts the exact `Check`, the field or
equation name, and that the blame goes to the context's prover.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from conftest import new_context, paillier_key, ring_pedersen
from domains import CIPHERTEXT_DOMAIN, UNIT_DOMAIN, Domain
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from signer.arith import random_signed
from signer.curve import Point, Q
from signer.errors import Check, ProofRejected
from signer.paillier import PaillierPublicKey
from signer.params import ELL, EPSILON, MAX_PARTY_INDEX, MODULUS_BITS
from signer.zk import log_star
from signer.zk.common import ProofContext

KEY = paillier_key(0)
AUX_SECRET = ring_pedersen(1)
AUX = AUX_SECRET.params
B1 = 1 << (ELL + EPSILON)
Z3_BOUND = AUX.n << (ELL + EPSILON + 1)
EQ1 = "enc(z1; z2) = A·C^e"
EQ2 = "z1·g = Y + e·X"
EQ3 = "s^z1·t^z3 = D·S^e"


@dataclass(frozen=True)
class Case:
    ctx: ProofContext
    public: log_star.LogStarPublic
    private: log_star.LogStarPrivate
    proof: log_star.LogStarProof


def make_case(
    x: int,
    prover: int = 2,
    base: Point | None = None,
    *,
    x_enc: int | None = None,
    x_point: int | None = None,
) -> Case:
    """C = enc(x_enc or x), X = (x_point or x)·g; the prover is honest with witness x."""
    g = Point.generator() if base is None else base
    C, rho = KEY.encrypt(x if x_enc is None else x_enc)
    public = log_star.LogStarPublic(KEY.public, C, g * (x if x_point is None else x_point), g)
    private = log_star.LogStarPrivate(x, rho)
    ctx = new_context(prover)
    return Case(ctx, public, private, log_star.prove(ctx, public, private, AUX, KEY))


@pytest.fixture(scope="module")
def case() -> Case:
    # a base point other than G, as presigning uses Γ
    return make_case(random_signed(ELL), base=Point.base_mul(secrets.randbelow(Q - 1) + 1))


def check_rejected(
    ctx: ProofContext,
    public: log_star.LogStarPublic,
    proof: log_star.LogStarProof,
    check: Check,
    field: str | None,
) -> None:
    with pytest.raises(ProofRejected) as info:
        log_star.verify(ctx, public, proof, AUX)
    err = info.value
    assert err.proof == log_star.NAME
    assert err.check == check, (err.check, err.field, err.detail)
    assert err.prover == ctx.prover
    if field is not None:
        assert err.field == field


def rejected(case: Case, check: Check, field: str | None = None, **changes: object) -> None:
    public = changes.pop("public", case.public)
    check_rejected(case.ctx, public, replace(case.proof, **changes), check, field)  # type: ignore[arg-type]


# --- completeness -----------------------------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(
    x=st.integers(min_value=-(1 << ELL), max_value=1 << ELL),
    b=st.integers(min_value=1, max_value=Q - 1),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
)
@example(x=1 << ELL, b=1, prover=1)
@example(x=-(1 << ELL), b=Q - 1, prover=MAX_PARTY_INDEX)
@example(x=-1, b=2, prover=5)
def test_completeness(x: int, b: int, prover: int) -> None:
    assume(x % Q != 0)  # X must be a group element
    c = make_case(x, prover, Point.base_mul(b))
    assert log_star.verify(c.ctx, c.public, c.proof, AUX) is None
    assert abs(c.proof.z1) <= B1
    assert abs(c.proof.z3) <= Z3_BOUND
    received = log_star.LogStarProof.from_bytes(c.proof.to_bytes())
    assert received == c.proof
    assert log_star.verify(c.ctx, c.public, received, AUX) is None


def test_valid_proof_returns_none(case: Case) -> None:
    assert log_star.verify(case.ctx, case.public, case.proof, AUX) is None


# --- statement checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_n", "check"),
    [
        (lambda n: (n >> 1) | 1, Check.MODULUS_SIZE),
        (lambda n: (n << 1) | 1, Check.MODULUS_SIZE),
        (lambda n: (n >> (MODULUS_BITS - 2048)) | 1, Check.MODULUS_SIZE),
        (lambda n: n + 1, Check.MODULUS_FORM),
        (lambda n: n - n % 65521, Check.MODULUS_FORM),  # divisible by the largest 16-bit prime
    ],
)
def test_statement_modulus(case: Case, make_n: Callable[[int], int], check: Check) -> None:
    public = replace(case.public, key=PaillierPublicKey(make_n(KEY.n)))
    rejected(case, check, "N0", public=public)


@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_statement_ciphertext_domain(case: Case, label: str, bad: Domain, check: Check) -> None:
    value = bad(case.public.ciphertext, KEY.n, KEY.p)
    rejected(case, check, "C", public=replace(case.public, ciphertext=value))


@pytest.mark.parametrize(("attr", "field"), [("point", "X"), ("base", "g")])
def test_statement_identity_points(case: Case, attr: str, field: str) -> None:
    public = replace(case.public, **{attr: Point.identity()})
    rejected(case, Check.IDENTITY_POINT, field, public=public)


@pytest.mark.parametrize(("attr", "field"), [("point", "X"), ("base", "g")])
def test_statement_points_must_be_points(case: Case, attr: str, field: str) -> None:
    public = replace(case.public, **{attr: getattr(case.public, attr).to_bytes()})
    rejected(case, Check.BAD_POINT, field, public=public)


# --- response ranges --------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1])
def test_z1_inclusive_bound_passes_range(case: Case, sign: int) -> None:
    rejected(case, Check.EQUATION, EQ1, z1=sign * B1)


@pytest.mark.parametrize("sign", [1, -1])
def test_z1_out_of_range(case: Case, sign: int) -> None:
    rejected(case, Check.RANGE, "z1", z1=sign * (B1 + 1))


def test_z1_ell_prime_sized_rejected(case: Case) -> None:
    """multi-party-sig ee1a9cdd checked z1 against 2^(ℓ'+ε): such a z1 must be out of range."""
    rejected(case, Check.RANGE, "z1", z1=1 << (ELL + EPSILON + 1))


@pytest.mark.parametrize("sign", [1, -1])
def test_z3_dos_bound_inclusive(case: Case, sign: int) -> None:
    rejected(case, Check.EQUATION, EQ3, z3=sign * Z3_BOUND)


@pytest.mark.parametrize("sign", [1, -1])
def test_z3_dos_bound_exceeded(case: Case, sign: int) -> None:
    rejected(case, Check.RANGE, "z3", z3=sign * (Z3_BOUND + 1))


# --- proof element domains --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["S", "D"])
@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_commitment_domain(case: Case, field: str, label: str, bad: Domain, check: Check) -> None:
    value = bad(getattr(case.proof, field), AUX.n, AUX_SECRET.paillier.q)
    rejected(case, check, field, **{field: value})


@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_A_ciphertext_domain(case: Case, label: str, bad: Domain, check: Check) -> None:
    rejected(case, check, "A", A=bad(case.proof.A, KEY.n, KEY.q))


@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_z2_randomiser_domain(case: Case, label: str, bad: Domain, check: Check) -> None:
    rejected(case, check, "z2", z2=bad(case.proof.z2, KEY.n, KEY.p))


def test_Y_identity(case: Case) -> None:
    rejected(case, Check.IDENTITY_POINT, "Y", Y=Point.identity())


def test_Y_not_a_point(case: Case) -> None:
    rejected(case, Check.BAD_POINT, "Y", Y=case.proof.Y.to_bytes())


# --- verification equations -------------------------------------------------------------------


def test_eq1_wrong_z2(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ1, z2=case.proof.z2 * 3 % KEY.n)


def test_eq1_C_encrypts_other_value() -> None:
    """C = enc(x + 1), X = x·G: the Paillier equation fails."""
    c = make_case(9, x_enc=10)
    check_rejected(c.ctx, c.public, c.proof, Check.EQUATION, EQ1)


def test_eq2_X_is_other_multiple() -> None:
    """C = enc(x), X = (x + 1)·G: only the curve equation fails."""
    c = make_case(9, x_point=10)
    check_rejected(c.ctx, c.public, c.proof, Check.EQUATION, EQ2)


def test_eq2_wrong_base() -> None:
    """X = x·G but the statement's base is 2·G (a prover mixing up Γ and G)."""
    c = make_case(9)
    public = replace(c.public, base=Point.base_mul(2))
    # proof recomputed for the statement with the wrong base, honest otherwise
    proof = log_star.prove(c.ctx, public, c.private, AUX, KEY)
    check_rejected(c.ctx, public, proof, Check.EQUATION, EQ2)


def test_eq2_x_congruent_mod_q_but_not_mod_N() -> None:
    """C = enc(x + q), X = x·G: same point, different plaintext — the Paillier equation binds."""
    c = make_case(9, x_enc=9 + Q)
    check_rejected(c.ctx, c.public, c.proof, Check.EQUATION, EQ1)


def test_eq3_wrong_z3(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ3, z3=case.proof.z3 - 1)


def test_sign_flipped_z1(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ1, z1=-case.proof.z1)
