"""Byte forms of protocol outputs for a node's database and the coordinator's API.

Public parts (key versions, aux-info parameters, presignature data) use the canonical TLV
encoding of `signer.encoding` and are re-validated when read back — a row edited on disk is an
`EncodingError`/`InvalidParameter`, never a silently different key.  Secret parts are encoded
the same way and are only ever stored sealed by the node's HSM (`signer/node/store.py`).
"""

from __future__ import annotations

import functools

from signer.curve import Q
from signer.encoding import Encodable, decode, encode
from signer.errors import Check, EncodingError
from signer.params import MODULUS_BITS
from signer.protocol.aux_info import AuxInfo
from signer.protocol.base import as_list, expect_bytes, expect_nat, expect_point, expect_scalar
from signer.protocol.hd import derive
from signer.protocol.keygen import KeyPublic, KeyShare
from signer.protocol.presign import Presignature, PresignaturePublic
from signer.ring_pedersen import RingPedersenParams, RingPedersenSecret

_MAX_PARTIES = 255


def _indices(value: Encodable, where: str) -> tuple[int, ...]:
    items = as_list(value, None, where)
    if not 1 <= len(items) <= _MAX_PARTIES:
        raise EncodingError(where, Check.LENGTH, f"{len(items)} parties")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 0xFFFF:
            raise EncodingError(where, Check.PARTY_INDEX, f"bad index {item!r}")
        out.append(item)
    return tuple(out)


def _small(value: Encodable, where: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise EncodingError(where, Check.RANGE, f"not in [0, {maximum}]")
    return value


# --- key versions ------------------------------------------------------------------------------


def encode_key_public(key: KeyPublic) -> bytes:
    return encode(
        [
            key.key_id,
            key.epoch,
            key.threshold,
            list(key.parties),
            list(key.public_shares),
            key.public_key,
            key.chain_code,
        ]
    )


# Every signature request decodes its key version (on the coordinator and on each node): the
# encoding is immutable and so is the `KeyPublic` it decodes to, so decoded ones are kept.  A
# failed decode raises and is not cached.
@functools.lru_cache(maxsize=256)
def decode_key_public(data: bytes) -> KeyPublic:
    where = "key version"
    key_id, epoch, t, parties, shares, Y, chain = as_list(decode(data, where), 7, where)
    if not isinstance(key_id, bytes) or not 1 <= len(key_id) <= 64:
        raise EncodingError(where, Check.LENGTH, "key id must be 1..64 bytes")
    indices = _indices(parties, f"{where}.parties")
    return KeyPublic(
        key_id=key_id,
        epoch=_small(epoch, f"{where}.epoch", 2**32),
        threshold=_small(t, f"{where}.threshold", _MAX_PARTIES),
        parties=indices,
        public_shares=tuple(
            expect_point(P, f"{where}.X") for P in as_list(shares, len(indices), "X")
        ),
        public_key=expect_point(Y, f"{where}.Y"),
        chain_code=expect_bytes(chain, 32, f"{where}.chain code"),
    )


def encode_share_secret(share: KeyShare) -> bytes:
    return encode([share.index, share.secret_share])


def key_share(public: KeyPublic, secret: bytes) -> KeyShare:
    index, x = as_list(decode(secret, "key share"), 2, "key share")
    return KeyShare(
        key_id=public.key_id,
        threshold=public.threshold,
        parties=public.parties,
        index=_small(index, "key share index", 0xFFFF),
        secret_share=expect_scalar(x, "key share", nonzero=True),
        public_shares=public.public_shares,
        public_key=public.public_key,
        chain_code=public.chain_code,
        epoch=public.epoch,
    )


# --- aux-info ----------------------------------------------------------------------------------


def encode_aux_public(aux: AuxInfo) -> bytes:
    return encode([list(aux.parties), [[p.n, p.s, p.t] for p in aux.public]])


def decode_aux_public(data: bytes) -> tuple[tuple[int, ...], tuple[RingPedersenParams, ...]]:
    where = "aux-info"
    parties, params = as_list(decode(data, where), 2, where)
    indices = _indices(parties, f"{where}.parties")
    public = []
    for j, entry in zip(indices, as_list(params, len(indices), where), strict=True):
        n, s, t = (expect_nat(v, MODULUS_BITS, f"{where}[{j}]") for v in as_list(entry, 3, where))
        public.append(RingPedersenParams.from_peer(n, s, t, culprit=j))
    return indices, tuple(public)


def aux_info(public: bytes, index: int, secret: bytes) -> AuxInfo:
    parties, params = decode_aux_public(public)
    own = RingPedersenSecret.from_bytes(secret)
    if index not in parties or params[parties.index(index)] != own.params:
        raise EncodingError("aux-info", Check.EQUATION, "own parameters differ from the record")
    return AuxInfo(parties=parties, index=index, own=own, public=params)


# --- presignatures -----------------------------------------------------------------------------


def encode_presignature_public(public: PresignaturePublic) -> bytes:
    return encode(
        [
            public.presignature_id,
            public.key_id,
            list(public.signers),
            list(public.derivation.path),
            public.R,
            public.Gamma,
            list(public.Delta),
            list(public.S),
            public.key_version,
        ]
    )


def decode_presignature_public(data: bytes, key: KeyPublic) -> PresignaturePublic:
    """The public data of a presignature on `key`; the derivation is recomputed from the key,
    so a stored row cannot point the signature at another child key.  The key version it was
    made with is kept as stored: `sign.combine` refuses it unless it is `key`'s."""
    where = "presignature"
    fields = as_list(decode(data, where), 9, where)
    presignature_id = expect_bytes(fields[0], 32, f"{where}.id")
    key_id = fields[1]
    if key_id != key.key_id:
        raise EncodingError(where, Check.MISMATCH, "presignature of another key")
    signers = _indices(fields[2], f"{where}.signers")
    path = tuple(_small(i, f"{where}.path", 2**31 - 1) for i in as_list(fields[3], None, "path"))
    return PresignaturePublic(
        presignature_id=presignature_id,
        key_id=key.key_id,
        key_version=expect_bytes(fields[8], 32, f"{where}.key version"),
        signers=signers,
        derivation=derive(key.public_key, key.chain_code, path),
        R=expect_point(fields[4], f"{where}.R"),
        Gamma=expect_point(fields[5], f"{where}.Gamma"),
        Delta=tuple(expect_point(P, "Delta") for P in as_list(fields[6], len(signers), "Delta")),
        S=tuple(expect_point(P, "S") for P in as_list(fields[7], len(signers), "S")),
    )


def take_presignature_secret(presignature: Presignature) -> bytes:
    """Move a fresh presignature's secrets into bytes for sealing: the in-memory object is
    consumed, so the stored copy is the only one left."""
    k, chi = presignature.consume()
    return encode([presignature.index, k, chi])


def presignature(public: PresignaturePublic, secret: bytes) -> Presignature:
    index, k, chi = as_list(decode(secret, "presignature secret"), 3, "presignature secret")
    if index not in public.signers:
        raise EncodingError("presignature secret", Check.PARTY_INDEX, "not a signer")
    return Presignature(
        public,
        index,
        expect_scalar(k, "k", nonzero=True) % Q,
        expect_scalar(chi, "chi"),
    )
