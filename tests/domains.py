"""Out-of-domain replacements for ciphertexts and group elements, shared by the proof tests.

Each entry: (label, f(value, modulus, prime factor of modulus) → bad value, expected check)."""

from __future__ import annotations

from collections.abc import Callable

from signer.errors import Check

Domain = Callable[[int, int, int], int]

#: c must satisfy 0 < c < N² and gcd(c, N) = 1.
CIPHERTEXT_DOMAIN: list[tuple[str, Domain, Check]] = [
    ("zero", lambda v, n, p: 0, Check.RANGE),
    ("N", lambda v, n, p: n, Check.NOT_UNIT),
    ("N_squared", lambda v, n, p: n * n, Check.RANGE),
    ("plus_N_squared", lambda v, n, p: v + n * n, Check.RANGE),
    ("negative", lambda v, n, p: -v, Check.RANGE),
    ("minus_one", lambda v, n, p: -1, Check.RANGE),
    ("prime_factor", lambda v, n, p: p, Check.NOT_UNIT),
    ("multiple_of_factor", lambda v, n, p: p * v % (n * n), Check.NOT_UNIT),
]

#: x must satisfy 0 < x < N and gcd(x, N) = 1.
UNIT_DOMAIN: list[tuple[str, Domain, Check]] = [
    ("zero", lambda v, n, p: 0, Check.RANGE),
    ("N", lambda v, n, p: n, Check.RANGE),
    ("N_squared", lambda v, n, p: n * n, Check.RANGE),
    ("plus_N", lambda v, n, p: v + n, Check.RANGE),
    ("negative", lambda v, n, p: -v, Check.RANGE),
    ("prime_factor", lambda v, n, p: p, Check.NOT_UNIT),
    ("multiple_of_factor", lambda v, n, p: 3 * p, Check.NOT_UNIT),
    ("other_multiple_of_factor", lambda v, n, p: 7 * p, Check.NOT_UNIT),
]
