"""Πdec — Paillier decryption modulo q (CGGMP21 Fig. 30), and its group-element variant.
Presign identification (`signer.protocol.presign_identify`) uses Πdec to show δ_i = dec_i(C) mod q
and the group variant to show S_i = (dec_i(C) mod q)·Γ.

Statement: C = enc_N0(y; ρ) under the prover's own key N0 and x = y mod q (scalar form), or
X = y·g for a base point g (group form).  Claim: y ∈ ±2^ℓd with ℓd = PLAINTEXT_BITS.
Proven to one verifier, over the verifier's ring-Pedersen parameters (N̂, s, t).

  Prover:   α ← ±2^(ℓd+ε), μ ← ±2^ℓd·N̂, ν ← ±2^(ℓd+ε)·N̂, r ← Z*_N0
            S = s^y t^μ, T = s^α t^ν (mod N̂), A = enc_N0(α; r),
            γ = α mod q (scalar form) or Y = α·g (group form)
  Challenge e ← ±q (Fiat–Shamir over sid, prover, aux, N0, C, x | (X, g), S, T, A, γ | Y)
  Response  z1 = α + e·y,  z2 = ν + e·μ,  w = r·ρ^e mod N0
  Verifier: z1 ∈ ±2^(ℓd+ε);  |z2| ≤ 2^(ℓd+ε+1)·N̂ (DoS bound);  enc_N0(z1; w) = A·C^e;
            z1 = γ + e·x (mod q) (scalar form) or z1·g = Y + e·X (group form);
            s^z1·t^z2 = T·S^e (mod N̂).

The plaintext range.  The paper states Πdec for y ∈ ±2^ℓ and its verifier checks no range.
Without one the proof pins y down only modulo N0 (y + k·N0 passes as well), so "y mod q" would
say nothing about the decryption of C.  With z1 ∈ ±2^(ℓd+ε) the extracted y has |y| ≤ 2^(ℓd+ε+1)
< N0/2, hence it *is* the signed decryption of C.  ℓd covers what identification decrypts:
k_i·γ_i plus, for each of at most 2^16 − 1 peers, an MtA share k_i·x + y with x ∈ ±2^(ℓ+ε+1),
y ∈ ±2^(ℓ'+ε+1) (the extraction bounds of Πaff-g) minus an own mask in ±2^ℓ' — below
2^(ℓ'+ε+18).  The masks α hide e·y with ε bits to spare, as in the other proofs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from signer.arith import random_signed, random_signed_times, random_unit
from signer.curve import Point, Q
from signer.encoding import FieldKind, Int, Nat, PointField, Wire
from signer.errors import Check, CryptoMisuse
from signer.paillier import PaillierPublicKey, PaillierSecretKey
from signer.params import ELL_PRIME, EPSILON, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams, VerifierAux
from signer.zk.common import Checker, ProofContext, bind_aux

NAME = "dec"
GROUP_NAME = "dec_group"

#: ℓd — bound on the plaintext y (bits), see the module docstring.
PLAINTEXT_BITS = ELL_PRIME + EPSILON + 18

# Soundness needs the extracted |y| ≤ 2^(ℓd+ε+1) to stay below N0/2 ≥ 2^(|N0|−2).
if PLAINTEXT_BITS + EPSILON + 1 >= MODULUS_BITS - 2:
    raise RuntimeError("Πdec plaintext range does not fit the Paillier modulus")


@dataclass(frozen=True)
class DecPublic:
    key: PaillierPublicKey  # N0, the prover's Paillier key
    ciphertext: int  # C
    x: int  # y mod q


@dataclass(frozen=True)
class DecGroupPublic:
    key: PaillierPublicKey  # N0, the prover's Paillier key
    ciphertext: int  # C
    point: Point  # X = y·g
    base: Point  # g


@dataclass(frozen=True)
class DecPrivate:
    y: int
    rho: int


_COMMON_SCHEMA: dict[str, FieldKind] = {
    "S": Nat(MODULUS_BITS),
    "T": Nat(MODULUS_BITS),
    "A": Nat(2 * MODULUS_BITS),
}
_RESPONSE_SCHEMA: dict[str, FieldKind] = {
    "z1": Int(PLAINTEXT_BITS + EPSILON + 1),
    "z2": Int(PLAINTEXT_BITS + EPSILON + 2 + MODULUS_BITS),
    "w": Nat(MODULUS_BITS),
}


@dataclass(frozen=True)
class DecProof(Wire):
    S: int
    T: int
    A: int
    gamma: int
    z1: int
    z2: int
    w: int

    WIRE_NAME: ClassVar[str] = "zk_dec"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        **_COMMON_SCHEMA,
        "gamma": Nat(256),
        **_RESPONSE_SCHEMA,
    }


@dataclass(frozen=True)
class DecGroupProof(Wire):
    S: int
    T: int
    A: int
    Y: Point
    z1: int
    z2: int
    w: int

    WIRE_NAME: ClassVar[str] = "zk_dec_group"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        **_COMMON_SCHEMA,
        "Y": PointField(),
        **_RESPONSE_SCHEMA,
    }


@dataclass(frozen=True)
class _Nonces:
    alpha: int
    mu: int
    nu: int
    r: int


def _first_message(
    private: DecPrivate, aux: RingPedersenParams, prover_key: PaillierSecretKey
) -> tuple[_Nonces, int, int, int]:
    if abs(private.y) > 1 << PLAINTEXT_BITS:
        raise CryptoMisuse("Πdec witness y outside ±2^ℓd")
    nh = aux.n
    nonces = _Nonces(
        alpha=random_signed(PLAINTEXT_BITS + EPSILON),
        mu=random_signed_times(PLAINTEXT_BITS, nh),
        nu=random_signed_times(PLAINTEXT_BITS + EPSILON, nh),
        r=random_unit(prover_key.n),
    )
    S = aux.commit(private.y, nonces.mu)
    T = aux.commit(nonces.alpha, nonces.nu)
    A = prover_key.encrypt_with(nonces.alpha, nonces.r)
    return nonces, S, T, A


def _responses(
    nonces: _Nonces, private: DecPrivate, e: int, prover_key: PaillierSecretKey
) -> tuple[int, int, int]:
    z1 = nonces.alpha + e * private.y
    z2 = nonces.nu + e * nonces.mu
    w = nonces.r * prover_key.powmod_n(private.rho, e) % prover_key.n
    return z1, z2, w


# --- scalar form (Fig. 30) ----------------------------------------------------------------------


def _challenge(
    ctx: ProofContext, public: DecPublic, aux: RingPedersenParams, first: list[int]
) -> int:
    transcript = ctx.transcript(NAME)
    bind_aux(transcript, aux)
    transcript.append("statement", [public.key.n, public.ciphertext, public.x])
    transcript.append("commitment", first)
    return transcript.challenge_signed("e")


def prove(
    ctx: ProofContext,
    public: DecPublic,
    private: DecPrivate,
    aux: RingPedersenParams,
    prover_key: PaillierSecretKey,
) -> DecProof:
    """Prove x = dec(C) mod q, to the verifier whose parameters are `aux`."""
    nonces, S, T, A = _first_message(private, aux, prover_key)
    gamma = nonces.alpha % Q
    e = _challenge(ctx, public, aux, [S, T, A, gamma])
    return DecProof(S, T, A, gamma, *_responses(nonces, private, e, prover_key))


def verify(ctx: ProofContext, public: DecPublic, proof: DecProof, aux: VerifierAux) -> None:
    """Raise ProofRejected unless `proof` is valid.  `aux` is the verifier's own ring-Pedersen
    material from local state (its secret, or for a third party the public parameters)."""
    check = Checker(NAME, ctx.prover)
    key, nh = public.key, aux.n
    check.paillier_key(key, "N0")
    check.ciphertext(public.ciphertext, key, "C")
    if isinstance(public.x, bool) or not 0 <= public.x < Q:
        check.fail(Check.RANGE, "x", "not in [0, q)")
    check.signed_range(proof.z1, PLAINTEXT_BITS + EPSILON, "z1")
    check.signed_range(proof.z2, PLAINTEXT_BITS + EPSILON + 1, "z2", nh)  # DoS: |ν + e·μ|
    check.unit(proof.S, nh, "S")
    check.unit(proof.T, nh, "T")
    check.ciphertext(proof.A, key, "A")
    if isinstance(proof.gamma, bool) or not 0 <= proof.gamma < Q:
        check.fail(Check.RANGE, "gamma", "not in [0, q)")
    check.unit(proof.w, key.n, "w")
    e = _challenge(ctx, public, aux.params, [proof.S, proof.T, proof.A, proof.gamma])
    lhs = key.encrypt_public(proof.z1, proof.w)
    rhs = proof.A * key.exp_n2(public.ciphertext, e) % key.n2
    check.equation(lhs == rhs, "enc(z1; w) = A·C^e")
    check.equation((proof.z1 - proof.gamma - e * public.x) % Q == 0, "z1 = γ + e·x mod q")
    lhs = aux.commit_public(proof.z1, proof.z2)
    check.equation(lhs == proof.T * aux.exp(proof.S, e) % nh, "s^z1·t^z2 = T·S^e")


# --- group form ---------------------------------------------------------------------------------


def _group_challenge(
    ctx: ProofContext, public: DecGroupPublic, aux: RingPedersenParams, first: list[int | Point]
) -> int:
    transcript = ctx.transcript(GROUP_NAME)
    bind_aux(transcript, aux)
    transcript.append("statement", [public.key.n, public.ciphertext, public.point, public.base])
    transcript.append("commitment", first)
    return transcript.challenge_signed("e")


def prove_group(
    ctx: ProofContext,
    public: DecGroupPublic,
    private: DecPrivate,
    aux: RingPedersenParams,
    prover_key: PaillierSecretKey,
) -> DecGroupProof:
    """Prove X = (dec(C) mod q)·g, to the verifier whose parameters are `aux`."""
    nonces, S, T, A = _first_message(private, aux, prover_key)
    Y = public.base * nonces.alpha
    e = _group_challenge(ctx, public, aux, [S, T, A, Y])
    return DecGroupProof(S, T, A, Y, *_responses(nonces, private, e, prover_key))


def verify_group(
    ctx: ProofContext, public: DecGroupPublic, proof: DecGroupProof, aux: VerifierAux
) -> None:
    """As `verify`, for the group form."""
    check = Checker(GROUP_NAME, ctx.prover)
    key, nh = public.key, aux.n
    check.paillier_key(key, "N0")
    check.ciphertext(public.ciphertext, key, "C")
    check.point(public.point, "X")
    check.point(public.base, "g")
    check.signed_range(proof.z1, PLAINTEXT_BITS + EPSILON, "z1")
    check.signed_range(proof.z2, PLAINTEXT_BITS + EPSILON + 1, "z2", nh)  # DoS: |ν + e·μ|
    check.unit(proof.S, nh, "S")
    check.unit(proof.T, nh, "T")
    check.ciphertext(proof.A, key, "A")
    check.point(proof.Y, "Y")
    check.unit(proof.w, key.n, "w")
    e = _group_challenge(ctx, public, aux.params, [proof.S, proof.T, proof.A, proof.Y])
    lhs = key.encrypt_public(proof.z1, proof.w)
    rhs = proof.A * key.exp_n2(public.ciphertext, e) % key.n2
    check.equation(lhs == rhs, "enc(z1; w) = A·C^e")
    check.equation(public.base * proof.z1 == proof.Y + public.point * e, "z1·g = Y + e·X")
    lhs = aux.commit_public(proof.z1, proof.z2)
    check.equation(lhs == proof.T * aux.exp(proof.S, e) % nh, "s^z1·t^z2 = T·S^e")
