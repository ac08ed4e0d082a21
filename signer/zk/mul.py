"""Πmul — Paillier multiplication (CGGMP21 Fig. 29) and Πmul* — multiplication Paillier vs group
(Fig. 31).  Presign identification (`signer.protocol.presign_identify`) uses Πmul to show that
H_i = K_i^γ_i·ρ^N encrypts k_i·γ_i, and Πmul* to show that Ĥ_i = K_i^w_i·ρ^N encrypts k_i·w_i
for the public W_i = w_i·G.

Πmul.  Statement: X = enc_N(x; ρx) and C = Y^x·ρ^N under the prover's own key N, so that
dec(C) = dec(X)·dec(Y) mod N.  No range claim and no ring-Pedersen parameters: the same proof
convinces every verifier (it is not bound to one).

  Prover:   α ← Z*_N, r, s ← Z*_N;  A = Y^α·r^N, B = enc_N(α; s)          (mod N²)
  Challenge e ← ±q (Fiat–Shamir over sid, prover, N, X, Y, C, A, B)
  Response  z = α + e·x,  u = r·ρ^e mod N,  v = s·ρx^e mod N
  Verifier: |z| ≤ 2^(|N|+1) (DoS bound, below); Y^z·u^N = A·C^e;  enc(z; v) = B·X^e  (mod N²).
  (The paper's second check reads c^N; the randomiser of enc(z) is v.)

  DoS bound: the prover takes |x| ≤ 2^(ℓ+ε), so |z| < N + q·2^(ℓ+ε) < 2^(|N|+1).

Πmul*.  Statement: D = C^x·ρ^N0 under the prover's own key N0 and X = x·G.  Claim x ∈ ±2^ℓ.
Proven to one verifier over the verifier's ring-Pedersen parameters (N̂, s, t).

  Prover:   α ← ±2^(ℓ+ε), r ← Z*_N0, γ ← ±2^(ℓ+ε)·N̂, m ← ±2^ℓ·N̂
            A = C^α·r^N0, Bx = α·G, E = s^α t^γ, S = s^x t^m
  Challenge e ← ±q (over sid, prover, aux, N0, C, D, X, A, Bx, E, S)
  Response  z1 = α + e·x,  z2 = γ + e·m,  w = r·ρ^e mod N0
  Verifier: z1 ∈ ±2^(ℓ+ε);  |z2| ≤ 2^(ℓ+ε+1)·N̂ (DoS bound);
            C^z1·w^N0 = A·D^e (mod N0²);  z1·G = Bx + e·X;  s^z1 t^z2 = E·S^e (mod N̂).
  (The paper's figure also draws β and r_y, which no equation uses; they are left out.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signer.arith import random_signed, random_signed_times, random_unit
from signer.curve import Point
from signer.encoding import FieldKind, Int, Nat, PointField, Wire
from signer.errors import CryptoMisuse
from signer.paillier import PaillierPublicKey, PaillierSecretKey
from signer.params import ELL, EPSILON, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams, VerifierAux
from signer.zk.common import Checker, ProofContext, bind_aux

NAME = "mul"
STAR_NAME = "mul_star"

#: |z| of Πmul is at most 2^Z_BITS (see the module docstring).
Z_BITS = MODULUS_BITS + 1


# --- Πmul ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MulPublic:
    key: PaillierPublicKey  # N, the prover's Paillier key
    X: int  # enc(x; ρx)
    Y: int
    C: int  # Y^x·ρ^N


@dataclass(frozen=True)
class MulPrivate:
    x: int
    rho: int  # randomiser of C
    rho_x: int  # randomiser of X


@dataclass(frozen=True)
class MulProof(Wire):
    A: int
    B: int
    z: int
    u: int
    v: int

    WIRE_NAME: ClassVar[str] = "zk_mul"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "A": Nat(2 * MODULUS_BITS),
        "B": Nat(2 * MODULUS_BITS),
        "z": Int(Z_BITS + 1),
        "u": Nat(MODULUS_BITS),
        "v": Nat(MODULUS_BITS),
    }


def _challenge(ctx: ProofContext, public: MulPublic, A: int, B: int) -> int:
    transcript = ctx.transcript(NAME)
    transcript.append("statement", [public.key.n, public.X, public.Y, public.C])
    transcript.append("commitment", [A, B])
    return transcript.challenge_signed("e")


def prove(
    ctx: ProofContext, public: MulPublic, private: MulPrivate, prover_key: PaillierSecretKey
) -> MulProof:
    """Prove dec(C) = dec(X)·dec(Y); `prover_key` is the secret key of N (CRT speed-ups)."""
    if abs(private.x) > 1 << (ELL + EPSILON):
        raise CryptoMisuse("Πmul witness x outside ±2^(ℓ+ε)")
    n = prover_key.n
    alpha = random_unit(n)
    r, s = random_unit(n), random_unit(n)
    A = prover_key.powmod_n2(public.Y, alpha) * prover_key.encrypt_with(0, r) % public.key.n2
    B = prover_key.encrypt_with(alpha, s)
    e = _challenge(ctx, public, A, B)
    z = alpha + e * private.x
    u = r * prover_key.powmod_n(private.rho, e) % n
    v = s * prover_key.powmod_n(private.rho_x, e) % n
    return MulProof(A, B, z, u, v)


def verify(ctx: ProofContext, public: MulPublic, proof: MulProof) -> None:
    """Raise ProofRejected unless `proof` is valid (anybody can verify it)."""
    check = Checker(NAME, ctx.prover)
    key = public.key
    check.paillier_key(key, "N")
    check.ciphertext(public.X, key, "X")
    check.ciphertext(public.Y, key, "Y")
    check.ciphertext(public.C, key, "C")
    check.signed_range(proof.z, Z_BITS, "z")  # DoS bound: |α + e·x|
    check.ciphertext(proof.A, key, "A")
    check.ciphertext(proof.B, key, "B")
    check.unit(proof.u, key.n, "u")
    check.unit(proof.v, key.n, "v")
    e = _challenge(ctx, public, proof.A, proof.B)
    lhs = key.exp_n2(public.Y, proof.z) * key.encrypt_public(0, proof.u) % key.n2
    rhs = proof.A * key.exp_n2(public.C, e) % key.n2
    check.equation(lhs == rhs, "Y^z·u^N = A·C^e")
    lhs = key.encrypt_public(proof.z, proof.v)
    rhs = proof.B * key.exp_n2(public.X, e) % key.n2
    check.equation(lhs == rhs, "enc(z; v) = B·X^e")


# --- Πmul* --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MulStarPublic:
    key: PaillierPublicKey  # N0, the prover's Paillier key
    C: int
    D: int  # C^x·ρ^N0
    X: Point  # x·G


@dataclass(frozen=True)
class MulStarPrivate:
    x: int
    rho: int  # randomiser of D


@dataclass(frozen=True)
class MulStarProof(Wire):
    A: int
    Bx: Point
    E: int
    S: int
    z1: int
    z2: int
    w: int

    WIRE_NAME: ClassVar[str] = "zk_mul_star"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "A": Nat(2 * MODULUS_BITS),
        "Bx": PointField(),
        "E": Nat(MODULUS_BITS),
        "S": Nat(MODULUS_BITS),
        "z1": Int(ELL + EPSILON + 1),
        "z2": Int(ELL + EPSILON + 2 + MODULUS_BITS),
        "w": Nat(MODULUS_BITS),
    }


def _star_challenge(
    ctx: ProofContext, public: MulStarPublic, aux: RingPedersenParams, first: list[int | Point]
) -> int:
    transcript = ctx.transcript(STAR_NAME)
    bind_aux(transcript, aux)
    transcript.append("statement", [public.key.n, public.C, public.D, public.X])
    transcript.append("commitment", first)
    return transcript.challenge_signed("e")


def prove_star(
    ctx: ProofContext,
    public: MulStarPublic,
    private: MulStarPrivate,
    aux: RingPedersenParams,
    prover_key: PaillierSecretKey,
) -> MulStarProof:
    """Prove D = C^x·ρ^N0 with X = x·G and x small, to the verifier whose parameters are `aux`."""
    if abs(private.x) > 1 << ELL:
        raise CryptoMisuse("Πmul* witness x outside ±2^ℓ")
    n0, nh = prover_key.n, aux.n
    alpha = random_signed(ELL + EPSILON)
    r = random_unit(n0)
    gamma = random_signed_times(ELL + EPSILON, nh)
    m = random_signed_times(ELL, nh)
    A = prover_key.powmod_n2(public.C, alpha) * prover_key.encrypt_with(0, r) % public.key.n2
    Bx = Point.base_mul(alpha)
    E = aux.commit(alpha, gamma)
    S = aux.commit(private.x, m)
    e = _star_challenge(ctx, public, aux, [A, Bx, E, S])
    z1 = alpha + e * private.x
    z2 = gamma + e * m
    w = r * prover_key.powmod_n(private.rho, e) % n0
    return MulStarProof(A, Bx, E, S, z1, z2, w)


def verify_star(
    ctx: ProofContext, public: MulStarPublic, proof: MulStarProof, aux: VerifierAux
) -> None:
    """Raise ProofRejected unless `proof` is valid.  `aux` is the verifier's own ring-Pedersen
    material from local state (its secret, or for a third party the public parameters)."""
    check = Checker(STAR_NAME, ctx.prover)
    key, nh = public.key, aux.n
    check.paillier_key(key, "N0")
    check.ciphertext(public.C, key, "C")
    check.ciphertext(public.D, key, "D")
    check.point(public.X, "X")
    check.signed_range(proof.z1, ELL + EPSILON, "z1")
    check.signed_range(proof.z2, ELL + EPSILON + 1, "z2", nh)  # DoS bound: |γ + e·m|
    check.ciphertext(proof.A, key, "A")
    check.point(proof.Bx, "Bx")
    check.unit(proof.E, nh, "E")
    check.unit(proof.S, nh, "S")
    check.unit(proof.w, key.n, "w")
    e = _star_challenge(ctx, public, aux.params, [proof.A, proof.Bx, proof.E, proof.S])
    lhs = key.exp_n2(public.C, proof.z1) * key.encrypt_public(0, proof.w) % key.n2
    rhs = proof.A * key.exp_n2(public.D, e) % key.n2
    check.equation(lhs == rhs, "C^z1·w^N0 = A·D^e")
    check.equation(Point.base_mul(proof.z1) == proof.Bx + public.X * e, "z1·G = Bx + e·X")
    lhs = aux.commit_public(proof.z1, proof.z2)
    check.equation(lhs == proof.E * aux.exp(proof.S, e) % nh, "s^z1·t^z2 = E·S^e")
