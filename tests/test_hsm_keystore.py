"""KeyStore on real SoftHSM2 tokens: sealing, context binding, tampering, login and token errors,
KEK protection, identity signatures, persistence, threads and session recovery.

Each test makes its own token directory under `tmp_path` with `hsm.softhsm.init_token`.  SoftHSM2
reads SOFTHSM2_CONF only in C_Initialize, so a process can use one configuration at a time: the
runtime switches configuration between tests (no token is open then), and tests that need two
tokens open at once put both in one directory (`allow_existing=True`).  Checks that need a second,
independent process (an attacker with raw PKCS#11, a node restart) run one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from hsm import runtime
from hsm.config import CONFIG_FILE_NAME, HsmConfig, write_pin_file
from hsm.errors import (
    HsmConfigError,
    HsmError,
    HsmLoginError,
    HsmModuleError,
    HsmSessionLost,
    KeyPolicyViolation,
    KeyStoreClosed,
    NodeBindingError,
    NodeKeysMissing,
    SealCheck,
    SealContextError,
    SealedBlobInvalid,
    TokenInitError,
    TokenNotFound,
)
from hsm.identity import P256_HALF_ORDER, verify_identity
from hsm.keystore import KeyStore, kek_label
from hsm.metrics import HsmMetrics
from hsm.sealing import HEADER_BYTES, MIN_BLOB_BYTES, NONCE_BYTES, TAG_BYTES
from hsm.softhsm import init_token

REPO = Path(__file__).resolve().parents[1]
PIN = "Pin-Marker-7c41e2"
WRONG_PIN = "Wrong-Marker-1d9e55"
SO_PIN = "So-Marker-93d0aa"
NODE = "node-a"
CTX: dict[str, object] = {
    "node_id": NODE,
    "key_id": "wallet-1",
    "share_version": 1,
    "purpose": "share",
}


def make_token(
    tmp_path: Path, label: str = NODE, *, allow_existing: bool = False, pin: str = PIN
) -> HsmConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    pin_path = tmp_path / f"{label}.pin"
    if not pin_path.exists():
        write_pin_file(pin_path, pin)
    return init_token(
        tmp_path / "hsm", label, pin, SO_PIN, pin_file=pin_path, allow_existing=allow_existing
    )


@pytest.fixture
def config(tmp_path: Path) -> HsmConfig:
    return make_token(tmp_path)


@pytest.fixture
def store(config: HsmConfig) -> Iterator[KeyStore]:
    ks = KeyStore.open(config)
    try:
        ks.ensure_node_keys(NODE)
        yield ks
    finally:
        ks.close()


def run_child(code: str, **env: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter (its own PKCS#11 login); it prints one JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def all_text(exc: BaseException) -> str:
    """str and repr of an exception and of everything chained to it."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# -- sealing ------------------------------------------------------------------------------


def test_seal_unseal_round_trip(store: KeyStore) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        plaintext=st.binary(max_size=2048),
        key_id=st.text(min_size=1, max_size=20),
        share_version=st.integers(0, 2**64 - 1),
        purpose=st.sampled_from(["share", "paillier", "presignature", "aux"]),
    )
    def round_trip(plaintext: bytes, key_id: str, share_version: int, purpose: str) -> None:
        ctx = {
            "node_id": NODE,
            "key_id": key_id,
            "share_version": share_version,
            "purpose": purpose,
        }
        blob = store.seal(plaintext, **ctx)  # type: ignore[arg-type]
        assert len(blob) == HEADER_BYTES + NONCE_BYTES + len(plaintext) + TAG_BYTES
        assert plaintext not in blob[HEADER_BYTES:] or len(plaintext) < 8
        assert store.unseal(blob, **ctx) == plaintext  # type: ignore[arg-type]

    round_trip()


def test_every_seal_uses_a_fresh_nonce(store: KeyStore) -> None:
    blobs = [store.seal(b"same secret", **CTX) for _ in range(50)]  # type: ignore[arg-type]
    nonces = {b[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES] for b in blobs}
    assert len(nonces) == 50
    assert all(store.unseal(b, **CTX) == b"same secret" for b in blobs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("key_id", "wallet-2"), ("share_version", 2), ("share_version", 0), ("purpose", "paillier")],
)
def test_blob_opened_in_another_context_fails(store: KeyStore, field: str, value: object) -> None:
    blob = store.seal(b"share bytes", **CTX)  # type: ignore[arg-type]
    other = {**CTX, field: value}
    with pytest.raises(SealedBlobInvalid) as info:
        store.unseal(blob, **other)  # type: ignore[arg-type]
    err = info.value
    assert err.check is SealCheck.AUTHENTICATION
    assert (err.node_id, err.key_id, err.share_version, err.purpose) == (
        other["node_id"],
        other["key_id"],
        other["share_version"],
        other["purpose"],
    )
    assert "authentication failed" in str(err)
    assert store.unseal(blob, **CTX) == b"share bytes"  # type: ignore[arg-type]


def test_blob_moved_to_another_node_fails(tmp_path: Path) -> None:
    config_a = make_token(tmp_path, "node-a")
    config_b = make_token(tmp_path, "node-b", allow_existing=True)
    with KeyStore.open(config_a) as a, KeyStore.open(config_b) as b:
        a.ensure_node_keys("node-a")
        b.ensure_node_keys("node-b")
        blob = a.seal(b"a's share", **CTX)  # type: ignore[arg-type]
        moved = {**CTX, "node_id": "node-b"}
        with pytest.raises(SealedBlobInvalid) as info:
            b.unseal(blob, **moved)  # type: ignore[arg-type]
        assert info.value.check is SealCheck.AUTHENTICATION and info.value.node_id == "node-b"
        # The store of node a serves node a only: asking it about node b is refused outright.
        with pytest.raises(NodeBindingError) as bound:
            a.unseal(blob, **moved)  # type: ignore[arg-type]
        assert (bound.value.bound, bound.value.requested) == ("node-a", "node-b")
        with pytest.raises(NodeBindingError):
            a.seal(b"x", **moved)  # type: ignore[arg-type]
        assert a.unseal(blob, **CTX) == b"a's share"  # type: ignore[arg-type]


def test_every_tampered_byte_and_truncation_fails(store: KeyStore) -> None:
    blob = store.seal(b"8 bytes!", **CTX)  # type: ignore[arg-type]
    regions = {"magic": range(0, 3), "version": range(3, 4)}
    regions["nonce"] = range(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES)
    regions["ciphertext"] = range(HEADER_BYTES + NONCE_BYTES, len(blob) - TAG_BYTES)
    regions["tag"] = range(len(blob) - TAG_BYTES, len(blob))
    expected = {"magic": SealCheck.MAGIC, "version": SealCheck.VERSION}
    for region, positions in regions.items():
        assert len(positions) > 0
        for i in positions:
            for bit in range(8):
                bad = bytearray(blob)
                bad[i] ^= 1 << bit
                with pytest.raises(SealedBlobInvalid) as info:
                    store.unseal(bytes(bad), **CTX)  # type: ignore[arg-type]
                assert info.value.check is expected.get(region, SealCheck.AUTHENTICATION), (
                    region,
                    i,
                    bit,
                )
    for size in range(len(blob)):
        with pytest.raises(SealedBlobInvalid) as info:
            store.unseal(blob[:size], **CTX)  # type: ignore[arg-type]
        want = SealCheck.LENGTH if size < MIN_BLOB_BYTES else SealCheck.AUTHENTICATION
        assert info.value.check is want
    with pytest.raises(SealedBlobInvalid):
        store.unseal(blob + b"\x00", **CTX)  # type: ignore[arg-type]
    other = store.seal(b"8 bytes!", **CTX)  # type: ignore[arg-type]
    spliced = blob[:HEADER_BYTES] + other[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    with pytest.raises(SealedBlobInvalid):
        store.unseal(spliced + blob[HEADER_BYTES + NONCE_BYTES :], **CTX)  # type: ignore[arg-type]
    # After hundreds of rejected tags the session still works.
    assert store.unseal(blob, **CTX) == b"8 bytes!"  # type: ignore[arg-type]


def test_seal_rejects_bad_arguments_before_the_token(store: KeyStore) -> None:
    with pytest.raises(SealContextError) as info:
        store.seal("text", **CTX)  # type: ignore[arg-type]
    assert info.value.field == "plaintext"
    with pytest.raises(SealContextError) as info:
        store.seal(b"x", **{**CTX, "share_version": -1})  # type: ignore[arg-type]
    assert info.value.field == "share_version"


# -- opening: module, token, PIN ---------------------------------------------------------


def test_wrong_pin_is_a_login_error_that_never_shows_a_pin(tmp_path: Path) -> None:
    good = make_token(tmp_path)
    wrong_file = tmp_path / "wrong.pin"
    write_pin_file(wrong_file, WRONG_PIN)
    wrong = HsmConfig(token_label=NODE, pin_file=wrong_file, softhsm_conf=good.softhsm_conf)
    with pytest.raises(HsmLoginError) as info:
        KeyStore.open(wrong)
    assert info.value.label == NODE and "incorrect PIN" in str(info.value)
    text = all_text(info.value)
    assert WRONG_PIN not in text and PIN not in text
    with KeyStore.open(good) as ks:  # the failed attempt left no registration behind
        ks.ensure_node_keys(NODE)


def test_missing_token_label(config: HsmConfig) -> None:
    absent = HsmConfig(
        token_label="no-such-token", pin_file=config.pin_file, softhsm_conf=config.softhsm_conf
    )
    with pytest.raises(TokenNotFound) as info:
        KeyStore.open(absent)
    assert info.value.label == "no-such-token"
    assert info.value.available == (NODE,)
    assert "no-such-token" in str(info.value) and NODE in str(info.value)


def test_missing_or_broken_module(tmp_path: Path, config: HsmConfig) -> None:
    for module, fragment in (
        (tmp_path / "absent.so", "no such file"),
        (tmp_path / "garbage.so", "cannot be loaded"),
    ):
        if module.name == "garbage.so":
            module.write_bytes(b"not an ELF library")
        broken = HsmConfig(
            token_label=NODE,
            pin_file=config.pin_file,
            module_path=module,
            softhsm_conf=config.softhsm_conf,
        )
        with pytest.raises(HsmModuleError) as info:
            KeyStore.open(broken)
        assert fragment in str(info.value) and str(module.name) in str(info.value)
    with KeyStore.open(config) as ks:  # the real module is usable again afterwards
        ks.ensure_node_keys(NODE)


def test_missing_or_broken_softhsm_configuration(tmp_path: Path, config: HsmConfig) -> None:
    absent = HsmConfig(token_label=NODE, pin_env="X", softhsm_conf=tmp_path / "absent.conf")
    with pytest.raises(HsmConfigError) as info:
        KeyStore.open(absent)
    assert info.value.field == "softhsm_conf"
    broken_conf = tmp_path / "broken.conf"
    broken_conf.write_text(f"directories.tokendir = {tmp_path}/no-such-dir\n")
    broken = HsmConfig(token_label=NODE, pin_file=config.pin_file, softhsm_conf=broken_conf)
    with pytest.raises(HsmModuleError) as module_info:
        KeyStore.open(broken)
    assert "C_Initialize failed" in str(module_info.value)
    with KeyStore.open(config) as ks:
        ks.ensure_node_keys(NODE)


def test_missing_pin_source_releases_the_token(
    config: HsmConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TESSERA_TEST_PIN", raising=False)
    by_env = HsmConfig(
        token_label=NODE, pin_env="TESSERA_TEST_PIN", softhsm_conf=config.softhsm_conf
    )
    with pytest.raises(HsmConfigError):
        KeyStore.open(by_env)
    assert runtime.open_labels() == ()
    monkeypatch.setenv("TESSERA_TEST_PIN", PIN)
    with KeyStore.open(by_env) as ks:
        assert ks.ensure_node_keys(NODE).node_id == NODE


def test_pin_never_appears_in_errors_reprs_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_token(tmp_path)
    failures: list[BaseException] = []
    wrong_file = tmp_path / "wrong.pin"
    write_pin_file(wrong_file, WRONG_PIN)
    attempts = [
        HsmConfig(token_label=NODE, pin_file=wrong_file, softhsm_conf=config.softhsm_conf),
        HsmConfig(token_label="absent", pin_file=config.pin_file, softhsm_conf=config.softhsm_conf),
    ]
    for attempt in attempts:
        with pytest.raises(HsmError) as info:
            KeyStore.open(attempt)
        failures.append(info.value)
    with pytest.raises(TokenInitError) as init_info:
        make_token(tmp_path)  # same directory again
    failures.append(init_info.value)
    with pytest.raises(HsmConfigError) as short_info:
        init_token(tmp_path / "other", "x", "123", SO_PIN, pin_env="P")
    failures.append(short_info.value)
    with KeyStore.open(config) as ks:
        keys = ks.ensure_node_keys(NODE)
        blob = ks.seal(b"s", **CTX)  # type: ignore[arg-type]
        with pytest.raises(SealedBlobInvalid) as seal_info:
            ks.unseal(blob[:-1] + bytes([blob[-1] ^ 1]), **CTX)  # type: ignore[arg-type]
        failures.append(seal_info.value)
        shown = [repr(ks), repr(config), str(config), repr(keys), str(ks.token_info())]
    shown += [all_text(f) for f in failures]
    shown += [r.getMessage() for r in caplog.records]
    for text in shown:
        for secret in (PIN, WRONG_PIN, SO_PIN):
            assert secret not in text


def test_a_token_opens_once_per_process(config: HsmConfig) -> None:
    with KeyStore.open(config) as first:
        first.ensure_node_keys(NODE)
        with pytest.raises(HsmModuleError, match="already open in this process"):
            KeyStore.open(config)
        assert first.sign_identity(b"still works")


def test_no_switch_to_another_configuration_while_a_token_is_open(tmp_path: Path) -> None:
    config_a = make_token(tmp_path / "a")
    config_b = make_token(tmp_path / "b")
    with KeyStore.open(config_a) as a:
        with pytest.raises(HsmModuleError, match="cannot switch"):
            KeyStore.open(config_b)
        with pytest.raises(TokenInitError, match="open"):
            make_token(tmp_path / "c")
        a.ensure_node_keys(NODE)
    with KeyStore.open(config_b) as b:  # free to switch once nothing is open
        b.ensure_node_keys(NODE)


# -- node keys and their protection -------------------------------------------------------


def test_kek_is_sensitive_and_never_extractable(store: KeyStore) -> None:
    attributes = store.kek_attributes()
    assert attributes["SENSITIVE"] is True and attributes["ALWAYS_SENSITIVE"] is True
    assert attributes["EXTRACTABLE"] is False and attributes["NEVER_EXTRACTABLE"] is True
    assert attributes["PRIVATE"] is True and attributes["TOKEN"] is True
    assert attributes["LOCAL"] is True and attributes["VALUE_LEN"] == 32
    assert attributes["WRAP"] is False and attributes["UNWRAP"] is False
    rows = {(r.label, r.object_class): r for r in store.inventory()}
    kek = rows[(kek_label(NODE), "SECRET_KEY")]
    assert (kek.key_type, kek.sensitive, kek.extractable) == ("AES", True, False)


ATTACK = r"""
import json, os, pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
lib = pkcs11.lib(os.environ["MODULE"])
session = lib.get_token(token_label=os.environ["LABEL"]).open(rw=True, user_pin=os.environ["PIN"])
kek = session.get_key(object_class=ObjectClass.SECRET_KEY, label=os.environ["KEK"])
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "SUCCEEDED"
    except pkcs11.PKCS11Error as exc:
        out[name] = type(exc).__name__ or "PKCS11Error"
attempt("read_value", lambda: kek[Attribute.VALUE])
wrapper = session.generate_key(KeyType.AES, 256, store=False,
    capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP)
attempt("wrap", lambda: wrapper.wrap_key(kek, mechanism=Mechanism.AES_KEY_WRAP_PAD))
def set_attr(attribute, value):
    kek[attribute] = value
attempt("set_extractable", lambda: set_attr(Attribute.EXTRACTABLE, True))
attempt("set_sensitive_false", lambda: set_attr(Attribute.SENSITIVE, False))
attempt("copy_extractable", lambda: kek.copy({Attribute.EXTRACTABLE: True}))
out["still_extractable"] = kek[Attribute.EXTRACTABLE]
session.close()
print(json.dumps(out, default=str))
"""


def test_kek_cannot_be_exported_even_with_the_pin(store: KeyStore) -> None:
    """A second process with the PIN and raw PKCS#11 cannot read, wrap or loosen the KEK."""
    config = store.config
    result = run_child(
        ATTACK,
        MODULE=str(config.module_path),
        LABEL=config.token_label,
        PIN=PIN,
        KEK=kek_label(NODE),
        SOFTHSM2_CONF=str(config.softhsm_conf),
    )
    assert result.pop("still_extractable") is False
    assert "SUCCEEDED" not in result.values(), result
    assert result["read_value"] == "AttributeSensitive"
    assert result["wrap"] == "KeyUnextractable"


PLANT = r"""
import json, os, pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag
lib = pkcs11.lib(os.environ["MODULE"])
session = lib.get_token(token_label=os.environ["LABEL"]).open(rw=True, user_pin=os.environ["PIN"])
caps = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
session.generate_key(KeyType.AES, 256, label="tessera/kek/v1/weak", store=True, capabilities=caps,
    template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
for _ in range(2):
    session.generate_key(KeyType.AES, 256, label="tessera/kek/v1/twice", store=True,
        capabilities=caps, template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
session.create_object({Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY,
    Attribute.KEY_TYPE: KeyType.AES, Attribute.TOKEN: True, Attribute.PRIVATE: True,
    Attribute.LABEL: "tessera/kek/v1/imported", Attribute.VALUE: bytes(32),
    Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
    Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
session.close()
print(json.dumps({"planted": 3}))
"""


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        ("weak", "SENSITIVE is False"),
        ("twice", "2 SECRET_KEY objects"),
        ("imported", "ALWAYS_SENSITIVE is False"),  # a known value, imported
    ],
)
def test_planted_keks_make_the_node_refuse(tmp_path: Path, node: str, fragment: str) -> None:
    config = make_token(tmp_path)
    run_child(
        PLANT,
        MODULE=str(config.module_path),
        LABEL=config.token_label,
        PIN=PIN,
        SOFTHSM2_CONF=str(config.softhsm_conf),
    )
    with KeyStore.open(config) as ks:
        with pytest.raises(KeyPolicyViolation) as info:
            ks.ensure_node_keys(node)
        assert fragment in str(info.value) and info.value.key_label == kek_label(node)
        assert ks.node_id is None  # nothing bound: the node cannot seal
        with pytest.raises(NodeKeysMissing):
            ks.seal(b"x", **{**CTX, "node_id": node})  # type: ignore[arg-type]


def test_node_binding_and_lifecycle_errors(config: HsmConfig) -> None:
    ks = KeyStore.open(config)
    with pytest.raises(NodeKeysMissing):
        ks.seal(b"x", **CTX)  # type: ignore[arg-type]
    with pytest.raises(NodeKeysMissing):
        ks.identity_public_key()
    with pytest.raises(NodeKeysMissing):
        ks.sign_identity(b"m")
    with pytest.raises(NodeKeysMissing) as missing:
        ks.load_node_keys(NODE)  # a restarted node must not silently make new keys
    assert missing.value.node_id == NODE
    keys = ks.ensure_node_keys(NODE)
    assert keys.created_kek and keys.created_identity and ks.node_id == NODE
    with pytest.raises(NodeBindingError):
        ks.ensure_node_keys("node-b")
    with pytest.raises(KeyPolicyViolation, match="existing key is ed25519"):
        ks.ensure_node_keys(NODE, identity_algorithm="p256")
    again = ks.ensure_node_keys(NODE)
    assert not again.created_kek and not again.created_identity
    assert len(ks.inventory()) == 3
    assert ks.node_ids() == [NODE]
    ks.close()
    ks.close()  # idempotent
    assert ks.closed
    with pytest.raises(KeyStoreClosed):
        ks.seal(b"x", **CTX)  # type: ignore[arg-type]
    with pytest.raises(KeyStoreClosed):
        ks.sign_identity(b"m")
    assert runtime.open_labels() == ()


# -- identity keys ------------------------------------------------------------------------


def test_ed25519_identity_signatures_verify_with_cryptography(store: KeyStore) -> None:
    info = store.token_info()
    assert info.ed25519 and info.aes_gcm
    public = store.identity_public_key()
    assert public.algorithm == "ed25519"
    verifier = Ed25519PublicKey.from_public_bytes(public.public_bytes)
    for _ in range(20):
        message = secrets.token_bytes(secrets.randbelow(200))
        signature = store.sign_identity(message)
        verifier.verify(signature, message)  # raises InvalidSignature on failure
        assert verify_identity(public, message, signature)
        assert not verify_identity(public, message + b"!", signature)


def test_p256_identity_signatures_are_low_s_and_verify_with_cryptography(tmp_path: Path) -> None:
    config = make_token(tmp_path)
    with KeyStore.open(config) as ks:
        keys = ks.ensure_node_keys(NODE, identity_algorithm="p256")
        public = keys.identity
        assert public.algorithm == "p256" and ks.identity_public_key() == public
        verifier = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public.public_bytes)
        for i in range(60):
            message = f"message {i}".encode()
            signature = ks.sign_identity(message)
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            assert s <= P256_HALF_ORDER
            verifier.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
            assert verify_identity(public, message, signature)
    with KeyStore.open(config) as ks:  # the algorithm is the stored key's, not re-probed
        assert ks.load_node_keys(NODE).identity == public


# -- persistence --------------------------------------------------------------------------


def test_keys_persist_across_reopen(config: HsmConfig) -> None:
    with KeyStore.open(config) as ks:
        first = ks.ensure_node_keys(NODE)
        blob = ks.seal(b"long-lived share", **CTX)  # type: ignore[arg-type]
        objects = ks.inventory()
    with KeyStore.open(config) as ks:
        again = ks.load_node_keys(NODE)
        assert again.identity == first.identity
        assert not again.created_kek and not again.created_identity
        assert ks.unseal(blob, **CTX) == b"long-lived share"  # type: ignore[arg-type]
        assert ks.inventory() == objects


RESTART = r"""
import json, os
from pathlib import Path
from hsm.config import HsmConfig
from hsm.keystore import KeyStore
config = HsmConfig.load(Path(os.environ["CONFIG"]))
with KeyStore.open(config) as ks:
    keys = ks.load_node_keys("node-a")
    plain = ks.unseal(bytes.fromhex(os.environ["BLOB"]), node_id="node-a", key_id="wallet-1",
                      share_version=1, purpose="share")
    sig = ks.sign_identity(b"after restart")
print(json.dumps({"plain": plain.hex(), "sig": sig.hex(), "identity": keys.identity.to_dict()}))
"""


def test_another_process_opens_the_same_keys(config: HsmConfig, tmp_path: Path) -> None:
    """A node restart: a new process with the saved config unseals and signs as before."""
    with KeyStore.open(config) as ks:
        identity = ks.ensure_node_keys(NODE).identity
        blob = ks.seal(b"restart me", **CTX)  # type: ignore[arg-type]
    path = tmp_path / CONFIG_FILE_NAME
    config.save(path)
    result = run_child(RESTART, CONFIG=str(path), BLOB=blob.hex())
    assert bytes.fromhex(str(result["plain"])) == b"restart me"
    assert result["identity"] == identity.to_dict()
    assert verify_identity(identity, b"after restart", bytes.fromhex(str(result["sig"])))


# -- threads and recovery -----------------------------------------------------------------


def test_many_threads_share_one_store(store: KeyStore) -> None:
    threads, rounds = 8, 25
    public = store.identity_public_key()
    before = store.inventory()
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                ctx = {**CTX, "key_id": f"w{worker}-{i}", "share_version": i}
                plaintext = secrets.token_bytes(1 + (worker * 37 + i) % 300)
                blob = store.seal(plaintext, **ctx)  # type: ignore[arg-type]
                if store.unseal(blob, **ctx) != plaintext:  # type: ignore[arg-type]
                    raise AssertionError(f"worker {worker} round {i}: wrong plaintext")
                message = f"{worker}/{i}".encode()
                if not verify_identity(public, message, store.sign_identity(message)):
                    raise AssertionError(f"worker {worker} round {i}: bad signature")
                if i % 10 == 0:
                    store.inventory()
        except BaseException as exc:  # reported below, with the worker's traceback
            failures.append(exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert failures == []
    assert store.inventory() == before  # no half-written debris in the token


def test_lost_session_is_recovered_by_logging_in_again(store: KeyStore) -> None:
    blob = store.seal(b"before", **CTX)  # type: ignore[arg-type]
    with runtime.PKCS11_LOCK:
        store._session.close()  # logs the whole process out, as a token reset would
    assert store.unseal(blob, **CTX) == b"before"  # type: ignore[arg-type]
    assert verify_identity(store.identity_public_key(), b"m", store.sign_identity(b"m"))
    # When logging in again is impossible (the PIN file is gone) the store says so clearly.
    assert store.config.pin_file is not None
    store.config.pin_file.unlink()
    with runtime.PKCS11_LOCK:
        store._session.close()
    with pytest.raises(HsmSessionLost) as info:
        store.seal(b"after", **CTX)  # type: ignore[arg-type]
    assert "pin_file" in str(info.value) and info.value.operation == "seal"


# -- token set-up -------------------------------------------------------------------------


def test_init_token_layout_and_refusals(tmp_path: Path) -> None:
    config = make_token(tmp_path)
    directory = tmp_path / "hsm"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "tokens").stat().st_mode) == 0o700
    assert config.softhsm_conf == (directory / "softhsm2.conf").resolve()
    assert f"directories.tokendir = {(directory / 'tokens').resolve()}" in (
        config.softhsm_conf.read_text().splitlines()
    )
    with pytest.raises(TokenInitError, match="already holds"):
        make_token(tmp_path)
    with pytest.raises(TokenInitError, match="already exists"):
        init_token(directory, NODE, PIN, SO_PIN, pin_env="P", allow_existing=True)
    with pytest.raises(HsmConfigError):
        init_token(tmp_path / "new", "n", "abc", SO_PIN, pin_env="P")
    with pytest.raises(HsmConfigError):
        init_token(tmp_path / "new", "n", PIN, SO_PIN)  # no PIN source for the node
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(TokenInitError, match="not a directory"):
        init_token(tmp_path / "file", "n", PIN, SO_PIN, pin_env="P")
    with KeyStore.open(config) as ks:  # the token survived the refused attempts
        ks.ensure_node_keys(NODE)


def _wrapper(tmp_path: Path, body: str) -> Path:
    real = "/usr/bin/softhsm2-util"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "softhsm2-util"
    script.write_text(f"#!/bin/bash\nREAL={real}\n{body}\n")
    script.chmod(0o755)
    return bin_dir


def test_real_pins_never_reach_a_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "argv.log"
    bin_dir = _wrapper(tmp_path, f'printf "%s\\n" "$*" >> {log}\nexec "$REAL" "$@"')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = make_token(tmp_path)
    argv = log.read_text()
    assert "--init-token" in argv
    assert PIN not in argv and SO_PIN not in argv
    with KeyStore.open(config) as ks:  # and the real PIN is the one that logs in
        ks.ensure_node_keys(NODE)


def test_failed_pin_setup_leaves_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This softhsm2-util sets another SO PIN than asked, so the PIN hand-over must fail.
    body = (
        'args=()\nwhile [ $# -gt 0 ]; do\n  if [ "$1" = "--so-pin" ]; then '
        'args+=("--so-pin" "not-the-one-time-pin"); shift 2\n  else args+=("$1"); shift; fi\n'
        'done\nexec "$REAL" "${args[@]}"'
    )
    bin_dir = _wrapper(tmp_path, body)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(TokenInitError, match="token removed"):
        make_token(tmp_path)
    monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])
    config = make_token(tmp_path, allow_existing=True)  # the label is free again
    with KeyStore.open(config) as ks:
        assert ks.ensure_node_keys(NODE).created_kek


# -- call latency (hsm/metrics.py) ----------------------------------------------------------


def test_every_token_call_is_timed_by_operation_into_an_unregistered_histogram(
    config: HsmConfig,
) -> None:
    metrics = HsmMetrics()
    with KeyStore.open(config, metrics) as ks:
        assert ks.metrics is metrics
        ks.ensure_node_keys(NODE)
        blob = ks.seal(b"timed", **CTX)  # type: ignore[arg-type]
        ks.unseal(blob, **CTX)  # type: ignore[arg-type]
        ks.sign_identity(b"timed")
        with pytest.raises(SealedBlobInvalid):  # a failing call is a call the node waited for
            ks.unseal(blob[:-1] + bytes([blob[-1] ^ 1]), **CTX)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    metrics.register(registry)
    metrics.register(registry)  # idempotent per registry
    counts = {
        s.labels["operation"]: s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "tessera_hsm_call_seconds_count"
    }
    assert counts == {"login": 1, "node_keys": 1, "seal": 1, "unseal": 2, "sign": 1}
    text = generate_latest(registry).decode()
    assert NODE not in text and "wallet" not in text  # operation names only, never a context
    # never the global default registry: keystores of several in-process nodes cannot collide
    assert (
        REGISTRY.get_sample_value("tessera_hsm_call_seconds_count", {"operation": "seal"}) is None
    )
    with KeyStore.open(config) as other:
        assert other.metrics is not metrics  # each store has its own by default
