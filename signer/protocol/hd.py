"""BIP32 non-hardened derivation from the group public key and the joint chain code.

CKDpub: I = HMAC-SHA512(c_par, ser_P(K_par) ‖ ser_32(i)), K_i = K_par + I_L·G, c_i = I_R, for
i < 2³¹.  The signing parties need only the total additive shift Σ I_L (one party adds it to its
share at presign time), so no MPC round is needed to derive deposit addresses.  Invalid
children (I_L ≥ q or K_i = O, probability ≈ 2⁻¹²⁷) raise, as BIP32 prescribes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from signer.curve import Point, Q
from signer.errors import Check, InvalidParameter

HARDENED = 1 << 31
MAX_DEPTH = 255


@dataclass(frozen=True)
class Derivation:
    """A non-hardened path from the group key: the child key, chain code and additive shift."""

    path: tuple[int, ...]
    shift: int  # child secret = parent secret + shift (mod q)
    public_key: Point
    chain_code: bytes


def derive(public_key: Point, chain_code: bytes, path: Sequence[int]) -> Derivation:
    if len(chain_code) != 32:
        raise InvalidParameter("chain code", Check.LENGTH, "must be 32 bytes")
    if len(path) > MAX_DEPTH:
        raise InvalidParameter("derivation path", Check.LENGTH, f"deeper than {MAX_DEPTH}")
    key, chain, shift = public_key, chain_code, 0
    for index in path:
        if isinstance(index, bool) or not 0 <= index < HARDENED:
            raise InvalidParameter(
                "derivation path", Check.RANGE, f"{index}: only non-hardened indices (< 2^31)"
            )
        digest = hmac.new(chain, key.to_bytes() + index.to_bytes(4, "big"), hashlib.sha512).digest()
        tweak = int.from_bytes(digest[:32], "big")
        if tweak >= Q:
            raise InvalidParameter("derivation path", Check.RANGE, f"invalid child at {index}")
        key = key + Point.base_mul(tweak)
        if key.is_identity:
            raise InvalidParameter("derivation path", Check.IDENTITY_POINT, f"child {index} is O")
        chain = digest[32:]
        shift = (shift + tweak) % Q
    return Derivation(tuple(path), shift, key, chain)
