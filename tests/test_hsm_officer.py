"""Officer keys inside a PKCS#11 token (hsm/officer.py): generated non-extractable in the token,
used by the officer CLI through a reference file, accepted by governance like a key file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from test_policy_cli import OFFICERS, Env

from hsm.config import HsmConfig
from hsm.errors import HsmConfigError
from hsm.officer import create_token_officer, open_token_officer
from hsm.softhsm import init_token
from policies.cli import officer_app, policy_app
from policies.keys import verify_signature

PIN = "Officer-Pin-5b21"


def officer_token(tmp_path: Path) -> Path:
    pin_file = tmp_path / "officer.pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    config = init_token(
        tmp_path / "token", "officer-token", PIN, "Officer-So-77", pin_file=pin_file
    )
    path = tmp_path / "tessera-hsm.json"
    config.save(path)
    return path


@pytest.mark.parametrize("algorithm", ["ed25519", "p256"])
def test_token_officer_key_signs_and_is_pinned_by_its_reference(
    tmp_path: Path, algorithm: str
) -> None:
    config = officer_token(tmp_path)
    reference = tmp_path / "alice.ref"
    signer = create_token_officer(config, "alice", reference, algorithm)  # type: ignore[arg-type]
    assert signer.algorithm == algorithm
    assert stat.S_IMODE(reference.stat().st_mode) == 0o600
    doc = json.loads(reference.read_text())
    assert "private" not in json.dumps(doc) and doc["public_key"] == signer.public_key_hex
    message = b"policy version 7"
    signature = signer.sign(message)
    assert verify_signature(algorithm, signer.public_key_hex, message, signature)
    assert not verify_signature(algorithm, signer.public_key_hex, b"other", signature)
    reopened = open_token_officer(reference)
    assert reopened.public_key_hex == signer.public_key_hex
    assert verify_signature(algorithm, signer.public_key_hex, message, reopened.sign(message))
    with pytest.raises(HsmConfigError):  # never over an existing reference
        create_token_officer(config, "alice", reference)
    forged = {**doc, "public_key": "02" + "11" * 32 if algorithm == "p256" else "11" * 32}
    edited = tmp_path / "edited.ref"
    edited.write_text(json.dumps(forged))
    with pytest.raises(HsmConfigError, match="not the recorded one"):
        open_token_officer(edited)
    assert HsmConfig.load(config).token_label == "officer-token"


def test_token_officer_votes_in_the_cli_workflow(tmp_path: Path) -> None:
    """alice's key lives in a token; her vote counts towards activation like a file key's."""
    e = Env(tmp_path)
    for name, algorithm in OFFICERS:
        if name != "alice":
            e.add_key(name, algorithm)
    created = e.ok_json(
        officer_app,
        "create-key",
        "--id",
        "alice",
        "--token-config",
        officer_token(tmp_path),
        "--out",
        tmp_path / "alice.ref",
    )
    e.keys["alice"] = tmp_path / "alice.ref"
    e.public["alice"] = {k: created[k] for k in ("id", "algorithm", "public_key")}
    e.ok_json(policy_app, "propose", e.policy_file())
    for name in ("alice", "dave", "erin"):
        e.ok_json(officer_app, "approve-policy", "--key", e.keys[name])
    activated = e.ok_json(policy_app, "activate")
    assert activated["signed_by"] == ["alice", "dave", "erin"]
