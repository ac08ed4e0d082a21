"""Big-integer helpers on gmpy2 shared by Paillier, ring-Pedersen and the proofs.

`powmod_secret` is the one place a secret exponent meets a modulus: GMP's `mpz_powm_sec` (same
time and memory access pattern for operands of the same limb count).  Signed exponents are
handled without a secret-dependent branch: both the power and its inverse are computed and one is
selected.  Public exponents use the faster `powmod`.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from math import gcd
from typing import TypeVar

import gmpy2

from signer.errors import Check, EncodingError

T = TypeVar("T")
R = TypeVar("R")


def powmod_public(base: int, exp: int, modulus: int) -> int:
    """base^exp mod modulus for a public (possibly negative) exponent."""
    return int(gmpy2.powmod(base, exp, modulus))


def _release_gil_in_this_thread() -> None:
    # gmpy2 contexts are per thread; with this flag set GMP runs without holding the GIL.
    gmpy2.get_context().allow_release_gil = True


@cache
def _threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=os.cpu_count() or 1,
        thread_name_prefix="powmod",
        initializer=_release_gil_in_this_thread,
    )


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """[fn(x) for x in items] on a thread per core; worthwhile when fn is dominated by big
    modular exponentiations (GMP runs with the GIL released in these threads)."""
    nested = threading.current_thread().name.startswith("powmod")  # no pool-in-pool deadlock
    if len(items) < 2 or (os.cpu_count() or 1) < 2 or nested:
        return [fn(x) for x in items]
    return list(_threads().map(fn, items))


def powmod_public_many(bases: Sequence[int], exp: int, modulus: int) -> list[int]:
    """[b^exp mod modulus for b in bases] for public values, spread over all cores: gmpy2's
    `powmod_base_list` releases the GIL (Πmod verification: 128 × z^N mod N)."""
    workers = min(os.cpu_count() or 1, len(bases))
    if workers <= 1:
        return [int(x) for x in gmpy2.powmod_base_list(list(bases), exp, modulus)]
    step = -(-len(bases) // workers)
    chunks = [list(bases[k : k + step]) for k in range(0, len(bases), step)]
    parts = _threads().map(lambda chunk: gmpy2.powmod_base_list(chunk, exp, modulus), chunks)
    return [int(x) for part in parts for x in part]


def powmod_secret(base: int, exp: int, modulus: int) -> int:
    """base^exp mod modulus for a secret exponent of either sign (base must be a unit)."""
    magnitude = abs(exp)
    if magnitude == 0:
        return 1 % modulus
    power = gmpy2.powmod_sec(base, magnitude, modulus)
    inverse = gmpy2.invert(power, modulus)
    return int((power, inverse)[exp < 0])


def crt_pair(rp: int, p: int, rq: int, q: int, q_inv_p: int) -> int:
    """The x mod p·q with x ≡ rp (mod p), x ≡ rq (mod q); q_inv_p = q⁻¹ mod p (Garner)."""
    return rq + q * ((rp - rq) * q_inv_p % p)


def random_unit(modulus: int) -> int:
    """Uniform element of Z*_modulus."""
    while True:
        r = secrets.randbelow(modulus)
        if r != 0 and gcd(r, modulus) == 1:
            return r


def random_signed(bits: int) -> int:
    """Uniform integer in [−2^bits, 2^bits] (CGGMP21's ±2^bits)."""
    bound = 1 << bits
    return secrets.randbelow(2 * bound + 1) - bound


def random_signed_times(bits: int, factor: int) -> int:
    """Uniform integer in ±2^bits·factor (e.g. μ ← ±2^ℓ·N̂)."""
    bound = factor << bits
    return secrets.randbelow(2 * bound + 1) - bound


def in_signed_range(value: int, bits: int, factor: int = 1) -> bool:
    """|value| ≤ 2^bits·factor — inclusive, as CGGMP21's ±2^bits notation."""
    return abs(value) <= factor << bits


def is_unit(value: int, modulus: int) -> bool:
    """0 < value < modulus and gcd(value, modulus) = 1."""
    return 0 < value < modulus and gcd(value, modulus) == 1


def require_unit(value: int, modulus: int, where: str) -> int:
    if not is_unit(value, modulus):
        raise EncodingError(where, Check.NOT_UNIT, "not in the multiplicative group")
    return value


class FixedBase:
    """Fixed-base exponentiation with a precomputed 2^w-ary table: base^e for many public e.

    table[j][d] = base^(d·2^(w·j)), so base^e = Π_j table[j][digit_j(e)] costs one modular
    multiplication per non-zero digit instead of a square-and-multiply per bit.  Used by the Πprm
    verifier, which raises the same t to 128 different 3072-bit exponents.
    """

    def __init__(self, base: int, modulus: int, max_bits: int, window: int = 4) -> None:
        self.modulus = gmpy2.mpz(modulus)
        self.window = window
        self.max_bits = max_bits
        self._mask = (1 << window) - 1
        rows: list[list[object]] = []
        power = gmpy2.mpz(base) % self.modulus
        for _ in range((max_bits + window - 1) // window):
            row = [gmpy2.mpz(1), power]
            for _ in range(2, 1 << window):
                row.append(row[-1] * power % self.modulus)
            rows.append(row)
            power = row[-1] * power % self.modulus  # base^(2^(w·(j+1)))
        self._rows = rows

    def pow(self, exp: int) -> int:
        """base^exp mod modulus for 0 ≤ exp < 2^max_bits."""
        if not 0 <= exp < 1 << self.max_bits:
            raise ValueError("exponent outside the precomputed range")
        acc = gmpy2.mpz(1)
        e = gmpy2.mpz(exp)
        mask, window, modulus = self._mask, self.window, self.modulus
        for row in self._rows:
            digit = int(e & mask)
            if digit:
                acc = acc * row[digit] % modulus
            e >>= window
            if not e:
                break
        return int(acc)
