"""Πfac — the prover's modulus N0 has no small factor (CGGMP21 Fig. 28).

Statement: N0 (the prover's Paillier modulus); proven to one verifier over the verifier's own
ring-Pedersen parameters (N̂, s, t) — never the prover's (taurus PR #98, attacks.md A02).
Witness: p, q with N0 = p·q.  Soundness: both factors exceed √N0 / 2^(ℓ+ε), i.e. about 2^1050.

  Prover:   α, β ← ±2^(ℓ+ε)·√N0;  μ, ν ← ±2^ℓ·N̂;  σ ← ±2^ℓ·N0·N̂;
            r ← ±2^(ℓ+ε)·N0·N̂;  x, y ← ±2^(ℓ+ε)·N̂
            P = s^p t^μ, Q = s^q t^ν, A = s^α t^x, B = s^β t^y, T = Q^α t^r  (mod N̂)
  Challenge e ← ±q  (Fiat–Shamir over sid, prover, aux, N0, P, Q, A, B, T, σ)
  Response  σ̂ = σ − ν·p;  z1 = α + e·p, z2 = β + e·q, w1 = x + e·μ, w2 = y + e·ν, v = r + e·σ̂
  Verifier: z1, z2 ∈ ±2^(ℓ+ε)·√N0 (soundness); σ ∈ ±2^ℓ·N0·N̂;
            w1, w2 ∈ ±2^(ℓ+ε+1)·N̂ and v ∈ ±2^(ℓ+ε+1)·N0·N̂ (DoS bounds, Lockness PR #210);
            P, Q, A, B, T ∈ Z*_N̂;  R = s^N0 t^σ;
            s^z1 t^w1 = A·P^e,  s^z2 t^w2 = B·Q^e,  Q^z1 t^v = T·R^e  (mod N̂).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isqrt
from typing import ClassVar

from signer.arith import powmod_secret, random_signed_times
from signer.encoding import FieldKind, Int, Nat, Wire
from signer.paillier import PaillierSecretKey
from signer.params import ELL, EPSILON, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams, VerifierAux
from signer.zk.common import Checker, ProofContext, bind_aux

NAME = "fac"

_SQRT_BITS = MODULUS_BITS // 2


@dataclass(frozen=True)
class FacProof(Wire):
    P: int
    Q: int
    A: int
    B: int
    T: int
    sigma: int
    z1: int
    z2: int
    w1: int
    w2: int
    v: int

    WIRE_NAME: ClassVar[str] = "zk_fac"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "P": Nat(MODULUS_BITS),
        "Q": Nat(MODULUS_BITS),
        "A": Nat(MODULUS_BITS),
        "B": Nat(MODULUS_BITS),
        "T": Nat(MODULUS_BITS),
        "sigma": Int(ELL + 1 + 2 * MODULUS_BITS),
        "z1": Int(ELL + EPSILON + 1 + _SQRT_BITS),
        "z2": Int(ELL + EPSILON + 1 + _SQRT_BITS),
        "w1": Int(ELL + EPSILON + 2 + MODULUS_BITS),
        "w2": Int(ELL + EPSILON + 2 + MODULUS_BITS),
        "v": Int(ELL + EPSILON + 2 + 2 * MODULUS_BITS),
    }


def _challenge(ctx: ProofContext, n0: int, aux: RingPedersenParams, first: list[int]) -> int:
    transcript = ctx.transcript(NAME)
    bind_aux(transcript, aux)
    transcript.append("statement", n0)
    transcript.append("commitment", first)
    return transcript.challenge_signed("e")


def prove(ctx: ProofContext, key: PaillierSecretKey, aux: RingPedersenParams) -> FacProof:
    """Prove that the prover's own modulus has no small factor, to the verifier owning `aux`."""
    n0, nh = key.n, aux.n
    p, q = key.p, key.q
    sqrt_n0 = isqrt(n0)
    alpha = random_signed_times(ELL + EPSILON, sqrt_n0)
    beta = random_signed_times(ELL + EPSILON, sqrt_n0)
    mu = random_signed_times(ELL, nh)
    nu = random_signed_times(ELL, nh)
    sigma = random_signed_times(ELL, n0 * nh)
    r = random_signed_times(ELL + EPSILON, n0 * nh)
    x = random_signed_times(ELL + EPSILON, nh)
    y = random_signed_times(ELL + EPSILON, nh)
    P = aux.commit(p, mu)
    Q = aux.commit(q, nu)
    A = aux.commit(alpha, x)
    B = aux.commit(beta, y)
    T = powmod_secret(Q, alpha, nh) * powmod_secret(aux.t, r, nh) % nh
    e = _challenge(ctx, n0, aux, [P, Q, A, B, T, sigma])
    sigma_hat = sigma - nu * p
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
        v=r + e * sigma_hat,
    )


def verify(ctx: ProofContext, n0: int, proof: FacProof, aux: VerifierAux) -> None:
    """Raise ProofRejected unless `proof` is valid.  `aux` is the verifier's own ring-Pedersen
    material from local state, never from the message: its `RingPedersenSecret` (CRT, fast) or,
    for a third party re-checking a transcript, its public `RingPedersenParams`."""
    check = Checker(NAME, ctx.prover)
    check.modulus(n0, "N0")
    nh = aux.n
    sqrt_n0 = isqrt(n0)
    check.signed_range(proof.z1, ELL + EPSILON, "z1", sqrt_n0)
    check.signed_range(proof.z2, ELL + EPSILON, "z2", sqrt_n0)
    check.signed_range(proof.sigma, ELL, "sigma", n0 * nh)
    check.signed_range(proof.w1, ELL + EPSILON + 1, "w1", nh)
    check.signed_range(proof.w2, ELL + EPSILON + 1, "w2", nh)
    check.signed_range(proof.v, ELL + EPSILON + 1, "v", n0 * nh)
    for name in ("P", "Q", "A", "B", "T"):
        check.unit(getattr(proof, name), nh, name)
    e = _challenge(ctx, n0, aux.params, [proof.P, proof.Q, proof.A, proof.B, proof.T, proof.sigma])
    lhs = aux.commit_public(proof.z1, proof.w1)
    check.equation(lhs == proof.A * aux.exp(proof.P, e) % nh, "s^z1·t^w1 = A·P^e")
    lhs = aux.commit_public(proof.z2, proof.w2)
    check.equation(lhs == proof.B * aux.exp(proof.Q, e) % nh, "s^z2·t^w2 = B·Q^e")
    R = aux.commit_public(n0, proof.sigma)
    lhs = aux.exp(proof.Q, proof.z1) * aux.exp(aux.params.t, proof.v) % nh
    check.equation(lhs == proof.T * aux.exp(R, e) % nh, "Q^z1·t^v = T·R^e")
