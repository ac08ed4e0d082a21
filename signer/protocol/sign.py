"""Signing: one round from a presignature, with re-randomisation and verifiable partials.

The online input is message **bytes**, hashed here with a named scheme (Keccak-256 for EVM
transactions, double SHA-256 for Bitcoin); no API takes a raw 32-byte digest (Groth–Shoup
§1.1.2, attacks.md A10).  Before use, the presignature is re-randomised (mpc-lib protocol v8):
h = H(R ‖ Y_child ‖ digest), R′ = h·R, r = x(R′) mod q; each signer sends
σ_i = k_i·m + r·χ_i and the combiner outputs s = h⁻¹·Σ σ_i (R′ = (k/h)⁻¹·G, so s is the ECDSA
response for nonce k/h).  A requester who picks the message after seeing R therefore cannot
predict R′ — the Wagner-style attacks on presignatures with additive derivation need exactly that.

Each partial is checked on its own: σ_j·Γ = m·Δ_j + r·S_j (presign.py); a bad one is named.
The combined signature is normalised to low-s, gets its recovery id, and is verified with
libsecp256k1 before it is released.  The combiner is told the key version it signs for and
refuses a presignature made with another one (an older epoch, or a concurrent re-share's
version): refresh revokes presignatures, and that must hold at the protocol level too, not only
in a node's database (issue 9 item 4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import coincurve
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from eth_hash.auto import keccak

from signer.curve import Point, Q
from signer.encoding import encode
from signer.errors import Check, CryptoMisuse, TesseraError
from signer.protocol.aux_info import AuxInfo
from signer.protocol.base import Inbox, Outgoing, RoundSpec, SessionConfig, as_list, expect_scalar
from signer.protocol.keygen import KeyPublic, KeyShare
from signer.protocol.presign import Presignature, PresignaturePublic, PresignRounds
from signer.transcript import hash_to_scalar

PROTOCOL = "sign/v1"


class HashScheme(StrEnum):
    KECCAK256 = "keccak256"  # EVM: keccak256(unsigned transaction bytes)
    SHA256D = "sha256d"  # Bitcoin: SHA-256(SHA-256(message))


def message_digest(message: bytes, scheme: HashScheme) -> bytes:
    if not isinstance(message, bytes) or not message:
        raise CryptoMisuse("the message to sign must be non-empty bytes")
    if scheme is HashScheme.KECCAK256:
        return bytes(keccak(message))
    if scheme is HashScheme.SHA256D:
        return hashlib.sha256(hashlib.sha256(message).digest()).digest()
    raise CryptoMisuse(f"unknown hash scheme {scheme!r}")


class StalePresignature(TesseraError):
    """A presignature made with another version of the key than the one being signed for."""

    def __init__(self, detail: str) -> None:
        self.check = Check.MISMATCH
        super().__init__(f"{Check.MISMATCH.value}: {detail}")


class PartialSignatureInvalid(TesseraError):
    """A signer's partial signature fails σ_j·Γ = m·Δ_j + r·S_j."""

    def __init__(self, culprits: frozenset[int], detail: str) -> None:
        self.culprits = culprits
        self.check = Check.EQUATION
        super().__init__(f"partial signature of {sorted(culprits)} invalid: {detail}")


@dataclass(frozen=True)
class Signature:
    r: int
    s: int
    recovery_id: int  # bit 0: parity of R′.y (after low-s); bit 1: x(R′) ≥ q
    digest: bytes
    public_key: Point

    def compact(self) -> bytes:
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big")

    def der(self) -> bytes:
        return encode_dss_signature(self.r, self.s)


@dataclass(frozen=True)
class SigningInput:
    """Per-message values every signer and the combiner derive identically."""

    digest: bytes
    m: int
    h: int
    R: Point  # the re-randomised nonce point R′
    r: int


def signing_input(public: PresignaturePublic, message: bytes, scheme: HashScheme) -> SigningInput:
    digest = message_digest(message, scheme)
    h = hash_to_scalar(
        "tessera/sign/rerandomize/v1", public.R, public.derivation.public_key, digest
    )
    if h == 0:
        raise CryptoMisuse("re-randomiser is zero")  # probability 2⁻²⁵⁶
    R = public.R * h
    if R.is_identity:
        raise CryptoMisuse("re-randomised nonce is the identity")
    r = R.x_coordinate() % Q
    if r == 0:
        raise CryptoMisuse("r = 0; use another presignature")
    return SigningInput(digest, int.from_bytes(digest, "big") % Q, h, R, r)


def issue_partial(presignature: Presignature, message: bytes, scheme: HashScheme) -> int:
    """σ_i = k_i·m + r·χ_i; consumes the presignature first (a second call raises)."""
    values = signing_input(presignature.public, message, scheme)
    k, chi = presignature.consume()
    return (k * values.m + values.r * chi) % Q


def partial_is_valid(
    public: PresignaturePublic, party: int, sigma: int, values: SigningInput
) -> bool:
    Gamma = public.Gamma
    expected = public.of(public.Delta, party) * values.m + public.of(public.S, party) * values.r
    return Gamma * sigma == expected


def combine(
    public: PresignaturePublic,
    message: bytes,
    scheme: HashScheme,
    partials: Mapping[int, int],
    key: KeyPublic,
) -> Signature:
    """Check the presignature is of `key` (the current key version), check every partial,
    combine, normalise to low-s, compute the recovery id, verify."""
    if public.key_id != key.key_id or public.key_version != key.fingerprint():
        raise StalePresignature(
            f"presignature {public.presignature_id.hex()[:16]} was made with another key "
            f"version than epoch {key.epoch} of key {key.key_id.hex()[:16]}"
        )
    if set(partials) != set(public.signers):
        raise CryptoMisuse(f"need partials of exactly {list(public.signers)}")
    values = signing_input(public, message, scheme)
    bad = frozenset(
        j
        for j, sigma in partials.items()
        if not (0 <= sigma < Q and partial_is_valid(public, j, sigma, values))
    )
    if bad:
        raise PartialSignatureInvalid(bad, "σ_j·Γ ≠ m·Δ_j + r·S_j")
    s = pow(values.h, -1, Q) * sum(partials.values()) % Q
    if s == 0:
        raise CryptoMisuse("s = 0; use another presignature")
    recovery_id = int(values.R.has_odd_y()) | (int(values.R.x_coordinate() >= Q) << 1)
    if s > Q // 2:
        s, recovery_id = Q - s, recovery_id ^ 1
    signature = Signature(values.r, s, recovery_id, values.digest, public.derivation.public_key)
    verifier = public.derivation.public_key.to_public_key()
    if not verifier.verify(signature.der(), values.digest, hasher=None):
        raise PartialSignatureInvalid(frozenset(), "combined signature does not verify")
    recovered = coincurve.PublicKey.from_signature_and_message(
        signature.compact() + bytes([recovery_id]), values.digest, hasher=None
    )
    if recovered.format() != verifier.format():
        raise CryptoMisuse("recovery id does not recover the signing key")
    return signature


class SignParty(PresignRounds[Signature]):
    """Full interactive signing: the three presign rounds, then the signing round, in one run
    (for when no presignature is at hand).  Output: the verified signature."""

    PROTOCOL: ClassVar[str] = "interactive_sign/v1"
    ROUNDS: ClassVar[tuple[RoundSpec, ...]] = (
        *PresignRounds.PRESIGN_ROUNDS,
        RoundSpec(broadcast=True, p2p=False),
    )

    def __init__(
        self,
        config: SessionConfig,
        key: KeyShare,
        aux: AuxInfo,
        message: bytes,
        scheme: HashScheme,
        path: Sequence[int] = (),
    ) -> None:
        message_digest(message, scheme)  # reject bad input before round 1
        super().__init__(config, key, aux, path)
        self.message, self.scheme = message, scheme
        self._presignature: Presignature | None = None
        self._own_sigma = 0

    SESSION_CONTEXT: ClassVar[str] = "key version, aux-info, derivation path or message"

    def session_context(self) -> bytes:
        """Also the message digest: a signer given another message than its peers would issue
        a partial that fails their check, and be blamed for what the caller did."""
        digest = message_digest(self.message, self.scheme)
        return hashlib.sha256(
            encode(["tessera/sign/context/v1", super().session_context(), digest])
        ).digest()

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number <= len(self.PRESIGN_ROUNDS):
            return super()._round(number, inbox)
        self._presignature = self._build_presignature(inbox)
        self._own_sigma = issue_partial(self._presignature, self.message, self.scheme)
        return Outgoing(broadcast=[self._own_sigma])

    def _finish(self, inbox: Inbox) -> Signature:
        if self._presignature is None:
            raise CryptoMisuse("signing round before the presignature")
        wire = self._wire_round(len(self.ROUNDS), False)
        public = self._presignature.public
        values = signing_input(public, self.message, self.scheme)
        partials = {self.me: self._own_sigma}
        for j in self.config.others:
            with self.blame(j, wire):
                partials[j] = expect_scalar(as_list(inbox.broadcast[j], 1, "sigma")[0], "sigma")
            if not partial_is_valid(public, j, partials[j], values):
                raise self._abort(wire, Check.EQUATION, [j], "σ_j·Γ ≠ m·Δ_j + r·S_j")
        return combine(public, self.message, self.scheme, partials, self.key.public_data())
