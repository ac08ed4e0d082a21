"""Identity public keys and `verify_identity` without a token (keys made with `cryptography`)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm.errors import InvalidIdentityKey
from hsm.identity import P256_HALF_ORDER, P256_ORDER, IdentityPublicKey, verify_identity

ED_KEY = Ed25519PrivateKey.generate()
ED_PUB = IdentityPublicKey(
    "ed25519",
    ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
)
P_KEY = ec.generate_private_key(ec.SECP256R1())
P_PUB = IdentityPublicKey(
    "p256",
    P_KEY.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    ),
)


def p256_raw(message: bytes, *, high_s: bool) -> bytes:
    r, s = decode_dss_signature(P_KEY.sign(message, ec.ECDSA(hashes.SHA256())))
    low = min(s, P256_ORDER - s)
    s = P256_ORDER - low if high_s else low
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@settings(max_examples=40)
@given(st.binary(max_size=512))
def test_ed25519_signatures_verify_and_bind_the_message(message: bytes) -> None:
    signature = ED_KEY.sign(message)
    assert verify_identity(ED_PUB, message, signature)
    assert not verify_identity(ED_PUB, message + b"x", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_identity(ED_PUB, message, flipped)


@settings(max_examples=40)
@given(st.binary(max_size=512))
def test_p256_accepts_only_the_low_s_form(message: bytes) -> None:
    assert verify_identity(P_PUB, message, p256_raw(message, high_s=False))
    assert not verify_identity(P_PUB, message, p256_raw(message, high_s=True))
    assert not verify_identity(P_PUB, message + b"x", p256_raw(message, high_s=False))


def test_p256_rejects_out_of_range_scalars_and_wrong_lengths() -> None:
    good = p256_raw(b"m", high_s=False)
    r = good[:32]
    assert not verify_identity(P_PUB, b"m", bytes(32) + good[32:])  # r = 0
    assert not verify_identity(P_PUB, b"m", r + bytes(32))  # s = 0
    assert not verify_identity(P_PUB, b"m", P256_ORDER.to_bytes(32, "big") + good[32:])
    assert not verify_identity(P_PUB, b"m", r + (P256_HALF_ORDER + 1).to_bytes(32, "big"))
    assert not verify_identity(P_PUB, b"m", good[:-1])
    assert not verify_identity(P_PUB, b"m", good + b"\x00")
    assert not verify_identity(ED_PUB, b"m", ED_KEY.sign(b"m")[:-1])


def test_a_signature_does_not_verify_under_another_algorithm_or_key() -> None:
    other = Ed25519PrivateKey.generate()
    other_pub = IdentityPublicKey(
        "ed25519",
        other.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    )
    assert not verify_identity(other_pub, b"m", ED_KEY.sign(b"m"))
    assert not verify_identity(P_PUB, b"m", ED_KEY.sign(b"m"))


@pytest.mark.parametrize(
    ("algorithm", "public", "fragment"),
    [
        ("rsa", bytes(32), "unknown algorithm"),
        ("ed25519", bytes(31), "31 bytes"),
        ("p256", bytes(33), "compressed"),
        ("p256", b"\x02" + b"\xff" * 32, "not a point"),
        ("p256", bytes(65), "65 bytes"),
    ],
)
def test_invalid_public_keys_are_refused(algorithm: str, public: bytes, fragment: str) -> None:
    with pytest.raises(InvalidIdentityKey) as info:
        IdentityPublicKey(algorithm, public)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_dict_round_trip_and_fingerprint() -> None:
    for pub in (ED_PUB, P_PUB):
        assert IdentityPublicKey.from_dict(pub.to_dict()) == pub
        assert (
            pub.fingerprint()
            == hashlib.sha256(pub.algorithm.encode() + b"\x00" + pub.public_bytes).hexdigest()
        )
    assert ED_PUB.fingerprint() != P_PUB.fingerprint()
    with pytest.raises(InvalidIdentityKey, match="not hex"):
        IdentityPublicKey.from_dict({"algorithm": "ed25519", "public_key": "zz"})
    with pytest.raises(InvalidIdentityKey, match="unknown algorithm"):
        IdentityPublicKey.from_dict({"algorithm": "dsa", "public_key": "00"})
    with pytest.raises(InvalidIdentityKey, match="hex string"):
        IdentityPublicKey.from_dict({"algorithm": "p256", "public_key": 7})
