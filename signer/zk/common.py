"""What every proof shares: the proof context (session id + prover) and the verifier's checks.

A `ProofContext` starts each proof's transcript with the proof's domain tag, the session id and
the prover's index, so a proof never verifies in another session or as another party's
(attacks.md A13).  `Checker` raises `ProofRejected` naming the proof, the failed check, the
offending field and the prover, which the protocol layer turns into blame.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import NoReturn

from signer.curve import Point
from signer.errors import Check, InvalidParameter, ProofRejected
from signer.paillier import PaillierPublicKey, validate_modulus
from signer.params import MAX_PARTY_INDEX, MAX_SESSION_ID_BYTES, MIN_SESSION_ID_BYTES
from signer.ring_pedersen import RingPedersenParams
from signer.transcript import Transcript


@dataclass(frozen=True)
class ProofContext:
    """Session id agreed by the protocol and the index of the proving party."""

    session_id: bytes
    prover: int

    def __post_init__(self) -> None:
        sid = self.session_id
        if (
            not isinstance(sid, bytes)
            or not MIN_SESSION_ID_BYTES <= len(sid) <= MAX_SESSION_ID_BYTES
        ):
            raise InvalidParameter(
                "session id",
                Check.SESSION_ID,
                f"must be {MIN_SESSION_ID_BYTES}..{MAX_SESSION_ID_BYTES} bytes",
            )
        if sid.count(0) == len(sid):
            raise InvalidParameter("session id", Check.SESSION_ID, "all-zero session id")
        if isinstance(self.prover, bool) or not 1 <= self.prover <= MAX_PARTY_INDEX:
            raise InvalidParameter(
                "prover index", Check.PARTY_INDEX, f"{self.prover} not in 1..{MAX_PARTY_INDEX}"
            )

    def transcript(self, proof: str) -> Transcript:
        transcript = Transcript(f"tessera/zk/{proof}/v1")
        transcript.append("session_id", self.session_id)
        transcript.append("prover", self.prover)
        return transcript


def bind_aux(transcript: Transcript, aux: RingPedersenParams) -> None:
    """Absorb the verifier's ring-Pedersen parameters (they identify the verifier)."""
    transcript.append("aux", [aux.n, aux.s, aux.t])


class Checker:
    """The verifier's checks for one proof from one prover; each failure raises ProofRejected."""

    def __init__(self, proof: str, prover: int) -> None:
        self.proof = proof
        self.prover = prover

    def fail(self, check: Check, field: str, detail: str = "") -> NoReturn:
        raise ProofRejected(self.proof, check, field, self.prover, detail)

    def modulus(self, n: int, field: str) -> None:
        """Exact size, odd, composite, not a square, no small factor."""
        try:
            validate_modulus(n, field, self.prover)
        except InvalidParameter as exc:
            self.fail(exc.check, field, exc.detail)

    def paillier_key(self, key: PaillierPublicKey, field: str) -> None:
        self.modulus(key.n, field)

    def ring_pedersen(self, aux: RingPedersenParams, field: str) -> None:
        try:
            RingPedersenParams.from_peer(aux.n, aux.s, aux.t, self.prover)
        except InvalidParameter as exc:
            self.fail(exc.check, field, exc.detail)

    def unit(self, value: int, modulus: int, field: str) -> None:
        """0 < value < modulus and gcd(value, modulus) = 1 — for every ciphertext, commitment and
        randomiser (attacks.md A17; CGGMP24 hardening)."""
        if not 0 < value < modulus:
            self.fail(Check.RANGE, field, "not in (0, modulus)")
        if gcd(value, modulus) != 1:
            self.fail(Check.NOT_UNIT, field, "shares a factor with the modulus")

    def ciphertext(self, value: int, key: PaillierPublicKey, field: str) -> None:
        """0 < c < N² and gcd(c, N) = 1."""
        if not 0 < value < key.n2:
            self.fail(Check.RANGE, field, "ciphertext not in (0, N²)")
        if gcd(value, key.n) != 1:
            self.fail(Check.NOT_UNIT, field, "ciphertext shares a factor with N")

    def signed_range(self, value: int, bits: int, field: str, factor: int = 1) -> None:
        """|value| ≤ 2^bits·factor, inclusive."""
        if abs(value) > factor << bits:
            self.fail(Check.RANGE, field, f"outside ±2^{bits}" + ("·M" if factor != 1 else ""))

    def point(self, value: Point, field: str) -> None:
        if not isinstance(value, Point):
            self.fail(Check.BAD_POINT, field, "not a point")
        if value.is_identity:
            self.fail(Check.IDENTITY_POINT, field, "point at infinity")

    def length(self, values: tuple[int, ...], expected: int, field: str) -> None:
        if len(values) != expected:
            self.fail(Check.LENGTH, field, f"{len(values)} elements, expected {expected}")

    def equation(self, holds: bool, name: str) -> None:
        if not holds:
            self.fail(Check.EQUATION, name, "verification equation does not hold")
