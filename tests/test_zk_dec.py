"""Πdec (CGGMP21 Fig. 30) and its group-element variant: completeness, every verifier check in
isolation, false statements (including the y + N0 witness that only the z1 range stops), binding
of every element, replay across sessions, provers and verifiers.  The wire format:
test_zk_wire.py.

N0 is the prover's own Paillier key, (N̂, s, t) the verifier's ring-Pedersen parameters.  Each
rejection asserts the exact `Check`, the field or equation, and that the prover is blamed.
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

from signer.arith import random_signed, random_signed_times, random_unit
from signer.curve import Point, Q
from signer.errors import Check, CryptoMisuse, ProofRejected
from signer.paillier import PaillierPublicKey
from signer.params import EPSILON, MAX_PARTY_INDEX
from signer.zk import dec
from signer.zk.common import ProofContext

KEY = paillier_key(0)  # the prover's key N0
N, N2 = KEY.n, KEY.public.n2
AUX_SECRET = ring_pedersen(1)
AUX = AUX_SECRET.params
OTHER_AUX = ring_pedersen(2).params
LD = dec.PLAINTEXT_BITS
B1 = 1 << (LD + EPSILON)  # z1 ∈ ±2^(ℓd+ε)
DOS = AUX.n << (LD + EPSILON + 1)  # |z2|
EQ1 = "enc(z1; w) = A·C^e"
EQ2 = "z1 = γ + e·x mod q"
EQ2_GROUP = "z1·g = Y + e·X"
EQ3 = "s^z1·t^z2 = T·S^e"
G = Point.generator()


def renc(c: int, u: int) -> int:
    return c * pow(u, N, N2) % N2


@dataclass(frozen=True)
class Case:
    """One proof of either form; `group` selects verify_group."""

    ctx: ProofContext
    public: Any
    private: dec.DecPrivate
    proof: Any
    group: bool

    @property
    def name(self) -> str:
        return dec.GROUP_NAME if self.group else dec.NAME

    def verify(self, **changes: Any) -> None:
        ctx = changes.pop("ctx", self.ctx)
        public = changes.pop("public", self.public)
        aux = changes.pop("aux", AUX)
        proof = replace(self.proof, **changes)
        if self.group:
            return dec.verify_group(ctx, public, proof, aux)
        return dec.verify(ctx, public, proof, aux)

    def rejected(self, check: Check, field: str | None = None, **changes: Any) -> ProofRejected:
        ctx = changes.get("ctx", self.ctx)
        with pytest.raises(ProofRejected) as info:
            self.verify(**changes)
        err = info.value
        assert err.proof == self.name
        assert err.check == check, (err.check, err.field, err.detail)
        assert err.prover == ctx.prover
        if field is not None:
            assert err.field == field
        return err


def make(y: int, prover: int = 3, *, group: bool = False, x: int | None = None) -> Case:
    """C = enc(y); the statement claims x (default y mod q), or X = x·g for a random g."""
    C, rho = KEY.encrypt(y)
    claimed = y % Q if x is None else x
    ctx = new_context(prover)
    private = dec.DecPrivate(y, rho)
    if group:
        g = Point.base_mul(secrets.randbelow(Q - 1) + 1)
        gpub = dec.DecGroupPublic(KEY.public, C, g * claimed, g)
        return Case(ctx, gpub, private, dec.prove_group(ctx, gpub, private, AUX, KEY), True)
    public = dec.DecPublic(KEY.public, C, claimed)
    return Case(ctx, public, private, dec.prove(ctx, public, private, AUX, KEY), False)


def forge(case: Case, y: int, x: int) -> dec.DecProof:
    """The scalar prover without its witness guard: any integer y (the randomiser of C kept)."""
    nh = AUX.n
    alpha = random_signed(LD + EPSILON)
    mu, nu = random_signed_times(LD, nh), random_signed_times(LD + EPSILON, nh)
    r = random_unit(N)
    S, T, A = AUX.commit(y, mu), AUX.commit(alpha, nu), KEY.encrypt_with(alpha, r)
    gamma = alpha % Q
    public = replace(case.public, x=x)
    e = dec._challenge(case.ctx, public, AUX, [S, T, A, gamma])
    w = r * pow(case.private.rho, e, N) % N
    return dec.DecProof(S, T, A, gamma, alpha + e * y, nu + e * mu, w)


@pytest.fixture(scope="module")
def case() -> Case:
    return make(random_signed(LD))


@pytest.fixture(scope="module")
def gcase() -> Case:
    return make(random_signed(LD), group=True)


BOTH = ["case", "gcase"]


@pytest.fixture(params=BOTH)
def either(request: pytest.FixtureRequest) -> Case:
    value: Case = request.getfixturevalue(request.param)
    return value


# --- completeness -------------------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(
    y=st.integers(min_value=-(1 << LD), max_value=1 << LD),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
    group=st.booleans(),
)
@example(y=1 << LD, prover=1, group=False)
@example(y=-(1 << LD), prover=MAX_PARTY_INDEX, group=True)
@example(y=0, prover=2, group=False)
@example(y=Q, prover=2, group=False)
def test_completeness(y: int, prover: int, group: bool) -> None:
    if group and y % Q == 0:
        y += 1  # X = y·g must be a group element
    c = make(y, prover, group=group)
    assert c.verify() is None
    assert c.verify(aux=AUX_SECRET) is None
    assert abs(c.proof.z1) <= B1 and abs(c.proof.z2) <= DOS
    received = type(c.proof).from_bytes(c.proof.to_bytes())
    assert received == c.proof
    assert c.verify(**vars(received)) is None


def test_negative_plaintext_is_the_signed_decryption() -> None:
    """x is taken of the signed decryption: C = enc(−5) proves x = −5 mod q, not N0 − 5 mod q."""
    c = make(-5)
    assert c.public.x == Q - 5 and c.verify() is None
    other = replace(c.public, x=(N - 5) % Q)
    proof = dec.prove(c.ctx, other, c.private, AUX, KEY)
    with pytest.raises(ProofRejected):
        dec.verify(c.ctx, other, proof, AUX)


@pytest.mark.parametrize("group", [False, True])
def test_prover_refuses_out_of_range_witness(group: bool) -> None:
    c = make(5, group=group)
    private = dec.DecPrivate((1 << LD) + 1, c.private.rho)
    with pytest.raises(CryptoMisuse):
        if group:
            dec.prove_group(c.ctx, c.public, private, AUX, KEY)
        else:
            dec.prove(c.ctx, c.public, private, AUX, KEY)


# --- statement ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_n", "check"),
    [
        (lambda n: (n >> 1) | 1, Check.MODULUS_SIZE),
        (lambda n: 2 * n + 1, Check.MODULUS_SIZE),
        (lambda n: n + 1, Check.MODULUS_FORM),
        (lambda n: n - n % 3, Check.MODULUS_FORM),
    ],
)
def test_statement_modulus(either: Case, make_n: Callable[[int], int], check: Check) -> None:
    either.rejected(check, "N0", public=replace(either.public, key=PaillierPublicKey(make_n(N))))


@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_statement_ciphertext_domain(either: Case, label: str, bad: Domain, check: Check) -> None:
    value = bad(either.public.ciphertext, N, KEY.p)
    either.rejected(check, "C", public=replace(either.public, ciphertext=value))


@pytest.mark.parametrize("x", [Q, Q + 1, -1, -Q, 1 << 256])
def test_statement_x_not_a_scalar(case: Case, x: int) -> None:
    case.rejected(Check.RANGE, "x", public=replace(case.public, x=x))


def test_statement_x_at_the_ends_passes_the_range(case: Case) -> None:
    """x = 0 and x = q − 1 are scalars: past the range check (x is hashed, so the re-derived
    challenge breaks the first equation)."""
    for x in (0, Q - 1):
        if x != case.public.x:
            case.rejected(Check.EQUATION, EQ1, public=replace(case.public, x=x))


@pytest.mark.parametrize("field", ["point", "base"])
def test_statement_points(gcase: Case, field: str) -> None:
    name = {"point": "X", "base": "g"}[field]
    gcase.rejected(
        Check.IDENTITY_POINT, name, public=replace(gcase.public, **{field: Point.identity()})
    )
    raw = getattr(gcase.public, field).to_bytes()
    gcase.rejected(Check.BAD_POINT, name, public=replace(gcase.public, **{field: raw}))


# --- ranges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1])
def test_z1_bound_inclusive(either: Case, sign: int) -> None:
    either.rejected(Check.EQUATION, EQ1, z1=sign * B1)


@pytest.mark.parametrize("sign", [1, -1])
def test_z1_bound_exceeded(either: Case, sign: int) -> None:
    either.rejected(Check.RANGE, "z1", z1=sign * (B1 + 1))


@pytest.mark.parametrize("sign", [1, -1])
def test_z2_dos_bound(either: Case, sign: int) -> None:
    either.rejected(Check.EQUATION, EQ3, z2=sign * DOS)
    either.rejected(Check.RANGE, "z2", z2=sign * (DOS + 1))


@pytest.mark.parametrize("gamma", [Q, Q + 5, -1])
def test_gamma_not_a_scalar(case: Case, gamma: int) -> None:
    case.rejected(Check.RANGE, "gamma", gamma=gamma)


# --- element domains ----------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "bad", "check"), CIPHERTEXT_DOMAIN)
def test_A_domain(either: Case, label: str, bad: Domain, check: Check) -> None:
    either.rejected(check, "A", A=bad(either.proof.A, N, KEY.q))


@pytest.mark.parametrize(
    ("field", "modulus", "factor"),
    [("S", AUX.n, AUX_SECRET.paillier.p), ("T", AUX.n, AUX_SECRET.paillier.q), ("w", N, KEY.p)],
)
@pytest.mark.parametrize(("label", "bad", "check"), UNIT_DOMAIN)
def test_unit_domain(
    either: Case, field: str, modulus: int, factor: int, label: str, bad: Domain, check: Check
) -> None:
    either.rejected(check, field, **{field: bad(getattr(either.proof, field), modulus, factor)})


def test_commitment_checked_mod_the_verifiers_modulus(case: Case) -> None:
    """A factor of N̂ is a unit mod N0: only the check against N̂ catches it."""
    assert N % AUX_SECRET.paillier.q != 0
    case.rejected(Check.NOT_UNIT, "S", S=AUX_SECRET.paillier.q)


def test_Y_point(gcase: Case) -> None:
    gcase.rejected(Check.IDENTITY_POINT, "Y", Y=Point.identity())
    gcase.rejected(Check.BAD_POINT, "Y", Y=gcase.proof.Y.to_bytes())


# --- equations and false statements -------------------------------------------------------------


def test_equations(either: Case) -> None:
    p = either.proof
    either.rejected(Check.EQUATION, EQ1, z1=p.z1 + 1)
    either.rejected(Check.EQUATION, EQ1, w=p.w * 2 % N)
    either.rejected(Check.EQUATION, EQ3, z2=p.z2 + 1)
    either.rejected(Check.EQUATION, EQ1, z1=-p.z1)


@pytest.mark.parametrize("group", [False, True])
def test_false_statement(group: bool) -> None:
    """The claimed value is dec(C) + 1 (mod q): only the mod-q / curve equation fails."""
    y = random_signed(LD)
    c = make(y, group=group, x=(y + 1) % Q)
    c.rejected(Check.EQUATION, EQ2_GROUP if group else EQ2)


def test_witness_y_plus_n0_is_stopped_by_the_z1_range(case: Case) -> None:
    """y' = y + N0 encrypts the same under N0 but y' mod q ≠ y mod q.  Every equation holds
    for a proof with that witness; the z1 range is what rejects it (the reason for the check,
    see signer/zk/dec.py)."""
    y_fake = case.private.y + N
    x_fake = y_fake % Q
    assert x_fake != case.public.x
    proof = forge(case, y_fake, x_fake)
    public = replace(case.public, x=x_fake)
    e = dec._challenge(case.ctx, public, AUX, [proof.S, proof.T, proof.A, proof.gamma])
    assert (
        KEY.public.encrypt_public(proof.z1, proof.w) == proof.A * pow(public.ciphertext, e, N2) % N2
    )
    assert (proof.z1 - proof.gamma - e * public.x) % Q == 0
    assert AUX.commit_public(proof.z1, proof.z2) == proof.T * pow(proof.S, e, AUX.n) % AUX.n
    case.rejected(Check.RANGE, "z1", public=public, **vars(proof))


def test_forge_helper_is_faithful(case: Case) -> None:
    proof = forge(case, case.private.y, case.public.x)
    assert case.verify(**vars(proof)) is None


# --- replay -------------------------------------------------------------------------------------


def test_replay_other_session_or_prover(either: Case) -> None:
    either.rejected(Check.EQUATION, EQ1, ctx=ProofContext(secrets.token_bytes(32), 3))
    sid = bytearray(either.ctx.session_id)
    sid[-1] ^= 0x80
    either.rejected(Check.EQUATION, EQ1, ctx=ProofContext(bytes(sid), 3))
    err = either.rejected(Check.EQUATION, EQ1, ctx=ProofContext(either.ctx.session_id, 2))
    assert err.prover == 2


def test_replay_to_other_verifier(either: Case) -> None:
    big = [f for f in ("S", "T") if getattr(either.proof, f) >= OTHER_AUX.n]
    if big:
        either.rejected(Check.RANGE, big[0], aux=OTHER_AUX)
    else:
        either.rejected(Check.EQUATION, EQ1, aux=OTHER_AUX)


# --- Fiat–Shamir binding of every element --------------------------------------------------------

Mutation = Callable[[Case, int, int], tuple[Any, Any]]
COMMON: dict[str, tuple[Mutation, bool, str]] = {
    "S": (
        lambda c, e, t: (
            c.public,
            replace(c.proof, S=c.proof.S * AUX.t % AUX.n, z2=c.proof.z2 + e),
        ),
        True,
        EQ3,
    ),
    "T": (
        lambda c, e, t: (
            c.public,
            replace(c.proof, T=c.proof.T * AUX.t % AUX.n, z2=c.proof.z2 + 1),
        ),
        True,
        EQ3,
    ),
    "A": (
        lambda c, e, t: (c.public, replace(c.proof, A=renc(c.proof.A, t), w=c.proof.w * t % N)),
        True,
        EQ1,
    ),
    "C": (
        lambda c, e, t: (
            replace(c.public, ciphertext=renc(c.public.ciphertext, t)),
            replace(c.proof, w=c.proof.w * pow(t, e, N) % N),
        ),
        True,
        EQ1,
    ),
}
SCALAR: dict[str, tuple[Mutation, bool, str]] = {
    **COMMON,
    "gamma": (
        lambda c, e, t: (c.public, replace(c.proof, gamma=(c.proof.gamma + 1) % Q)),
        False,
        EQ2,
    ),
    "x": (lambda c, e, t: (replace(c.public, x=(c.public.x + 1) % Q), c.proof), False, EQ2),
}
GROUP: dict[str, tuple[Mutation, bool, str]] = {
    **COMMON,
    "Y": (lambda c, e, t: (c.public, replace(c.proof, Y=c.proof.Y + G)), False, EQ2_GROUP),
    "X": (lambda c, e, t: (replace(c.public, point=c.public.point + G), c.proof), False, EQ2_GROUP),
    "g": (lambda c, e, t: (replace(c.public, base=c.public.base + G), c.proof), False, EQ2_GROUP),
}
BINDING = [("case", k) for k in SCALAR] + [("gcase", k) for k in GROUP]


@pytest.mark.parametrize(("which", "element"), BINDING)
def test_every_element_hashed(
    which: str, element: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    c: Case = request.getfixturevalue(which)
    p = c.proof
    if c.group:
        e = dec._group_challenge(c.ctx, c.public, AUX, [p.S, p.T, p.A, p.Y])
        mutation, compensated, own = GROUP[element]
    else:
        e = dec._challenge(c.ctx, c.public, AUX, [p.S, p.T, p.A, p.gamma])
        mutation, compensated, own = SCALAR[element]
    public, proof = mutation(c, e, random_unit(N))
    c.rejected(Check.EQUATION, EQ1, public=public, **vars(proof))
    # control: had the challenge ignored the element, the mutation would pass (or fail only at
    # the element's own, later equation)
    monkeypatch.setattr(dec, "_group_challenge" if c.group else "_challenge", lambda *a: e)
    if compensated:
        assert c.verify(public=public, **vars(proof)) is None
    else:
        c.rejected(Check.EQUATION, own, public=public, **vars(proof))
