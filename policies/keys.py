"""Officer keys: Ed25519 or P-256 signing keys of the security officers, and the one way every
officer statement is signed and verified.

Key file (JSON, mode 0600, written atomically and never over an existing file)::

    {"format": "tessera-officer-key/1", "officer_id": "alice", "algorithm": "ed25519",
     "public_key": "<hex>", "kdf": {"name": "scrypt", "salt": "<hex>", "n": 131072, "r": 8,
     "p": 1}, "private_key": "-----BEGIN ENCRYPTED PRIVATE KEY----- …"}

The private key is PKCS#8 encrypted by `cryptography` (PBES2, AES-256-CBC).  Its password is
not the passphrase itself but scrypt(passphrase, salt): PKCS#8's own PBKDF2 uses only 2048
iterations, so the memory-hard scrypt step is what makes an offline guess expensive.

Signatures are domain-separated: the signed bytes are ``DOMAIN ‖ purpose ‖ "\\n" ‖
canonical_json(body)`` (`signing_message`), so an approval can never be replayed as a policy
activation, a freeze or a checkpoint.  Public keys are hex: raw 32 bytes for Ed25519, SEC1
compressed 33 bytes for P-256.  P-256 signatures are raw ``r ‖ s`` (64 bytes, big-endian) with
low s (s ≤ n/2); verification refuses high s, zero or out-of-range values, so every
statement has exactly one valid encoding per signature.  (A PKCS#11 signer returns ``r ‖ s``
from CKM_ECDSA and must normalise s the same way.)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from policies.canonical import canonical_json
from policies.errors import OfficerKeyError

Algorithm = Literal["ed25519", "p256"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)

KEY_FILE_FORMAT = "tessera-officer-key/1"
OFFICER_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
PASSPHRASE_ENV = "TESSERA_OFFICER_PASSPHRASE"  # noqa: S105  (a variable name, not a secret)
MIN_PASSPHRASE_BYTES = 12

# scrypt cost: 2^17 × r=8 is 128 MiB and ~0.4 s per unlock.  Loading accepts 2^14..2^20 so a
# crafted file can neither make the key cheap to guess silently at creation nor exhaust memory.
DEFAULT_SCRYPT_N = 2**17
MIN_SCRYPT_N = 2**14
MAX_SCRYPT_N = 2**20

DOMAIN = b"tessera-officer-signature/v1\n"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class Purpose(StrEnum):
    """What an officer signature is for; part of every signed message."""

    POLICY_ACTIVATION = "policy-activation"
    POLICY_CANCEL = "policy-cancel"
    APPROVAL = "withdrawal-approval"
    FREEZE = "wallet-freeze"
    UNFREEZE = "wallet-unfreeze"
    CHECKPOINT = "audit-checkpoint"
    KEY_PLAN = "key-plan"  # authorises one re-share or refresh (signer/node/key_gate.py)


def signing_message(purpose: Purpose, body: Mapping[str, Any]) -> bytes:
    """The exact bytes an officer signs for ``body`` under ``purpose``."""
    return DOMAIN + purpose.value.encode("ascii") + b"\n" + canonical_json(body)


class OfficerSigner(Protocol):
    """Anything that signs for one officer: a key file here, a PKCS#11 token later."""

    @property
    def officer_id(self) -> str: ...

    @property
    def algorithm(self) -> Algorithm: ...

    @property
    def public_key_hex(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def sign_statement(signer: OfficerSigner, purpose: Purpose, body: Mapping[str, Any]) -> bytes:
    """``signer``'s signature over ``body`` for ``purpose``."""
    return signer.sign(signing_message(purpose, body))


def verify_statement(
    algorithm: str, public_key_hex: str, purpose: Purpose, body: Mapping[str, Any], signature: bytes
) -> bool:
    """Whether ``signature`` is a valid signature of ``body`` for ``purpose``."""
    return verify_signature(algorithm, public_key_hex, signing_message(purpose, body), signature)


def _check_algorithm(algorithm: str, source: str) -> Algorithm:
    for known in ALGORITHMS:
        if algorithm == known:
            return known
    raise OfficerKeyError(source, f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")


def load_public_key(
    algorithm: str, public_key_hex: str
) -> ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey:
    """Decode an officer public key; `OfficerKeyError` names the key when it is malformed."""
    source = f"public key {public_key_hex[:16]!r}…"
    alg = _check_algorithm(algorithm, source)
    try:
        raw = bytes.fromhex(public_key_hex)
    except ValueError as exc:
        raise OfficerKeyError(source, "not hexadecimal") from exc
    if alg == "ed25519":
        if len(raw) != 32:
            raise OfficerKeyError(source, f"Ed25519 keys are 32 bytes, got {len(raw)}")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if len(raw) != 33 or raw[0] not in (2, 3):
        raise OfficerKeyError(source, "P-256 keys are SEC1 compressed points (33 bytes, 02/03)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise OfficerKeyError(source, "not a point on P-256") from exc


def verify_signature(algorithm: str, public_key_hex: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``message`` verifies under the officer key.  False for any bad
    signature (wrong key, wrong message, wrong length, high-s P-256); `OfficerKeyError` only when
    the public key itself is malformed."""
    key = load_public_key(algorithm, public_key_hex)
    if len(signature) != 64:
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
            return True
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < P256_ORDER and 0 < s <= P256_ORDER // 2):
            return False
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


@dataclass(frozen=True)
class LocalOfficerSigner:
    """An officer key held in process memory (unlocked from a key file)."""

    officer_id: str
    algorithm: Algorithm
    public_key_hex: str
    _private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = field(
        repr=False, compare=False
    )

    def sign(self, message: bytes) -> bytes:
        if isinstance(self._private, ed25519.Ed25519PrivateKey):
            return self._private.sign(message)
        der = self._private.sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        s = min(s, P256_ORDER - s)  # canonical low-s form
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _public_hex(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raw = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
    return raw.hex()


def check_officer_id(officer_id: str) -> str:
    if not OFFICER_ID_RE.fullmatch(officer_id):
        raise OfficerKeyError(f"officer id {officer_id!r}", "must match [a-z0-9][a-z0-9_-]{0,31}")
    return officer_id


def generate_officer_key(officer_id: str, algorithm: str) -> LocalOfficerSigner:
    """A fresh officer key (OS randomness via OpenSSL)."""
    check_officer_id(officer_id)
    alg = _check_algorithm(algorithm, f"officer {officer_id}")
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if alg == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    return LocalOfficerSigner(officer_id, alg, _public_hex(private), private)


def _kdf(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    derived = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)
    return derived.hex().encode("ascii")


def _check_kdf(kdf: object, source: str) -> tuple[bytes, int, int, int]:
    if not isinstance(kdf, dict) or set(kdf) != {"name", "salt", "n", "r", "p"}:
        raise OfficerKeyError(source, "kdf must be an object with name, salt, n, r, p")
    if kdf["name"] != "scrypt":
        raise OfficerKeyError(source, f"kdf.name {kdf['name']!r} is not 'scrypt'")
    n, r, p = kdf["n"], kdf["r"], kdf["p"]
    if not isinstance(n, int) or n & (n - 1) or not MIN_SCRYPT_N <= n <= MAX_SCRYPT_N:
        raise OfficerKeyError(source, f"kdf.n {n!r} is not a power of two in [2^14, 2^20]")
    if not isinstance(r, int) or not 1 <= r <= 16:
        raise OfficerKeyError(source, f"kdf.r {r!r} is not in [1, 16]")
    if not isinstance(p, int) or not 1 <= p <= 4:
        raise OfficerKeyError(source, f"kdf.p {p!r} is not in [1, 4]")
    try:
        salt = bytes.fromhex(str(kdf["salt"]))
    except ValueError as exc:
        raise OfficerKeyError(source, "kdf.salt is not hexadecimal") from exc
    if len(salt) < 16:
        raise OfficerKeyError(source, "kdf.salt is shorter than 16 bytes")
    return salt, n, r, p


def _check_new_passphrase(passphrase: bytes) -> None:
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise OfficerKeyError(
            "passphrase", f"must be at least {MIN_PASSPHRASE_BYTES} bytes for a new key"
        )


def write_key_file(
    path: Path, signer: LocalOfficerSigner, passphrase: bytes, *, scrypt_n: int = DEFAULT_SCRYPT_N
) -> None:
    """Seal ``signer`` under ``passphrase`` into a new file at ``path`` (mode 0600).  Refuses to
    overwrite; the file appears complete or not at all."""
    _check_new_passphrase(passphrase)
    salt = secrets.token_bytes(16)
    kdf = {"name": "scrypt", "salt": salt.hex(), "n": scrypt_n, "r": 8, "p": 1}
    _check_kdf(kdf, str(path))
    password = _kdf(passphrase, salt, scrypt_n, 8, 1)
    pem = signer._private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    doc = {
        "format": KEY_FILE_FORMAT,
        "officer_id": signer.officer_id,
        "algorithm": signer.algorithm,
        "public_key": signer.public_key_hex,
        "kdf": kdf,
        "private_key": pem.decode("ascii"),
    }
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    if path.exists():
        raise OfficerKeyError(str(path), "already exists; refusing to overwrite a key file")
    if not path.parent.is_dir():
        raise OfficerKeyError(str(path), f"directory {path.parent} does not exist")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if the target appeared meanwhile: no race can overwrite a key.
        os.link(tmp, path)
    except FileExistsError as exc:
        raise OfficerKeyError(str(path), "already exists; refusing to overwrite") from exc
    except OSError as exc:
        raise OfficerKeyError(str(path), f"cannot write key file ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def create_key_file(
    path: Path,
    officer_id: str,
    algorithm: str,
    passphrase: bytes,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> LocalOfficerSigner:
    """Generate a key for ``officer_id`` and seal it into ``path``."""
    _check_new_passphrase(passphrase)
    signer = generate_officer_key(officer_id, algorithm)
    write_key_file(path, signer, passphrase, scrypt_n=scrypt_n)
    return signer


@dataclass(frozen=True)
class OfficerKeyInfo:
    """The public part of a key file (readable without the passphrase)."""

    path: Path
    officer_id: str
    algorithm: Algorithm
    public_key_hex: str


def _read_key_doc(path: Path) -> tuple[OfficerKeyInfo, dict[str, Any]]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise OfficerKeyError(source, "no such key file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise OfficerKeyError(source, f"cannot read key file ({exc})") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OfficerKeyError(source, f"not JSON (line {exc.lineno}: {exc.msg})") from exc
    expected = {"format", "officer_id", "algorithm", "public_key", "kdf", "private_key"}
    if not isinstance(doc, dict) or set(doc) != expected:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise OfficerKeyError(source, f"expected fields {sorted(expected)}, found {found}")
    if doc["format"] != KEY_FILE_FORMAT:
        raise OfficerKeyError(source, f"format {doc['format']!r} is not {KEY_FILE_FORMAT!r}")
    for name in ("officer_id", "algorithm", "public_key", "private_key"):
        if not isinstance(doc[name], str):
            raise OfficerKeyError(source, f"{name} must be a string")
    try:
        check_officer_id(doc["officer_id"])
    except OfficerKeyError as exc:
        raise OfficerKeyError(source, exc.reason) from exc
    algorithm = _check_algorithm(doc["algorithm"], source)
    try:
        load_public_key(algorithm, doc["public_key"])
    except OfficerKeyError as exc:
        raise OfficerKeyError(source, f"public_key: {exc.reason}") from exc
    return OfficerKeyInfo(path, doc["officer_id"], algorithm, doc["public_key"]), doc


def read_key_info(path: Path) -> OfficerKeyInfo:
    """The officer id, algorithm and public key recorded in a key file."""
    return _read_key_doc(path)[0]


def load_key_file(path: Path, passphrase: bytes) -> LocalOfficerSigner:
    """Unlock a key file.  Refuses files readable by group or others, a wrong passphrase, and a
    private key that does not match the recorded public key."""
    source = str(path)
    info, doc = _read_key_doc(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise OfficerKeyError(
            source, f"mode {mode:04o} lets group/others read it; run chmod 600 {path}"
        )
    if not passphrase:
        raise OfficerKeyError(source, "empty passphrase")
    salt, n, r, p = _check_kdf(doc["kdf"], source)
    password = _kdf(passphrase, salt, n, r, p)
    try:
        private = serialization.load_pem_private_key(doc["private_key"].encode("ascii"), password)
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        # cryptography reports a wrong password and a corrupt blob alike as ValueError.
        raise OfficerKeyError(
            source, "cannot decrypt the private key: wrong passphrase or corrupted file"
        ) from exc
    if info.algorithm == "ed25519":
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise OfficerKeyError(source, "private key is not an Ed25519 key")
    elif not (
        isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1)
    ):
        raise OfficerKeyError(source, "private key is not a P-256 key")
    if _public_hex(private) != info.public_key_hex:
        raise OfficerKeyError(source, "private key does not match the recorded public_key")
    return LocalOfficerSigner(info.officer_id, info.algorithm, info.public_key_hex, private)


def read_passphrase(
    passphrase_file: Path | None, environ: Mapping[str, str] | None = None
) -> bytes:
    """The passphrase from ``passphrase_file`` (one trailing newline dropped) or else the
    TESSERA_OFFICER_PASSPHRASE environment variable.  Never from the command line."""
    if passphrase_file is not None:
        try:
            raw = passphrase_file.read_bytes()
        except OSError as exc:
            raise OfficerKeyError(
                str(passphrase_file), f"cannot read passphrase file ({exc})"
            ) from exc
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith(b"\n"):
            raw = raw[:-1]
        if not raw:
            raise OfficerKeyError(str(passphrase_file), "passphrase file is empty")
        return raw
    env = os.environ if environ is None else environ
    value = env.get(PASSPHRASE_ENV)
    if not value:
        raise OfficerKeyError("passphrase", f"give --passphrase-file or set {PASSPHRASE_ENV}")
    return value.encode("utf-8")
