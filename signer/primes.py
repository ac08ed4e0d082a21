"""Safe-prime generation on gmpy2 (sieve + Fermat + Miller–Rabin + Pocklington) and a prime pool.

A safe prime p = 2p' + 1 with p' prime is ≡ 3 (mod 4), i.e. a Blum prime, which Πmod needs.
Candidates have their two top bits set so the product of two of them has exactly twice as many
bits (N is exactly MODULUS_BITS; peers' moduli of any other size are rejected).  We sieve both
p' and 2p' + 1 against all primes below 2¹⁶ at once, then run a base-2 Fermat test on both,
then Miller–Rabin on p'; p' prime, p' > √p and 2^(p−1) ≡ 1 (mod p) prove p prime (Pocklington).

`PrimePool` lets an operator generate primes ahead of time (`tessera primes generate`); every
prime is handed out once and removed from the file durably before it is used.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Final

import gmpy2

from signer.errors import Check, EncodingError, InvalidParameter
from signer.params import PRIME_BITS, SIEVE_BOUND

_SIEVE_WINDOW: Final = 1 << 16
_MILLER_RABIN_ROUNDS: Final = 40


def _odd_primes_below(bound: int) -> list[int]:
    sieve = bytearray([1]) * bound
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(bound**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, bound, i)))
    return [i for i in range(3, bound) if sieve[i]]


SMALL_PRIMES: Final = tuple(_odd_primes_below(SIEVE_BOUND))
_HALF_INVERSES: Final = {r: pow(2, -1, r) for r in SMALL_PRIMES}


def _zeros(start: int, step: int) -> bytes:
    return bytes(len(range(start, _SIEVE_WINDOW, step)))


def generate_safe_prime(bits: int = PRIME_BITS) -> int:
    """Return a fresh random safe prime of exactly `bits` bits with its two top bits set."""
    if bits < 16:
        raise ValueError(f"safe prime size {bits} bits is too small")
    while True:
        # p' has bits-1 bits with its two top bits set, so p = 2p'+1 has bits bits, top two set.
        base = gmpy2.mpz(secrets.randbits(bits - 1)) | (gmpy2.mpz(3) << (bits - 3)) | 1
        window = bytearray([1]) * _SIEVE_WINDOW  # window[j] ↔ candidate p' = base + 2j
        for r in SMALL_PRIMES:
            rem = int(gmpy2.f_mod(base, r))
            half = _HALF_INVERSES[r]
            j_sub = (-rem * half) % r  # r | p'
            window[j_sub::r] = _zeros(j_sub, r)
            j_safe = (((r - 1) // 2 - rem) * half) % r  # r | 2p' + 1
            window[j_safe::r] = _zeros(j_safe, r)
        j = window.find(1)
        while j != -1:
            sub = base + 2 * j
            if sub.bit_length() != bits - 1:
                break
            p = 2 * sub + 1
            if (
                gmpy2.powmod(2, sub - 1, sub) == 1
                and gmpy2.powmod(2, p - 1, p) == 1
                and gmpy2.is_prime(sub, _MILLER_RABIN_ROUNDS)
            ):
                return int(p)
            j = window.find(1, j + 1)


def is_safe_prime(p: int, bits: int = PRIME_BITS) -> bool:
    """Whether `p` is a safe prime of exactly `bits` bits with its two top bits set."""
    return (
        p.bit_length() == bits
        and (p >> (bits - 2)) == 3
        and p % 4 == 3
        and bool(gmpy2.is_prime((p - 1) // 2, _MILLER_RABIN_ROUNDS))
        and bool(gmpy2.is_prime(p, _MILLER_RABIN_ROUNDS))
    )


def _generate_one(bits: int) -> int:
    return generate_safe_prime(bits)


def generate_safe_primes(
    count: int, bits: int = PRIME_BITS, workers: int | None = None
) -> list[int]:
    """Generate `count` distinct safe primes, in parallel processes when `workers` > 1."""
    workers = workers if workers is not None else min(count, os.cpu_count() or 1)
    if workers <= 1 or count <= 1:
        primes = [generate_safe_prime(bits) for _ in range(count)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            primes = list(pool.map(_generate_one, [bits] * count))
    if len(set(primes)) != len(primes):  # probability ~2^-1500; never hand out a prime twice
        return generate_safe_primes(count, bits, workers)
    return primes


class PrimePool:
    """A JSON file of pregenerated safe primes; `take` removes primes durably before returning them.

    The file is rewritten atomically (write to a temporary file, fsync, rename) so a crash can lose
    primes but never hand the same prime out twice.
    """

    def __init__(self, path: Path, bits: int = PRIME_BITS) -> None:
        self.path = path
        self.bits = bits

    def _load(self) -> list[int]:
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise EncodingError(str(self.path), Check.DECODE, f"not JSON: {exc}") from exc
        if not isinstance(doc, dict) or set(doc) != {"bits", "safe_primes"}:
            raise EncodingError(str(self.path), Check.FIELD, "expected keys 'bits', 'safe_primes'")
        if doc["bits"] != self.bits or not isinstance(doc["safe_primes"], list):
            raise EncodingError(
                str(self.path), Check.FIELD, f"pool is not of {self.bits}-bit primes"
            )
        primes: list[int] = []
        for k, value in enumerate(doc["safe_primes"]):
            if not isinstance(value, str):
                raise EncodingError(f"{self.path}[{k}]", Check.DECODE, "prime must be a hex string")
            try:
                primes.append(int(value, 16))
            except ValueError as exc:
                raise EncodingError(f"{self.path}[{k}]", Check.DECODE, "invalid hex") from exc
        return primes

    def _store(self, primes: list[int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"bits": self.bits, "safe_primes": [format(p, "x") for p in primes]}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pool-")
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def __len__(self) -> int:
        return len(self._load())

    def add(self, primes: list[int]) -> None:
        """Validate and append primes (each must be a safe prime of the pool's size)."""
        existing = self._load()
        for p in primes:
            if not is_safe_prime(p, self.bits):
                raise InvalidParameter("pool prime", Check.MODULUS_FORM, "not a safe prime")
        self._store(existing + [p for p in primes if p not in existing])

    def take(self, count: int) -> list[int]:
        """Remove and return `count` primes; raises if the pool holds fewer."""
        primes = self._load()
        if len(primes) < count:
            raise InvalidParameter(
                "prime pool", Check.LENGTH, f"{self.path} holds {len(primes)}, need {count}"
            )
        taken, rest = primes[:count], primes[count:]
        self._store(rest)
        for p in taken:  # a tampered pool must not yield weak factors
            if not is_safe_prime(p, self.bits):
                raise InvalidParameter("pool prime", Check.MODULUS_FORM, "not a safe prime")
        return taken


def iter_pairs(primes: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive disjoint pairs of a prime list."""
    for k in range(0, len(primes) - 1, 2):
        yield primes[k], primes[k + 1]
