"""Πmul (CGGMP21 Fig. 29) and Πmul* (Fig. 31): completeness, every verifier check in isolation,
false statements, Fiat–Shamir binding of every element, replay across sessions, provers and
(Πmul*) verifiers.  The wire format: test_zk_wire.py.

N is the prover's own Paillier key throughout (H_i = K_i^x·ρ^N in presign identification);
Πmul* is proven over the verifier's ring-Pedersen parameters (N̂, s, t), Πmul over none.
Each rejection asserts the exact `Check`, the field or equation and that the prover is blamed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from conftest import new_context, paillier_key, ring_pedersen
from domains import CIPHERTEXT_DOMAIN, UNIT_DOMAIN, Domain
from hypothesis import example, given, settings
from hypothesis import strategies as st

from signer.arith import random_signed, random_unit
from signer.curve import Point, Q
from signer.errors import Check, CryptoMisuse, ProofRejected
from signer.paillier import PaillierPublicKey
from signer.params import ELL, EPSILON, MAX_PARTY_INDEX
from signer.zk import mul
from signer.zk.common import ProofContext

KEY = paillier_key(0)  # the prover's Paillier key N
N, N2 = KEY.n, KEY.public.n2
AUX_SECRET = ring_pedersen(1)  # the Πmul* verifier's parameters and trapdoor
AUX = AUX_SECRET.params
OTHER_AUX = ring_pedersen(2).params
Z_BOUND = 1 << mul.Z_BITS  # Πmul: |z| ≤ 2^(|N|+1)
B1 = 1 << (ELL + EPSILON)  # Πmul*: z1 ∈ ±2^(ℓ+ε)
DOS = AUX.n << (ELL + EPSILON + 1)  # Πmul*: |z2|
EQ_MUL_1 = "Y^z·u^N = A·C^e"
EQ_MUL_2 = "enc(z; v) = B·X^e"
EQ_STAR_1 = "C^z1·w^N0 = A·D^e"
EQ_STAR_2 = "z1·G = Bx + e·X"
EQ_STAR_3 = "s^z1·t^z2 = E·S^e"
G = Point.generator()


def renc(c: int, u: int) -> int:
    """c·u^N mod N²: the same plaintext under another randomiser."""
    return c * pow(u, N, N2) % N2


def expect(
    verify: Callable[[], None], name: str, prover: int, check: Check, field: str | None
) -> ProofRejected:
    with pytest.raises(ProofRejected) as info:
        verify()
    err = info.value
    assert err.proof == name
    assert err.check == check, (err.check, err.field, err.detail)
    assert err.prover == prover
    if field is not None:
        assert err.field == field
    return err


# --- Πmul ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MulCase:
    ctx: ProofContext
    public: mul.MulPublic
    private: mul.MulPrivate
    proof: mul.MulProof

    def rejected(self, check: Check, field: str | None = None, **changes: Any) -> ProofRejected:
        ctx = changes.pop("ctx", self.ctx)
        public = changes.pop("public", self.public)
        proof = replace(self.proof, **changes)
        return expect(lambda: mul.verify(ctx, public, proof), mul.NAME, ctx.prover, check, field)


def mul_statement(
    x: int, y: int, *, x_enc: int | None = None
) -> tuple[mul.MulPublic, mul.MulPrivate]:
    """X = enc(x_enc; ρx) (default x), Y = enc(y), C = Y^x·ρ^N."""
    X, rho_x = KEY.encrypt(x if x_enc is None else x_enc)
    Y, _ = KEY.encrypt(y)
    rho = random_unit(N)
    C = KEY.powmod_n2(Y, x) * KEY.encrypt_with(0, rho) % N2
    return mul.MulPublic(KEY.public, X, Y, C), mul.MulPrivate(x, rho, rho_x)


def make_mul(x: int, y: int, prover: int = 3, **kwargs: int) -> MulCase:
    public, private = mul_statement(x, y, **kwargs)
    ctx = new_context(prover)
    return MulCase(ctx, public, private, mul.prove(ctx, public, private, KEY))


@pytest.fixture(scope="module")
def mcase() -> MulCase:
    return make_mul(secrets.randbelow(Q), secrets.randbelow(Q))


@settings(max_examples=5, deadline=None)
@given(
    x=st.integers(min_value=-B1, max_value=B1),
    y=st.integers(min_value=-(1 << 1500), max_value=1 << 1500),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
)
@example(x=B1, y=-1, prover=1)
@example(x=-B1, y=1 << 1500, prover=MAX_PARTY_INDEX)
@example(x=0, y=0, prover=2)
def test_mul_completeness(x: int, y: int, prover: int) -> None:
    c = make_mul(x, y, prover)
    assert mul.verify(c.ctx, c.public, c.proof) is None
    assert abs(c.proof.z) <= Z_BOUND
    received = mul.MulProof.from_bytes(c.proof.to_bytes())
    assert received == c.proof
    assert mul.verify(c.ctx, c.public, received) is None
    # the statement's meaning: dec(C) = dec(X)·dec(Y) mod N
    assert KEY.decrypt(c.public.C) == KEY.decrypt(c.public.X) * KEY.decrypt(c.public.Y) % N


def test_mul_prover_refuses_large_witness() -> None:
    public, private = mul_statement(B1 + 1, 5)
    with pytest.raises(CryptoMisuse):
        mul.prove(new_context(), public, private, KEY)


@pytest.mark.parametrize(
    ("make_n", "check"),
    [
        (lambda n: (n >> 1) | 1, Check.MODULUS_SIZE),
        (lambda n: 2 * n + 1, Check.MODULUS_SIZE),
        (lambda n: n + 1, Check.MODULUS_FORM),
        (lambda n: n - n % 3, Check.MODULUS_FORM),
    ],
)
def test_mul_statement_modulus(mcase: MulCase, make_n: Callable[[int], int], check: Check) -> None:
    mcase.rejected(check, "N", public=replace(mcase.public, key=PaillierPublicKey(make_n(N))))


@pytest.mark.parametrize("field", ["X", "Y", "C"])
@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_mul_statement_ciphertext_domain(
    mcase: MulCase, field: str, label: str, bad: Domain, check: Check
) -> None:
    value = bad(getattr(mcase.public, field), N, KEY.p)
    mcase.rejected(check, field, public=replace(mcase.public, **{field: value}))


@pytest.mark.parametrize("sign", [1, -1])
def test_mul_z_bound_inclusive(mcase: MulCase, sign: int) -> None:
    mcase.rejected(Check.EQUATION, EQ_MUL_1, z=sign * Z_BOUND)


@pytest.mark.parametrize("sign", [1, -1])
def test_mul_z_bound_exceeded(mcase: MulCase, sign: int) -> None:
    mcase.rejected(Check.RANGE, "z", z=sign * (Z_BOUND + 1))


@pytest.mark.parametrize("field", ["A", "B"])
@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_mul_proof_ciphertext_domain(
    mcase: MulCase, field: str, label: str, bad: Domain, check: Check
) -> None:
    mcase.rejected(check, field, **{field: bad(getattr(mcase.proof, field), N, KEY.q)})


@pytest.mark.parametrize("field", ["u", "v"])
@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_mul_randomiser_domain(
    mcase: MulCase, field: str, label: str, bad: Domain, check: Check
) -> None:
    mcase.rejected(check, field, **{field: bad(getattr(mcase.proof, field), N, KEY.p)})


def test_mul_equations(mcase: MulCase) -> None:
    mcase.rejected(Check.EQUATION, EQ_MUL_1, z=mcase.proof.z + 1)
    mcase.rejected(Check.EQUATION, EQ_MUL_1, u=mcase.proof.u * 2 % N)
    mcase.rejected(Check.EQUATION, EQ_MUL_2, v=mcase.proof.v * 2 % N)
    mcase.rejected(Check.EQUATION, EQ_MUL_1, z=-mcase.proof.z)


def test_mul_false_product() -> None:
    """C = Y^x·ρ^N but X encrypts x + 1: dec(C) ≠ dec(X)·dec(Y), the second equation fails."""
    c = make_mul(7, 11, x_enc=8)
    expect(lambda: mul.verify(c.ctx, c.public, c.proof), mul.NAME, 3, Check.EQUATION, EQ_MUL_2)


def test_mul_false_product_other_c(mcase: MulCase) -> None:
    """C replaced by an encryption of dec(X)·dec(Y) + 1: the first equation fails."""
    C = KEY.public.add(mcase.public.C, KEY.encrypt(1)[0])
    mcase.rejected(Check.EQUATION, EQ_MUL_1, public=replace(mcase.public, C=C))


def test_mul_replay(mcase: MulCase) -> None:
    mcase.rejected(Check.EQUATION, EQ_MUL_1, ctx=ProofContext(secrets.token_bytes(32), 3))
    sid = bytearray(mcase.ctx.session_id)
    sid[0] ^= 1
    mcase.rejected(Check.EQUATION, EQ_MUL_1, ctx=ProofContext(bytes(sid), 3))
    err = mcase.rejected(Check.EQUATION, EQ_MUL_1, ctx=ProofContext(mcase.ctx.session_id, 4))
    assert err.prover == 4  # the party presenting another's proof is the one blamed


# (element) → compensating mutation (case, e, t) → (public, proof): valid had e not moved
MulMutation = Callable[[MulCase, int, int], tuple[mul.MulPublic, mul.MulProof]]
MUL_BINDING: dict[str, MulMutation] = {
    "A": lambda c, e, t: (c.public, replace(c.proof, A=renc(c.proof.A, t), u=c.proof.u * t % N)),
    "B": lambda c, e, t: (c.public, replace(c.proof, B=renc(c.proof.B, t), v=c.proof.v * t % N)),
    "C": lambda c, e, t: (
        replace(c.public, C=renc(c.public.C, t)),
        replace(c.proof, u=c.proof.u * pow(t, e, N) % N),
    ),
    "X": lambda c, e, t: (
        replace(c.public, X=renc(c.public.X, t)),
        replace(c.proof, v=c.proof.v * pow(t, e, N) % N),
    ),
    "Y": lambda c, e, t: (
        replace(c.public, Y=renc(c.public.Y, t)),
        replace(c.proof, u=c.proof.u * pow(t, -c.proof.z, N) % N),
    ),
}


@pytest.mark.parametrize("element", list(MUL_BINDING))
def test_mul_every_element_hashed(
    mcase: MulCase, element: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = mul._challenge(mcase.ctx, mcase.public, mcase.proof.A, mcase.proof.B)
    public, proof = MUL_BINDING[element](mcase, e, random_unit(N))
    mcase.rejected(Check.EQUATION, EQ_MUL_1, public=public, **vars(proof))
    # control: with the challenge frozen, the compensated mutation would verify
    monkeypatch.setattr(mul, "_challenge", lambda *args: e)
    assert mul.verify(mcase.ctx, public, proof) is None


# --- Πmul* --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StarCase:
    ctx: ProofContext
    public: mul.MulStarPublic
    private: mul.MulStarPrivate
    proof: mul.MulStarProof

    def rejected(self, check: Check, field: str | None = None, **changes: Any) -> ProofRejected:
        ctx = changes.pop("ctx", self.ctx)
        public = changes.pop("public", self.public)
        aux = changes.pop("aux", AUX)
        proof = replace(self.proof, **changes)
        return expect(
            lambda: mul.verify_star(ctx, public, proof, aux),
            mul.STAR_NAME,
            ctx.prover,
            check,
            field,
        )


def star_statement(
    x: int, *, x_point: int | None = None
) -> tuple[mul.MulStarPublic, mul.MulStarPrivate]:
    """C = enc(c), D = C^x·ρ^N, X = x_point·G (default x)."""
    C, _ = KEY.encrypt(random_signed(ELL))
    rho = random_unit(N)
    D = KEY.powmod_n2(C, x) * KEY.encrypt_with(0, rho) % N2
    X = Point.base_mul(x if x_point is None else x_point)
    return mul.MulStarPublic(KEY.public, C, D, X), mul.MulStarPrivate(x, rho)


def make_star(x: int, prover: int = 3, aux: Any = AUX, **kwargs: int) -> StarCase:
    public, private = star_statement(x, **kwargs)
    ctx = new_context(prover)
    return StarCase(ctx, public, private, mul.prove_star(ctx, public, private, aux, KEY))


@pytest.fixture(scope="module")
def scase() -> StarCase:
    return make_star(secrets.randbelow(Q - 1) + 1)


@settings(max_examples=5, deadline=None)
@given(
    x=st.integers(min_value=-(1 << ELL), max_value=1 << ELL).filter(lambda v: v % Q != 0),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
)
@example(x=1 << ELL, prover=1)
@example(x=-(1 << ELL), prover=MAX_PARTY_INDEX)
@example(x=1, prover=2)
def test_star_completeness(x: int, prover: int) -> None:
    c = make_star(x, prover)
    assert mul.verify_star(c.ctx, c.public, c.proof, AUX) is None
    assert mul.verify_star(c.ctx, c.public, c.proof, AUX_SECRET) is None
    assert abs(c.proof.z1) <= B1 and abs(c.proof.z2) <= DOS
    received = mul.MulStarProof.from_bytes(c.proof.to_bytes())
    assert received == c.proof
    assert mul.verify_star(c.ctx, c.public, received, AUX) is None


def test_star_prover_refuses_large_witness() -> None:
    public, private = star_statement((1 << ELL) + 1)
    with pytest.raises(CryptoMisuse):
        mul.prove_star(new_context(), public, private, AUX, KEY)


@pytest.mark.parametrize(
    ("make_n", "check"),
    [(lambda n: (n >> 1) | 1, Check.MODULUS_SIZE), (lambda n: n + 1, Check.MODULUS_FORM)],
)
def test_star_statement_modulus(
    scase: StarCase, make_n: Callable[[int], int], check: Check
) -> None:
    scase.rejected(check, "N0", public=replace(scase.public, key=PaillierPublicKey(make_n(N))))


@pytest.mark.parametrize("field", ["C", "D"])
@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_star_statement_ciphertext_domain(
    scase: StarCase, field: str, label: str, bad: Domain, check: Check
) -> None:
    value = bad(getattr(scase.public, field), N, KEY.q)
    scase.rejected(check, field, public=replace(scase.public, **{field: value}))


def test_star_statement_X(scase: StarCase) -> None:
    scase.rejected(Check.IDENTITY_POINT, "X", public=replace(scase.public, X=Point.identity()))
    scase.rejected(Check.BAD_POINT, "X", public=replace(scase.public, X=scase.public.X.to_bytes()))


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize(
    ("field", "bound", "equation"), [("z1", B1, EQ_STAR_1), ("z2", DOS, EQ_STAR_3)]
)
def test_star_range_inclusive_and_exceeded(
    scase: StarCase, field: str, bound: int, equation: str, sign: int
) -> None:
    scase.rejected(Check.EQUATION, equation, **{field: sign * bound})
    scase.rejected(Check.RANGE, field, **{field: sign * (bound + 1)})


@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_star_A_domain(scase: StarCase, label: str, bad: Domain, check: Check) -> None:
    scase.rejected(check, "A", A=bad(scase.proof.A, N, KEY.p))


@pytest.mark.parametrize(
    ("field", "modulus", "factor"),
    [
        ("E", AUX.n, AUX_SECRET.paillier.p),
        ("S", AUX.n, AUX_SECRET.paillier.q),
        ("w", N, KEY.q),
    ],
)
@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_star_unit_domain(
    scase: StarCase, field: str, modulus: int, factor: int, label: str, bad: Domain, check: Check
) -> None:
    scase.rejected(check, field, **{field: bad(getattr(scase.proof, field), modulus, factor)})


def test_star_Bx(scase: StarCase) -> None:
    scase.rejected(Check.IDENTITY_POINT, "Bx", Bx=Point.identity())
    scase.rejected(Check.BAD_POINT, "Bx", Bx=scase.proof.Bx.to_bytes())


def test_star_equations(scase: StarCase) -> None:
    scase.rejected(Check.EQUATION, EQ_STAR_1, z1=scase.proof.z1 + 1)
    scase.rejected(Check.EQUATION, EQ_STAR_1, w=scase.proof.w * 2 % N)
    scase.rejected(Check.EQUATION, EQ_STAR_3, z2=scase.proof.z2 + 1)
    scase.rejected(Check.EQUATION, EQ_STAR_1, z1=-scase.proof.z1)


def test_star_X_not_x_times_G() -> None:
    """D = C^x·ρ^N but X = (x + 1)·G: only the curve equation fails."""
    c = make_star(5, x_point=6)
    expect(
        lambda: mul.verify_star(c.ctx, c.public, c.proof, AUX),
        mul.STAR_NAME,
        3,
        Check.EQUATION,
        EQ_STAR_2,
    )


def test_star_D_multiplies_other_x(scase: StarCase) -> None:
    """D = C^(x+1)·ρ^N with X = x·G: the Paillier equation fails."""
    D = KEY.public.add(scase.public.D, scase.public.C)
    scase.rejected(Check.EQUATION, EQ_STAR_1, public=replace(scase.public, D=D))


def test_star_replay(scase: StarCase) -> None:
    scase.rejected(Check.EQUATION, EQ_STAR_1, ctx=ProofContext(secrets.token_bytes(32), 3))
    scase.rejected(Check.EQUATION, EQ_STAR_1, ctx=ProofContext(scase.ctx.session_id, 1))


def test_star_other_verifier(scase: StarCase) -> None:
    """Made for verifier 1's parameters, presented to verifier 2: a commitment is not a unit
    below the other N̂, or the re-derived challenge breaks the first equation."""
    big = [f for f in ("E", "S") if getattr(scase.proof, f) >= OTHER_AUX.n]
    if big:
        scase.rejected(Check.RANGE, big[0], aux=OTHER_AUX)
    else:
        scase.rejected(Check.EQUATION, EQ_STAR_1, aux=OTHER_AUX)


def test_star_under_provers_own_parameters() -> None:
    """A proof over parameters whose trapdoor the prover holds is rejected by the verifier, who
    always uses its own."""
    c = make_star(9, aux=ring_pedersen(0).params)
    assert mul.verify_star(c.ctx, c.public, c.proof, ring_pedersen(0).params) is None
    with pytest.raises(ProofRejected):
        mul.verify_star(c.ctx, c.public, c.proof, AUX_SECRET)


StarMutation = Callable[[StarCase, int, int], tuple[mul.MulStarPublic, mul.MulStarProof]]
# element → (mutation, compensated, equation the element itself is in)
STAR_BINDING: dict[str, tuple[StarMutation, bool, str]] = {
    "A": (
        lambda c, e, t: (c.public, replace(c.proof, A=renc(c.proof.A, t), w=c.proof.w * t % N)),
        True,
        EQ_STAR_1,
    ),
    "Bx": (lambda c, e, t: (c.public, replace(c.proof, Bx=c.proof.Bx + G)), False, EQ_STAR_2),
    "E": (
        lambda c, e, t: (
            c.public,
            replace(c.proof, E=c.proof.E * AUX.t % AUX.n, z2=c.proof.z2 + 1),
        ),
        True,
        EQ_STAR_3,
    ),
    "S": (
        lambda c, e, t: (
            c.public,
            replace(c.proof, S=c.proof.S * AUX.t % AUX.n, z2=c.proof.z2 + e),
        ),
        True,
        EQ_STAR_3,
    ),
    "C": (
        lambda c, e, t: (
            replace(c.public, C=renc(c.public.C, t)),
            replace(c.proof, w=c.proof.w * pow(t, -c.proof.z1, N) % N),
        ),
        True,
        EQ_STAR_1,
    ),
    "D": (
        lambda c, e, t: (
            replace(c.public, D=renc(c.public.D, t)),
            replace(c.proof, w=c.proof.w * pow(t, e, N) % N),
        ),
        True,
        EQ_STAR_1,
    ),
    "X": (lambda c, e, t: (replace(c.public, X=c.public.X + G), c.proof), False, EQ_STAR_2),
}


@pytest.mark.parametrize("element", list(STAR_BINDING))
def test_star_every_element_hashed(
    scase: StarCase, element: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = scase.proof
    e = mul._star_challenge(scase.ctx, scase.public, AUX, [p.A, p.Bx, p.E, p.S])
    mutation, compensated, own_equation = STAR_BINDING[element]
    public, proof = mutation(scase, e, random_unit(N))
    scase.rejected(Check.EQUATION, EQ_STAR_1, public=public, **vars(proof))
    monkeypatch.setattr(mul, "_star_challenge", lambda *args: e)
    if compensated:
        assert mul.verify_star(scase.ctx, public, proof, AUX) is None
    else:
        scase.rejected(Check.EQUATION, own_equation, public=public, **vars(proof))
