"""The keys a token holds for Tessera — a node's KEK and identity key pair, officers' signing
keys — their label scheme and the protection policy every one of them is checked against
before use, plus the token-side AES-GCM calls under the KEK.

Functions here take an open `hsm.session.TokenSession` and run *inside* its lock (callers go
through `TokenSession.run`); they never log in or recover a session themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    DataInvalid,
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    PKCS11Error,
)
from pkcs11.types import DecryptMixin, EncryptMixin, PrivateKey, PublicKey, SecretKey

from hsm.errors import HsmError, KeyPolicyViolation, NodeKeysMissing
from hsm.identity import (
    IdentityAlgorithm,
    IdentityPublicKey,
    generate_identity,
    identity_algorithm_of,
    public_key_of,
    sign_with,
    verify_identity,
)
from hsm.sealing import TAG_BITS, TAG_BYTES, SealContext, new_nonce

if TYPE_CHECKING:
    from pkcs11.types import Object

    from hsm.session import TokenSession

log = logging.getLogger("tessera.hsm")

KEK_LABEL_PREFIX = "tessera/kek/v1/"
IDENTITY_LABEL_PREFIX = "tessera/identity/v1/"
OFFICER_LABEL_PREFIX = "tessera/officer/v1/"
KEK_BITS = 256
_SELF_TEST_MESSAGE = b"tessera/hsm/self-test"

# What a token answers when a GCM tag does not verify (SoftHSM2 2.6 says CKR_GENERAL_ERROR;
# the standard says CKR_ENCRYPTED_DATA_INVALID; some tokens use the others).
AUTH_FAILED: tuple[type[PKCS11Error], ...] = (
    DataInvalid,
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
)
# CKA attributes the KEK must have, with the value it must have.
KEK_POLICY: tuple[tuple[Attribute, bool | int], ...] = (
    (Attribute.KEY_TYPE, KeyType.AES),
    (Attribute.VALUE_LEN, KEK_BITS // 8),
    (Attribute.TOKEN, True),
    (Attribute.PRIVATE, True),
    (Attribute.SENSITIVE, True),
    (Attribute.ALWAYS_SENSITIVE, True),
    (Attribute.EXTRACTABLE, False),
    (Attribute.NEVER_EXTRACTABLE, True),
    (Attribute.LOCAL, True),
    (Attribute.ENCRYPT, True),
    (Attribute.DECRYPT, True),
    (Attribute.WRAP, False),
    (Attribute.UNWRAP, False),
)
IDENTITY_POLICY: tuple[tuple[Attribute, bool], ...] = (
    (Attribute.TOKEN, True),
    (Attribute.PRIVATE, True),
    (Attribute.SENSITIVE, True),
    (Attribute.ALWAYS_SENSITIVE, True),
    (Attribute.EXTRACTABLE, False),
    (Attribute.NEVER_EXTRACTABLE, True),
    (Attribute.LOCAL, True),
    (Attribute.SIGN, True),
)


def kek_label(node_id: str) -> str:
    return KEK_LABEL_PREFIX + node_id


def identity_label(node_id: str) -> str:
    return IDENTITY_LABEL_PREFIX + node_id


def officer_label(officer_id: str) -> str:
    return OFFICER_LABEL_PREFIX + officer_id


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """What `ensure_node_keys` / `load_node_keys` found or created for a node."""

    node_id: str
    token_label: str
    kek_label: str
    identity_label: str
    identity: IdentityPublicKey
    created_kek: bool
    created_identity: bool


def bool_attribute(obj: Object, attribute: Attribute) -> bool | None:
    try:
        return bool(obj[attribute])
    except PKCS11Error:
        return None


def gcm_encrypt(kek: EncryptMixin, data: bytes, params: GCMParams) -> bytes:
    out = kek.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
    if not isinstance(out, bytes):  # only the streaming form (an iterator input) yields chunks
        raise TypeError(f"AES-GCM returned {type(out).__name__}, expected bytes")
    return out


def gcm_decrypt(kek: DecryptMixin, data: bytes, params: GCMParams) -> bytes:
    out = kek.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
    if not isinstance(out, bytes):
        raise TypeError(f"AES-GCM returned {type(out).__name__}, expected bytes")
    return out


def kek_for(token: TokenSession, node_id: str, create: bool) -> tuple[SecretKey, bool]:
    """Find (or create) the node's KEK and check every protection attribute of `KEK_POLICY`:
    a KEK planted by someone with the PIN (extractable, or imported with a known value) is
    refused, so the node never seals under a key that exists outside the token."""
    label = kek_label(node_id)
    found = token.find_one(ObjectClass.SECRET_KEY, label)
    created = False
    if found is None:
        if not create:
            raise NodeKeysMissing(token.label, node_id, f"no key-encryption key {label!r}")
        found = token.session.generate_key(
            KeyType.AES,
            KEK_BITS,
            label=label,
            id=label.encode("utf-8"),
            store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.MODIFIABLE: False,
                Attribute.COPYABLE: False,
            },
        )
        created = True
        log.info("token %r: created key-encryption key %r", token.label, label)
    if not (
        isinstance(found, SecretKey)
        and isinstance(found, EncryptMixin)
        and isinstance(found, DecryptMixin)
    ):
        raise KeyPolicyViolation(token.label, label, "not an encrypt/decrypt secret key")
    for attribute, expected in KEK_POLICY:
        try:
            have = found[attribute]
        except PKCS11Error as exc:
            raise KeyPolicyViolation(
                token.label, label, f"{attribute.name} unreadable ({type(exc).__name__})"
            ) from None
        if have != expected:
            raise KeyPolicyViolation(
                token.label, label, f"{attribute.name} is {have!r}, must be {expected!r}"
            )
    return found, created


def identity_for(
    token: TokenSession, node_id: str, create: bool, algorithm: IdentityAlgorithm | Literal["auto"]
) -> tuple[PrivateKey, IdentityPublicKey, bool]:
    label = identity_label(node_id)
    return signing_key(
        token,
        label,
        create,
        algorithm,
        lambda: NodeKeysMissing(token.label, node_id, f"no identity key pair {label!r}"),
    )


def officer_missing(token: TokenSession, officer_id: str) -> Callable[[], HsmError]:
    label = officer_label(officer_id)
    return lambda: NodeKeysMissing(token.label, None, f"no officer key pair {label!r}")


def signing_key(
    token: TokenSession,
    label: str,
    create: bool,
    algorithm: IdentityAlgorithm | Literal["auto"],
    missing: Callable[[], HsmError],
) -> tuple[PrivateKey, IdentityPublicKey, bool]:
    """Find (or create) a non-extractable signing key pair by label, checking its
    protection attributes and curve (node identity keys and officer keys alike)."""
    private = token.find_one(ObjectClass.PRIVATE_KEY, label)
    public = token.find_one(ObjectClass.PUBLIC_KEY, label)
    created = False
    if private is None and public is None:
        if not create:
            raise missing()
        public, private, _ = generate_identity(
            token.session, token.token.slot, token.label, label, algorithm
        )
        created = True
        log.info("token %r: created signing key pair %r", token.label, label)
    if private is None or public is None:
        half = "private" if private is None else "public"
        raise KeyPolicyViolation(token.label, label, f"the {half} half of the pair is missing")
    if not isinstance(private, PrivateKey) or not isinstance(public, PublicKey):
        raise KeyPolicyViolation(token.label, label, "objects of the wrong class")
    have_algorithm = identity_algorithm_of(private)
    if have_algorithm is None:
        raise KeyPolicyViolation(token.label, label, "neither an Ed25519 nor a P-256 key")
    if algorithm not in ("auto", have_algorithm):
        raise KeyPolicyViolation(
            token.label, label, f"the existing key is {have_algorithm}, {algorithm} requested"
        )
    for attribute, want in IDENTITY_POLICY:
        have = bool_attribute(private, attribute)
        if have is not want:
            raise KeyPolicyViolation(
                token.label, label, f"{attribute.name} is {have!r}, must be {want!r}"
            )
    if identity_algorithm_of(public) != have_algorithm:
        raise KeyPolicyViolation(token.label, label, "public and private halves differ in curve")
    return private, public_key_of(public, have_algorithm), created


def self_test(
    token_label: str,
    node_id: str,
    kek: SecretKey,
    private: PrivateKey,
    identity: IdentityPublicKey,
) -> None:
    """Prove the keys work before the node relies on them: a GCM round trip under the KEK and
    an identity signature that verifies against the public half."""
    context = SealContext(node_id, "self-test", 0, "self-test")
    nonce = new_nonce()
    params = GCMParams(nonce, context.aad(), TAG_BITS)
    if not (isinstance(kek, EncryptMixin) and isinstance(kek, DecryptMixin)):
        raise KeyPolicyViolation(token_label, kek_label(node_id), "cannot encrypt and decrypt")
    sealed = gcm_encrypt(kek, _SELF_TEST_MESSAGE, params)
    opened = gcm_decrypt(kek, sealed, params)
    if opened != _SELF_TEST_MESSAGE or len(sealed) != len(_SELF_TEST_MESSAGE) + TAG_BYTES:
        raise KeyPolicyViolation(token_label, kek_label(node_id), "AES-GCM self-test failed")
    signature = sign_with(private, identity.algorithm, _SELF_TEST_MESSAGE)
    if not verify_identity(identity, _SELF_TEST_MESSAGE, signature):
        raise KeyPolicyViolation(
            token_label,
            identity_label(node_id),
            "a token signature does not verify under the stored public key",
        )
