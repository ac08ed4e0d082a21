"""The sealed-blob format and the AAD that binds a blob to its context (pure functions, no token).

Blob, format version 1::

    magic  b"TSB"   3 bytes   "Tessera sealed blob"
    version         1 byte    0x01
    nonce          12 bytes   fresh from `secrets` for every seal (SoftHSM never makes one)
    ciphertext      n bytes   AES-256-GCM under the node's KEK
    tag            16 bytes   GCM tag (PKCS#11 returns ciphertext || tag)

The AAD is not stored: the caller states the context and a blob opened in any other context fails
its tag.  Version 1 AAD, an injective encoding (fixed-width or length-prefixed fields)::

    b"tessera/hsm/seal"                 16-byte domain tag
    u8   format version
    u32  len(node id)  || node id  (UTF-8)
    u32  len(key id)   || key id   (UTF-8)
    u64  share version
    u32  len(purpose)  || purpose  (UTF-8)
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from hsm.errors import SealCheck, SealContextError, SealedBlobInvalid

MAGIC = b"TSB"
FORMAT_VERSION = 1
NONCE_BYTES = 12  # 96-bit GCM nonce: the size GCM is defined for without GHASH of the IV
TAG_BYTES = 16
TAG_BITS = TAG_BYTES * 8
HEADER_BYTES = len(MAGIC) + 1
MIN_BLOB_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
AAD_DOMAIN = b"tessera/hsm/seal"
FIELD_MAX_BYTES = 1024  # ids and purposes are short names; a cap keeps the AAD bounded
SHARE_VERSION_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class SealContext:
    """What a sealed blob is bound to.  Validated on construction."""

    node_id: str
    key_id: str
    share_version: int
    purpose: str

    def __post_init__(self) -> None:
        for name in ("node_id", "key_id", "purpose"):
            check_context_field(name, getattr(self, name))
        version = self.share_version
        if isinstance(version, bool) or not isinstance(version, int):
            raise SealContextError("share_version", f"must be an int, got {type(version).__name__}")
        if not 0 <= version <= SHARE_VERSION_MAX:
            raise SealContextError("share_version", f"{version} is outside 0..2^64-1")

    def aad(self) -> bytes:
        """The version-1 associated data for this context."""
        return (
            AAD_DOMAIN
            + struct.pack(">B", FORMAT_VERSION)
            + _lp(self.node_id)
            + _lp(self.key_id)
            + struct.pack(">Q", self.share_version)
            + _lp(self.purpose)
        )

    def rejected(self, check: SealCheck, detail: str) -> SealedBlobInvalid:
        return SealedBlobInvalid(
            check, self.node_id, self.key_id, self.share_version, self.purpose, detail
        )


@dataclass(frozen=True, slots=True)
class ParsedBlob:
    """A blob split into its parts (not yet authenticated)."""

    version: int
    nonce: bytes
    ciphertext_and_tag: bytes


def check_context_field(name: str, value: object) -> None:
    """Validate a text field of a sealing context (also used for node ids in key labels)."""
    if not isinstance(value, str):
        raise SealContextError(name, f"must be a string, got {type(value).__name__}")
    if not value:
        raise SealContextError(name, "must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise SealContextError(name, f"{value!r} is not encodable as UTF-8") from None
    if size > FIELD_MAX_BYTES:
        raise SealContextError(name, f"is {size} bytes; at most {FIELD_MAX_BYTES}")


def _lp(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def new_nonce() -> bytes:
    """A fresh random 96-bit GCM nonce (OS randomness)."""
    return secrets.token_bytes(NONCE_BYTES)


def encode_blob(nonce: bytes, ciphertext_and_tag: bytes) -> bytes:
    """Assemble a version-1 blob."""
    if len(nonce) != NONCE_BYTES:
        raise SealContextError("nonce", f"must be {NONCE_BYTES} bytes, got {len(nonce)}")
    if len(ciphertext_and_tag) < TAG_BYTES:
        raise SealContextError(
            "ciphertext",
            f"must hold at least the {TAG_BYTES}-byte tag, got {len(ciphertext_and_tag)}",
        )
    return MAGIC + bytes([FORMAT_VERSION]) + nonce + ciphertext_and_tag


def parse_blob(blob: bytes, context: SealContext) -> ParsedBlob:
    """Split a blob, checking length, magic and version; errors name `context`."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise context.rejected(SealCheck.LENGTH, f"expected bytes, got {type(blob).__name__}")
    data = bytes(blob)
    if len(data) < MIN_BLOB_BYTES:
        raise context.rejected(
            SealCheck.LENGTH, f"{len(data)} bytes; a sealed blob has at least {MIN_BLOB_BYTES}"
        )
    if data[: len(MAGIC)] != MAGIC:
        raise context.rejected(SealCheck.MAGIC, f"starts with {data[: len(MAGIC)].hex()}")
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise context.rejected(
            SealCheck.VERSION, f"format version {version}; this build reads {FORMAT_VERSION}"
        )
    nonce = data[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    return ParsedBlob(version, nonce, data[HEADER_BYTES + NONCE_BYTES :])
