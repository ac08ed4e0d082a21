"""Paillier encryption over a Paillier–Blum modulus N = p·q of two safe primes (CGGMP21 §2.3).

Encryption is enc(m; ρ) = (1 + N)^m · ρ^N mod N² = (1 + m·N) · ρ^N mod N².  The holder of the
secret key decrypts and encrypts with CRT over p² and q².  A peer's public key is accepted only
through `PaillierPublicKey.from_peer`, which checks the exact size, oddness, compositeness,
squareness and small factors (defence in depth; Πmod and Πfac are the actual proof of form,
attacks.md A02).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from math import gcd, isqrt
from typing import Any, ClassVar

import gmpy2

from signer.arith import crt_pair, powmod_public, powmod_secret, random_unit
from signer.encoding import FieldKind, Nat, Wire
from signer.errors import Check, CryptoMisuse, EncodingError, InvalidParameter
from signer.params import MODULUS_BITS, PRIME_BITS, TRIAL_DIVISION_BOUND
from signer.primes import generate_safe_primes, is_safe_prime

#: Product of all primes up to the trial-division bound (one gcd replaces 82 025 divisions).
_PRIMORIAL = gmpy2.primorial(TRIAL_DIVISION_BOUND)


#: Moduli that passed `validate_modulus` (a pure function of N), so that the verifier of every
#: proof in a session does not redo the primality test (≈7 ms) for the same peer modulus.
_VALIDATED: OrderedDict[int, None] = OrderedDict()
_VALIDATED_MAX = 4096


def validate_modulus(n: int, what: str, culprit: int | None = None) -> None:
    """Cheap structural checks on a peer's modulus: exact size, odd, composite, not a square,
    no prime factor up to 2²⁰ (attacks.md §1, A01 T01d, A02 T02f)."""
    if type(n) is int and n in _VALIDATED:
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidParameter(what, Check.MODULUS_FORM, "not an integer", culprit)
    if n.bit_length() != MODULUS_BITS:
        raise InvalidParameter(
            what, Check.MODULUS_SIZE, f"{n.bit_length()} bits, expected {MODULUS_BITS}", culprit
        )
    if n % 2 == 0:
        raise InvalidParameter(what, Check.MODULUS_FORM, "even", culprit)
    if gmpy2.gcd(n, _PRIMORIAL) != 1:
        raise InvalidParameter(what, Check.MODULUS_FORM, "has a prime factor up to 2^20", culprit)
    if isqrt(n) ** 2 == n:
        raise InvalidParameter(what, Check.MODULUS_FORM, "a perfect square", culprit)
    if gmpy2.is_prime(n, 40):
        raise InvalidParameter(what, Check.MODULUS_FORM, "prime", culprit)
    _VALIDATED[n] = None
    if len(_VALIDATED) > _VALIDATED_MAX:
        _VALIDATED.popitem(last=False)


@dataclass(frozen=True)
class PaillierPublicKey(Wire):
    n: int
    n2: int = field(init=False, repr=False, compare=False)

    WIRE_NAME: ClassVar[str] = "paillier_public_key"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {"n": Nat(MODULUS_BITS)}

    def __post_init__(self) -> None:
        object.__setattr__(self, "n2", self.n * self.n)

    @classmethod
    def from_peer(cls, n: int, culprit: int | None = None) -> PaillierPublicKey:
        """A peer's key after the structural modulus checks."""
        validate_modulus(n, "Paillier modulus", culprit)
        return cls(n)

    # --- ciphertexts --------------------------------------------------------------------------
    def validate_ciphertext(self, c: int, where: str) -> int:
        """0 < c < N² and gcd(c, N) = 1 (attacks.md A17)."""
        if isinstance(c, bool) or not isinstance(c, int):
            raise EncodingError(where, Check.DECODE, "ciphertext is not an integer")
        if not 0 < c < self.n2:
            raise EncodingError(where, Check.RANGE, "ciphertext not in (0, N²)")
        if gcd(c, self.n) != 1:
            raise EncodingError(where, Check.NOT_UNIT, "ciphertext shares a factor with N")
        return c

    def encrypt_with(self, m: int, rho: int) -> int:
        """enc(m; ρ) for a plaintext m (any sign, taken mod N) and randomiser ρ ∈ Z*_N.

        ρ^N uses the plain (windowed) exponentiation: the exponent N is public, and the
        sequence of operations and table accesses of mpz_powm depends only on the exponent and
        the operand sizes, not on the secret base — as with RSA's public operation.  That is
        ≈ 25 % faster than mpz_powm_sec on the 6144-bit modulus."""
        return (1 + (m % self.n) * self.n) * powmod_public(rho, self.n, self.n2) % self.n2

    def encrypt_public(self, m: int, rho: int) -> int:
        """enc(m; ρ) when m and ρ are public (verifiers recomputing a proof equation)."""
        return (1 + (m % self.n) * self.n) * powmod_public(rho, self.n, self.n2) % self.n2

    def exp_n2(self, base: int, exp: int) -> int:
        """base^exp mod N² for public values."""
        return powmod_public(base, exp, self.n2)

    def encrypt(self, m: int) -> tuple[int, int]:
        """(ciphertext, randomiser) for a fresh random ρ."""
        rho = random_unit(self.n)
        return self.encrypt_with(m, rho), rho

    def add(self, c1: int, c2: int) -> int:
        return c1 * c2 % self.n2

    def scalar_mul(self, c: int, k: int) -> int:
        """enc(k·m) from enc(m); k is treated as secret."""
        return powmod_secret(c, k, self.n2)


@dataclass(frozen=True)
class PaillierSecretKey(Wire):
    """p, q safe primes (hence ≡ 3 mod 4), N = p·q of exactly MODULUS_BITS bits.

    The wire form (p, q) is for sealed storage only; it never leaves a node."""

    p: int
    q: int
    public: PaillierPublicKey = field(init=False)
    phi: int = field(init=False, repr=False)
    _p2: int = field(init=False, repr=False)
    _q2: int = field(init=False, repr=False)
    _q2_inv_p2: int = field(init=False, repr=False)
    _q_inv_p: int = field(init=False, repr=False)
    _hp: int = field(init=False, repr=False)
    _hq: int = field(init=False, repr=False)
    _q_mod_pm1: int = field(init=False, repr=False)
    _p_mod_qm1: int = field(init=False, repr=False)

    WIRE_NAME: ClassVar[str] = "paillier_secret_key"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {"p": Nat(PRIME_BITS), "q": Nat(PRIME_BITS)}

    def __post_init__(self) -> None:
        p, q = self.p, self.q
        if p == q or p < 3 or q < 3 or (p * q).bit_length() != MODULUS_BITS:
            raise CryptoMisuse("Paillier factors must be distinct and give a 3072-bit modulus")
        if p % 4 != 3 or q % 4 != 3:
            raise CryptoMisuse("Paillier factors must be Blum primes (≡ 3 mod 4)")
        if gcd(p, q) != 1:  # else the CRT inverses below do not exist (ZeroDivisionError)
            raise CryptoMisuse("Paillier factors must be coprime")
        setattr_ = object.__setattr__
        setattr_(self, "public", PaillierPublicKey(p * q))
        setattr_(self, "phi", (p - 1) * (q - 1))
        setattr_(self, "_p2", p * p)
        setattr_(self, "_q2", q * q)
        setattr_(self, "_q2_inv_p2", int(gmpy2.invert(q * q, p * p)))
        setattr_(self, "_q_inv_p", int(gmpy2.invert(q, p)))
        # h_p = L_p((1+N)^(p−1) mod p²)⁻¹ mod p = (−q)⁻¹ mod p  (Paillier CRT decryption)
        setattr_(self, "_hp", int(gmpy2.invert(-q % p, p)))
        setattr_(self, "_hq", int(gmpy2.invert(-p % q, q)))
        setattr_(self, "_q_mod_pm1", q % (p - 1))
        setattr_(self, "_p_mod_qm1", p % (q - 1))

    @classmethod
    def _build(cls, values: dict[str, Any]) -> PaillierSecretKey:
        try:
            return cls(values["p"], values["q"])
        except CryptoMisuse as exc:
            raise EncodingError(cls.WIRE_NAME, Check.MODULUS_FORM, str(exc)) from exc

    @classmethod
    def generate(cls) -> PaillierSecretKey:
        """A fresh key from two newly generated safe primes (production path)."""
        p, q = generate_safe_primes(2, PRIME_BITS)
        return cls(p, q)

    @classmethod
    def from_primes(cls, p: int, q: int) -> PaillierSecretKey:
        """A key from given primes after checking that both are safe primes of the right size."""
        if not (is_safe_prime(p) and is_safe_prime(q)):
            raise CryptoMisuse("Paillier factors must be 1536-bit safe primes")
        return cls(p, q)

    @property
    def n(self) -> int:
        return self.public.n

    def crt(self, rp: int, rq: int) -> int:
        """The x mod N with x ≡ rp (mod p) and x ≡ rq (mod q)."""
        return crt_pair(rp, self.p, rq, self.q, self._q_inv_p)

    def powmod_n2(self, base: int, exp: int) -> int:
        """base^exp mod N² by CRT over p², q² (exponent secret, any sign; base a unit)."""
        rp = powmod_secret(base % self._p2, exp % (self.p * (self.p - 1)), self._p2)
        rq = powmod_secret(base % self._q2, exp % (self.q * (self.q - 1)), self._q2)
        return crt_pair(rp, self._p2, rq, self._q2, self._q2_inv_p2)

    def powmod_n(self, base: int, exp: int) -> int:
        """base^exp mod N by CRT over p, q (exponent secret, any sign; base a unit)."""
        rp = powmod_secret(base % self.p, exp % (self.p - 1), self.p)
        rq = powmod_secret(base % self.q, exp % (self.q - 1), self.q)
        return self.crt(rp, rq)

    def exp_n(self, base: int, exp: int) -> int:
        """base^exp mod N by CRT for public values (verifiers; base must be a unit)."""
        p, q = self.p, self.q
        rp = powmod_public(base % p, exp % (p - 1), p)
        rq = powmod_public(base % q, exp % (q - 1), q)
        return self.crt(rp, rq)

    def exp_n2(self, base: int, exp: int) -> int:
        """base^exp mod N² by CRT for public values (verifiers; base must be a unit)."""
        rp = powmod_public(base % self._p2, exp % (self.p * (self.p - 1)), self._p2)
        rq = powmod_public(base % self._q2, exp % (self.q * (self.q - 1)), self._q2)
        return crt_pair(rp, self._p2, rq, self._q2, self._q2_inv_p2)

    def _nth_power_n2(self, rho: int, power: Callable[[int, int, int], int]) -> int:
        """ρ^N mod N² through the Teichmüller lift: x ↦ x^p mod p² depends only on x mod p and is
        a homomorphism, so ρ^N = (ρ^p)^q ≡ (ρ^(q mod p−1) mod p)^p (mod p²), and likewise mod q².
        Two half-size exponents per prime instead of one full-size exponent mod p²."""
        p, q = self.p, self.q
        rp = power(power(rho % p, self._q_mod_pm1, p), p, self._p2)
        rq = power(power(rho % q, self._p_mod_qm1, q), q, self._q2)
        return crt_pair(rp, self._p2, rq, self._q2, self._q2_inv_p2)

    def encrypt_public(self, m: int, rho: int) -> int:
        """enc(m; ρ) for public m, ρ by CRT (verifying a proof over one's own key)."""
        n = self.n
        return (1 + (m % n) * n) * self._nth_power_n2(rho, powmod_public) % self.public.n2

    def encrypt_with(self, m: int, rho: int) -> int:
        """enc(m; ρ) with ρ^N by CRT and the Teichmüller lift (about 5× faster than the
        public-key path); the exponents derive from p and q, so they run in constant time."""
        n = self.n
        return (1 + (m % n) * n) * self._nth_power_n2(rho, powmod_secret) % self.public.n2

    def encrypt(self, m: int) -> tuple[int, int]:
        rho = random_unit(self.n)
        return self.encrypt_with(m, rho), rho

    def decrypt(self, c: int) -> int:
        """Plaintext in [0, N) (CRT decryption; the ciphertext is validated first)."""
        self.public.validate_ciphertext(c, "ciphertext")
        p, q = self.p, self.q
        mp = (powmod_secret(c % self._p2, p - 1, self._p2) - 1) // p * self._hp % p
        mq = (powmod_secret(c % self._q2, q - 1, self._q2) - 1) // q * self._hq % q
        return crt_pair(mp, p, mq, q, self._q_inv_p)

    def decrypt_signed(self, c: int) -> int:
        """Plaintext as a signed integer in (−N/2, N/2]."""
        m = self.decrypt(c)
        return m - self.n if m > self.n // 2 else m

    def randomiser_of(self, c: int) -> int:
        """The ρ with c = enc(m; ρ) for some m: c ≡ ρ^N (mod N), so ρ = c^(N⁻¹ mod φ) mod N.
        Lets a prover open ciphertexts it did not encrypt itself (e.g. homomorphic combinations)."""
        self.public.validate_ciphertext(c, "ciphertext")
        return self.powmod_n(c % self.n, int(gmpy2.invert(self.n, self.phi)))
