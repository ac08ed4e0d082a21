"""Πenc (CGGMP21 Fig. 14): completeness, every verifier check in isolation.

Every rejection test asserts the exact `Check`, the field (or the equation's name) and that the
blame goes to the context's prover.  Statements and proofs are built once per module (a proof costs
~60 ms); the per-check tests only swap one element with `dataclasses.replace`.  The wire format
is tested for all proofs at once in test_zk_wire.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from conftest import new_context, paillier_key, ring_pedersen
from domains import CIPHERTEXT_DOMAIN, UNIT_DOMAIN, Domain
from hypothesis import example, given, settings
from hypothesis import strategies as st

from signer.arith import random_signed, random_signed_times, random_unit
from signer.errors import Check, ProofRejected
from signer.paillier import PaillierPublicKey
from signer.params import ELL, EPSILON, MAX_PARTY_INDEX, MODULUS_BITS
from signer.zk import enc
from signer.zk.common import ProofContext

KEY = paillier_key(0)  # prover's Paillier key N0
AUX_SECRET = ring_pedersen(1)  # verifier's ring-Pedersen parameters (N̂, s, t) and trapdoor
AUX = AUX_SECRET.params
B1 = 1 << (ELL + EPSILON)  # z1 ∈ ±2^(ℓ+ε), inclusive
Z3_BOUND = AUX.n << (ELL + EPSILON + 1)  # DoS bound on z3 = γ + e·μ
EQ_PAILLIER = "enc(z1; z2) = A·K^e"
EQ_PEDERSEN = "s^z1·t^z3 = C·S^e"


@dataclass(frozen=True)
class Case:
    ctx: ProofContext
    public: enc.EncPublic
    private: enc.EncPrivate
    proof: enc.EncProof


def make_case(k: int, prover: int = 2) -> Case:
    ciphertext, rho = KEY.encrypt(k)
    ctx = new_context(prover)
    public = enc.EncPublic(KEY.public, ciphertext)
    private = enc.EncPrivate(k, rho)
    return Case(ctx, public, private, enc.prove(ctx, public, private, AUX, KEY))


def forge(
    ctx: ProofContext,
    public: enc.EncPublic,
    k: int,
    rho: int,
    *,
    alpha: int | None = None,
    k_committed: int | None = None,
) -> enc.EncProof:
    """A patched prover: the honest algorithm with chosen α and a possibly different value in S."""
    nh, n0 = AUX.n, KEY.n
    alpha = random_signed(ELL + EPSILON) if alpha is None else alpha
    mu = random_signed_times(ELL, nh)
    r = random_unit(n0)
    gamma = random_signed_times(ELL + EPSILON, nh)
    S = AUX.commit(k if k_committed is None else k_committed, mu)
    A = KEY.encrypt_with(alpha, r)
    C = AUX.commit(alpha, gamma)
    e = enc._challenge(ctx, public, AUX, [S, A, C])
    return enc.EncProof(S, A, C, alpha + e * k, r * pow(rho, e, n0) % n0, gamma + e * mu)


@pytest.fixture(scope="module")
def case() -> Case:
    return make_case(random_signed(ELL))


def rejected(case: Case, check: Check, field: str | None = None, **changes: object) -> None:
    """Verify `case` with proof fields (or `public=` / `ctx=`) replaced; expect exactly `check`."""
    ctx = changes.pop("ctx", case.ctx)
    public = changes.pop("public", case.public)
    proof = replace(case.proof, **changes)
    with pytest.raises(ProofRejected) as info:
        enc.verify(ctx, public, proof, AUX)  # type: ignore[arg-type]
    err = info.value
    assert err.proof == enc.NAME
    assert err.check == check, (err.check, err.field, err.detail)
    assert err.prover == ctx.prover  # type: ignore[attr-defined]
    if field is not None:
        assert err.field == field


# --- completeness -----------------------------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(
    k=st.integers(min_value=-(1 << ELL), max_value=1 << ELL),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
)
@example(k=1 << ELL, prover=1)
@example(k=-(1 << ELL), prover=MAX_PARTY_INDEX)
@example(k=0, prover=7)
def test_completeness(k: int, prover: int) -> None:
    c = make_case(k, prover)
    assert enc.verify(c.ctx, c.public, c.proof, AUX) is None
    assert abs(c.proof.z1) <= B1
    assert abs(c.proof.z3) <= Z3_BOUND
    # what the verifier receives is the wire form
    received = enc.EncProof.from_bytes(c.proof.to_bytes())
    assert received == c.proof
    assert enc.verify(c.ctx, c.public, received, AUX) is None


def test_valid_proof_returns_none(case: Case) -> None:
    assert enc.verify(case.ctx, case.public, case.proof, AUX) is None


def test_completeness_other_verifier_aux() -> None:
    """The proof is made for whichever verifier's parameters it is given."""
    aux2 = ring_pedersen(2).params
    ciphertext, rho = KEY.encrypt(5)
    ctx = new_context(4)
    public = enc.EncPublic(KEY.public, ciphertext)
    proof = enc.prove(ctx, public, enc.EncPrivate(5, rho), aux2, KEY)
    assert enc.verify(ctx, public, proof, aux2) is None


# --- statement checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "make_n", "check"),
    [
        ("3071_bits", lambda n: (n >> 1) | 1, Check.MODULUS_SIZE),
        ("3073_bits", lambda n: 2 * n + 1, Check.MODULUS_SIZE),
        ("2048_bits", lambda n: (n >> (MODULUS_BITS - 2048)) | 1, Check.MODULUS_SIZE),
        ("6144_bits", lambda n: n * n, Check.MODULUS_SIZE),
        ("even", lambda n: n + 1, Check.MODULUS_FORM),
        ("multiple_of_3", lambda n: n - n % 3, Check.MODULUS_FORM),
        ("square", lambda n: paillier_key(0).p ** 2, Check.MODULUS_FORM),
    ],
)
def test_statement_modulus(
    case: Case, label: str, make_n: Callable[[int], int], check: Check
) -> None:
    n = make_n(KEY.n)
    if check is Check.MODULUS_FORM:
        assert n.bit_length() == MODULUS_BITS, label
    public = enc.EncPublic(PaillierPublicKey(n), case.public.ciphertext)
    rejected(case, check, "N0", public=public)


@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_statement_ciphertext_domain(case: Case, label: str, bad: Domain, check: Check) -> None:
    value = bad(case.public.ciphertext, KEY.n, KEY.p)
    rejected(case, check, "K", public=replace(case.public, ciphertext=value))


# --- response ranges --------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1])
def test_z1_inclusive_bound_passes_range(case: Case, sign: int) -> None:
    """z1 = ±2^(ℓ+ε) is inside the range: the proof gets past the range check to the equation."""
    rejected(case, Check.EQUATION, EQ_PAILLIER, z1=sign * B1)


@pytest.mark.parametrize("sign", [1, -1])
def test_z1_out_of_range(case: Case, sign: int) -> None:
    rejected(case, Check.RANGE, "z1", z1=sign * (B1 + 1))


@pytest.mark.parametrize("sign", [1, -1])
def test_z1_far_out_of_range(case: Case, sign: int) -> None:
    rejected(case, Check.RANGE, "z1", z1=sign * (KEY.n + case.proof.z1))


@pytest.mark.parametrize("sign", [1, -1])
def test_z3_dos_bound_inclusive(case: Case, sign: int) -> None:
    # z1, z2 untouched: the Paillier equation holds, the ring-Pedersen one fails
    rejected(case, Check.EQUATION, EQ_PEDERSEN, z3=sign * Z3_BOUND)


@pytest.mark.parametrize("sign", [1, -1])
def test_z3_dos_bound_exceeded(case: Case, sign: int) -> None:
    rejected(case, Check.RANGE, "z3", z3=sign * (Z3_BOUND + 1))


# --- first-message and response domains --------------------------------------------------------


@pytest.mark.parametrize("field", ["S", "C"])
@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_commitment_domain(case: Case, field: str, label: str, bad: Domain, check: Check) -> None:
    value = bad(getattr(case.proof, field), AUX.n, AUX_SECRET.paillier.p)
    rejected(case, check, field, **{field: value})


@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_A_ciphertext_domain(case: Case, label: str, bad: Domain, check: Check) -> None:
    rejected(case, check, "A", A=bad(case.proof.A, KEY.n, KEY.q))


@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_z2_randomiser_domain(case: Case, label: str, bad: Domain, check: Check) -> None:
    rejected(case, check, "z2", z2=bad(case.proof.z2, KEY.n, KEY.p))


def test_commitment_checked_mod_verifier_aux_not_prover_key(case: Case) -> None:
    """S must be a unit mod the verifier's N̂: a factor of N̂ is caught (it is a unit mod N0)."""
    p_hat = AUX_SECRET.paillier.q
    assert KEY.n % p_hat != 0
    rejected(case, Check.NOT_UNIT, "S", S=p_hat)


# --- verification equations -------------------------------------------------------------------


def test_equation_paillier_wrong_z1(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ_PAILLIER, z1=case.proof.z1 + 1)


def test_equation_paillier_wrong_z2(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ_PAILLIER, z2=case.proof.z2 * 2 % KEY.n)


def test_equation_pedersen_wrong_z3(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ_PEDERSEN, z3=case.proof.z3 + 1)


def test_equation_sign_flipped_z1(case: Case) -> None:
    rejected(case, Check.EQUATION, EQ_PAILLIER, z1=-case.proof.z1)


def test_statement_encrypts_other_value(case: Case) -> None:
    """Witness k, statement K = enc(k + 1): the Paillier equation catches it."""
    k = case.private.k
    ciphertext, rho = KEY.encrypt(k + 1)
    public = enc.EncPublic(KEY.public, ciphertext)
    proof = forge(case.ctx, public, k, rho)
    rejected(case, Check.EQUATION, EQ_PAILLIER, public=public, **vars_of(proof))


def test_commitment_to_other_value(case: Case) -> None:
    """S = s^(k+1)·t^μ while K encrypts k: only the ring-Pedersen equation fails."""
    k, rho = case.private.k, case.private.rho
    proof = forge(case.ctx, case.public, k, rho, k_committed=k + 1)
    rejected(case, Check.EQUATION, EQ_PEDERSEN, **vars_of(proof))


def test_forge_helper_is_faithful(case: Case) -> None:
    """The patched prover used above produces valid proofs when nothing is changed."""
    proof = forge(case.ctx, case.public, case.private.k, case.private.rho)
    assert enc.verify(case.ctx, case.public, proof, AUX) is None


def vars_of(proof: enc.EncProof) -> dict[str, int]:
    return {name: getattr(proof, name) for name in enc.EncProof.SCHEMA}
