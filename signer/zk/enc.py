"""Πenc — Paillier encryption in range (CGGMP21 Fig. 14).

Statement: K = enc_N0(k; ρ) under the prover's key N0.  Claim: k ∈ ±2^(ℓ+ε).
Proven to one verifier, over the verifier's own ring-Pedersen parameters (N̂, s, t).

  Prover:   α ← ±2^(ℓ+ε), μ ← ±2^ℓ·N̂, r ← Z*_N0, γ ← ±2^(ℓ+ε)·N̂
            S = s^k t^μ, A = enc_N0(α; r), C = s^α t^γ
  Challenge e ← ±q (Fiat–Shamir over sid, prover, aux, N0, K, S, A, C)
  Response  z1 = α + e·k, z2 = r·ρ^e mod N0, z3 = γ + e·μ
  Verifier: z1 ∈ ±2^(ℓ+ε); enc_N0(z1; z2) = A·K^e mod N0²; s^z1 t^z3 = C·S^e mod N̂.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signer.arith import random_signed, random_signed_times, random_unit
from signer.encoding import FieldKind, Int, Nat, Wire
from signer.paillier import PaillierPublicKey, PaillierSecretKey
from signer.params import ELL, EPSILON, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams, VerifierAux
from signer.zk.common import Checker, ProofContext, bind_aux

NAME = "enc"


@dataclass(frozen=True)
class EncPublic:
    key: PaillierPublicKey  # N0, the prover's Paillier key
    ciphertext: int  # K


@dataclass(frozen=True)
class EncPrivate:
    k: int
    rho: int


@dataclass(frozen=True)
class EncProof(Wire):
    S: int
    A: int
    C: int
    z1: int
    z2: int
    z3: int

    WIRE_NAME: ClassVar[str] = "zk_enc"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "S": Nat(MODULUS_BITS),
        "A": Nat(2 * MODULUS_BITS),
        "C": Nat(MODULUS_BITS),
        "z1": Int(ELL + EPSILON + 1),
        "z2": Nat(MODULUS_BITS),
        "z3": Int(ELL + EPSILON + 2 + MODULUS_BITS),
    }


def _challenge(
    ctx: ProofContext, public: EncPublic, aux: RingPedersenParams, first: list[int]
) -> int:
    transcript = ctx.transcript(NAME)
    bind_aux(transcript, aux)
    transcript.append("statement", [public.key.n, public.ciphertext])
    transcript.append("commitment", first)
    return transcript.challenge_signed("e")


def prove(
    ctx: ProofContext,
    public: EncPublic,
    private: EncPrivate,
    aux: RingPedersenParams,
    prover_key: PaillierSecretKey,
) -> EncProof:
    """Prove K = enc(k; ρ) with k small, to the verifier whose parameters are `aux`."""
    n0, nh = prover_key.n, aux.n
    alpha = random_signed(ELL + EPSILON)
    mu = random_signed_times(ELL, nh)
    r = random_unit(n0)
    gamma = random_signed_times(ELL + EPSILON, nh)
    S = aux.commit(private.k, mu)
    A = prover_key.encrypt_with(alpha, r)
    C = aux.commit(alpha, gamma)
    e = _challenge(ctx, public, aux, [S, A, C])
    z1 = alpha + e * private.k
    z2 = r * prover_key.powmod_n(private.rho, e) % n0
    z3 = gamma + e * mu
    return EncProof(S, A, C, z1, z2, z3)


def verify(ctx: ProofContext, public: EncPublic, proof: EncProof, aux: VerifierAux) -> None:
    """Raise ProofRejected unless `proof` is valid.  `aux` is the verifier's own ring-Pedersen
    material from local state, never from the message: its `RingPedersenSecret` (CRT, fast) or,
    for a third party re-checking a transcript, its public `RingPedersenParams`."""
    check = Checker(NAME, ctx.prover)
    key, nh = public.key, aux.n
    check.paillier_key(key, "N0")
    check.ciphertext(public.ciphertext, key, "K")
    # Range checks first: cheap, and they are the soundness condition (CGGMP21 Fig. 14).
    check.signed_range(proof.z1, ELL + EPSILON, "z1")
    check.signed_range(proof.z3, ELL + EPSILON + 1, "z3", nh)  # DoS bound: |γ + e·μ|
    check.unit(proof.S, nh, "S")
    check.unit(proof.C, nh, "C")
    check.ciphertext(proof.A, key, "A")
    check.unit(proof.z2, key.n, "z2")
    e = _challenge(ctx, public, aux.params, [proof.S, proof.A, proof.C])
    lhs = key.encrypt_public(proof.z1, proof.z2)
    rhs = proof.A * key.exp_n2(public.ciphertext, e) % key.n2
    check.equation(lhs == rhs, "enc(z1; z2) = A·K^e")
    lhs = aux.commit_public(proof.z1, proof.z3)
    rhs = proof.C * aux.exp(proof.S, e) % nh
    check.equation(lhs == rhs, "s^z1·t^z3 = C·S^e")
