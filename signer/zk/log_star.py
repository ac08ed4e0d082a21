"""Πlog* — knowledge of exponent vs Paillier encryption (CGGMP21 Fig. 25).

Statement: C = enc_N0(x; ρ) and X = x·g for a base point g.  Claim: x ∈ ±2^(ℓ+ε).
Proven to one verifier over the verifier's ring-Pedersen parameters (N̂, s, t).

  Prover:   α ← ±2^(ℓ+ε), μ ← ±2^ℓ·N̂, r ← Z*_N0, γ ← ±2^(ℓ+ε)·N̂
            S = s^x t^μ, A = enc_N0(α; r), Y = α·g, D = s^α t^γ
  Challenge e ← ±q
  Response  z1 = α + e·x, z2 = r·ρ^e mod N0, z3 = γ + e·μ
  Verifier: z1 ∈ ±2^(ℓ+ε); enc_N0(z1; z2) = A·C^e; z1·g = Y + e·X; s^z1 t^z3 = D·S^e mod N̂.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signer.arith import random_signed, random_signed_times, random_unit
from signer.curve import Point
from signer.encoding import FieldKind, Int, Nat, PointField, Wire
from signer.paillier import PaillierPublicKey, PaillierSecretKey
from signer.params import ELL, EPSILON, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams, VerifierAux
from signer.zk.common import Checker, ProofContext, bind_aux

NAME = "log_star"


@dataclass(frozen=True)
class LogStarPublic:
    key: PaillierPublicKey  # N0, the prover's Paillier key
    ciphertext: int  # C
    point: Point  # X = x·g
    base: Point  # g


@dataclass(frozen=True)
class LogStarPrivate:
    x: int
    rho: int


@dataclass(frozen=True)
class LogStarProof(Wire):
    S: int
    A: int
    Y: Point
    D: int
    z1: int
    z2: int
    z3: int

    WIRE_NAME: ClassVar[str] = "zk_log_star"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "S": Nat(MODULUS_BITS),
        "A": Nat(2 * MODULUS_BITS),
        "Y": PointField(),
        "D": Nat(MODULUS_BITS),
        "z1": Int(ELL + EPSILON + 1),
        "z2": Nat(MODULUS_BITS),
        "z3": Int(ELL + EPSILON + 2 + MODULUS_BITS),
    }


def _challenge(
    ctx: ProofContext,
    public: LogStarPublic,
    aux: RingPedersenParams,
    S: int,
    A: int,
    Y: Point,
    D: int,
) -> int:
    transcript = ctx.transcript(NAME)
    bind_aux(transcript, aux)
    transcript.append("statement", [public.key.n, public.ciphertext, public.point, public.base])
    transcript.append("commitment", [S, A, Y, D])
    return transcript.challenge_signed("e")


def prove(
    ctx: ProofContext,
    public: LogStarPublic,
    private: LogStarPrivate,
    aux: RingPedersenParams,
    prover_key: PaillierSecretKey,
) -> LogStarProof:
    n0, nh = prover_key.n, aux.n
    alpha = random_signed(ELL + EPSILON)
    mu = random_signed_times(ELL, nh)
    r = random_unit(n0)
    gamma = random_signed_times(ELL + EPSILON, nh)
    S = aux.commit(private.x, mu)
    A = prover_key.encrypt_with(alpha, r)
    Y = public.base * alpha
    D = aux.commit(alpha, gamma)
    e = _challenge(ctx, public, aux, S, A, Y, D)
    z1 = alpha + e * private.x
    z2 = r * prover_key.powmod_n(private.rho, e) % n0
    z3 = gamma + e * mu
    return LogStarProof(S, A, Y, D, z1, z2, z3)


def verify(ctx: ProofContext, public: LogStarPublic, proof: LogStarProof, aux: VerifierAux) -> None:
    """Raise ProofRejected unless `proof` is valid.  `aux` is the verifier's own ring-Pedersen
    material from local state, never from the message: its `RingPedersenSecret` (CRT, fast) or,
    for a third party re-checking a transcript, its public `RingPedersenParams`."""
    check = Checker(NAME, ctx.prover)
    key, nh = public.key, aux.n
    check.paillier_key(key, "N0")
    check.ciphertext(public.ciphertext, key, "C")
    check.point(public.point, "X")
    check.point(public.base, "g")
    check.signed_range(proof.z1, ELL + EPSILON, "z1")
    check.signed_range(proof.z3, ELL + EPSILON + 1, "z3", nh)  # DoS bound: |γ + e·μ|
    check.unit(proof.S, nh, "S")
    check.unit(proof.D, nh, "D")
    check.ciphertext(proof.A, key, "A")
    check.point(proof.Y, "Y")
    check.unit(proof.z2, key.n, "z2")
    e = _challenge(ctx, public, aux.params, proof.S, proof.A, proof.Y, proof.D)
    lhs = key.encrypt_public(proof.z1, proof.z2)
    rhs = proof.A * key.exp_n2(public.ciphertext, e) % key.n2
    check.equation(lhs == rhs, "enc(z1; z2) = A·C^e")
    check.equation(public.base * proof.z1 == proof.Y + public.point * e, "z1·g = Y + e·X")
    lhs = aux.commit_public(proof.z1, proof.z3)
    rhs = proof.D * aux.exp(proof.S, e) % nh
    check.equation(lhs == rhs, "s^z1·t^z3 = D·S^e")
