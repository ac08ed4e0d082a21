"""Typed errors of the signer: every rejection names the failed check and, where known, the culprit.

The `Check` codes are stable identifiers that the protocol layer turns into blame (attacks.md §0);
tests assert on them, never on message text.
"""

from __future__ import annotations

from enum import StrEnum

# The one error base lives in the lowest layer that raises it (hsm); re-exported here.
from hsm.errors import TesseraError as TesseraError  # noqa: PLC0414 (explicit re-export)


class Check(StrEnum):
    """Stable code of the check that failed."""

    LENGTH = "LENGTH"  # wrong number of elements / repetitions / bytes
    RANGE = "RANGE"  # integer outside its exact (inclusive) range
    NOT_UNIT = "NOT_UNIT"  # element not in the multiplicative group (0 < x < N, gcd(x, N) = 1)
    BAD_POINT = "BAD_POINT"  # point encoding invalid or not on secp256k1
    IDENTITY_POINT = "IDENTITY_POINT"  # point at infinity where a group element is required
    ZERO_SCALAR = "ZERO_SCALAR"  # zero where a non-zero scalar is required
    MODULUS_SIZE = "MODULUS_SIZE"  # modulus not exactly MODULUS_BITS bits
    MODULUS_FORM = "MODULUS_FORM"  # even, prime, perfect square or with a small factor
    JACOBI = "JACOBI"  # Πmod: Jacobi(w | N) ≠ −1
    DEGENERATE = "DEGENERATE"  # ring-Pedersen s, t trivial or equal
    EQUATION = "EQUATION"  # a verification equation does not hold
    CHALLENGE = "CHALLENGE"  # Fiat–Shamir challenge malformed (e.g. repeated Πmod y_i)
    SESSION_ID = "SESSION_ID"  # session id missing, too short, too long or constant
    PARTY_INDEX = "PARTY_INDEX"  # index 0, negative, too large or duplicated
    DECODE = "DECODE"  # malformed encoding (type tag, trailing bytes, non-canonical integer)
    EQUIVOCATION = "EQUIVOCATION"  # different broadcast payloads seen by different parties
    COMMITMENT = "COMMITMENT"  # a decommitment does not open the commitment
    SHARE = "SHARE"  # a secret share inconsistent with its Feldman commitments
    DUPLICATE = "DUPLICATE"  # a value that must be unique across parties is not
    FIELD = "FIELD"  # missing or unknown field in a structured message
    MISMATCH = "MISMATCH"  # parties run with different inputs (key version, re-share plan)
    # The party's own round handling failed with an error that is no verdict about any peer
    # (a bug, RecursionError, MemoryError…): the party fails for good, naming nobody, and the
    # node treats it as an unattributed security event (base.py `Party`, attacks.md A17).
    INTERNAL = "INTERNAL"


class EncodingError(TesseraError):
    """Bytes or JSON that do not decode to the expected, canonical structure."""

    def __init__(self, where: str, check: Check, detail: str) -> None:
        self.where = where
        self.check = check
        self.detail = detail
        super().__init__(f"{where}: {check.value}: {detail}")


class InvalidPoint(EncodingError):
    """A curve point encoding that is not a canonical, on-curve, non-identity point."""


class InvalidParameter(TesseraError):
    """A key, modulus or parameter set that fails validation (e.g. a peer's Paillier key)."""

    def __init__(self, what: str, check: Check, detail: str, culprit: int | None = None) -> None:
        self.what = what
        self.check = check
        self.detail = detail
        self.culprit = culprit
        who = f" from party {culprit}" if culprit is not None else ""
        super().__init__(f"{what}{who} rejected: {check.value}: {detail}")


class ProofRejected(TesseraError):
    """A zero-knowledge proof that failed verification.

    `proof` is the proof name (e.g. ``"mod"``), `check` the failed check, `field` the offending
    element and `prover` the index of the party whose proof it is (the culprit).
    """

    def __init__(
        self, proof: str, check: Check, field: str, prover: int | None, detail: str = ""
    ) -> None:
        self.proof = proof
        self.check = check
        self.field = field
        self.prover = prover
        self.detail = detail
        who = f" from party {prover}" if prover is not None else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"Π{proof}{who} rejected: {check.value} on {field}{extra}")


class CryptoMisuse(TesseraError):
    """The local caller passed an invalid witness or argument (a bug on our side, not a peer's)."""
