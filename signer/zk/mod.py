"""Πmod — N is a Paillier–Blum modulus (CGGMP21 Fig. 16, with the 2024 revision's gcd(w, N) = 1).

Statement: N.  Witness: p, q ≡ 3 (mod 4), N = p·q.  m = 128 repetitions, never fewer.

  Prover:   w ← Z*_N with Jacobi(w | N) = −1
  Challenge y_1..y_m ∈ Z*_N, pairwise distinct (Fiat–Shamir over sid, prover, N, w)
  Response  for each i: a_i, b_i ∈ {0,1} such that y'_i = (−1)^a_i·w^b_i·y_i is a square mod N,
            x_i = 4th root of y'_i mod N, z_i = y_i^(N⁻¹ mod φ(N)) mod N
  Verifier: N odd, composite, exact size; 0 < w < N, gcd(w, N) = 1, Jacobi(w | N) = −1;
            exactly m iterations; a_i, b_i ∈ {0,1}; x_i, z_i ∈ Z*_N;
            z_i^N ≡ y_i and x_i^4 ≡ (−1)^a_i·w^b_i·y_i (mod N).
The Jacobi and gcd checks on w are the ones whose absence is CVE-2025-66016 and tss-lib's
TestAttackMod (attacks.md A02, A08): without them a modulus with many factors passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import gmpy2

from signer.arith import (
    parallel_map,
    powmod_public,
    powmod_public_many,
    powmod_secret,
    random_unit,
)
from signer.encoding import FieldKind, ListOf, Nat, Wire
from signer.errors import Check
from signer.paillier import PaillierSecretKey
from signer.params import M_ITERATIONS, MODULUS_BITS
from signer.zk.common import Checker, ProofContext

NAME = "mod"


@dataclass(frozen=True)
class ModProof(Wire):
    w: int
    x: tuple[int, ...]
    a: tuple[int, ...]
    b: tuple[int, ...]
    z: tuple[int, ...]

    WIRE_NAME: ClassVar[str] = "zk_mod"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "w": Nat(MODULUS_BITS),
        "x": ListOf(Nat(MODULUS_BITS), M_ITERATIONS),
        "a": ListOf(Nat(1), M_ITERATIONS),
        "b": ListOf(Nat(1), M_ITERATIONS),
        "z": ListOf(Nat(MODULUS_BITS), M_ITERATIONS),
    }


def _challenges(ctx: ProofContext, n: int, w: int) -> tuple[int, ...]:
    transcript = ctx.transcript(NAME)
    transcript.append("statement", n)
    transcript.append("commitment", w)
    return transcript.challenge_units("y", n, M_ITERATIONS)


def prove(ctx: ProofContext, key: PaillierSecretKey) -> ModProof:
    p, q, n = key.p, key.q, key.n
    while True:
        w = random_unit(n)
        if gmpy2.jacobi(w, n) == -1:
            break
    ys = _challenges(ctx, n, w)
    # A quadratic residue mod a Blum prime has exactly one square root that is itself a residue:
    # y^((p+1)/4); applying it twice gives a fourth root.
    e_p = pow((p + 1) // 4, 2, p - 1)
    e_q = pow((q + 1) // 4, 2, q - 1)
    n_inv = int(gmpy2.invert(n, key.phi))

    def respond(y: int) -> tuple[int, int, int, int]:
        for a, b in ((0, 0), (0, 1), (1, 0), (1, 1)):
            y_prime = (-1) ** a * (w if b else 1) * y % n
            if gmpy2.legendre(y_prime, p) == 1 and gmpy2.legendre(y_prime, q) == 1:
                break
        rp = powmod_secret(y_prime % p, e_p, p)
        rq = powmod_secret(y_prime % q, e_q, q)
        return key.crt(rp, rq), a, b, key.powmod_n(y, n_inv)

    xs, as_, bs, zs = zip(*parallel_map(respond, ys), strict=True)
    return ModProof(w, xs, as_, bs, zs)


def verify(ctx: ProofContext, n: int, proof: ModProof) -> None:
    """Raise ProofRejected unless `proof` shows N is a Paillier–Blum modulus."""
    check = Checker(NAME, ctx.prover)
    check.modulus(n, "N")
    for field in ("x", "a", "b", "z"):
        check.length(getattr(proof, field), M_ITERATIONS, field)
    check.unit(proof.w, n, "w")
    if gmpy2.jacobi(proof.w, n) != -1:
        check.fail(Check.JACOBI, "w", "Jacobi(w | N) ≠ −1")
    for i in range(M_ITERATIONS):
        if proof.a[i] not in (0, 1) or proof.b[i] not in (0, 1):
            check.fail(Check.RANGE, f"a[{i}]/b[{i}]", "challenge answer bits must be 0 or 1")
        check.unit(proof.x[i], n, f"x[{i}]")
        check.unit(proof.z[i], n, f"z[{i}]")
    ys = _challenges(ctx, n, proof.w)
    if len(set(ys)) != M_ITERATIONS:  # by construction; guards against a transcript change
        check.fail(Check.CHALLENGE, "y", "challenges not pairwise distinct")
    z_to_n = powmod_public_many(proof.z, n, n)
    for i, y in enumerate(ys):
        check.equation(z_to_n[i] == y, f"z[{i}]^N = y[{i}]")
        expected = (n - 1 if proof.a[i] else 1) * (proof.w if proof.b[i] else 1) * y % n
        check.equation(powmod_public(proof.x[i], 4, n) == expected, f"x[{i}]^4 = ±w^b·y[{i}]")
