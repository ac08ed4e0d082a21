"""Πprm — ring-Pedersen parameters are well formed: s ∈ ⟨t⟩ (CGGMP21 Fig. 17).

Statement: (N, s, t).  Witness: λ with s = t^λ mod N, and φ(N).  m = 128 binary challenges —
a single large challenge would be TSSHOCK c-split (attacks.md A05) and fewer repetitions c-guess
(A06); the verifier accepts exactly m.

  Prover:   a_i ← Z_φ(N), A_i = t^a_i mod N                 (i = 1..m)
  Challenge e_i ∈ {0,1}  (Fiat–Shamir over sid, prover, N, s, t, A_1..A_m)
  Response  z_i = a_i + e_i·λ mod φ(N)
  Verifier: (N, s, t) well formed; exactly m elements; A_i ∈ Z*_N; 0 ≤ z_i < N;
            t^z_i = A_i·s^e_i (mod N).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar

from signer.arith import FixedBase, parallel_map
from signer.encoding import FieldKind, ListOf, Nat, Wire
from signer.errors import Check
from signer.params import M_ITERATIONS, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams, RingPedersenSecret
from signer.zk.common import Checker, ProofContext

NAME = "prm"


@dataclass(frozen=True)
class PrmProof(Wire):
    A: tuple[int, ...]
    z: tuple[int, ...]

    WIRE_NAME: ClassVar[str] = "zk_prm"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "A": ListOf(Nat(MODULUS_BITS), M_ITERATIONS),
        "z": ListOf(Nat(MODULUS_BITS), M_ITERATIONS),
    }


def _challenges(
    ctx: ProofContext, params: RingPedersenParams, A: tuple[int, ...]
) -> tuple[int, ...]:
    transcript = ctx.transcript(NAME)
    transcript.append("statement", [params.n, params.s, params.t])
    transcript.append("commitment", list(A))
    return transcript.challenge_bits("e", M_ITERATIONS)


def prove(ctx: ProofContext, secret: RingPedersenSecret) -> PrmProof:
    params, phi = secret.params, secret.phi
    nonces = [secrets.randbelow(phi) for _ in range(M_ITERATIONS)]
    A = tuple(parallel_map(lambda a: secret.paillier.powmod_n(params.t, a), nonces))  # CRT
    es = _challenges(ctx, params, A)
    z = tuple((a + e * secret.lam) % phi for a, e in zip(nonces, es, strict=True))
    return PrmProof(A, z)


def verify(ctx: ProofContext, params: RingPedersenParams, proof: PrmProof) -> None:
    check = Checker(NAME, ctx.prover)
    check.ring_pedersen(params, "(N, s, t)")
    n = params.n
    check.length(proof.A, M_ITERATIONS, "A")
    check.length(proof.z, M_ITERATIONS, "z")
    for i in range(M_ITERATIONS):
        check.unit(proof.A[i], n, f"A[{i}]")
        if not 0 <= proof.z[i] < n:
            check.fail(Check.RANGE, f"z[{i}]", "not in [0, N)")
    es = _challenges(ctx, params, proof.A)
    t_powers = FixedBase(params.t, n, n.bit_length())
    for i, e in enumerate(es):
        rhs = proof.A[i] * params.s % n if e else proof.A[i]
        check.equation(t_powers.pow(proof.z[i]) == rhs, f"t^z[{i}] = A[{i}]·s^e[{i}]")
