"""Security parameters of Tessera's CGGMP21 instantiation (128-bit security).

The values are fixed constants, not configuration: a verifier accepts exactly these and nothing
else, so no peer, message or flag can negotiate them down (attacks.md A06, TSSHOCK c-guess).
Sources: CGGMP21 (eprint 2021/060) §Parameters; Lockness spec `spec/main.tex` "Security
Parameters" (κ = 384 → 3072-bit moduli); paper choices ℓ = λ, ℓ' = 5λ, ε = 2λ.
"""

from __future__ import annotations

from typing import Final

#: Order of the secp256k1 group (q in the paper).
CURVE_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: Field prime of secp256k1.
FIELD_PRIME: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F

#: ℓ — plaintext range of the secrets k, γ, x that range proofs bound (bits).
ELL: Final = 256
#: ε — slack of range proofs (bits); ℓ + ε is the bound on honest responses z₁.
EPSILON: Final = 512
#: ℓ' — range of the MtA masks β, y (bits).
ELL_PRIME: Final = 1280
#: m — number of binary challenges in Πmod and Πprm (soundness 2⁻ᵐ).  Never fewer.
M_ITERATIONS: Final = 128

#: Paillier / ring-Pedersen modulus size; a peer's modulus of any other size is rejected.
MODULUS_BITS: Final = 3072
#: Each factor is a safe prime of this size with its two top bits set, so N is exactly 3072 bits.
PRIME_BITS: Final = MODULUS_BITS // 2

#: Trial-division prefilter for peers' moduli: no prime factor up to this bound (defence in
#: depth only, attacks.md §1; Πmod + Πfac are the proof).
TRIAL_DIVISION_BOUND: Final = 1 << 20
#: Safe-prime generation sieves candidates with the primes below this bound.
SIEVE_BOUND: Final = 1 << 16

#: Session ids are at least this long (bytes); an all-zero id is rejected (attacks.md A13).
MIN_SESSION_ID_BYTES: Final = 16
MAX_SESSION_ID_BYTES: Final = 64
#: Party indices are evaluation points of the Shamir polynomial: 1 ≤ i ≤ MAX_PARTY_INDEX.
MAX_PARTY_INDEX: Final = 0xFFFF

# MtA values (k·γ + β with |β| < 2^(ℓ'+ε)) must never wrap modulo N (CGGMP21 §Parameters).
if not ELL + ELL + EPSILON < ELL_PRIME + EPSILON < MODULUS_BITS - 2:
    raise RuntimeError("inconsistent security parameters")
