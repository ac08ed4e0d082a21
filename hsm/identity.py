"""Node identity keys: the public half peers pin, verification without a token, token-side helpers.

A node signs its protocol messages with a key pair generated inside its token: Ed25519 (CKM_EDDSA)
where the token offers it, P-256 ECDSA otherwise.  Peers hold only `IdentityPublicKey` and check
signatures with `verify_identity`, which uses the `cryptography` library (no token needed).

Encodings: Ed25519 public keys are the 32-byte RFC 8032 encoding and signatures the 64-byte
RFC 8032 signature of the message.  P-256 public keys are the 33-byte SEC1 compressed point and
signatures raw ``r || s`` (2 × 32 bytes, big-endian) of ECDSA over SHA-256(message), with the
low-S form (s ≤ n/2) the only one accepted, so a signature has exactly one valid encoding.

The token-side helpers here take a python-pkcs11 session or key; their callers hold
`hsm.runtime.PKCS11_LOCK`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.exceptions import (
    AttributeValueInvalid,
    DomainParamsInvalid,
    FunctionNotSupported,
    MechanismInvalid,
    MechanismParamInvalid,
    TemplateInconsistent,
)
from pkcs11.types import SignMixin

from hsm.errors import HsmOperationError, InvalidIdentityKey

if TYPE_CHECKING:
    from pkcs11.types import PrivateKey, PublicKey, Session, Slot

IdentityAlgorithm = Literal["ed25519", "p256"]
ALGORITHMS: tuple[IdentityAlgorithm, ...] = ("ed25519", "p256")

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2
# DER of the curve OIDs for CKA_EC_PARAMS: 1.3.101.112 (Ed25519) and 1.2.840.10045.3.1.7 (P-256).
ED25519_PARAMS = bytes.fromhex("06032b6570")
ED25519_PARAMS_NAME = b"\x13\x0cedwards25519"  # PrintableString form some tokens report
P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
PUBLIC_KEY_BYTES: dict[IdentityAlgorithm, int] = {"ed25519": 32, "p256": 33}
SIGNATURE_BYTES = 64

# What a token says when it cannot make an Ed25519 key despite listing the mechanisms.
_EDDSA_UNAVAILABLE = (
    AttributeValueInvalid,
    DomainParamsInvalid,
    FunctionNotSupported,
    MechanismInvalid,
    MechanismParamInvalid,
    TemplateInconsistent,
)


@dataclass(frozen=True, slots=True)
class IdentityPublicKey:
    """A node identity public key in its canonical encoding (validated on construction)."""

    algorithm: IdentityAlgorithm
    public_bytes: bytes

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidIdentityKey(str(self.algorithm), f"unknown algorithm; use {ALGORITHMS}")
        if not isinstance(self.public_bytes, bytes):
            raise InvalidIdentityKey(self.algorithm, "public_bytes must be bytes")
        want = PUBLIC_KEY_BYTES[self.algorithm]
        if len(self.public_bytes) != want:
            raise InvalidIdentityKey(
                self.algorithm, f"{len(self.public_bytes)} bytes; the encoding has {want}"
            )
        if self.algorithm == "p256":
            if self.public_bytes[0] not in (2, 3):
                raise InvalidIdentityKey(self.algorithm, "not a SEC1 compressed point (02/03)")
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.public_bytes)
            except ValueError as exc:
                raise InvalidIdentityKey(self.algorithm, f"not a point on P-256: {exc}") from None

    def fingerprint(self) -> str:
        """SHA-256 over algorithm name and key, hex: a short handle for logs and operators."""
        return hashlib.sha256(self.algorithm.encode() + b"\x00" + self.public_bytes).hexdigest()

    def to_dict(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "public_key": self.public_bytes.hex()}

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> IdentityPublicKey:
        algorithm = doc.get("algorithm")
        public = doc.get("public_key")
        if algorithm not in ALGORITHMS:
            raise InvalidIdentityKey(str(algorithm), f"unknown algorithm; use {ALGORITHMS}")
        if not isinstance(public, str):
            raise InvalidIdentityKey(str(algorithm), "public_key must be a hex string")
        try:
            raw = bytes.fromhex(public)
        except ValueError:
            raise InvalidIdentityKey(str(algorithm), "public_key is not hex") from None
        return cls(algorithm, raw)


def verify_identity(public: IdentityPublicKey, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid (for P-256: low-S) identity signature of `message`."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        return False
    if public.algorithm == "ed25519":
        try:
            Ed25519PublicKey.from_public_bytes(public.public_bytes).verify(signature, message)
        except InvalidSignature:
            return False
        return True
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < P256_ORDER and 0 < s <= P256_HALF_ORDER):
        return False
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public.public_bytes)
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def supports_eddsa(slot: Slot) -> bool:
    """Whether the token lists Ed25519 key generation and EdDSA signing."""
    mechanisms = slot.get_mechanisms()
    if not {Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA} <= set(mechanisms):
        return False
    info = slot.get_mechanism_info(Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
    low, high = info.min_key_length, info.max_key_length
    return low is None or high is None or low <= 256 <= high


def supports_p256(slot: Slot) -> bool:
    mechanisms = set(slot.get_mechanisms())
    return {Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA} <= mechanisms


def generate_identity(
    session: Session,
    slot: Slot,
    token_label: str,
    label: str,
    algorithm: IdentityAlgorithm | Literal["auto"],
) -> tuple[PublicKey, PrivateKey, IdentityAlgorithm]:
    """Generate a token identity key pair: Ed25519 if asked or offered, else P-256."""
    operation = f"identity key generation ({label})"
    if algorithm in ("auto", "ed25519") and supports_eddsa(slot):
        try:
            pub, priv = _generate(session, label, "ed25519")
        except _EDDSA_UNAVAILABLE:
            if algorithm == "ed25519":
                raise
        else:
            return pub, priv, "ed25519"
    elif algorithm == "ed25519":
        raise HsmOperationError(
            token_label, operation, "the token lacks CKM_EC_EDWARDS_KEY_PAIR_GEN or CKM_EDDSA"
        )
    if not supports_p256(slot):
        raise HsmOperationError(
            token_label, operation, "the token offers neither Ed25519 (CKM_EDDSA) nor P-256 ECDSA"
        )
    pub, priv = _generate(session, label, "p256")
    return pub, priv, "p256"


def _generate(
    session: Session, label: str, algorithm: IdentityAlgorithm
) -> tuple[PublicKey, PrivateKey]:
    if algorithm == "ed25519":
        key_type, params, mechanism = (
            KeyType.EC_EDWARDS,
            ED25519_PARAMS,
            Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        )
    else:
        key_type, params, mechanism = KeyType.EC, P256_PARAMS, Mechanism.EC_KEY_PAIR_GEN
    domain = session.create_domain_parameters(key_type, {Attribute.EC_PARAMS: params}, local=True)
    key_id = label.encode("utf-8")
    return domain.generate_keypair(
        store=True,
        label=label,
        id=key_id,
        mechanism=mechanism,
        public_template={Attribute.VERIFY: True, Attribute.PRIVATE: False},
        private_template={
            Attribute.SIGN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.DERIVE: False,
            Attribute.MODIFIABLE: False,
            Attribute.COPYABLE: False,
        },
    )


def identity_algorithm_of(key: PrivateKey | PublicKey) -> IdentityAlgorithm | None:
    """The algorithm of a token identity key (either half), or None if it is neither of ours.

    SoftHSM2 reports an Ed25519 private key's curve as the name "edwards25519" even when it was
    generated from the OID, so both spellings count.
    """
    key_type = key.key_type
    params = bytes(key[Attribute.EC_PARAMS])
    if key_type == KeyType.EC_EDWARDS and params in (ED25519_PARAMS, ED25519_PARAMS_NAME):
        return "ed25519"
    if key_type == KeyType.EC and params == P256_PARAMS:
        return "p256"
    return None


def _unwrap_ec_point(raw: bytes, algorithm: IdentityAlgorithm) -> bytes:
    """CKA_EC_POINT: a DER OCTET STRING around the point (some tokens give the bare point)."""
    bare = 32 if algorithm == "ed25519" else 65
    if len(raw) == bare + 2 and raw[0] == 0x04 and raw[1] == bare:
        return raw[2:]
    if len(raw) == bare:
        return raw
    raise InvalidIdentityKey(
        algorithm, f"CKA_EC_POINT of {len(raw)} bytes is not a {bare}-byte point"
    )


def public_key_of(public: PublicKey, algorithm: IdentityAlgorithm) -> IdentityPublicKey:
    """The canonical `IdentityPublicKey` of a token public key object."""
    point = _unwrap_ec_point(bytes(public[Attribute.EC_POINT]), algorithm)
    if algorithm == "ed25519":
        return IdentityPublicKey("ed25519", point)
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise InvalidIdentityKey("p256", f"token point is not on P-256: {exc}") from None
    compressed = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    return IdentityPublicKey("p256", compressed)


def sign_with(private: PrivateKey, algorithm: IdentityAlgorithm, message: bytes) -> bytes:
    """Sign in the token; P-256 is hashed here (tokens offer only raw CKM_ECDSA) and low-S'd."""
    if not isinstance(private, SignMixin):  # python-pkcs11 adds the mixin iff CKA_SIGN is true
        raise InvalidIdentityKey(algorithm, "the token private key has CKA_SIGN false")
    if algorithm == "ed25519":
        return bytes(private.sign(message, mechanism=Mechanism.EDDSA))
    digest = hashlib.sha256(message).digest()
    raw = bytes(private.sign(digest, mechanism=Mechanism.ECDSA))
    if len(raw) != SIGNATURE_BYTES:
        raise InvalidIdentityKey("p256", f"token returned a {len(raw)}-byte ECDSA signature")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:], "big")
    if s > P256_HALF_ORDER:  # tokens do not normalise; the low-S form is the only one we accept
        s = P256_ORDER - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
