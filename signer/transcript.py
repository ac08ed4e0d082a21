"""Fiat–Shamir transcript: SHAKE256 over the canonical typed encoding (`signer.encoding`).

Every `append(label, value)` absorbs `encode([label, value])`, a self-delimiting record, so the
absorbed byte string determines the sequence of (label, value) pairs uniquely (attacks.md A04).
Challenges are drawn from the XOF by rejection sampling (uniform, no modulo bias) and absorbed
back, so later challenges depend on earlier ones.  The domain string names the protocol and its
version; the proof modules add session id, prover index, the verifier's auxiliary parameters,
the statement and the prover's first message (CGGMP21 §2.2 "Fiat–Shamir", attacks.md A13).
"""

from __future__ import annotations

import hashlib
from itertools import count
from math import gcd

from signer.encoding import Encodable, encode
from signer.params import CURVE_ORDER

_VERSION = "tessera/transcript/v1"


class Transcript:
    """An append-only Fiat–Shamir transcript with typed, labelled records."""

    def __init__(self, domain: str) -> None:
        self._state = hashlib.shake_256()
        self._state.update(encode([_VERSION, domain]))

    def append(self, label: str, value: Encodable) -> None:
        self._state.update(encode([label, value]))

    def fork(self) -> Transcript:
        """An independent copy (e.g. one per verifier for per-verifier proofs)."""
        copy = Transcript.__new__(Transcript)
        copy._state = self._state.copy()
        return copy

    def _draw(self, label: str, attempt: int, nbytes: int) -> bytes:
        stream = self._state.copy()
        stream.update(encode(["challenge", label, attempt]))
        return stream.digest(nbytes)

    def _uniform_below(self, label: str, bound: int) -> int:
        """Uniform integer in [0, bound) by rejection sampling from the XOF."""
        bits = (bound - 1).bit_length()
        nbytes = (bits + 7) // 8 + 8
        for attempt in count():
            value = int.from_bytes(self._draw(label, attempt, nbytes), "big") >> (8 * nbytes - bits)
            if value < bound:
                return value
        raise AssertionError("unreachable")  # pragma: no cover

    def challenge_signed(self, label: str, bound: int = CURVE_ORDER) -> int:
        """Uniform e ∈ [−bound, bound] (CGGMP21: e ← ±q)."""
        value = self._uniform_below(label, 2 * bound + 1) - bound
        self.append(label, value)
        return value

    def challenge_scalar(self, label: str) -> int:
        """Uniform e ∈ [0, q)."""
        value = self._uniform_below(label, CURVE_ORDER)
        self.append(label, value)
        return value

    def challenge_bits(self, label: str, m: int) -> tuple[int, ...]:
        """m independent challenge bits (Πprm)."""
        raw = int.from_bytes(self._draw(label, 0, (m + 7) // 8), "big")
        bits = tuple((raw >> k) & 1 for k in range(m))
        self.append(label, list(bits))
        return bits

    def challenge_units(self, label: str, modulus: int, m: int) -> tuple[int, ...]:
        """m elements of Z*_N, pairwise distinct (Πmod's y_i), each from its own sub-stream."""
        values: list[int] = []
        for i in range(m):
            sub = f"{label}[{i}]"
            for attempt in count():
                y = self._uniform_below(f"{sub}/{attempt}", modulus)
                if y != 0 and gcd(y, modulus) == 1 and y not in values:
                    values.append(y)
                    break
        self.append(label, values)
        return tuple(values)


def hash_to_scalar(domain: str, *values: Encodable) -> int:
    """A uniform scalar in [0, q) bound to a domain tag and values (rejection-sampled XOF)."""
    transcript = Transcript(domain)
    for index, value in enumerate(values):
        transcript.append(f"value[{index}]", value)
    return transcript.challenge_scalar("scalar")
