"""Security-officer keys inside a PKCS#11 token: the alternative to an encrypted key file
(`policies.keys`).  The private key is generated in the token, sensitive and never extractable
(same protection as a node identity key); signatures are made in the token.

An officer keeps a small *reference file* instead of a key file:

    {"format": "tessera-officer-token/1", "officer_id": "alice", "algorithm": "ed25519",
     "public_key": "<hex>", "hsm_config": "/path/to/tessera-hsm.json"}

Opening it logs in to the token (PIN from the file or environment variable the token's config
names) and checks that the key found there is the one recorded — a swapped token or edited
file is refused.  `TokenOfficerSigner` satisfies `policies.keys.OfficerSigner`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from hsm.config import HsmConfig
from hsm.errors import HsmConfigError
from hsm.identity import IdentityAlgorithm, IdentityPublicKey
from hsm.keystore import KeyStore

OFFICER_REFERENCE_FORMAT = "tessera-officer-token/1"


class TokenOfficerSigner:
    """Signs for one officer with a key held in a token.  Each signature logs in, signs and
    logs out again, so no token stays open between an officer's (rare) actions."""

    def __init__(self, config: HsmConfig, officer_id: str, public: IdentityPublicKey) -> None:
        self._config = config
        self._officer_id = officer_id
        self._public = public

    @property
    def officer_id(self) -> str:
        return self._officer_id

    @property
    def algorithm(self) -> IdentityAlgorithm:
        return self._public.algorithm

    @property
    def public_key_hex(self) -> str:
        return self._public.public_bytes.hex()

    def sign(self, message: bytes) -> bytes:
        with KeyStore.open(self._config) as keystore:
            if keystore.officer_key(self._officer_id) != self._public:
                raise HsmConfigError(
                    self._config.token_label, f"the officer key of {self._officer_id!r} changed"
                )
            return keystore.sign_officer(self._officer_id, message)


def create_token_officer(
    hsm_config: Path,
    officer_id: str,
    reference: Path,
    algorithm: IdentityAlgorithm | Literal["auto"] = "auto",
) -> TokenOfficerSigner:
    """Generate the officer's key in the token and write the reference file (mode 0600,
    never over an existing file)."""
    if reference.exists():
        raise HsmConfigError(str(reference), "already exists; refusing to overwrite")
    config = HsmConfig.load(hsm_config)
    with KeyStore.open(config) as keystore:
        public = keystore.officer_key(officer_id, create=True, algorithm=algorithm)
    signer = TokenOfficerSigner(config, officer_id, public)
    doc = {
        "format": OFFICER_REFERENCE_FORMAT,
        "officer_id": officer_id,
        "algorithm": signer.algorithm,
        "public_key": signer.public_key_hex,
        "hsm_config": str(hsm_config.resolve()),
    }
    try:
        fd = os.open(reference, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise HsmConfigError(str(reference), f"cannot create the reference file: {exc}") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(doc, indent=2) + "\n")
    return signer


def is_token_reference(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == OFFICER_REFERENCE_FORMAT


def open_token_officer(reference: Path) -> TokenOfficerSigner:
    """Log in to the token a reference file names and check the recorded key is there."""
    try:
        doc = json.loads(reference.read_text())
        officer_id = str(doc["officer_id"])
        recorded = (str(doc["algorithm"]), str(doc["public_key"]))
        config = Path(str(doc["hsm_config"]))
        if doc.get("format") != OFFICER_REFERENCE_FORMAT:
            raise ValueError(f"format is not {OFFICER_REFERENCE_FORMAT}")
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise HsmConfigError(str(reference), f"not an officer token reference: {exc}") from exc
    hsm = HsmConfig.load(config)
    with KeyStore.open(hsm) as keystore:
        public = keystore.officer_key(officer_id)
    if (public.algorithm, public.public_bytes.hex()) != recorded:
        raise HsmConfigError(
            str(reference), f"the token's key for {officer_id!r} is not the recorded one"
        )
    return TokenOfficerSigner(hsm, officer_id, public)
