"""Named regression tests from /work/shared/research/attacks.md for the aux-info proofs
(Πmod, Πprm, Πfac): A02 BitForge / 6ix1een / tss-lib TestAttackMod, A05 c-split, A06 c-guess,
A07 degenerate ring-Pedersen parameters, A08 Πmod/Πfac implementation pitfalls, A13 replay and
CVE-2025-66016 (Πmod without gcd(w, N) = 1).

Roles: party 1 is honest (fixture key 0), party 3 is the attacker, "the verifier" owns
ring-Pedersen parameters `VERIFIER` and the attacker's own parameters `ATTACKER_AUX` have the
smaller modulus of the two (so a proof made under them has every commitment in range for the
verifier and fails on an equation, deterministically).  Malicious moduli are built from seeded
random primes, so every test is reproducible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import random
import re
import secrets
from collections.abc import Callable, Sequence
from math import gcd, isqrt, prod
from pathlib import Path

import gmpy2
import pytest
from conftest import fixture_primes, paillier_key, ring_pedersen

import signer.arith as arith_module
import signer.paillier as paillier_module
import signer.params as params_module
import signer.ring_pedersen as rp_module
from signer.errors import Check, InvalidParameter, ProofRejected
from signer.paillier import validate_modulus
from signer.params import ELL, EPSILON, M_ITERATIONS, MODULUS_BITS
from signer.primes import SMALL_PRIMES
from signer.ring_pedersen import RingPedersenParams, RingPedersenSecret
from signer.zk import common, fac, mod, prm
from signer.zk.common import ProofContext
from signer.zk.fac import FacProof
from signer.zk.mod import ModProof
from signer.zk.prm import PrmProof

M = M_ITERATIONS
HONEST = 1
ATTACKER = 3
P1_KEY = paillier_key(0)
P1_AUX = ring_pedersen(0)
_SMALL_FIRST = sorted((ring_pedersen(1), ring_pedersen(2)), key=lambda rp: rp.params.n)
ATTACKER_AUX, VERIFIER = _SMALL_FIRST
#: The verifier checks Πfac with its own secret (CRT) or, re-checking a transcript, its params.
VERIFIER_FORMS = (VERIFIER.params, VERIFIER)
EQ1 = "s^z1·t^w1 = A·P^e"
EQ2 = "s^z2·t^w2 = B·Q^e"
EQ3 = "Q^z1·t^v = T·R^e"


def context(label: str, prover: int) -> ProofContext:
    return ProofContext(hashlib.sha256(label.encode()).digest(), prover)


def expect(
    call: Callable[[], None], proof: str, check: Check, field: str, prover: int
) -> ProofRejected:
    with pytest.raises(ProofRejected) as info:
        call()
    err = info.value
    assert err.proof == proof, err
    assert err.check is check, err
    assert err.field == field, err
    assert err.prover == prover, err
    return err


def x_equation(i: int) -> str:
    return f"x[{i}]^4 = ±w^b·y[{i}]"


def prm_equation(i: int) -> str:
    return f"t^z[{i}] = A[{i}]·s^e[{i}]"


class ExpSpy:
    """Records every modular exponentiation a verifier can reach: the gmpy2 entry points and
    every powmod*/FixedBase/parallel_map name bound in the signer modules."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("powmod", "powmod_sec", "powmod_base_list", "powmod_exp_list"):
            if hasattr(gmpy2, name):
                self._wrap(monkeypatch, gmpy2, name)
        modules = (arith_module, paillier_module, rp_module, common, mod, prm, fac)
        for module in modules:
            for name, value in list(vars(module).items()):
                wanted = name.startswith("powmod") or name in {"FixedBase", "parallel_map"}
                if wanted and callable(value):
                    self._wrap(monkeypatch, module, name)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        original = getattr(owner, name)

        def spy(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)


# --- honest proofs of party 1 (reused) ---------------------------------------------------------


@pytest.fixture(scope="module")
def mod_case() -> tuple[ProofContext, ModProof]:
    ctx = context("session-A", HONEST)
    return ctx, mod.prove(ctx, P1_KEY)


@pytest.fixture(scope="module")
def prm_case() -> tuple[ProofContext, PrmProof]:
    ctx = context("session-A", HONEST)
    return ctx, prm.prove(ctx, P1_AUX)


@pytest.fixture(scope="module")
def fac_case() -> tuple[ProofContext, FacProof]:
    ctx = context("session-A", HONEST)
    return ctx, fac.prove(ctx, P1_KEY, VERIFIER.params)


# --- malicious moduli --------------------------------------------------------------------------

_SIEVE = prod(p for p in SMALL_PRIMES if p < 5000)


def small_prime(rng: random.Random, bits: int, residue: int | None) -> int:
    """A prime of exactly `bits` bits, ≡ residue (mod 4) when residue is given."""
    while True:
        p = int(gmpy2.next_prime(rng.getrandbits(bits) | (1 << (bits - 1))))
        if p.bit_length() == bits and (residue is None or p % 4 == residue):
            return p


def completing_prime(rng: random.Random, cofactor: int, residue: int, modulus: int) -> int:
    """A prime P ≡ residue (mod modulus) such that P·cofactor has exactly MODULUS_BITS bits."""
    lo = -(-(1 << (MODULUS_BITS - 1)) // cofactor)
    hi = ((1 << MODULUS_BITS) - 1) // cofactor
    while True:
        c = rng.randrange(lo, hi)
        c += (residue - c) % modulus
        while c <= hi:
            if gcd(c, _SIEVE) == 1 and gmpy2.is_prime(c, 30):
                return c
            c += modulus


@dataclasses.dataclass(frozen=True)
class BadModulus:
    big: int
    smalls: tuple[int, ...]

    @property
    def factors(self) -> tuple[int, ...]:
        return (self.big, *self.smalls)

    @property
    def cofactor(self) -> int:
        return prod(self.smalls)

    @property
    def n(self) -> int:
        return self.big * self.cofactor

    @property
    def phi(self) -> int:
        return prod(p - 1 for p in self.factors)


def bad_modulus(
    seed: int,
    small_bits: Sequence[int],
    *,
    small_residue: int | None,
    big_residue: int,
    big_modulus: int,
    fixed: Sequence[int] = (),
) -> BadModulus:
    """big prime · (given primes) · (random primes of the given sizes), exactly 3072 bits, with
    gcd(N, φ(N)) = 1 so that N-th roots (Πmod's z_i) exist and the attacker can compute them."""
    rng = random.Random(seed)
    while True:
        smalls = list(fixed)
        for bits in small_bits:
            p = small_prime(rng, bits, small_residue)
            while p in smalls:
                p = small_prime(rng, bits, small_residue)
            smalls.append(p)
        big = completing_prime(rng, prod(smalls), big_residue, big_modulus)
        candidate = BadModulus(big, tuple(smalls))
        if gcd(candidate.n, candidate.phi) == 1:
            assert candidate.n.bit_length() == MODULUS_BITS
            return candidate


def crt(residues: Sequence[int], moduli: Sequence[int]) -> int:
    total = prod(moduli)
    x = 0
    for r, m in zip(residues, moduli, strict=True):
        rest = total // m
        x += r * rest * int(gmpy2.invert(rest, m))
    return x % total


def fourth_root(u: int, p: int) -> int | None:
    """A fourth root of u modulo a prime p ≡ 3 (mod 4), or None if u is not a square."""
    u %= p
    if gmpy2.legendre(u, p) != 1:
        return None
    root = int(gmpy2.powmod(u, pow((p + 1) // 4, 2, p - 1), p))
    assert pow(root, 4, p) == u
    return root


def jacobi_minus_one_unit(rng: random.Random, n: int) -> int:
    while True:
        w = rng.randrange(2, n - 1)
        if gmpy2.jacobi(w, n) == -1:
            return w


def tsslib_forgery(ctx: ProofContext, bad: BadModulus) -> ModProof:
    """tss-lib TestAttackMod: W ≡ 1 (mod P), W ≡ 0 (mod every q_i), so Jacobi(W | N) = 0.
    With b_i = 1 every q_i-component of x_i^4 ≡ ±W·y_i is 0 ≡ 0, so only a fourth root modulo
    the single big prime P ≡ 7 (mod 8) is needed: x_i = root·W, z_i = y_i^(N⁻¹ mod φ)."""
    n, big, cofactor = bad.n, bad.big, bad.cofactor
    w = cofactor * int(gmpy2.invert(cofactor, big)) % n
    ys = mod._challenges(ctx, n, w)
    n_inv = int(gmpy2.invert(n, bad.phi))
    xs, as_, zs = [], [], []
    for y in ys:
        a = 0 if gmpy2.legendre(y % big, big) == 1 else 1
        root = fourth_root((-1) ** a * y, big)
        assert root is not None
        xs.append(root * w % n)
        as_.append(a)
        zs.append(int(gmpy2.powmod(y, n_inv, n)))
    return ModProof(w, tuple(xs), tuple(as_), (1,) * M, tuple(zs))


def best_effort_mod(ctx: ProofContext, bad: BadModulus, w: int) -> tuple[ModProof, int]:
    """The best a prover knowing every factor can do for a modulus with more than two prime
    factors (all ≡ 3 mod 4): per iteration take the (a, b) that makes (−1)^a·w^b·y a square
    modulo the most factors, answer with fourth roots where they exist and compute z_i exactly.
    The first iteration it cannot answer is returned; later iterations are padded, since the
    verifier stops there anyway."""
    n, factors = bad.n, bad.factors
    ys = mod._challenges(ctx, n, w)
    n_inv = int(gmpy2.invert(n, bad.phi))
    xs: list[int] = []
    as_: list[int] = []
    bs: list[int] = []
    zs: list[int] = []
    first_bad = -1
    for i, y in enumerate(ys):
        if first_bad >= 0:
            xs.append(xs[0])
            as_.append(as_[0])
            bs.append(bs[0])
            zs.append(zs[0])
            continue
        options = []
        for a, b in ((0, 0), (0, 1), (1, 0), (1, 1)):
            target = (-1) ** a * (w if b else 1) * y % n
            roots = [fourth_root(target, p) for p in factors]
            options.append((sum(r is not None for r in roots), a, b, roots))
        found, a, b, roots = max(options, key=lambda o: o[0])
        xs.append(crt([1 if r is None else r for r in roots], factors))
        as_.append(a)
        bs.append(b)
        zs.append(int(gmpy2.powmod(y, n_inv, n)))
        if found < len(factors):
            first_bad = i
    assert first_bad >= 0, "a non-Blum modulus answered all 128 iterations"
    return ModProof(w, tuple(xs), tuple(as_), tuple(bs), tuple(zs)), first_bad


def fac_prove_raw(ctx: ProofContext, n0: int, p: int, q: int, aux: RingPedersenParams) -> FacProof:
    """signer.zk.fac.prove for arbitrary integers p·q = N0 (the attacker's best effort)."""
    assert p * q == n0
    nh, s, t = aux.n, aux.s, aux.t
    sqrt_n0 = isqrt(n0)

    def signed(bits: int, factor: int) -> int:
        bound = factor << bits
        return secrets.randbelow(2 * bound + 1) - bound

    def commit(x: int, y: int) -> int:
        return int(gmpy2.powmod(s, x, nh) * gmpy2.powmod(t, y, nh) % nh)

    alpha, beta = signed(ELL + EPSILON, sqrt_n0), signed(ELL + EPSILON, sqrt_n0)
    mu, nu = signed(ELL, nh), signed(ELL, nh)
    sigma, r = signed(ELL, n0 * nh), signed(ELL + EPSILON, n0 * nh)
    x, y = signed(ELL + EPSILON, nh), signed(ELL + EPSILON, nh)
    P, Q, A, B = commit(p, mu), commit(q, nu), commit(alpha, x), commit(beta, y)
    T = int(gmpy2.powmod(Q, alpha, nh) * gmpy2.powmod(t, r, nh) % nh)
    e = fac._challenge(ctx, n0, aux, [P, Q, A, B, T, sigma])
    return FacProof(
        P,
        Q,
        A,
        B,
        T,
        sigma,
        z1=alpha + e * p,
        z2=beta + e * q,
        w1=x + e * mu,
        w2=y + e * nu,
        v=r + e * (sigma - nu * p),
    )


def forge_fac_with_trapdoor(
    ctx: ProofContext, n0: int, rp: RingPedersenSecret, z1: int = 1, z2: int = 1
) -> FacProof:
    """A Πfac for any N0 by someone who knows log_t s and φ(N̂) of the parameters used."""
    aux, phi, lam = rp.params, rp.phi, rp.lam
    nh, t = aux.n, aux.t
    k_p, k_q, k_a, k_b, k_t = (secrets.randbelow(phi) for _ in range(5))
    P, Q, A, B, T = (int(gmpy2.powmod(t, k, nh)) for k in (k_p, k_q, k_a, k_b, k_t))
    e = fac._challenge(ctx, n0, aux, [P, Q, A, B, T, 0])
    return FacProof(
        P,
        Q,
        A,
        B,
        T,
        0,
        z1=z1,
        z2=z2,
        w1=(k_a + e * k_p - lam * z1) % phi,
        w2=(k_b + e * k_q - lam * z2) % phi,
        v=(k_t + e * lam * n0 - k_q * z1) % phi,
    )


@pytest.fixture(scope="module")
def tsslib_modulus() -> BadModulus:
    """tss-lib TestAttackMod: N = P·q1·…·q7, P ≡ 7 (mod 8), q_i ~32-bit."""
    return bad_modulus(0x7E55, [32] * 7, small_residue=None, big_residue=7, big_modulus=8)


@pytest.fixture(scope="module")
def mid_modulus() -> BadModulus:
    """Seven Blum primes of 21..27 bits (above the 2^20 trial-division bound) times P."""
    return bad_modulus(
        0x1728, [21, 22, 23, 24, 25, 26, 27], small_residue=3, big_residue=7, big_modulus=8
    )


@pytest.fixture(scope="module")
def sixteen_modulus() -> BadModulus:
    """6ix1een shape: sixteen Blum primes of 21..24 bits times one big Blum prime."""
    return bad_modulus(0x6161, [21, 22, 23, 24] * 4, small_residue=3, big_residue=3, big_modulus=4)


@pytest.fixture(scope="module")
def sixteen_with_tiny_modulus() -> BadModulus:
    """The same shape with one factor below 2^16 (the largest Blum prime < 2^16), which the
    2^20 trial-division prefilter catches."""
    tiny = max(p for p in SMALL_PRIMES if p % 4 == 3)
    return bad_modulus(
        0x6164,
        [21, 22, 23, 24] * 3 + [21, 22, 23],
        small_residue=3,
        big_residue=3,
        big_modulus=4,
        fixed=(tiny,),
    )


# --- A02 BitForge ------------------------------------------------------------------------------


def test_T02a_sixteen_small_primes(sixteen_modulus: BadModulus) -> None:
    bad = sixteen_modulus
    assert len(bad.smalls) == 16 and all(1 << 20 < p < 1 << 24 for p in bad.smalls)
    ctx = context("T02a", ATTACKER)
    rng = random.Random(0x02A)

    # Πmod computed as far as it goes: fails on the first iteration without a fourth root.
    w = jacobi_minus_one_unit(rng, bad.n)
    proof, first_bad = best_effort_mod(ctx, bad, w)
    expect(lambda: mod.verify(ctx, bad.n, proof), "mod", Check.EQUATION, x_equation(first_bad), 3)

    # Πfac computed honestly for every way to split N into two factors that a cheater could
    # use: one side always contains the ~2780-bit prime, far above √N0, so z1 (or z2) is out
    # of range.
    aux = VERIFIER.params
    splits = [(bad.big, bad.cofactor, "z1"), (bad.cofactor, bad.big, "z2")]
    splits.append((bad.big * prod(bad.smalls[:8]), prod(bad.smalls[8:]), "z1"))
    for p, q, field in splits:
        fac_proof = fac_prove_raw(ctx, bad.n, p, q, aux)
        for form in VERIFIER_FORMS:
            expect(
                lambda fp=fac_proof, f=form: fac.verify(ctx, bad.n, fp, f),
                "fac",
                Check.RANGE,
                field,
                3,
            )

    # Πfac made under P3's *own* ring-Pedersen parameters (whose trapdoor it knows) verifies
    # there — and is rejected by a verifier that uses its own parameters.
    forged = forge_fac_with_trapdoor(ctx, bad.n, ATTACKER_AUX)
    fac.verify(ctx, bad.n, forged, ATTACKER_AUX.params)
    for form in VERIFIER_FORMS:
        expect(lambda f=form: fac.verify(ctx, bad.n, forged, f), "fac", Check.EQUATION, EQ1, 3)

    # Πprm is no defence here (it only shows s ∈ ⟨t⟩, which P3 can prove honestly for its
    # smooth N): the modulus form is Πmod's and Πfac's job, as asserted above.
    lam = rng.getrandbits(256)
    t = pow(rng.randrange(2, bad.n), 2, bad.n)
    params = RingPedersenParams(bad.n, pow(t, lam, bad.n), t)
    nonces = [rng.getrandbits(256) for _ in range(M)]
    commitments = tuple(pow(t, a, bad.n) for a in nonces)
    bits = prm._challenges(ctx, params, commitments)
    responses = tuple(a + e * lam for a, e in zip(nonces, bits, strict=True))
    prm.verify(ctx, params, PrmProof(commitments, responses))


def test_T02a_prefilter_catches_a_factor_below_2_16(
    sixteen_with_tiny_modulus: BadModulus,
    prm_case: tuple[ProofContext, PrmProof],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = sixteen_with_tiny_modulus
    assert min(bad.smalls) < 1 << 16 and len(bad.smalls) == 16
    ctx = context("T02a-tiny", ATTACKER)
    mod_proof, _ = best_effort_mod(ctx, bad, jacobi_minus_one_unit(random.Random(2), bad.n))
    fac_proof = fac_prove_raw(ctx, bad.n, bad.big, bad.cofactor, VERIFIER.params)
    spy = ExpSpy(monkeypatch)
    expect(lambda: mod.verify(ctx, bad.n, mod_proof), "mod", Check.MODULUS_FORM, "N", 3)
    expect(
        lambda: fac.verify(ctx, bad.n, fac_proof, VERIFIER.params),
        "fac",
        Check.MODULUS_FORM,
        "N0",
        3,
    )
    params = RingPedersenParams(bad.n, 4, 9)
    expect(lambda: prm.verify(ctx, params, prm_case[1]), "prm", Check.MODULUS_FORM, "(N, s, t)", 3)
    assert spy.calls == []


def test_T02b_gcd_w_forgery(tsslib_modulus: BadModulus, monkeypatch: pytest.MonkeyPatch) -> None:
    """tss-lib TestAttackMod (c84c096) ported: the forgery is complete — a verifier with the
    pre-fix checks (only 0 < w, x_i, z_i < N and `Jacobi(w, N) != 1`) accepts it — and each of
    our checks gcd(w, N) = 1, Jacobi(w | N) = −1 and x_i ∈ Z*_N rejects it on its own."""
    bad = tsslib_modulus
    assert len(bad.smalls) == 7 and all(q.bit_length() == 32 for q in bad.smalls)
    assert bad.big % 8 == 7
    ctx = context("T02b", ATTACKER)
    proof = tsslib_forgery(ctx, bad)
    n = bad.n
    assert gmpy2.jacobi(proof.w, n) == 0 and gcd(proof.w, n) == bad.cofactor

    expect(lambda: mod.verify(ctx, n, proof), "mod", Check.NOT_UNIT, "w", 3)

    real_jacobi, real_gcd = gmpy2.jacobi, math.gcd
    with monkeypatch.context() as mp:  # without the gcd check, Jacobi = 0 ≠ −1 still rejects
        mp.setattr(common, "gcd", lambda *_: 1)
        expect(lambda: mod.verify(ctx, n, proof), "mod", Check.JACOBI, "w", 3)
    with monkeypatch.context() as mp:  # w let through: x_i ≡ 0 (mod q_j) is not a unit
        mp.setattr(common, "gcd", lambda a, b: 1 if a == proof.w else real_gcd(a, b))
        mp.setattr(gmpy2, "jacobi", lambda a, b: 1 if real_jacobi(a, b) == 1 else -1)
        expect(lambda: mod.verify(ctx, n, proof), "mod", Check.NOT_UNIT, "x[0]", 3)
    with monkeypatch.context() as mp:  # the pre-fix verifier: the forgery is accepted
        mp.setattr(common, "gcd", lambda *_: 1)
        mp.setattr(gmpy2, "jacobi", lambda a, b: 1 if real_jacobi(a, b) == 1 else -1)
        mod.verify(ctx, n, proof)
    expect(lambda: mod.verify(ctx, n, proof), "mod", Check.NOT_UNIT, "w", 3)


def test_T02b_gcd_w_forgery_21_to_27_bit_factors(mid_modulus: BadModulus) -> None:
    """The same attack and its variants on a modulus whose small factors (21..27 bits) pass the
    trial-division prefilter, so every rejection below comes from Πmod itself."""
    bad = mid_modulus
    n, big, q1 = bad.n, bad.big, bad.smalls[0]
    assert all(1 << 20 < q < 1 << 27 for q in bad.smalls)
    validate_modulus(n, "N")  # nothing up to 2^20: the prefilter lets it through to Πmod
    ctx = context("T02b-mid", ATTACKER)

    forged = tsslib_forgery(ctx, bad)
    expect(lambda: mod.verify(ctx, n, forged), "mod", Check.NOT_UNIT, "w", 3)

    g = next(g for g in range(2, q1) if gmpy2.legendre(g, q1) == -1)
    ones = [1] * (len(bad.smalls) - 1)
    w_plus = crt([big - 1, g, *ones], bad.factors)  # (−1|P)(g|q1) = (−1)(−1) = +1
    assert gmpy2.jacobi(w_plus, n) == 1
    plus = dataclasses.replace(forged, w=w_plus)
    expect(lambda: mod.verify(ctx, n, plus), "mod", Check.JACOBI, "w", 3)

    w_minus = crt([1, g, *ones], bad.factors)  # a unit with Jacobi −1: passes the w checks
    assert gmpy2.jacobi(w_minus, n) == -1 and gcd(w_minus, n) == 1
    proof, first_bad = best_effort_mod(ctx, bad, w_minus)
    expect(lambda: mod.verify(ctx, n, proof), "mod", Check.EQUATION, x_equation(first_bad), 3)

    # the tss-lib trick (x_i ≡ 0 mod q_j) with a proper w: caught by the unit check on x_i
    zeroed = dataclasses.replace(proof, x=(proof.x[0] * q1 % n, *proof.x[1:]))
    expect(lambda: mod.verify(ctx, n, zeroed), "mod", Check.NOT_UNIT, "x[0]", 3)


@pytest.mark.parametrize(
    "label, check",
    [
        ("factor-3", Check.MODULUS_FORM),
        ("factor-65519", Check.MODULUS_FORM),
        ("even", Check.MODULUS_FORM),
        ("prime", Check.MODULUS_FORM),
        ("square", Check.MODULUS_FORM),
        ("3071-bit", Check.MODULUS_SIZE),
        ("3073-bit", Check.MODULUS_SIZE),
        ("4096-bit", Check.MODULUS_SIZE),
    ],
)
def test_T02f_modulus_prefilter(
    label: str,
    check: Check,
    mod_case: tuple[ProofContext, ModProof],
    prm_case: tuple[ProofContext, PrmProof],
    fac_case: tuple[ProofContext, FacProof],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = P1_KEY.n
    if label == "prime":
        rng = random.Random(0x38)
        n = completing_prime(rng, 1, 3, 4)
    else:
        n = {
            "factor-3": (base // 3 | 1) * 3,
            "factor-65519": (base // 65519 | 1) * 65519,
            "even": base + 1,
            "square": fixture_primes()[6] ** 2,
            "3071-bit": base >> 1 | 1,
            "3073-bit": base << 1 | 1,
            "4096-bit": base << 1024 | 1,
        }[label]
    with pytest.raises(InvalidParameter) as info:
        validate_modulus(n, "N", ATTACKER)
    assert info.value.check is check and info.value.culprit == ATTACKER
    ctx = context("T02f", ATTACKER)
    spy = ExpSpy(monkeypatch)
    expect(lambda: mod.verify(ctx, n, mod_case[1]), "mod", check, "N", 3)
    expect(lambda: fac.verify(ctx, n, fac_case[1], VERIFIER.params), "fac", check, "N0", 3)
    params = RingPedersenParams(n, 4, 9)
    expect(lambda: prm.verify(ctx, params, prm_case[1]), "prm", check, "(N, s, t)", 3)
    assert spy.calls == []


# --- A05 c-split / A06 c-guess -----------------------------------------------------------------


@pytest.fixture(scope="module")
def no_log_params() -> RingPedersenParams:
    """(N, s, t) with t = s² and s a non-residue (Legendre −1 mod p, +1 mod q): t is a square,
    so ⟨t⟩ holds only squares and log_t s = "1/2" does not exist; e = 2 divides ord(s)."""
    key = paillier_key(3)
    rng = random.Random(0x5B)
    while True:
        s = rng.randrange(2, key.n - 1)
        if gmpy2.legendre(s, key.p) == -1 and gmpy2.legendre(s, key.q) == 1:
            break
    params = RingPedersenParams.from_peer(key.n, s, s * s % key.n, ATTACKER)
    assert gmpy2.jacobi(params.s, key.n) == -1 and gmpy2.jacobi(params.t, key.n) == 1
    return params


def test_T05a_prm_binary_challenges(
    no_log_params: RingPedersenParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = no_log_params
    n, s, t = params.n, params.s, params.t
    ctx = context("T05a", ATTACKER)
    rng = random.Random(0x5A)
    seen: set[int] = set()
    for _ in range(20):
        bits = prm._challenges(ctx, params, tuple(rng.randrange(1, n) for _ in range(M)))
        assert len(bits) == M and set(bits) <= {0, 1}
        seen.update(bits)
    assert seen == {0, 1}

    # The c-split answer to one large even challenge c is valid algebra (t^(a + c/2) = t^a·s^c
    # because t = s²) — so the single-challenge format must not be accepted at all.
    a = rng.getrandbits(256)
    big_c = 2 * rng.getrandbits(255)
    commitment, response = pow(t, a, n), a + big_c // 2
    assert pow(t, response, n) == commitment * pow(s, big_c, n) % n
    spy = ExpSpy(monkeypatch)
    for length in (1, 0):
        short = PrmProof((commitment,) * length, (response,) * length)
        expect(lambda p=short: prm.verify(ctx, params, p), "prm", Check.LENGTH, "A", 3)
    assert spy.calls == []
    padded = PrmProof((commitment,) * M, (response,) * M)
    expect(lambda: prm.verify(ctx, params, padded), "prm", Check.EQUATION, prm_equation(0), 3)


def test_T05b_c_split_grind(no_log_params: RingPedersenParams) -> None:
    """c-split needs e | c; with binary challenges that means every e_i = 0.  The forger answers
    z_i = a_i (valid only for e_i = 0) and grinds A_0 ← A_0·t — 3000 transcripts, no success."""
    params = no_log_params
    n, t = params.n, params.t
    ctx = context("T05b", ATTACKER)
    rng = random.Random(0x5B)
    nonces = [rng.getrandbits(256) for _ in range(M)]
    commitments = [pow(t, a, n) for a in nonces]
    successes, longest_zero_prefix = 0, 0
    for _ in range(3000):
        bits = prm._challenges(ctx, params, tuple(commitments))
        assert len(bits) == M and set(bits) <= {0, 1}
        if not any(bits):
            successes += 1
        longest_zero_prefix = max(longest_zero_prefix, bits.index(1) if any(bits) else M)
        nonces[0] += 1
        commitments[0] = commitments[0] * t % n
    assert successes == 0
    assert longest_zero_prefix < 40  # ≈ log2(3000) expected; 2^-128 per attempt for all m
    # the per-iteration answers are right exactly where e_i = 0: the verifier fails at the
    # first e_i = 1
    nonces[0] -= 1
    commitments[0] = pow(t, nonces[0], n)
    bits = prm._challenges(ctx, params, tuple(commitments))
    proof = PrmProof(tuple(commitments), tuple(nonces))
    expect(
        lambda: prm.verify(ctx, params, proof),
        "prm",
        Check.EQUATION,
        prm_equation(bits.index(1)),
        3,
    )


def c_guess_forger(
    ctx: ProofContext, params: RingPedersenParams, m: int, tries: int, seed: int
) -> tuple[PrmProof | None, PrmProof]:
    """TSSHOCK c-guess: guess all m bits, commit A_i = t^z_i·s^(−g_i), hope the hash agrees.
    Returns (forged proof or None, the last attempt)."""
    n, s, t = params.n, params.s, params.t
    rng = random.Random(seed)
    s_inv = int(gmpy2.invert(s, n))
    z = [rng.getrandbits(256) for _ in range(m)]
    if_zero = [pow(t, zi, n) for zi in z]
    if_one = [a * s_inv % n for a in if_zero]
    attempt = PrmProof((), ())
    for _ in range(tries):
        guess = tuple(rng.getrandbits(1) for _ in range(m))
        A = tuple(if_one[i] if g else if_zero[i] for i, g in enumerate(guess))
        attempt = PrmProof(A, tuple(z))
        if prm._challenges(ctx, params, A) == guess:
            return attempt, attempt
        z[0] += 1  # re-randomise one commitment for one multiplication
        if_zero[0] = if_zero[0] * t % n
        if_one[0] = if_one[0] * t % n
    return None, attempt


def test_T06a_min_iterations_constant() -> None:
    assert M_ITERATIONS == 128 >= 80
    assert mod.M_ITERATIONS == prm.M_ITERATIONS == params_module.M_ITERATIONS
    assert "Final" in params_module.__annotations__["M_ITERATIONS"]
    for cls, names in ((ModProof, ("x", "a", "b", "z")), (PrmProof, ("A", "z"))):
        for name in names:
            assert cls.SCHEMA[name].length == M_ITERATIONS  # type: ignore[union-attr]
    # no iteration count is accepted from the caller or the message
    assert list(inspect.signature(mod.verify).parameters) == ["ctx", "n", "proof"]
    assert list(inspect.signature(prm.verify).parameters) == ["ctx", "params", "proof"]
    # the constant is defined once, in params.py, and not read from the environment
    root = Path(params_module.__file__).parent
    definitions = [
        path.name
        for path in root.rglob("*.py")
        if re.search(r"^\s*M_ITERATIONS\s*[:=]", path.read_text(), re.MULTILINE)
    ]
    assert definitions == ["params.py"]
    assert "environ" not in Path(params_module.__file__).read_text()


@pytest.mark.parametrize("length", [M - 1, M + 1, 0])
def test_T06b_short_proof_rejected(
    length: int,
    mod_case: tuple[ProofContext, ModProof],
    prm_case: tuple[ProofContext, PrmProof],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mod_proof, prm_proof = mod_case[1], prm_case[1]
    ctx = context("T06b", ATTACKER)
    spy = ExpSpy(monkeypatch)
    for name in ("x", "a", "b", "z"):
        bad = dataclasses.replace(mod_proof, **{name: (getattr(mod_proof, name) * 2)[:length]})
        expect(lambda b=bad: mod.verify(ctx, P1_KEY.n, b), "mod", Check.LENGTH, name, 3)
    everything = {k: (getattr(mod_proof, k) * 2)[:length] for k in ("x", "a", "b", "z")}
    bad_all = dataclasses.replace(mod_proof, **everything)
    expect(lambda: mod.verify(ctx, P1_KEY.n, bad_all), "mod", Check.LENGTH, "x", 3)
    for name in ("A", "z"):
        bad_prm = dataclasses.replace(prm_proof, **{name: (getattr(prm_proof, name) * 2)[:length]})
        expect(lambda b=bad_prm: prm.verify(ctx, P1_AUX.params, b), "prm", Check.LENGTH, name, 3)
    assert spy.calls == []


def test_T06c_c_guess_smoke(
    no_log_params: RingPedersenParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = no_log_params
    ctx = context("T06c", ATTACKER)
    # production m = 128: 2048 guesses (expected successes 2048·2^-128) never succeed
    forged, last = c_guess_forger(ctx, params, M, 2048, seed=0x6C)
    assert forged is None
    # the last attempt is right exactly where its guess g_i (A_i = t^z_i·s^−g_i) met e_i
    n, t = params.n, params.t
    guess = [0 if pow(t, z, n) == a else 1 for a, z in zip(last.A, last.z, strict=True)]
    bits = prm._challenges(ctx, params, last.A)
    first = next(i for i in range(M) if guess[i] != bits[i])
    expect(lambda: prm.verify(ctx, params, last), "prm", Check.EQUATION, prm_equation(first), 3)
    # test-only m = 8: the same forger proves the false statement s ∈ ⟨t⟩ within 16·2^8 tries
    with monkeypatch.context() as mp:
        mp.setattr(prm, "M_ITERATIONS", 8)
        forged, _ = c_guess_forger(ctx, params, 8, 16 << 8, seed=0x6C)
        assert forged is not None
        prm.verify(ctx, params, forged)
    expect(lambda: prm.verify(ctx, params, forged), "prm", Check.LENGTH, "A", 3)


# --- A07 degenerate ring-Pedersen parameters ---------------------------------------------------


@pytest.mark.parametrize(
    "label, check",
    [
        ("s=1", Check.DEGENERATE),
        ("t=1", Check.DEGENERATE),
        ("s=N-1", Check.DEGENERATE),
        ("t=N-1", Check.DEGENERATE),
        ("s=t", Check.DEGENERATE),
        ("s=0", Check.NOT_UNIT),
        ("t=0", Check.NOT_UNIT),
        ("s=N", Check.NOT_UNIT),
        ("s·p", Check.NOT_UNIT),
        ("t·q", Check.NOT_UNIT),
    ],
)
def test_T07a_degenerate_st(
    label: str,
    check: Check,
    prm_case: tuple[ProofContext, PrmProof],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = P1_AUX.params
    n, s, t = good.n, good.s, good.t
    p, q = P1_KEY.p, P1_KEY.q
    s_bad, t_bad = {
        "s=1": (1, t),
        "t=1": (s, 1),
        "s=N-1": (n - 1, t),
        "t=N-1": (s, n - 1),
        "s=t": (t, t),
        "s=0": (0, t),
        "t=0": (s, 0),
        "s=N": (n, t),
        "s·p": (s * p % n, t),
        "t·q": (s, t * q % n),
    }[label]
    with pytest.raises(InvalidParameter) as info:
        RingPedersenParams.from_peer(n, s_bad, t_bad, ATTACKER)
    assert info.value.check is check and info.value.culprit == ATTACKER
    ctx = context("T07a", ATTACKER)
    spy = ExpSpy(monkeypatch)
    params = RingPedersenParams(n, s_bad, t_bad)
    expect(lambda: prm.verify(ctx, params, prm_case[1]), "prm", check, "(N, s, t)", 3)
    assert spy.calls == []


# --- A08 Πmod / Πfac pitfalls ------------------------------------------------------------------


def test_T08a_mod_challenges_distinct(
    mod_case: tuple[ProofContext, ModProof], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = P1_KEY.n
    rng = random.Random(0x8A)
    seen: set[int] = set()
    for k in range(100):
        ctx = context(f"T08a-{k}", 1 + k % 5)
        ys = mod._challenges(ctx, n, jacobi_minus_one_unit(rng, n))
        assert len(ys) == M and len(set(ys)) == M
        assert all(0 < y < n and gcd(y, n) == 1 for y in ys)
        seen.update(ys)
    assert len(seen) == 100 * M
    ctx, proof = mod_case
    assert mod._challenges(ctx, n, proof.w) == mod._challenges(ctx, n, proof.w)
    # taurus bug class: a stream restarted per challenge gives y_1 = … = y_m — rejected
    first = mod._challenges(ctx, n, proof.w)[0]
    monkeypatch.setattr(mod, "_challenges", lambda *_: (first,) * M)
    expect(lambda: mod.verify(ctx, n, proof), "mod", Check.CHALLENGE, "y", HONEST)


def test_T08b_mod_field_mutation(mod_case: tuple[ProofContext, ModProof]) -> None:
    ctx, proof = mod_case
    n = P1_KEY.n
    mod.verify(ctx, n, proof)

    def swap01(values: tuple[int, ...]) -> tuple[int, ...]:
        return (values[1], values[0], *values[2:])

    i = 2
    mutations = [
        (dataclasses.replace(proof, w=proof.w * 9 % n), "z[0]^N = y[0]"),
        (
            dataclasses.replace(proof, x=(*proof.x[:i], proof.x[i] * 3 % n, *proof.x[i + 1 :])),
            x_equation(i),
        ),
        (
            dataclasses.replace(proof, z=(*proof.z[:i], proof.z[i] * 3 % n, *proof.z[i + 1 :])),
            f"z[{i}]^N = y[{i}]",
        ),
        (
            dataclasses.replace(proof, a=(*proof.a[:i], 1 - proof.a[i], *proof.a[i + 1 :])),
            x_equation(i),
        ),
        (
            dataclasses.replace(proof, b=(*proof.b[:i], 1 - proof.b[i], *proof.b[i + 1 :])),
            x_equation(i),
        ),
        (
            dataclasses.replace(
                proof, x=swap01(proof.x), a=swap01(proof.a), b=swap01(proof.b), z=swap01(proof.z)
            ),
            "z[0]^N = y[0]",
        ),
    ]
    for bad, field in mutations:
        expect(lambda b=bad: mod.verify(ctx, n, b), "mod", Check.EQUATION, field, HONEST)


def test_T08c_fac_field_mutation(
    fac_case: tuple[ProofContext, FacProof], sixteen_modulus: BadModulus
) -> None:
    ctx, proof = fac_case
    aux = VERIFIER.params
    n0, nh = P1_KEY.n, aux.n
    rng = random.Random(0x8C)

    def signed(bound: int) -> int:
        return rng.randrange(-bound, bound + 1)

    def unit() -> int:
        while True:
            u = rng.randrange(2, nh)
            if gcd(u, nh) == 1:
                return u

    z_bound = isqrt(n0) << (ELL + EPSILON)
    replacements = {
        "P": (unit(), EQ1),
        "Q": (unit(), EQ1),
        "A": (unit(), EQ1),
        "B": (unit(), EQ1),
        "T": (unit(), EQ1),
        "sigma": (signed((n0 * nh) << ELL), EQ1),
        "z1": (signed(z_bound), EQ1),
        "w1": (signed(nh << (ELL + EPSILON + 1)), EQ1),
        "z2": (signed(z_bound), EQ2),
        "w2": (signed(nh << (ELL + EPSILON + 1)), EQ2),
        "v": (signed((n0 * nh) << (ELL + EPSILON + 1)), EQ3),
    }
    assert set(replacements) == set(FacProof.SCHEMA)
    for name, (value, equation) in replacements.items():
        bad = dataclasses.replace(proof, **{name: value})
        for form in VERIFIER_FORMS:
            expect(
                lambda b=bad, f=form: fac.verify(ctx, n0, b, f), "fac", Check.EQUATION, equation, 1
            )

    # a factor 7: caught by the prefilter before Πfac is looked at
    cofactor = P1_KEY.n // 7 | 1
    small = fac_prove_raw(ctx, 7 * cofactor, 7, cofactor, aux)
    expect(lambda: fac.verify(ctx, 7 * cofactor, small, aux), "fac", Check.MODULUS_FORM, "N0", 1)
    # a 21-bit factor passes the prefilter; z2 = β + e·q with q ≈ N0/2^21 is out of range
    bad_n = sixteen_modulus.n
    p = min(sixteen_modulus.smalls)
    small = fac_prove_raw(ctx, bad_n, p, bad_n // p, aux)
    expect(lambda: fac.verify(ctx, bad_n, small, aux), "fac", Check.RANGE, "z2", 1)


def test_T08d_fac_wrong_aux() -> None:
    """A Πfac that party 1 made for verifier A (ATTACKER_AUX's owner here) is replayed to
    verifier B, who checks it under its own parameters."""
    ctx = context("T08d", HONEST)
    for_a = fac.prove(ctx, P1_KEY, ATTACKER_AUX.params)
    fac.verify(ctx, P1_KEY.n, for_a, ATTACKER_AUX.params)
    assert ATTACKER_AUX.params.n < VERIFIER.params.n
    fac.verify(ctx, P1_KEY.n, for_a, ATTACKER_AUX)  # its intended verifier, CRT path
    for form in VERIFIER_FORMS:
        expect(lambda f=form: fac.verify(ctx, P1_KEY.n, for_a, f), "fac", Check.EQUATION, EQ1, 1)


def test_T08e_dos_bounds_first(
    fac_case: tuple[ProofContext, FacProof],
    prm_case: tuple[ProofContext, PrmProof],
    mod_case: tuple[ProofContext, ModProof],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    huge = 2 ** (10**6)
    ctx, proof = fac_case
    spy = ExpSpy(monkeypatch)
    for name in ("z1", "z2", "sigma", "w1", "w2", "v"):
        for value, form in ((huge, VERIFIER.params), (-huge, VERIFIER)):
            bad = dataclasses.replace(proof, **{name: value})
            expect(
                lambda b=bad, f=form: fac.verify(ctx, P1_KEY.n, b, f),
                "fac",
                Check.RANGE,
                name,
                HONEST,
            )
    prm_ctx, prm_proof = prm_case
    bad_prm = dataclasses.replace(prm_proof, z=(huge, *prm_proof.z[1:]))
    expect(lambda: prm.verify(prm_ctx, P1_AUX.params, bad_prm), "prm", Check.RANGE, "z[0]", 1)
    mod_ctx, mod_proof = mod_case
    bad_mod = dataclasses.replace(mod_proof, x=(huge, *mod_proof.x[1:]))
    expect(lambda: mod.verify(mod_ctx, P1_KEY.n, bad_mod), "mod", Check.RANGE, "x[0]", 1)
    bad_mod = dataclasses.replace(mod_proof, w=huge)
    expect(lambda: mod.verify(mod_ctx, P1_KEY.n, bad_mod), "mod", Check.RANGE, "w", 1)
    assert spy.calls == []  # every oversized value rejected before any modular exponentiation


# --- A13 replay --------------------------------------------------------------------------------


def test_T13a_cross_session_replay(
    mod_case: tuple[ProofContext, ModProof],
    prm_case: tuple[ProofContext, PrmProof],
    fac_case: tuple[ProofContext, FacProof],
) -> None:
    """Party 1's aux-info proofs from session A, replayed in session B by party 1's slot and by
    party 3 (who copies party 1's public values)."""
    ctx_a = mod_case[0]
    for prover in (HONEST, ATTACKER):
        ctx_b = context("session-B", prover)
        assert ctx_b.session_id != ctx_a.session_id
        expect(
            lambda c=ctx_b: mod.verify(c, P1_KEY.n, mod_case[1]),
            "mod",
            Check.EQUATION,
            "z[0]^N = y[0]",
            prover,
        )
        old = prm._challenges(ctx_a, P1_AUX.params, prm_case[1].A)
        new = prm._challenges(ctx_b, P1_AUX.params, prm_case[1].A)
        first = next(i for i in range(M) if old[i] != new[i])
        expect(
            lambda c=ctx_b: prm.verify(c, P1_AUX.params, prm_case[1]),
            "prm",
            Check.EQUATION,
            prm_equation(first),
            prover,
        )
        for form in VERIFIER_FORMS:
            expect(
                lambda c=ctx_b, f=form: fac.verify(c, P1_KEY.n, fac_case[1], f),
                "fac",
                Check.EQUATION,
                EQ1,
                prover,
            )


def test_T13b_cross_party_replay(
    mod_case: tuple[ProofContext, ModProof],
    prm_case: tuple[ProofContext, PrmProof],
    fac_case: tuple[ProofContext, FacProof],
) -> None:
    """Within session A, party 3 submits party 1's proofs as its own."""
    ctx_1 = mod_case[0]
    ctx_3 = ProofContext(ctx_1.session_id, ATTACKER)
    expect(
        lambda: mod.verify(ctx_3, P1_KEY.n, mod_case[1]), "mod", Check.EQUATION, "z[0]^N = y[0]", 3
    )
    old = prm._challenges(ctx_1, P1_AUX.params, prm_case[1].A)
    new = prm._challenges(ctx_3, P1_AUX.params, prm_case[1].A)
    first = next(i for i in range(M) if old[i] != new[i])
    expect(
        lambda: prm.verify(ctx_3, P1_AUX.params, prm_case[1]),
        "prm",
        Check.EQUATION,
        prm_equation(first),
        3,
    )
    for form in VERIFIER_FORMS:
        expect(
            lambda f=form: fac.verify(ctx_3, P1_KEY.n, fac_case[1], f),
            "fac",
            Check.EQUATION,
            EQ1,
            3,
        )
        fac.verify(ctx_1, P1_KEY.n, fac_case[1], form)  # the original still verifies
    prm.verify(ctx_1, P1_AUX.params, prm_case[1])


# --- CVE-2025-66016 class ----------------------------------------------------------------------


def test_cve_2025_66016_jacobi_and_gcd(
    mod_case: tuple[ProofContext, ModProof], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Πmod must require gcd(w, N) = 1 *and* Jacobi(w | N) = −1 (CGGMP24 revision)."""
    ctx, proof = mod_case
    n, p, q = P1_KEY.n, P1_KEY.p, P1_KEY.q
    rng = random.Random(0xC5E)
    while True:
        non_square = rng.randrange(2, n)
        if gmpy2.legendre(non_square, p) == -1 and gmpy2.legendre(non_square, q) == -1:
            break
    cases = [
        (1, Check.JACOBI),
        (n - 1, Check.JACOBI),  # Jacobi(−1 | N) = +1 for a Blum integer
        (proof.w * proof.w % n, Check.JACOBI),
        (non_square, Check.JACOBI),  # Jacobi +1 but not a square: still not −1
        (p, Check.NOT_UNIT),  # Jacobi 0
        (q * 12345 % n, Check.NOT_UNIT),  # Jacobi 0
        (crt([1, 0], [p, q]), Check.NOT_UNIT),  # the tss-lib shape: 1 mod p, 0 mod q
        (0, Check.RANGE),
        (n, Check.RANGE),
    ]
    spy = ExpSpy(monkeypatch)
    for w, check in cases:
        if check is Check.JACOBI:
            assert gmpy2.jacobi(w, n) == 1
        if check is Check.NOT_UNIT:
            assert gmpy2.jacobi(w, n) == 0
        bad = dataclasses.replace(proof, w=w)
        expect(lambda b=bad: mod.verify(ctx, n, b), "mod", check, "w", HONEST)
    assert spy.calls == []
