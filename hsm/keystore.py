"""`KeyStore`: a node's token — sealing under its KEK, signing with its identity key, officer
keys — as one thread-safe object over one logged-in session.

Lifecycle: `KeyStore.open(config)` finds the token by label and logs in once (login is per
process); the node then calls `ensure_node_keys(node_id)` (first start: creates the keys) or
`load_node_keys(node_id)` (later starts: refuses to start if they are missing).  That binds the
store to the node: one node = one process = one token.  `close()` logs out.

The work is split by concern: `hsm.session` (login, the lock, session recovery, per-call
timing), `hsm.keys` (labels, the protection policy, finding/creating keys, the self-test),
`hsm.sealing` (blob format and AAD), `hsm.inventory` (what `tessera hsm status` shows) and
`hsm.metrics` (the call-latency histogram).  This module only wires them together.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from pkcs11 import GCMParams
from pkcs11.exceptions import PKCS11Error
from pkcs11.types import DecryptMixin, EncryptMixin, PrivateKey, SecretKey

from hsm import runtime
from hsm.config import HsmConfig
from hsm.errors import (
    HsmError,
    HsmOperationError,
    KeyPolicyViolation,
    KeyStoreClosed,
    NodeBindingError,
    NodeKeysMissing,
    SealCheck,
    SealContextError,
)
from hsm.identity import IdentityAlgorithm, IdentityPublicKey, sign_with
from hsm.inventory import TokenInfo, TokenObjectInfo, node_ids_of, read_inventory, read_token_info
from hsm.keys import (
    AUTH_FAILED,
    KEK_POLICY,
    NodeKeys,
    gcm_decrypt,
    gcm_encrypt,
    identity_for,
    identity_label,
    kek_for,
    kek_label,
    officer_label,
    officer_missing,
    self_test,
    signing_key,
)
from hsm.metrics import HsmMetrics
from hsm.sealing import (
    TAG_BITS,
    TAG_BYTES,
    SealContext,
    check_context_field,
    encode_blob,
    new_nonce,
    parse_blob,
)
from hsm.session import TokenSession

if TYPE_CHECKING:
    from pkcs11.types import Session

__all__ = [
    "KeyStore",
    "NodeKeys",
    "TokenInfo",
    "TokenObjectInfo",
    "identity_label",
    "kek_label",
    "officer_label",
]

log = logging.getLogger("tessera.hsm")


class KeyStore:
    """A node's token: sealing under its KEK and signing with its identity key.  Thread safe."""

    def __init__(self, token: TokenSession) -> None:
        """Use `KeyStore.open`; this only wires an already logged-in session."""
        self._token = token
        self._node_id: str | None = None
        self._kek: SecretKey | None = None
        self._identity_private: PrivateKey | None = None
        self._identity: IdentityPublicKey | None = None
        token.on_relogin = self._rebind

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, config: HsmConfig, metrics: HsmMetrics | None = None) -> KeyStore:
        """Load the module, find the token by label and log in.

        Raises `HsmModuleError` (module missing or unusable), `TokenNotFound`, `HsmConfigError`
        (PIN source missing or unsafe) or `HsmLoginError` (PIN rejected).  `metrics` receives
        the latency of every token call (a fresh, unregistered `HsmMetrics` if not given).
        """
        return cls(TokenSession.open(config, metrics or HsmMetrics()))

    def close(self) -> None:
        """Log out and close the session.  Idempotent."""
        with runtime.PKCS11_LOCK:
            self._kek = None
            self._identity_private = None
            self._token.close()

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
        return self._token.label

    @property
    def config(self) -> HsmConfig:
        return self._token.config

    @property
    def metrics(self) -> HsmMetrics:
        """This store's HSM latency histogram (register it into a node's registry)."""
        return self._token.metrics

    @property
    def closed(self) -> bool:
        return self._token.closed

    @property
    def _session(self) -> Session:
        # The raw PKCS#11 session, for tests that simulate a token reset.
        return self._token.session

    @property
    def node_id(self) -> str | None:
        """The node this store is bound to, once `ensure_node_keys`/`load_node_keys` ran."""
        return self._node_id

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<KeyStore token={self.label!r} node={self._node_id!r} {state}>"

    # -- node keys -----------------------------------------------------------------------

    def ensure_node_keys(
        self, node_id: str, *, identity_algorithm: IdentityAlgorithm | Literal["auto"] = "auto"
    ) -> NodeKeys:
        """Create (if absent) the node's KEK and identity key pair; bind the store to the node.

        `identity_algorithm` "auto" picks Ed25519 when the token offers it, else P-256; an
        existing identity key is kept (asking for another algorithm than it has is an error).
        """
        check_context_field("node_id", node_id)
        return self._token.run(
            "ensure node keys",
            lambda: self._bind(node_id, create=True, algorithm=identity_algorithm),
        )

    def load_node_keys(self, node_id: str) -> NodeKeys:
        """Find the node's existing keys and bind the store to the node; `NodeKeysMissing` if the
        KEK or identity key is absent (a node that already has sealed state must not make new
        ones)."""
        check_context_field("node_id", node_id)
        return self._token.run(
            "load node keys", lambda: self._bind(node_id, create=False, algorithm="auto")
        )

    def _bind(
        self, node_id: str, *, create: bool, algorithm: IdentityAlgorithm | Literal["auto"]
    ) -> NodeKeys:
        if self._node_id is not None and self._node_id != node_id:
            raise NodeBindingError(self.label, self._node_id, node_id)
        kek, created_kek = kek_for(self._token, node_id, create)
        private, identity, created_identity = identity_for(self._token, node_id, create, algorithm)
        self_test(self.label, node_id, kek, private, identity)
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

    def _rebind(self) -> None:
        """After a re-login: find the bound node's keys again; a swapped token must not change
        who we are."""
        if self._node_id is None:
            return
        before = self._identity
        keys = self._bind(self._node_id, create=False, algorithm="auto")
        if keys.identity != before:
            self._kek = self._identity_private = self._identity = None
            raise KeyPolicyViolation(
                self.label, keys.identity_label, "the identity key changed on re-login"
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
            return gcm_encrypt(kek, data, params)

        sealed = self._token.run("seal", encrypt)
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
            return gcm_decrypt(kek, parsed.ciphertext_and_tag, params)

        def auth_failure(exc: PKCS11Error) -> HsmError | None:
            if isinstance(exc, AUTH_FAILED):
                return context.rejected(
                    SealCheck.AUTHENTICATION,
                    f"authentication failed under the KEK of token {self.label!r} "
                    f"({type(exc).__name__}): the blob was sealed for another node, key, share "
                    "version or purpose, under another token's KEK, or was modified",
                )
            return None

        plaintext = self._token.run("unseal", decrypt, auth_failure)
        if len(plaintext) != len(parsed.ciphertext_and_tag) - TAG_BYTES:
            raise HsmOperationError(
                self.label, "unseal", f"the token returned {len(plaintext)} bytes"
            )
        return plaintext

    # -- officer keys (used by hsm.officer) -----------------------------------------------

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
            missing = officer_missing(self._token, officer_id)
            return signing_key(self._token, label, create, algorithm, missing)[1]

        return self._token.run("officer key", find)

    def sign_officer(self, officer_id: str, message: bytes) -> bytes:
        """Sign `message` with an officer key inside the token (see `hsm.identity.sign_with`)."""
        check_context_field("officer_id", officer_id)
        if not isinstance(message, bytes | bytearray | memoryview):
            raise SealContextError("message", f"must be bytes, got {type(message).__name__}")
        data = bytes(message)
        label = officer_label(officer_id)

        def sign() -> bytes:
            missing = officer_missing(self._token, officer_id)
            private, public, _ = signing_key(self._token, label, False, "auto", missing)
            return sign_with(private, public.algorithm, data)

        return self._token.run("officer signature", sign)

    # -- identity ------------------------------------------------------------------------

    def identity_public_key(self) -> IdentityPublicKey:
        """The bound node's identity public key (what peers pin)."""
        with runtime.PKCS11_LOCK:
            if self.closed:
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

        return self._token.run("identity signature", sign)

    # -- inspection ----------------------------------------------------------------------

    def kek_attributes(self) -> dict[str, bool | int]:
        """The protection attributes of the bound node's KEK, by CKA name (never its value)."""

        def read() -> dict[str, bool | int]:
            kek = self._node_kek(self._node_id or "", "kek attributes")
            return {attribute.name: kek[attribute] for attribute, _ in KEK_POLICY}

        return self._token.run("read KEK attributes", read)

    def token_info(self) -> TokenInfo:
        """Label, serial, flags and the mechanisms the node needs."""
        return self._token.run("read token info", lambda: read_token_info(self._token.token))

    def inventory(self) -> list[TokenObjectInfo]:
        """Every object the logged-in user can see: labels, classes and protection flags."""
        return self._token.run("list token objects", lambda: read_inventory(self._token.session))

    def node_ids(self) -> list[str]:
        """Nodes with a KEK or identity key in this token (by our label scheme)."""
        return node_ids_of(self.inventory())
