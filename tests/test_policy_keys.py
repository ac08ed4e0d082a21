"""Officer key files, domain-separated statements and canonical P-256 signatures."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.errors import OfficerKeyError
from policies.keys import (
    MIN_SCRYPT_N,
    P256_ORDER,
    PASSPHRASE_ENV,
    LocalOfficerSigner,
    Purpose,
    create_key_file,
    generate_officer_key,
    load_key_file,
    read_key_info,
    read_passphrase,
    sign_statement,
    signing_message,
    verify_signature,
    verify_statement,
)

PASS = b"correct horse battery staple"
ED = generate_officer_key("alice", "ed25519")
P256 = generate_officer_key("bob", "p256")


def _create(tmp_path: Path, algorithm: str = "ed25519", name: str = "k.json") -> Path:
    path = tmp_path / name
    create_key_file(path, "alice", algorithm, PASS, scrypt_n=MIN_SCRYPT_N)
    return path


@pytest.mark.parametrize("algorithm", ["ed25519", "p256"])
def test_key_file_round_trip(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "k.json"
    created = create_key_file(path, "alice", algorithm, PASS, scrypt_n=MIN_SCRYPT_N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert PASS.decode() not in text and "ENCRYPTED PRIVATE KEY" in text
    info = read_key_info(path)
    assert (info.officer_id, info.algorithm, info.public_key_hex) == (
        "alice",
        algorithm,
        created.public_key_hex,
    )
    loaded = load_key_file(path, PASS)
    assert loaded.public_key_hex == created.public_key_hex
    expected_len = 32 if algorithm == "ed25519" else 33
    assert len(bytes.fromhex(loaded.public_key_hex)) == expected_len
    sig = loaded.sign(b"message")
    assert verify_signature(algorithm, created.public_key_hex, b"message", sig)
    assert not list(tmp_path.glob(".*.tmp"))


def test_wrong_passphrase_names_the_file(tmp_path: Path) -> None:
    path = _create(tmp_path)
    with pytest.raises(OfficerKeyError, match="wrong passphrase") as info:
        load_key_file(path, b"not the passphrase")
    assert info.value.source == str(path)


def test_refuses_to_overwrite_a_key_file(tmp_path: Path) -> None:
    path = _create(tmp_path)
    before = path.read_bytes()
    with pytest.raises(OfficerKeyError, match="already exists"):
        create_key_file(path, "bob", "p256", PASS, scrypt_n=MIN_SCRYPT_N)
    assert path.read_bytes() == before


def test_short_passphrase_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    with pytest.raises(OfficerKeyError, match="at least 12 bytes"):
        create_key_file(path, "alice", "ed25519", b"short", scrypt_n=MIN_SCRYPT_N)
    assert list(tmp_path.iterdir()) == []


def test_bad_officer_id_and_algorithm_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(OfficerKeyError, match="must match"):
        create_key_file(tmp_path / "a", "Alice!", "ed25519", PASS, scrypt_n=MIN_SCRYPT_N)
    with pytest.raises(OfficerKeyError, match="unknown algorithm 'rsa'"):
        create_key_file(tmp_path / "b", "alice", "rsa", PASS, scrypt_n=MIN_SCRYPT_N)
    assert list(tmp_path.iterdir()) == []


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = _create(tmp_path)
    path.chmod(0o644)
    with pytest.raises(OfficerKeyError, match="chmod 600"):
        load_key_file(path, PASS)


def test_swapped_public_key_is_detected(tmp_path: Path) -> None:
    path = _create(tmp_path)
    doc = json.loads(path.read_text())
    doc["public_key"] = ED.public_key_hex
    path.write_text(json.dumps(doc))
    with pytest.raises(OfficerKeyError, match="does not match the recorded public_key"):
        load_key_file(path, PASS)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("kdf"), "expected fields"),
        (lambda d: d.update(extra=1), "expected fields"),
        (lambda d: d.update(format="other/9"), "format 'other/9'"),
        (lambda d: d.update(algorithm="rsa"), "unknown algorithm"),
        (lambda d: d.update(public_key="zz"), "public_key: not hexadecimal"),
        (lambda d: d["kdf"].update(n=2**30), "kdf.n"),
        (lambda d: d["kdf"].update(n=3 * 2**14), "kdf.n"),
        (lambda d: d["kdf"].update(salt="00"), "shorter than 16 bytes"),
        (lambda d: d["kdf"].update(name="pbkdf2"), "kdf.name"),
        (lambda d: d.update(private_key="garbage"), "cannot decrypt"),
    ],
)
def test_malformed_key_files_are_named(tmp_path: Path, mutate: object, message: str) -> None:
    path = _create(tmp_path)
    doc = json.loads(path.read_text())
    mutate(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))
    with pytest.raises(OfficerKeyError, match=message) as info:
        load_key_file(path, PASS)
    assert info.value.source == str(path)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(OfficerKeyError, match="not JSON"):
        load_key_file(path, PASS)
    with pytest.raises(OfficerKeyError, match="no such key file"):
        read_key_info(tmp_path / "missing.json")


@settings(max_examples=25, deadline=None)
@given(message=st.binary(max_size=200), flip=st.integers(min_value=0, max_value=511))
def test_signatures_verify_and_any_bit_flip_fails(message: bytes, flip: int) -> None:
    for signer in (ED, P256):
        sig = signer.sign(message)
        assert len(sig) == 64
        assert verify_signature(signer.algorithm, signer.public_key_hex, message, sig)
        tampered = bytearray(sig)
        tampered[flip // 8] ^= 1 << (flip % 8)
        assert not verify_signature(
            signer.algorithm, signer.public_key_hex, message, bytes(tampered)
        )
        assert not verify_signature(signer.algorithm, signer.public_key_hex, message + b"x", sig)


def test_p256_signatures_are_low_s_and_high_s_is_refused() -> None:
    for index in range(20):
        message = f"m{index}".encode()
        sig = P256.sign(message)
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        assert s <= P256_ORDER // 2
        high = r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big")
        # The high-s twin is a valid ECDSA signature, but not the canonical one.
        assert not verify_signature("p256", P256.public_key_hex, message, high)


def test_p256_der_signature_is_not_accepted() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    der = P256._private.sign(b"m", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg, union-attr]
    assert not verify_signature("p256", P256.public_key_hex, b"m", der)


def test_wrong_key_does_not_verify() -> None:
    other = generate_officer_key("carol", "ed25519")
    sig = ED.sign(b"m")
    assert not verify_signature("ed25519", other.public_key_hex, b"m", sig)


@pytest.mark.parametrize(
    ("algorithm", "key", "message"),
    [
        ("ed25519", "00" * 31, "32 bytes"),
        ("p256", "04" + "00" * 32, "SEC1 compressed"),
        ("p256", "02" + "ff" * 32, "not a point on P-256"),
        ("ed25519", "xyz", "not hexadecimal"),
        ("secp256k1", "00" * 33, "unknown algorithm"),
    ],
)
def test_malformed_public_keys_raise(algorithm: str, key: str, message: str) -> None:
    with pytest.raises(OfficerKeyError, match=message):
        verify_signature(algorithm, key, b"m", b"\x00" * 64)


@pytest.mark.parametrize("signer", [ED, P256], ids=["ed25519", "p256"])
def test_statements_are_domain_separated(signer: LocalOfficerSigner) -> None:
    body = {"policy_hash": "ab" * 32, "version": 2}
    sig = sign_statement(signer, Purpose.POLICY_ACTIVATION, body)
    alg, key = signer.algorithm, signer.public_key_hex
    assert verify_statement(alg, key, Purpose.POLICY_ACTIVATION, body, sig)
    for other in Purpose:
        if other is not Purpose.POLICY_ACTIVATION:
            assert not verify_statement(alg, key, other, body, sig)
    assert not verify_statement(alg, key, Purpose.POLICY_ACTIVATION, {**body, "version": 3}, sig)


def test_signing_messages_of_distinct_purposes_differ() -> None:
    messages = {signing_message(p, {"a": 1}) for p in Purpose}
    assert len(messages) == len(Purpose)


def test_read_passphrase_sources(tmp_path: Path) -> None:
    file = tmp_path / "pass"
    file.write_bytes(b"from the file\n")
    assert read_passphrase(file, {PASSPHRASE_ENV: "from env"}) == b"from the file"
    file.write_bytes(b"crlf line\r\n")
    assert read_passphrase(file, {}) == b"crlf line"
    assert read_passphrase(None, {PASSPHRASE_ENV: "from env"}) == b"from env"
    with pytest.raises(OfficerKeyError, match="--passphrase-file or set"):
        read_passphrase(None, {})
    file.write_bytes(b"\n")
    with pytest.raises(OfficerKeyError, match="empty"):
        read_passphrase(file, {})
    with pytest.raises(OfficerKeyError, match="cannot read"):
        read_passphrase(tmp_path / "missing", {})
