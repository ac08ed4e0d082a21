"""Ring-Pedersen parameters (N̂, s, t): t = r² mod N̂, s = t^λ (CGGMP21 Def. 2.3, Fig. 6).

Commitments s^x·t^y mod N̂ hide x and bind it as long as nobody knows the factorisation of N̂ or
log_t s; the large-challenge proofs (Πenc, Πaff-g, Πlog*, Πfac) are sound only over the
*verifier's own* parameters, which the verifier proved well-formed with Πprm and Πmod
(attacks.md A05, A07).  Peers' parameters are accepted only through `from_peer`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gmpy2

from signer.arith import is_unit, powmod_secret
from signer.encoding import FieldKind, Nat, Wire
from signer.errors import Check, EncodingError, InvalidParameter
from signer.paillier import PaillierSecretKey, validate_modulus
from signer.params import MODULUS_BITS, PRIME_BITS


@dataclass(frozen=True)
class RingPedersenParams(Wire):
    n: int
    s: int
    t: int

    WIRE_NAME: ClassVar[str] = "ring_pedersen_params"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "n": Nat(MODULUS_BITS),
        "s": Nat(MODULUS_BITS),
        "t": Nat(MODULUS_BITS),
    }

    @classmethod
    def from_peer(cls, n: int, s: int, t: int, culprit: int | None = None) -> RingPedersenParams:
        """A peer's parameters after the structural checks (attacks.md A07 T07a): modulus form,
        s, t ∈ Z*_N̂ \\ {1, N̂−1} and s ≠ t.  Πprm and Πmod must still be verified."""
        validate_modulus(n, "ring-Pedersen modulus", culprit)
        for name, value in (("s", s), ("t", t)):
            if isinstance(value, bool) or not isinstance(value, int) or not is_unit(value, n):
                raise InvalidParameter(
                    "ring-Pedersen parameters", Check.NOT_UNIT, f"{name} not in Z*_N", culprit
                )
            if value in (1, n - 1):
                raise InvalidParameter(
                    "ring-Pedersen parameters", Check.DEGENERATE, f"{name} is ±1", culprit
                )
        if s == t:
            raise InvalidParameter("ring-Pedersen parameters", Check.DEGENERATE, "s = t", culprit)
        return cls(n, s, t)

    def commit(self, x: int, y: int) -> int:
        """s^x · t^y mod N̂ for secret x, y of either sign (the prover's side)."""
        return powmod_secret(self.s, x, self.n) * powmod_secret(self.t, y, self.n) % self.n

    def commit_public(self, x: int, y: int) -> int:
        """s^x · t^y mod N̂ for public exponents (a verifier without the trapdoor)."""
        return int(gmpy2.powmod(self.s, x, self.n) * gmpy2.powmod(self.t, y, self.n) % self.n)

    def exp(self, base: int, e: int) -> int:
        """base^e mod N̂ for public values."""
        return int(gmpy2.powmod(base, e, self.n))

    @property
    def params(self) -> RingPedersenParams:
        return self


@dataclass(frozen=True)
class RingPedersenSecret(Wire):
    """λ with s = t^λ and the factorisation of N̂ (the party's own Paillier key).

    The wire form (p, q, s, t, λ) is for sealed storage only; it never leaves a node."""

    params: RingPedersenParams
    lam: int = field(repr=False)
    paillier: PaillierSecretKey = field(repr=False)

    WIRE_NAME: ClassVar[str] = "ring_pedersen_secret"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {
        "p": Nat(PRIME_BITS),
        "q": Nat(PRIME_BITS),
        "s": Nat(MODULUS_BITS),
        "t": Nat(MODULUS_BITS),
        "lam": Nat(MODULUS_BITS),
    }

    @property
    def phi(self) -> int:
        return self.paillier.phi

    # Wire reads these names; they are views of the nested key and parameters.
    @property
    def p(self) -> int:
        return self.paillier.p

    @property
    def q(self) -> int:
        return self.paillier.q

    @property
    def s(self) -> int:
        return self.params.s

    @property
    def t(self) -> int:
        return self.params.t

    @property
    def n(self) -> int:
        return self.params.n

    def commit_public(self, x: int, y: int) -> int:
        """s^x · t^y mod N̂ for public exponents, by CRT with exponents reduced mod p−1, q−1:
        the verifier of a proof made to it knows its own factorisation (≈6× faster)."""
        key = self.paillier
        p, q = key.p, key.q
        rp = gmpy2.powmod(self.s % p, x % (p - 1), p) * gmpy2.powmod(self.t % p, y % (p - 1), p)
        rq = gmpy2.powmod(self.s % q, x % (q - 1), q) * gmpy2.powmod(self.t % q, y % (q - 1), q)
        return key.crt(int(rp % p), int(rq % q))

    def exp(self, base: int, e: int) -> int:
        """base^e mod N̂ for a public unit base and exponent, by CRT."""
        return self.paillier.exp_n(base, e)

    @classmethod
    def _build(cls, values: dict[str, Any]) -> RingPedersenSecret:
        paillier = PaillierSecretKey._build({"p": values["p"], "q": values["q"]})
        params = RingPedersenParams(paillier.n, values["s"], values["t"])
        # A typed error before any exponentiation: a t ≡ 0 mod p has no inverse (the CRT
        # powmod would raise ZeroDivisionError), and s, t must be units anyway.
        for name in ("s", "t"):
            if not is_unit(values[name], paillier.n):
                raise EncodingError(cls.WIRE_NAME, Check.NOT_UNIT, f"{name} not in Z*_N")
        if (
            not 0 < values["lam"] < paillier.phi
            or paillier.powmod_n(params.t, values["lam"]) != params.s
        ):
            raise EncodingError(cls.WIRE_NAME, Check.EQUATION, "s ≠ t^λ mod N")
        return cls(params, values["lam"], paillier)

    @classmethod
    def generate(cls, paillier: PaillierSecretKey) -> RingPedersenSecret:
        """Parameters over the party's own Paillier modulus: t = r² mod N, λ ← Z_φ(N), s = t^λ."""
        n, phi = paillier.n, paillier.phi
        while True:
            r = secrets.randbelow(n)
            t = paillier.powmod_n(r, 2) if r > 1 and gmpy2.gcd(r, n) == 1 else 0
            lam = secrets.randbelow(phi)
            if t in (0, 1, n - 1) or lam < 2:
                continue
            s = paillier.powmod_n(t, lam)
            if s not in (1, n - 1, t):
                return cls(RingPedersenParams(n, s, t), lam, paillier)


#: What a verifier of a proof made over ring-Pedersen parameters holds: its own secret (fast,
#: CRT) or, for a third party re-checking a transcript, the public parameters.
VerifierAux = RingPedersenParams | RingPedersenSecret
