"""Πaff-g (CGGMP21 Fig. 15, the MtA response proof): completeness, each check
(the wire format: test_zk_wire.py).

N0 is the verifier's Paillier key (C = its K, D = C^x·enc0(y)), N1 the prover's (Y = enc1(y)),
(N̂, s, t) the verifier's ring-Pedersen parameters.  Each rejection test asserts the exact `Check`,
the field or equation name, and that the blame goes to the context's prover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from conftest import new_context, paillier_key, ring_pedersen
from domains import CIPHERTEXT_DOMAIN, UNIT_DOMAIN, Domain
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from signer.arith import random_signed, random_unit
from signer.curve import Point, Q
from signer.errors import Check, ProofRejected
from signer.paillier import PaillierPublicKey
from signer.params import ELL, ELL_PRIME, EPSILON, MAX_PARTY_INDEX
from signer.zk import aff_g
from signer.zk.common import ProofContext

VERIFIER = paillier_key(1)  # N0
PROVER = paillier_key(0)  # N1
AUX_SECRET = ring_pedersen(1)
AUX = AUX_SECRET.params
N0, N1 = VERIFIER.n, PROVER.n
B1 = 1 << (ELL + EPSILON)  # z1 ∈ ±2^(ℓ+ε)
B2 = 1 << (ELL_PRIME + EPSILON)  # z2 ∈ ±2^(ℓ'+ε)
DOS = AUX.n << (ELL + EPSILON + 1)  # z3, z4
EQ1 = "C^z1·enc0(z2; w) = A·D^e"
EQ2 = "z1·G = Bx + e·X"
EQ3 = "enc1(z2; wy) = By·Y^e"
EQ4 = "s^z1·t^z3 = E·S^e"
EQ5 = "s^z2·t^z4 = F·T^e"


@dataclass(frozen=True)
class Case:
    ctx: ProofContext
    public: aff_g.AffGPublic
    private: aff_g.AffGPrivate
    proof: aff_g.AffGProof


def statement(
    x: int, y: int, *, x_point: int | None = None, y_enc: int | None = None, y_d: int | None = None
) -> tuple[aff_g.AffGPublic, aff_g.AffGPrivate]:
    """C = enc0(c), D = C^x·enc0(y_d; ρ), Y = enc1(y_enc; ρ_y), X = x_point·G (defaults: x, y)."""
    k0 = VERIFIER.public
    C, _ = k0.encrypt(random_signed(ELL))
    rho = random_unit(N0)
    D = k0.add(k0.scalar_mul(C, x), k0.encrypt_with(y if y_d is None else y_d, rho))
    Y, rho_y = PROVER.encrypt(y if y_enc is None else y_enc)
    X = Point.base_mul(x if x_point is None else x_point)
    public = aff_g.AffGPublic(k0, PROVER.public, C, D, Y, X)
    return public, aff_g.AffGPrivate(x, y, rho, rho_y)


def make_case(x: int, y: int, prover: int = 2, **kwargs: int) -> Case:
    public, private = statement(x, y, **kwargs)
    ctx = new_context(prover)
    return Case(ctx, public, private, aff_g.prove(ctx, public, private, AUX, PROVER))


@pytest.fixture(scope="module")
def case() -> Case:
    return make_case(random_signed(ELL), random_signed(ELL_PRIME))


def check_rejected(
    ctx: ProofContext,
    public: aff_g.AffGPublic,
    proof: aff_g.AffGProof,
    check: Check,
    field: str | None,
) -> None:
    with pytest.raises(ProofRejected) as info:
        aff_g.verify(ctx, public, proof, AUX)
    err = info.value
    assert err.proof == aff_g.NAME
    assert err.check == check, (err.check, err.field, err.detail)
    assert err.prover == ctx.prover
    if field is not None:
        assert err.field == field


def rejected(case: Case, check: Check, field: str | None = None, **changes: object) -> None:
    public = changes.pop("public", case.public)
    proof = replace(case.proof, **changes)
    check_rejected(case.ctx, public, proof, check, field)  # type: ignore[arg-type]


# --- completeness -----------------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(
    x=st.integers(min_value=-(1 << ELL), max_value=1 << ELL),
    y=st.integers(min_value=-(1 << ELL_PRIME), max_value=1 << ELL_PRIME),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
)
@example(x=1 << ELL, y=1 << ELL_PRIME, prover=1)
@example(x=-(1 << ELL), y=-(1 << ELL_PRIME), prover=MAX_PARTY_INDEX)
@example(x=1, y=0, prover=3)
def test_completeness(x: int, y: int, prover: int) -> None:
    assume(x % Q != 0)  # X = x·G must be a group element
    c = make_case(x, y, prover)
    assert aff_g.verify(c.ctx, c.public, c.proof, AUX) is None
    assert abs(c.proof.z1) <= B1
    assert abs(c.proof.z2) <= B2
    assert max(abs(c.proof.z3), abs(c.proof.z4)) <= DOS
    received = aff_g.AffGProof.from_bytes(c.proof.to_bytes())
    assert received == c.proof
    assert aff_g.verify(c.ctx, c.public, received, AUX) is None


def test_valid_proof_returns_none(case: Case) -> None:
    assert aff_g.verify(case.ctx, case.public, case.proof, AUX) is None


# --- statement checks -------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["verifier_key", "prover_key"])
@pytest.mark.parametrize(
    ("make_n", "check"),
    [
        (lambda n: (n >> 1) | 1, Check.MODULUS_SIZE),
        (lambda n: 2 * n + 1, Check.MODULUS_SIZE),
        (lambda n: n + 1, Check.MODULUS_FORM),
    ],
)
def test_statement_modulus(
    case: Case, which: str, make_n: Callable[[int], int], check: Check
) -> None:
    key = getattr(case.public, which)
    public = replace(case.public, **{which: PaillierPublicKey(make_n(key.n))})
    rejected(case, check, {"verifier_key": "N0", "prover_key": "N1"}[which], public=public)


# field → (modulus, one prime factor of it)
STATEMENT_CT = {"C": (N0, VERIFIER.p), "D": (N0, VERIFIER.q), "Y": (N1, PROVER.p)}
PROOF_CT = {"A": (N0, VERIFIER.q), "By": (N1, PROVER.q)}
PROOF_UNIT = {
    "E": (AUX.n, AUX_SECRET.paillier.p),
    "S": (AUX.n, AUX_SECRET.paillier.q),
    "F": (AUX.n, AUX_SECRET.paillier.p),
    "T": (AUX.n, AUX_SECRET.paillier.q),
    "w": (N0, VERIFIER.p),
    "wy": (N1, PROVER.p),
}


@pytest.mark.parametrize("field", list(STATEMENT_CT))
@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_statement_ciphertext_domain(
    case: Case, field: str, label: str, bad: Domain, check: Check
) -> None:
    n, p = STATEMENT_CT[field]
    value = bad(getattr(case.public, field), n, p)
    rejected(case, check, field, public=replace(case.public, **{field: value}))


def test_statement_identity_X(case: Case) -> None:
    rejected(case, Check.IDENTITY_POINT, "X", public=replace(case.public, X=Point.identity()))


def test_statement_X_not_a_point(case: Case) -> None:
    public = replace(case.public, X=case.public.X.to_bytes())
    rejected(case, Check.BAD_POINT, "X", public=public)


def test_A_checked_against_verifier_modulus(case: Case) -> None:
    # N0² < A < N1² (fixture keys have N0 < N1): only a check against N0² catches it
    assert N0 < N1
    rejected(case, Check.RANGE, "A", A=N0 * N0 + 1)


def test_C_checked_against_verifier_modulus(case: Case) -> None:
    assert N0 < N1
    rejected(case, Check.RANGE, "C", public=replace(case.public, C=N0 * N0 + 1))


def test_w_checked_against_verifier_modulus(case: Case) -> None:
    assert N0 + 1 < N1
    rejected(case, Check.RANGE, "w", w=N0 + 1)


def test_Y_checked_against_prover_modulus(case: Case) -> None:
    # a factor of N1 is a unit mod N0²: only a check against N1 catches it
    rejected(case, Check.NOT_UNIT, "Y", public=replace(case.public, Y=PROVER.q))


# --- response ranges --------------------------------------------------------------------------

RANGES = [("z1", B1, EQ1), ("z2", B2, EQ1), ("z3", DOS, EQ4), ("z4", DOS, EQ5)]


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize(("field", "bound", "equation"), RANGES)
def test_range_bound_inclusive(
    case: Case, field: str, bound: int, equation: str, sign: int
) -> None:
    """A response at exactly ±bound passes the range check and fails only in the equation."""
    rejected(case, Check.EQUATION, equation, **{field: sign * bound})


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize(("field", "bound", "equation"), RANGES)
def test_range_bound_exceeded(case: Case, field: str, bound: int, equation: str, sign: int) -> None:
    rejected(case, Check.RANGE, field, **{field: sign * (bound + 1)})


def test_z1_with_ell_prime_bound_rejected(case: Case) -> None:
    """The ℓ/ℓ' swap of multi-party-sig ee1a9cdd: z1 of z2's size must fail the z1 range."""
    rejected(case, Check.RANGE, "z1", z1=B2)


def test_z2_within_bound_but_beyond_z1_bound(case: Case) -> None:
    """z2 legitimately exceeds 2^(ℓ+ε): no RANGE for it (the equations then fail)."""
    rejected(case, Check.EQUATION, EQ1, z2=B1 + 1)


# --- proof element domains --------------------------------------------------------------------


@pytest.mark.parametrize("field", list(PROOF_CT))
@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_proof_ciphertext_domain(
    case: Case, field: str, label: str, bad: Domain, check: Check
) -> None:
    n, p = PROOF_CT[field]
    rejected(case, check, field, **{field: bad(getattr(case.proof, field), n, p)})


@pytest.mark.parametrize("field", list(PROOF_UNIT))
@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_proof_unit_domain(case: Case, field: str, label: str, bad: Domain, check: Check) -> None:
    n, p = PROOF_UNIT[field]
    rejected(case, check, field, **{field: bad(getattr(case.proof, field), n, p)})


def test_Bx_identity(case: Case) -> None:
    rejected(case, Check.IDENTITY_POINT, "Bx", Bx=Point.identity())


def test_Bx_not_a_point(case: Case) -> None:
    rejected(case, Check.BAD_POINT, "Bx", Bx=case.proof.Bx.to_bytes())


# --- verification equations -------------------------------------------------------------------


def test_eq1_wrong_w(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ1, w=case.proof.w * 2 % N0)


def test_eq1_wrong_z1(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ1, z1=case.proof.z1 + 1)


def test_eq1_D_hides_other_y() -> None:
    """D = C^x·enc0(y + 1) but Y = enc1(y): the N0 equation fails first."""
    c = make_case(3, 11, y_d=12)
    check_rejected(c.ctx, c.public, c.proof, Check.EQUATION, EQ1)


def test_eq2_X_not_x_times_G() -> None:
    """D and Y consistent with x, but X = (x + 1)·G: only the curve equation fails."""
    c = make_case(3, 11, x_point=4)
    check_rejected(c.ctx, c.public, c.proof, Check.EQUATION, EQ2)


def test_eq3_Y_encrypts_other_y() -> None:
    """D consistent with y, Y = enc1(y + 1): only the N1 equation fails."""
    c = make_case(3, 11, y_enc=12)
    check_rejected(c.ctx, c.public, c.proof, Check.EQUATION, EQ3)


def test_eq3_wrong_wy(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ3, wy=case.proof.wy * 2 % N1)


def test_eq4_wrong_z3(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ4, z3=case.proof.z3 + 1)


def test_eq5_wrong_z4(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ5, z4=case.proof.z4 - 1)


def test_sign_flipped_z2(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ1, z2=-case.proof.z2)
