"""secp256k1 scalars and points on libsecp256k1 (coincurve).

Points are immutable `Point` values; the identity exists as a value (sums can reach it) but has
no encoding: `Point.from_bytes` accepts only 33-byte compressed SEC1 (prefix 02/03, x < p,
on the curve), so a peer can never send the identity or a non-canonical encoding (attacks.md
A14, A16).  Scalar multiplication uses libsecp256k1's constant-time routines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import coincurve

from signer.errors import Check, CryptoMisuse, InvalidPoint
from signer.params import CURVE_ORDER, FIELD_PRIME

Q: Final = CURVE_ORDER
POINT_BYTES: Final = 33


def scalar_bytes(k: int) -> bytes:
    return (k % Q).to_bytes(32, "big")


class Point:
    """A point of secp256k1 (possibly the identity)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: coincurve.PublicKey | None, raw: bytes | None = None) -> None:
        self._key = key
        self._raw = raw if raw is not None or key is None else key.format(compressed=True)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> Point:
        return cls(None)

    @classmethod
    def generator(cls) -> Point:
        return _GENERATOR

    @classmethod
    def base_mul(cls, k: int) -> Point:
        """k·G for any integer k (reduced mod q); 0 gives the identity."""
        k %= Q
        if k == 0:
            return cls(None)
        return cls(coincurve.PublicKey.from_secret(k.to_bytes(32, "big")))

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "point") -> Point:
        """Strict SEC1 compressed decoding: 33 bytes, prefix 02/03, x < p, on the curve."""
        if not isinstance(data, bytes | bytearray):
            raise InvalidPoint(where, Check.BAD_POINT, "not bytes")
        if len(data) != POINT_BYTES:
            raise InvalidPoint(where, Check.BAD_POINT, f"{len(data)} bytes, expected 33")
        if data[0] not in (2, 3):
            raise InvalidPoint(where, Check.BAD_POINT, f"prefix {data[0]:#04x} not 02/03")
        if int.from_bytes(data[1:], "big") >= FIELD_PRIME:
            raise InvalidPoint(where, Check.BAD_POINT, "x coordinate not below p")
        try:
            key = coincurve.PublicKey(bytes(data))
        except ValueError as exc:
            raise InvalidPoint(where, Check.BAD_POINT, "not on secp256k1") from exc
        return cls(key, bytes(data))

    # --- queries ------------------------------------------------------------------------------
    @property
    def is_identity(self) -> bool:
        return self._key is None

    def to_bytes(self) -> bytes:
        if self._raw is None:
            raise CryptoMisuse("the point at infinity has no encoding")
        return self._raw

    def x_coordinate(self) -> int:
        return int.from_bytes(self.to_bytes()[1:], "big")

    def has_odd_y(self) -> bool:
        return self.to_bytes()[0] == 3

    def to_public_key(self) -> coincurve.PublicKey:
        if self._key is None:
            raise CryptoMisuse("the point at infinity is not a public key")
        return self._key

    # --- group law ----------------------------------------------------------------------------
    def __add__(self, other: Point) -> Point:
        if self._key is None:
            return other
        if other._key is None:
            return self
        try:
            return Point(coincurve.PublicKey.combine_keys([self._key, other._key]))
        except ValueError:  # P + (−P): libsecp256k1 refuses to return the identity
            return Point(None)

    def __neg__(self) -> Point:
        if self._raw is None:
            return self
        flipped = bytes([self._raw[0] ^ 1]) + self._raw[1:]
        return Point(coincurve.PublicKey(flipped), flipped)

    def __sub__(self, other: Point) -> Point:
        return self + (-other)

    def __mul__(self, k: int) -> Point:
        k %= Q
        if k == 0 or self._key is None:
            return Point(None)
        return Point(self._key.multiply(k.to_bytes(32, "big")))

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return "Point(identity)" if self._raw is None else f"Point({self._raw.hex()})"


_GENERATOR: Final = Point(coincurve.PublicKey.from_secret((1).to_bytes(32, "big")))


def sum_points(points: Iterable[Point]) -> Point:
    """Sum of points, computed in one libsecp256k1 call where no identity is involved."""
    keys = [p.to_public_key() for p in points if not p.is_identity]
    if not keys:
        return Point.identity()
    if len(keys) == 1:
        return Point(keys[0])
    try:
        return Point(coincurve.PublicKey.combine_keys(keys))
    except ValueError:  # the sum is the identity
        return Point.identity()


def require_group_element(point: Point, where: str) -> Point:
    """Reject the identity where the protocol requires a group element (attacks.md A14)."""
    if point.is_identity:
        raise InvalidPoint(where, Check.IDENTITY_POINT, "point at infinity")
    return point


def evaluate_polynomial(coefficients: Sequence[int], x: int) -> int:
    """f(x) mod q for f = Σ_k a_k·X^k (a Shamir/Feldman polynomial at a public index)."""
    return sum(a * pow(x, k, Q) for k, a in enumerate(coefficients)) % Q


def evaluate_committed(commitments: Sequence[Point], x: int) -> Point:
    """Σ_k x^k·F[k] for Feldman commitments F[k] = a_k·G: the public image f(x)·G."""
    return sum_points(F * pow(x, k, Q) for k, F in enumerate(commitments))


def lagrange_coefficient(i: int, indices: Sequence[int], x: int = 0) -> int:
    """λᵢ(x) = Π_{j≠i} (x − j)/(i − j) mod q over the evaluation points `indices`.

    Indices must be non-zero and pairwise distinct modulo q and contain `i` (attacks.md A15);
    violations raise `CryptoMisuse` rather than a bare arithmetic error.
    """
    reduced = [j % Q for j in indices]
    if any(j == 0 for j in reduced):
        raise CryptoMisuse("evaluation point 0 (mod q) in signer set")
    if len(set(reduced)) != len(reduced):
        raise CryptoMisuse("duplicate evaluation points (mod q) in signer set")
    if i % Q not in reduced:
        raise CryptoMisuse(f"index {i} not in the signer set")
    num, den = 1, 1
    for j in reduced:
        if j != i % Q:
            num = num * (x - j) % Q
            den = den * (i - j) % Q
    return num * pow(den, -1, Q) % Q
