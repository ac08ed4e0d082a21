"""Typed errors of the HSM key store.

Every error names what failed: the configuration field, the module path, the token label, the node
and the sealing context.  No error text ever contains a PIN; PINs are never passed to these
constructors.

`TesseraError`, the base of every error Tessera raises on purpose (HSM, policy, protocol, node,
coordinator), is defined here because `hsm` is the lowest layer that raises one; the layers above
import it from here (`signer.errors` re-exports it), so a process catches one base.
"""

from __future__ import annotations

from enum import StrEnum


class TesseraError(Exception):
    """Base class of every error Tessera raises on purpose."""



class HsmError(TesseraError):
    """Base class of every error raised by `hsm`."""


class HsmConfigError(HsmError):
    """A configuration value (or the PIN source it names) is missing or invalid."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"HSM configuration {field}: {reason}")


class HsmModuleError(HsmError):
    """The PKCS#11 module cannot be loaded or initialised (or this process cannot use it)."""

    def __init__(self, module_path: str, reason: str) -> None:
        self.module_path = module_path
        self.reason = reason
        super().__init__(f"PKCS#11 module {module_path}: {reason}")


class TokenNotFound(HsmError):
    """No token with the configured label (or more than one) is present."""

    def __init__(self, label: str, reason: str, available: tuple[str, ...] = ()) -> None:
        self.label = label
        self.reason = reason
        self.available = available
        seen = ", ".join(repr(a) for a in available) if available else "none"
        super().__init__(f"token {label!r}: {reason} (initialised tokens: {seen})")


class HsmLoginError(HsmError):
    """The token refused the user login (wrong PIN, locked PIN, PIN never set, …)."""

    def __init__(self, label: str, reason: str) -> None:
        self.label = label
        self.reason = reason
        super().__init__(f"login to token {label!r} failed: {reason}")


class HsmSessionLost(HsmError):
    """The logged-in session died (token removed, logged out) and could not be re-established."""

    def __init__(self, label: str, operation: str, reason: str) -> None:
        self.label = label
        self.operation = operation
        self.reason = reason
        super().__init__(f"token {label!r}: session lost during {operation}: {reason}")


class HsmOperationError(HsmError):
    """A PKCS#11 operation failed for a reason other than the ones with their own class."""

    def __init__(self, label: str, operation: str, reason: str) -> None:
        self.label = label
        self.operation = operation
        self.reason = reason
        super().__init__(f"token {label!r}: {operation} failed: {reason}")


class KeyStoreClosed(HsmError):
    """The key store was used after `close()`."""

    def __init__(self, label: str, operation: str) -> None:
        self.label = label
        self.operation = operation
        super().__init__(f"token {label!r}: {operation} on a closed KeyStore")


class NodeKeysMissing(HsmError):
    """The node's KEK or identity key is not in the token (or no node is bound to the store)."""

    def __init__(self, label: str, node_id: str | None, reason: str) -> None:
        self.label = label
        self.node_id = node_id
        self.reason = reason
        who = f"node {node_id!r}" if node_id is not None else "no node"
        super().__init__(f"token {label!r}, {who}: {reason}")


class NodeBindingError(HsmError):
    """A key store already bound to one node was asked to serve another."""

    def __init__(self, label: str, bound: str, requested: str) -> None:
        self.label = label
        self.bound = bound
        self.requested = requested
        super().__init__(
            f"token {label!r} serves node {bound!r}; refusing node {requested!r} "
            "(one node = one process = one token)"
        )


class KeyPolicyViolation(HsmError):
    """A key in the token with one of our labels lacks a required protection attribute.

    Raised instead of using the key: a KEK that is extractable, not sensitive or of the wrong
    type may have been planted, and the node must refuse to seal under it.
    """

    def __init__(self, label: str, key_label: str, check: str) -> None:
        self.label = label
        self.key_label = key_label
        self.check = check
        super().__init__(f"token {label!r}: key {key_label!r} violates policy: {check}")


class SealCheck(StrEnum):
    """Stable code of the sealed-blob check that failed."""

    LENGTH = "LENGTH"  # shorter than header + nonce + tag
    MAGIC = "MAGIC"  # does not start with the sealed-blob magic
    VERSION = "VERSION"  # unknown format version
    AUTHENTICATION = "AUTHENTICATION"  # GCM tag does not verify under this context and KEK


class SealedBlobInvalid(HsmError):
    """A sealed blob is malformed, or does not authenticate for the given sealing context."""

    def __init__(
        self,
        check: SealCheck,
        node_id: str,
        key_id: str,
        share_version: int,
        purpose: str,
        detail: str,
    ) -> None:
        self.check = check
        self.node_id = node_id
        self.key_id = key_id
        self.share_version = share_version
        self.purpose = purpose
        self.detail = detail
        super().__init__(
            f"sealed blob for node {node_id!r}, key {key_id!r}, share version {share_version}, "
            f"purpose {purpose!r} rejected: {check.value}: {detail}"
        )


class SealContextError(HsmError):
    """A sealing-context field (node id, key id, share version, purpose) is invalid."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"sealing context {field}: {reason}")


class InvalidIdentityKey(HsmError):
    """An identity public key whose algorithm or encoding is invalid."""

    def __init__(self, algorithm: str, reason: str) -> None:
        self.algorithm = algorithm
        self.reason = reason
        super().__init__(f"identity public key ({algorithm}): {reason}")


class TokenInitError(HsmError):
    """Creating a SoftHSM2 token directory failed or was refused."""

    def __init__(self, directory: str, reason: str) -> None:
        self.directory = directory
        self.reason = reason
        super().__init__(f"token directory {directory}: {reason}")
