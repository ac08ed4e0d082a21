"""`KeyStore`: one logged-in PKCS#11 session on a node's token, its KEK and its identity key.

Lifecycle: `KeyStore.open(config)` finds the token by label and logs in once (login is per
process); the node then calls `ensure_node_keys(node_id)` (first start: creates the keys) or
`load_node_keys(node_id)` (later starts: refuses to start if they are missing).  That binds the
store to the node: one node = one process = one token.  `close()` logs out.

Every PKCS#11 call runs under `hsm.runtime.PKCS11_LOCK` (see that module for why), so a
`KeyStore` may be shared by any number of threads; calls are serialised.

If the session dies (token unplugged, another component logged the process out), the failing call
logs in again once — re-reading the PIN from its source — re-finds the node keys and retries;
if that fails it raises `HsmSessionLost` and the node must stop signing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar

from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, MechanismFlag, ObjectClass, TokenFlag
from pkcs11.exceptions import (
    DataInvalid,
    DataLenRange,
    DeviceRemoved,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
    KeyHandleInvalid,
    ObjectHandleInvalid,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.types import DecryptMixin, EncryptMixin, PrivateKey, PublicKey, SecretKey

from hsm import runtime
from hsm.config import HsmConfig
from hsm.errors import (
    HsmError,
    HsmLoginError,
    HsmOperationError,
    HsmSessionLost,
    KeyPolicyViolation,
    KeyStoreClosed,
    NodeBindingError,
    NodeKeysMissing,
    SealCheck,
    SealContextError,
    TokenNotFound,
)
from hsm.identity import (
    IdentityAlgorithm,
    IdentityPublicKey,
    generate_identity,
    identity_algorithm_of,
    public_key_of,
    sign_with,
    supports_eddsa,
    supports_p256,
    verify_identity,
)
from hsm.sealing import (
    TAG_BITS,
    TAG_BYTES,
    SealContext,
    check_context_field,
    encode_blob,
    new_nonce,
    parse_blob,
)

if TYPE_CHECKING:
    from pkcs11.types import Object, Session, Token

log = logging.getLogger("tessera.hsm")

T = TypeVar("T")

KEK_LABEL_PREFIX = "tessera/kek/v1/"
IDENTITY_LABEL_PREFIX = "tessera/identity/v1/"
OFFICER_LABEL_PREFIX = "tessera/officer/v1/"
KEK_BITS = 256
_SELF_TEST_MESSAGE = b"tessera/hsm/self-test"

# Errors after which the session (or the handles it gave out) can no longer be used.
_SESSION_LOST: tuple[type[PKCS11Error], ...] = (
    DeviceRemoved,
    KeyHandleInvalid,
    ObjectHandleInvalid,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserNotLoggedIn,
)
# What a token answers when a GCM tag does not verify (SoftHSM2 2.6 says CKR_GENERAL_ERROR;
# the standard says CKR_ENCRYPTED_DATA_INVALID; some tokens use the others).
_AUTH_FAILED: tuple[type[PKCS11Error], ...] = (
    DataInvalid,
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    FunctionFailed,
    GeneralError,
)
# CKA attributes the KEK must have, with the value it must have.
_KEK_POLICY: tuple[tuple[Attribute, bool | int], ...] = (
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
_IDENTITY_POLICY: tuple[tuple[Attribute, bool], ...] = (
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


@dataclass(frozen=True, slots=True)
class TokenObjectInfo:
    """One object in the token, as `inventory()` lists it (never a key value)."""

    label: str
    object_class: str
    key_type: str | None
    sensitive: bool | None
    extractable: bool | None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """The token and what it can do, for `tessera hsm status`."""

    label: str
    serial: str
    manufacturer: str
    model: str
    flags: tuple[str, ...]
    aes_gcm: bool
    ed25519: bool
    p256: bool


def _login(token: Token, pin: str, label: str) -> Session:
    """Open the process's one read-write session and log the user in.  Caller holds the lock."""
    try:
        return token.open(rw=True, user_pin=pin)
    except PinIncorrect:
        raise HsmLoginError(label, "the token rejected the PIN (incorrect PIN)") from None
    except (PinInvalid, PinLenRange):
        raise HsmLoginError(label, "the PIN has a form this token does not accept") from None
    except PinLocked:
        raise HsmLoginError(
            label, "the user PIN is locked after failed attempts; the SO must reset it"
        ) from None
    except PinExpired:
        raise HsmLoginError(label, "the user PIN has expired; set a new one") from None
    except UserPinNotInitialized:
        raise HsmLoginError(
            label, "the token has no user PIN yet (initialise it with `tessera hsm init`)"
        ) from None
    except UserAlreadyLoggedIn:
        raise HsmLoginError(
            label, "this process is already logged in to the token outside this KeyStore"
        ) from None
    except (DeviceRemoved, TokenNotPresent) as exc:
        raise TokenNotFound(
            label, f"the token went away during login ({type(exc).__name__})"
        ) from None
    except PKCS11Error as exc:
        raise HsmLoginError(label, f"C_OpenSession/C_Login failed: {type(exc).__name__}") from None


def _gcm_encrypt(kek: EncryptMixin, data: bytes, params: GCMParams) -> bytes:
    out = kek.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
    if not isinstance(out, bytes):  # only the streaming form (an iterator input) yields chunks
        raise TypeError(f"AES-GCM returned {type(out).__name__}, expected bytes")
    return out


def _gcm_decrypt(kek: DecryptMixin, data: bytes, params: GCMParams) -> bytes:
    out = kek.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
    if not isinstance(out, bytes):
        raise TypeError(f"AES-GCM returned {type(out).__name__}, expected bytes")
    return out


def _bool_attribute(obj: Object, attribute: Attribute) -> bool | None:
    try:
        return bool(obj[attribute])
    except PKCS11Error:
        return None


class KeyStore:
    """A node's token: sealing under its KEK and signing with its identity key.  Thread safe."""

    def __init__(self, config: HsmConfig, token: Token, session: Session) -> None:
        """Use `KeyStore.open`; this only wires an already logged-in session."""
        self._config = config
        self._token = token
        self._session = session
        self._closed = False
        self._node_id: str | None = None
        self._kek: SecretKey | None = None
        self._identity_private: PrivateKey | None = None
        self._identity: IdentityPublicKey | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, config: HsmConfig) -> KeyStore:
        """Load the module, find the token by label and log in.

        Raises `HsmModuleError` (module missing or unusable), `TokenNotFound`, `HsmConfigError`
        (PIN source missing or unsafe) or `HsmLoginError` (PIN rejected).
        """
        with runtime.PKCS11_LOCK:
            token = runtime.attach(config)
            try:
                session = _login(token, config.read_pin(), config.token_label)
            except BaseException:
                runtime.release(config.token_label)
                raise
        log.info("logged in to token %r", config.token_label)
        return cls(config, token, session)

    def close(self) -> None:
        """Log out and close the session.  Idempotent."""
        with runtime.PKCS11_LOCK:
            if self._closed:
                return
            self._closed = True
            self._kek = None
            self._identity_private = None
            try:
                self._session.close()
            except PKCS11Error as exc:  # the session is being dropped either way
                log.warning("closing token %r: %s", self.label, type(exc).__name__)
            finally:
                runtime.release(self.label)

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def label(self) -> str:
        return self._config.token_label

    @property
    def config(self) -> HsmConfig:
        return self._config

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def node_id(self) -> str | None:
        """The node this store is bound to, once `ensure_node_keys`/`load_node_keys` ran."""
        return self._node_id

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<KeyStore token={self.label!r} node={self._node_id!r} {state}>"

    # -- plumbing ------------------------------------------------------------------------

    def _run(
        self,
        operation: str,
        fn: Callable[[], T],
        translate: Callable[[PKCS11Error], HsmError | None] | None = None,
    ) -> T:
        """Run `fn` under the lock; recover a lost session once; map PKCS#11 errors to ours."""
        with runtime.PKCS11_LOCK:
            if self._closed:
                raise KeyStoreClosed(self.label, operation)
            try:
                try:
                    return fn()
                except _SESSION_LOST as lost:
                    log.warning(
                        "token %r: %s during %s; logging in again",
                        self.label,
                        type(lost).__name__,
                        operation,
                    )
                    self._reconnect(operation, lost)
                try:
                    return fn()
                except _SESSION_LOST as lost:
                    raise HsmSessionLost(
                        self.label, operation, f"{type(lost).__name__} again after re-login"
                    ) from None
            except PKCS11Error as exc:
                mapped = translate(exc) if translate is not None else None
                if mapped is not None:
                    raise mapped from None
                detail = str(exc) or type(exc).__name__
                raise HsmOperationError(self.label, operation, detail) from None

    def _reconnect(self, operation: str, cause: PKCS11Error) -> None:
        try:
            self._session.close()
        except PKCS11Error:  # already dead; we only want the logout side effect if any
            log.debug("token %r: closing the lost session failed", self.label)
        try:
            token = runtime.find_token(
                self._config.module_path, self._config.softhsm_conf, self.label
            )
            self._session = _login(token, self._config.read_pin(), self.label)
            self._token = token
            if self._node_id is not None:
                before = self._identity
                keys = self._bind(self._node_id, create=False, algorithm="auto")
                if keys.identity != before:  # a swapped token must not change who we are
                    self._kek = self._identity_private = self._identity = None
                    raise KeyPolicyViolation(
                        self.label, keys.identity_label, "the identity key changed on re-login"
                    )
        except (HsmError, PKCS11Error) as exc:
            raise HsmSessionLost(
                self.label, operation, f"{type(cause).__name__}; logging in again failed: {exc}"
            ) from None

    def _find_one(self, object_class: ObjectClass, label: str) -> Object | None:
        found = list(
            self._session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label})
        )
        if len(found) > 1:
            raise KeyPolicyViolation(
                self.label, label, f"{len(found)} {object_class.name} objects carry this label"
            )
        return found[0] if found else None

    # -- node keys -----------------------------------------------------------------------

    def ensure_node_keys(
        self, node_id: str, *, identity_algorithm: IdentityAlgorithm | Literal["auto"] = "auto"
    ) -> NodeKeys:
        """Create (if absent) the node's KEK and identity key pair; bind the store to the node.

        `identity_algorithm` "auto" picks Ed25519 when the token offers it, else P-256; an
        existing identity key is kept (asking for another algorithm than it has is an error).
        """
        check_context_field("node_id", node_id)
        return self._run(
            "ensure node keys",
            lambda: self._bind(node_id, create=True, algorithm=identity_algorithm),
        )

    def load_node_keys(self, node_id: str) -> NodeKeys:
        """Find the node's existing keys and bind the store to the node; `NodeKeysMissing` if the
        KEK or identity key is absent (a node that already has sealed state must not make new
        ones)."""
        check_context_field("node_id", node_id)
        return self._run(
            "load node keys", lambda: self._bind(node_id, create=False, algorithm="auto")
        )

    def _bind(
        self, node_id: str, *, create: bool, algorithm: IdentityAlgorithm | Literal["auto"]
    ) -> NodeKeys:
        if self._node_id is not None and self._node_id != node_id:
            raise NodeBindingError(self.label, self._node_id, node_id)
        kek, created_kek = self._kek_for(node_id, create)
        private, identity, created_identity = self._identity_for(node_id, create, algorithm)
        self._self_test(node_id, kek, private, identity)
        self._node_id, self._kek = node_id, kek
        self._identity_private, self._identity = private, identity
        return NodeKeys(
            node_id=node_id,
            token_label=self.label,
            kek_label=kek_label(node_id),
            identity_label=identity_label(node_id),
            identity=identity,
            created_kek=created_kek,
            created_identity=created_identity,
        )

    def _kek_for(self, node_id: str, create: bool) -> tuple[SecretKey, bool]:
        label = kek_label(node_id)
        found = self._find_one(ObjectClass.SECRET_KEY, label)
        created = False
        if found is None:
            if not create:
                raise NodeKeysMissing(self.label, node_id, f"no key-encryption key {label!r}")
            found = self._session.generate_key(
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
            log.info("token %r: created key-encryption key %r", self.label, label)
        if not (
            isinstance(found, SecretKey)
            and isinstance(found, EncryptMixin)
            and isinstance(found, DecryptMixin)
        ):
            raise KeyPolicyViolation(self.label, label, "not an encrypt/decrypt secret key")
        for attribute, expected in _KEK_POLICY:
            try:
                have = found[attribute]
            except PKCS11Error as exc:
                raise KeyPolicyViolation(
                    self.label, label, f"{attribute.name} unreadable ({type(exc).__name__})"
                ) from None
            if have != expected:
                raise KeyPolicyViolation(
                    self.label, label, f"{attribute.name} is {have!r}, must be {expected!r}"
                )
        return found, created

    def _identity_for(
        self, node_id: str, create: bool, algorithm: IdentityAlgorithm | Literal["auto"]
    ) -> tuple[PrivateKey, IdentityPublicKey, bool]:
        label = identity_label(node_id)
        return self._signing_key(
            label,
            create,
            algorithm,
            lambda: NodeKeysMissing(self.label, node_id, f"no identity key pair {label!r}"),
        )

    def _signing_key(
        self,
        label: str,
        create: bool,
        algorithm: IdentityAlgorithm | Literal["auto"],
        missing: Callable[[], HsmError],
    ) -> tuple[PrivateKey, IdentityPublicKey, bool]:
        """Find (or create) a non-extractable signing key pair by label, checking its
        protection attributes and curve (node identity keys and officer keys alike)."""
        private = self._find_one(ObjectClass.PRIVATE_KEY, label)
        public = self._find_one(ObjectClass.PUBLIC_KEY, label)
        created = False
        if private is None and public is None:
            if not create:
                raise missing()
            public, private, _ = generate_identity(
                self._session, self._token.slot, self.label, label, algorithm
            )
            created = True
            log.info("token %r: created signing key pair %r", self.label, label)
        if private is None or public is None:
            half = "private" if private is None else "public"
            raise KeyPolicyViolation(self.label, label, f"the {half} half of the pair is missing")
        if not isinstance(private, PrivateKey) or not isinstance(public, PublicKey):
            raise KeyPolicyViolation(self.label, label, "objects of the wrong class")
        have_algorithm = identity_algorithm_of(private)
        if have_algorithm is None:
            raise KeyPolicyViolation(self.label, label, "neither an Ed25519 nor a P-256 key")
        if algorithm not in ("auto", have_algorithm):
            raise KeyPolicyViolation(
                self.label, label, f"the existing key is {have_algorithm}, {algorithm} requested"
            )
        for attribute, want in _IDENTITY_POLICY:
            have = _bool_attribute(private, attribute)
            if have is not want:
                raise KeyPolicyViolation(
                    self.label, label, f"{attribute.name} is {have!r}, must be {want!r}"
                )
        if identity_algorithm_of(public) != have_algorithm:
            raise KeyPolicyViolation(self.label, label, "public and private halves differ in curve")
        return private, public_key_of(public, have_algorithm), created

    def _self_test(
        self, node_id: str, kek: SecretKey, private: PrivateKey, identity: IdentityPublicKey
    ) -> None:
        """Prove the keys work before the node relies on them: a GCM round trip under the KEK and
        an identity signature that verifies against the public half."""
        context = SealContext(node_id, "self-test", 0, "self-test")
        nonce = new_nonce()
        params = GCMParams(nonce, context.aad(), TAG_BITS)
        if not (isinstance(kek, EncryptMixin) and isinstance(kek, DecryptMixin)):
            raise KeyPolicyViolation(self.label, kek_label(node_id), "cannot encrypt and decrypt")
        sealed = _gcm_encrypt(kek, _SELF_TEST_MESSAGE, params)
        opened = _gcm_decrypt(kek, sealed, params)
        if opened != _SELF_TEST_MESSAGE or len(sealed) != len(_SELF_TEST_MESSAGE) + TAG_BYTES:
            raise KeyPolicyViolation(self.label, kek_label(node_id), "AES-GCM self-test failed")
        signature = sign_with(private, identity.algorithm, _SELF_TEST_MESSAGE)
        if not verify_identity(identity, _SELF_TEST_MESSAGE, signature):
            raise KeyPolicyViolation(
                self.label,
                identity_label(node_id),
                "a token signature does not verify under the stored public key",
            )

    def _node_kek(self, node_id: str, operation: str) -> SecretKey:
        if self._kek is None or self._node_id is None:
            raise NodeKeysMissing(
                self.label, None, f"{operation}: call ensure_node_keys/load_node_keys first"
            )
        if node_id != self._node_id:
            raise NodeBindingError(self.label, self._node_id, node_id)
        return self._kek

    # -- sealing -------------------------------------------------------------------------

    def seal(
        self, plaintext: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes:
        """Encrypt `plaintext` in the token under the node's KEK with AES-256-GCM.

        A fresh random 96-bit nonce per call; the AAD binds (format version, node id, key id,
        share version, purpose).  Returns the self-describing blob of `hsm.sealing`.
        """
        context = SealContext(node_id, key_id, share_version, purpose)
        if not isinstance(plaintext, bytes | bytearray | memoryview):
            raise SealContextError("plaintext", f"must be bytes, got {type(plaintext).__name__}")
        data = bytes(plaintext)
        nonce = new_nonce()
        params = GCMParams(nonce, context.aad(), TAG_BITS)

        def encrypt() -> bytes:
            kek = self._node_kek(node_id, "seal")
            if not isinstance(kek, EncryptMixin):
                raise KeyPolicyViolation(self.label, kek_label(node_id), "CKA_ENCRYPT is false")
            return _gcm_encrypt(kek, data, params)

        sealed = self._run("seal", encrypt)
        if len(sealed) != len(data) + TAG_BYTES:
            raise HsmOperationError(
                self.label,
                "seal",
                f"the token returned {len(sealed)} bytes for {len(data)} bytes of plaintext",
            )
        return encode_blob(nonce, sealed)

    def unseal(
        self, blob: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes:
        """Decrypt a blob from `seal` given the same context; `SealedBlobInvalid` otherwise."""
        context = SealContext(node_id, key_id, share_version, purpose)
        parsed = parse_blob(blob, context)
        params = GCMParams(parsed.nonce, context.aad(), TAG_BITS)

        def decrypt() -> bytes:
            kek = self._node_kek(node_id, "unseal")
            if not isinstance(kek, DecryptMixin):
                raise KeyPolicyViolation(self.label, kek_label(node_id), "CKA_DECRYPT is false")
            return _gcm_decrypt(kek, parsed.ciphertext_and_tag, params)

        def auth_failure(exc: PKCS11Error) -> HsmError | None:
            if isinstance(exc, _AUTH_FAILED):
                return context.rejected(
                    SealCheck.AUTHENTICATION,
                    f"authentication failed under the KEK of token {self.label!r} "
                    f"({type(exc).__name__}): the blob was sealed for another node, key, share "
                    "version or purpose, under another token's KEK, or was modified",
                )
            return None

        plaintext = self._run("unseal", decrypt, auth_failure)
        if len(plaintext) != len(parsed.ciphertext_and_tag) - TAG_BYTES:
            raise HsmOperationError(
                self.label, "unseal", f"the token returned {len(plaintext)} bytes"
            )
        return plaintext

    # -- officer keys --------------------------------------------------------------------

    def officer_key(
        self,
        officer_id: str,
        *,
        create: bool = False,
        algorithm: IdentityAlgorithm | Literal["auto"] = "auto",
    ) -> IdentityPublicKey:
        """A security officer's signing key in this token (created if asked and absent): the
        same protection as a node identity key — sensitive, never extractable."""
        check_context_field("officer_id", officer_id)
        label = officer_label(officer_id)

        def find() -> IdentityPublicKey:
            def missing() -> HsmError:
                return NodeKeysMissing(self.label, None, f"no officer key pair {label!r}")

            return self._signing_key(label, create, algorithm, missing)[1]

        return self._run("officer key", find)

    def sign_officer(self, officer_id: str, message: bytes) -> bytes:
        """Sign `message` with an officer key inside the token (see `hsm.identity.sign_with`)."""
        check_context_field("officer_id", officer_id)
        if not isinstance(message, bytes | bytearray | memoryview):
            raise SealContextError("message", f"must be bytes, got {type(message).__name__}")
        data = bytes(message)
        label = officer_label(officer_id)

        def sign() -> bytes:
            def missing() -> HsmError:
                return NodeKeysMissing(self.label, None, f"no officer key pair {label!r}")

            private, public, _ = self._signing_key(label, False, "auto", missing)
            return sign_with(private, public.algorithm, data)

        return self._run("officer signature", sign)

    # -- identity ------------------------------------------------------------------------

    def identity_public_key(self) -> IdentityPublicKey:
        """The bound node's identity public key (what peers pin)."""
        with runtime.PKCS11_LOCK:
            if self._closed:
                raise KeyStoreClosed(self.label, "identity public key")
            if self._identity is None:
                raise NodeKeysMissing(
                    self.label, None, "no node bound: call ensure_node_keys/load_node_keys first"
                )
            return self._identity

    def sign_identity(self, message: bytes) -> bytes:
        """Sign `message` with the node identity key inside the token (see `hsm.identity`)."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise SealContextError("message", f"must be bytes, got {type(message).__name__}")
        data = bytes(message)

        def sign() -> bytes:
            if self._identity_private is None or self._identity is None:
                raise NodeKeysMissing(
                    self.label, None, "no node bound: call ensure_node_keys/load_node_keys first"
                )
            return sign_with(self._identity_private, self._identity.algorithm, data)

        return self._run("identity signature", sign)

    # -- inspection ----------------------------------------------------------------------

    def kek_attributes(self) -> dict[str, bool | int]:
        """The protection attributes of the bound node's KEK, by CKA name (never its value)."""

        def read() -> dict[str, bool | int]:
            kek = self._node_kek(self._node_id or "", "kek attributes")
            return {attribute.name: kek[attribute] for attribute, _ in _KEK_POLICY}

        return self._run("read KEK attributes", read)

    def token_info(self) -> TokenInfo:
        """Label, serial, flags and the mechanisms the node needs."""

        def read() -> TokenInfo:
            token, slot = self._token, self._token.slot
            mechanisms = set(slot.get_mechanisms())
            flags = tuple(f.name or str(int(f)) for f in TokenFlag if token.flags & f)
            return TokenInfo(
                label=token.label,
                serial=token.serial.decode("ascii", errors="replace").strip(),
                manufacturer=token.manufacturer_id,
                model=token.model,
                flags=flags,
                aes_gcm=Mechanism.AES_GCM in mechanisms,
                ed25519=supports_eddsa(slot),
                p256=supports_p256(slot),
            )

        return self._run("read token info", read)

    def inventory(self) -> list[TokenObjectInfo]:
        """Every object the logged-in user can see: labels, classes and protection flags."""

        def read() -> list[TokenObjectInfo]:
            rows: list[TokenObjectInfo] = []
            for obj in list(self._session.get_objects()):
                object_class = obj.object_class
                class_name = object_class.name if object_class is not None else "UNKNOWN"
                try:
                    label = str(obj[Attribute.LABEL])
                except PKCS11Error:
                    label = ""
                try:
                    key_type: str | None = KeyType(obj[Attribute.KEY_TYPE]).name
                except (PKCS11Error, ValueError):
                    key_type = None
                secret = object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
                rows.append(
                    TokenObjectInfo(
                        label=label,
                        object_class=class_name or "UNKNOWN",
                        key_type=key_type,
                        sensitive=_bool_attribute(obj, Attribute.SENSITIVE) if secret else None,
                        extractable=_bool_attribute(obj, Attribute.EXTRACTABLE) if secret else None,
                    )
                )
            return sorted(rows, key=lambda r: (r.label, r.object_class))

        return self._run("list token objects", read)

    def node_ids(self) -> list[str]:
        """Nodes with a KEK or identity key in this token (by our label scheme)."""
        nodes: set[str] = set()
        for row in self.inventory():
            for prefix in (KEK_LABEL_PREFIX, IDENTITY_LABEL_PREFIX):
                if row.label.startswith(prefix) and len(row.label) > len(prefix):
                    nodes.add(row.label[len(prefix) :])
        return sorted(nodes)
