"""Πaff-g — Paillier affine operation with group commitment in range (CGGMP21 Fig. 15).

Statement: C is a ciphertext under the verifier's key N0; the prover produced
  D = C^x · enc_N0(y; ρ) mod N0²,  Y = enc_N1(y; ρ_y) under its own key N1,  X = x·G.
Claim: x ∈ ±2^(ℓ+ε), y ∈ ±2^(ℓ'+ε).  This is the MtA response proof of presigning.

  Prover:   α ← ±2^(ℓ+ε), β ← ±2^(ℓ'+ε), r ← Z*_N0, r_y ← Z*_N1,
            γ, δ ← ±2^(ℓ+ε)·N̂, m, μ ← ±2^ℓ·N̂
            A = C^α·enc_N0(β; r), Bx = α·G, By = enc_N1(β; r_y),
            E = s^α t^γ, S = s^x t^m, F = s^β t^δ, T = s^y t^μ   (mod N̂)
  Challenge e ← ±q
  Response  z1 = α + e·x, z2 = β + e·y, z3 = γ + e·m, z4 = δ + e·μ,
            w = r·ρ^e mod N0, w_y = r_y·ρ_y^e mod N1
  Verifier: z1 ∈ ±2^(ℓ+ε), z2 ∈ ±2^(ℓ'+ε);
            C^z1·enc_N0(z2; w) = A·D^e;  z1·G = Bx + e·X;  enc_N1(z2; w_y) = By·Y^e;
            s^z1 t^z3 = E·S^e;  s^z2 t^z4 = F·T^e  (mod N̂).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signer.arith import (
    powmod_secret,
    random_signed,
    random_signed_times,
    random_unit,
)
from signer.curve import Point
from signer.encoding import FieldKind, Int, Nat, PointField, Wire
from signer.paillier import PaillierPublicKey, PaillierSecretKey
from signer.params import ELL, ELL_PRIME, EPSILON, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams, RingPedersenSecret, VerifierAux
from signer.zk.common import Checker, ProofContext, bind_aux

NAME = "aff_g"


@dataclass(frozen=True)
class AffGPublic:
    verifier_key: PaillierPublicKey  # N0
    prover_key: PaillierPublicKey  # N1
    C: int  # ciphertext under N0
    D: int  # C^x · enc_N0(y; ρ)
    Y: int  # enc_N1(y; ρ_y)
    X: Point  # x·G


@dataclass(frozen=True)
class AffGPrivate:
    x: int
    y: int
    rho: int
    rho_y: int


@dataclass(frozen=True)
class AffGProof(Wire):
    A: int
    Bx: Point
    By: int
    E: int
    S: int
    F: int
    T: int
    z1: int
    z2: int
    z3: int
    z4: int
    w: int
    wy: int

    WIRE_NAME: ClassVar[str] = "zk_aff_g"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "A": Nat(2 * MODULUS_BITS),
        "Bx": PointField(),
        "By": Nat(2 * MODULUS_BITS),
        "E": Nat(MODULUS_BITS),
        "S": Nat(MODULUS_BITS),
        "F": Nat(MODULUS_BITS),
        "T": Nat(MODULUS_BITS),
        "z1": Int(ELL + EPSILON + 1),
        "z2": Int(ELL_PRIME + EPSILON + 1),
        "z3": Int(ELL + EPSILON + 2 + MODULUS_BITS),
        "z4": Int(ELL + EPSILON + 2 + MODULUS_BITS),
        "w": Nat(MODULUS_BITS),
        "wy": Nat(MODULUS_BITS),
    }


def _challenge(
    ctx: ProofContext, public: AffGPublic, aux: RingPedersenParams, first: list[int | Point]
) -> int:
    transcript = ctx.transcript(NAME)
    bind_aux(transcript, aux)
    transcript.append(
        "statement",
        [public.verifier_key.n, public.prover_key.n, public.C, public.D, public.Y, public.X],
    )
    transcript.append("commitment", first)
    return transcript.challenge_signed("e")


def prove(
    ctx: ProofContext,
    public: AffGPublic,
    private: AffGPrivate,
    aux: RingPedersenParams,
    prover_key: PaillierSecretKey,
) -> AffGProof:
    """`prover_key` is the prover's own secret key (N1), used for CRT speed-ups only."""
    n0_key, nh = public.verifier_key, aux.n
    n0 = n0_key.n
    alpha = random_signed(ELL + EPSILON)
    beta = random_signed(ELL_PRIME + EPSILON)
    r = random_unit(n0)
    r_y = random_unit(prover_key.n)
    gamma = random_signed_times(ELL + EPSILON, nh)
    m = random_signed_times(ELL, nh)
    delta = random_signed_times(ELL + EPSILON, nh)
    mu = random_signed_times(ELL, nh)
    A = n0_key.scalar_mul(public.C, alpha) * n0_key.encrypt_with(beta, r) % n0_key.n2
    Bx = Point.base_mul(alpha)
    By = prover_key.encrypt_with(beta, r_y)
    E = aux.commit(alpha, gamma)
    S = aux.commit(private.x, m)
    F = aux.commit(beta, delta)
    T = aux.commit(private.y, mu)
    e = _challenge(ctx, public, aux, [A, Bx, By, E, S, F, T])
    z1 = alpha + e * private.x
    z2 = beta + e * private.y
    z3 = gamma + e * m
    z4 = delta + e * mu
    # ρ is a unit mod N0 whose group order the prover does not know: exponentiate directly.
    w = r * powmod_secret(private.rho, e, n0) % n0
    wy = r_y * prover_key.powmod_n(private.rho_y, e) % prover_key.n
    return AffGProof(A, Bx, By, E, S, F, T, z1, z2, z3, z4, w, wy)


def verify(ctx: ProofContext, public: AffGPublic, proof: AffGProof, aux: VerifierAux) -> None:
    """Raise ProofRejected unless `proof` is valid.  `aux` is the verifier's own ring-Pedersen
    material from local state, never from the message: its `RingPedersenSecret` (CRT, fast) or,
    for a third party re-checking a transcript, its public `RingPedersenParams`."""
    check = Checker(NAME, ctx.prover)
    k0, k1, nh = public.verifier_key, public.prover_key, aux.n
    check.paillier_key(k0, "N0")
    check.paillier_key(k1, "N1")
    check.ciphertext(public.C, k0, "C")
    check.ciphertext(public.D, k0, "D")
    check.ciphertext(public.Y, k1, "Y")
    check.point(public.X, "X")
    check.signed_range(proof.z1, ELL + EPSILON, "z1")
    check.signed_range(proof.z2, ELL_PRIME + EPSILON, "z2")
    check.signed_range(proof.z3, ELL + EPSILON + 1, "z3", nh)  # DoS bound: |γ + e·m|
    check.signed_range(proof.z4, ELL + EPSILON + 1, "z4", nh)  # DoS bound: |δ + e·μ|
    check.ciphertext(proof.A, k0, "A")
    check.point(proof.Bx, "Bx")
    check.ciphertext(proof.By, k1, "By")
    for name in ("E", "S", "F", "T"):
        check.unit(getattr(proof, name), nh, name)
    check.unit(proof.w, k0.n, "w")
    check.unit(proof.wy, k1.n, "wy")
    e = _challenge(
        ctx, public, aux.params, [proof.A, proof.Bx, proof.By, proof.E, proof.S, proof.F, proof.T]
    )
    # N0 is the verifier's own Paillier key: with its secret at hand, work by CRT.
    own = aux.paillier if isinstance(aux, RingPedersenSecret) else None
    n0_ops: PaillierPublicKey | PaillierSecretKey = own if own and own.n == k0.n else k0
    n0sq = k0.n2
    lhs = n0_ops.exp_n2(public.C, proof.z1) * n0_ops.encrypt_public(proof.z2, proof.w) % n0sq
    rhs = proof.A * n0_ops.exp_n2(public.D, e) % n0sq
    check.equation(lhs == rhs, "C^z1·enc0(z2; w) = A·D^e")
    check.equation(Point.base_mul(proof.z1) == proof.Bx + public.X * e, "z1·G = Bx + e·X")
    lhs = k1.encrypt_public(proof.z2, proof.wy)
    rhs = proof.By * k1.exp_n2(public.Y, e) % k1.n2
    check.equation(lhs == rhs, "enc1(z2; wy) = By·Y^e")
    lhs = aux.commit_public(proof.z1, proof.z3)
    check.equation(lhs == proof.E * aux.exp(proof.S, e) % nh, "s^z1·t^z3 = E·S^e")
    lhs = aux.commit_public(proof.z2, proof.z4)
    check.equation(lhs == proof.F * aux.exp(proof.T, e) % nh, "s^z2·t^z4 = F·T^e")
