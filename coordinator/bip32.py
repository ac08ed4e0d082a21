"""BIP32 extended public keys: the serialization (`xpub…`) of a wallet's group key and chain
code, with Base58Check on hashlib alone (no base58 package for 30 lines of code).

  version 0x0488B21E (mainnet public) ‖ depth ‖ parent fingerprint ‖ child number ‖
  chain code (32) ‖ compressed public key (33), then Base58Check (4-byte double-SHA-256 checksum)

A wallet's key is the root of its tree (depth 0, parent fingerprint 0, child 0); its children
are derived non-hardened (`signer.protocol.hd.derive`), so any holder of the xpub can derive the
same deposit addresses — and nothing that signs.
"""

from __future__ import annotations

import hashlib
from typing import Final

from signer.errors import TesseraError

XPUB_VERSION: Final = 0x0488B21E
_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class ExtendedKeyError(TesseraError):
    """An extended key that cannot be serialized (wrong length, form or range)."""


def base58check(payload: bytes) -> str:
    """Base58 of `payload ‖ SHA-256(SHA-256(payload))[:4]`; each leading zero byte is a '1'."""
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, 58)
        digits.append(_ALPHABET[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def serialize_xpub(
    public_key: bytes,
    chain_code: bytes,
    *,
    depth: int = 0,
    parent_fingerprint: bytes = b"\0\0\0\0",
    child: int = 0,
) -> str:
    """The Base58Check `xpub` of a compressed secp256k1 public key and its chain code."""
    if len(public_key) != 33 or public_key[0] not in (2, 3):
        raise ExtendedKeyError("public key: must be 33 bytes, compressed (02/03)")
    if len(chain_code) != 32:
        raise ExtendedKeyError("chain code: must be 32 bytes")
    if not 0 <= depth <= 255 or len(parent_fingerprint) != 4 or not 0 <= child < 2**32:
        raise ExtendedKeyError("depth, parent fingerprint or child number out of range")
    payload = (
        XPUB_VERSION.to_bytes(4, "big")
        + bytes([depth])
        + parent_fingerprint
        + child.to_bytes(4, "big")
        + chain_code
        + public_key
    )
    return base58check(payload)
