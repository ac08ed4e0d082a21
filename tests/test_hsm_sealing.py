"""The sealed-blob format and its AAD, without a token: injectivity, validation, parsing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm.errors import SealCheck, SealContextError, SealedBlobInvalid
from hsm.sealing import (
    AAD_DOMAIN,
    FIELD_MAX_BYTES,
    FORMAT_VERSION,
    MAGIC,
    MIN_BLOB_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    SealContext,
    encode_blob,
    new_nonce,
    parse_blob,
)

texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40)
versions = st.integers(min_value=0, max_value=2**64 - 1)
contexts = st.builds(SealContext, texts, texts, versions, texts)


def decode_aad(aad: bytes) -> tuple[int, str, str, int, str]:
    """An independent parser of the version-1 AAD: if it recovers every field, the encoding is
    injective."""
    assert aad.startswith(AAD_DOMAIN)
    pos = len(AAD_DOMAIN)
    version = aad[pos]
    pos += 1

    def text() -> str:
        nonlocal pos
        (n,) = struct.unpack_from(">I", aad, pos)
        pos += 4
        value = aad[pos : pos + n].decode("utf-8")
        pos += n
        return value

    node, key = text(), text()
    (share_version,) = struct.unpack_from(">Q", aad, pos)
    pos += 8
    purpose = text()
    assert pos == len(aad), "trailing bytes"
    return version, node, key, share_version, purpose


@given(contexts)
def test_aad_decodes_back_to_its_context(ctx: SealContext) -> None:
    assert decode_aad(ctx.aad()) == (
        FORMAT_VERSION,
        ctx.node_id,
        ctx.key_id,
        ctx.share_version,
        ctx.purpose,
    )


@given(contexts, contexts)
def test_distinct_contexts_have_distinct_aad(a: SealContext, b: SealContext) -> None:
    assert (a.aad() == b.aad()) == (a == b)


def test_aad_separates_field_boundaries() -> None:
    # The classic ambiguity of plain concatenation: "ab"+"c" vs "a"+"bc".
    one = SealContext("ab", "c", 1, "p").aad()
    two = SealContext("a", "bc", 1, "p").aad()
    assert one != two


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("node_id", {"node_id": ""}),
        ("key_id", {"key_id": ""}),
        ("purpose", {"purpose": ""}),
        ("node_id", {"node_id": b"n1"}),
        ("key_id", {"key_id": "x" * (FIELD_MAX_BYTES + 1)}),
        ("purpose", {"purpose": "\ud800"}),
        ("share_version", {"share_version": -1}),
        ("share_version", {"share_version": 2**64}),
        ("share_version", {"share_version": True}),
        ("share_version", {"share_version": 1.0}),
    ],
)
def test_invalid_context_names_the_field(field: str, kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"node_id": "n1", "key_id": "k1", "share_version": 0, "purpose": "p"}
    base.update(kwargs)
    with pytest.raises(SealContextError) as info:
        SealContext(**base)  # type: ignore[arg-type]
    assert info.value.field == field


def test_nonces_are_fresh_and_96_bits() -> None:
    seen = {new_nonce() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(n) == NONCE_BYTES for n in seen)


CTX = SealContext("node-1", "wallet-7", 3, "share")


def test_blob_layout() -> None:
    nonce = bytes(range(NONCE_BYTES))
    body = b"\xaa" * 5 + b"\xbb" * TAG_BYTES
    blob = encode_blob(nonce, body)
    assert blob[:3] == MAGIC and blob[3] == FORMAT_VERSION
    parsed = parse_blob(blob, CTX)
    assert (parsed.version, parsed.nonce, parsed.ciphertext_and_tag) == (1, nonce, body)


@given(st.binary(max_size=MIN_BLOB_BYTES - 1))
def test_short_blobs_fail_length(blob: bytes) -> None:
    with pytest.raises(SealedBlobInvalid) as info:
        parse_blob(blob, CTX)
    assert info.value.check is SealCheck.LENGTH


@given(st.binary(min_size=3, max_size=3).filter(lambda m: m != MAGIC))
def test_wrong_magic_fails(magic: bytes) -> None:
    blob = magic + bytes([FORMAT_VERSION]) + bytes(NONCE_BYTES + TAG_BYTES)
    with pytest.raises(SealedBlobInvalid) as info:
        parse_blob(blob, CTX)
    assert info.value.check is SealCheck.MAGIC


@given(st.integers(0, 255).filter(lambda v: v != FORMAT_VERSION))
def test_unknown_version_fails(version: int) -> None:
    blob = MAGIC + bytes([version]) + bytes(NONCE_BYTES + TAG_BYTES)
    with pytest.raises(SealedBlobInvalid) as info:
        parse_blob(blob, CTX)
    assert info.value.check is SealCheck.VERSION
    assert info.value.node_id == "node-1" and info.value.key_id == "wallet-7"
    assert info.value.share_version == 3 and info.value.purpose == "share"


def test_non_bytes_blob_fails() -> None:
    with pytest.raises(SealedBlobInvalid):
        parse_blob("TSB1" * 20, CTX)  # type: ignore[arg-type]


def test_encode_checks_nonce_and_tag_sizes() -> None:
    with pytest.raises(SealContextError):
        encode_blob(bytes(11), bytes(TAG_BYTES))
    with pytest.raises(SealContextError):
        encode_blob(bytes(NONCE_BYTES), bytes(TAG_BYTES - 1))
