"""The sessions the coordinator asks the nodes to run, each built in one place as a
`signer.node.spec.SessionSpec` (the node validates the same type at its door), and the names of
the coordinator's operations as they appear in the blame log and the quarantine mirror."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from coordinator.store import WalletRow
from policies.governance import GovernanceSignature, key_plan_statement
from signer.node import codec
from signer.node.api import AUX_KEY_ID, SessionProtocol
from signer.node.spec import SessionSpec

#: Threshold of an aux-info session: aux-info has no threshold of its own (it is per party), but
#: the spec's field must be a valid one for any committee (≥ 2 parties).
AUX_INFO_THRESHOLD = 2


class Operation(StrEnum):
    """What the coordinator was doing when a session failed (blame log, quarantine mirror)."""

    AUX_INFO = "aux-info"
    KEYGEN = "keygen"
    PRESIGN = "presign"
    PRESIGN_IDENTIFY = "presign-identify"
    SIGN = "sign"
    REFRESH = "refresh"
    RESHARE = "re-share"


def new_request_id() -> bytes:
    """A fresh request id: what makes two sessions with the same inputs distinct."""
    return secrets.token_bytes(16)


def aux_info_spec(committee: tuple[int, ...], replaces: str | None = None) -> SessionSpec:
    """Fresh aux-info for `committee`; `replaces`: the aux-info whose moduli must not return."""
    return SessionSpec(
        protocol=SessionProtocol.AUX_INFO,
        request=new_request_id(),
        parties=committee,
        threshold=AUX_INFO_THRESHOLD,
        key_id=AUX_KEY_ID,
        aux_id=bytes.fromhex(replaces) if replaces else b"",
    )


def keygen_spec(
    committee: tuple[int, ...], threshold: int, key_id: bytes, wallet: str | None = None
) -> SessionSpec:
    """A t-of-n DKG of a new key `key_id` among `committee` for policy wallet `wallet` (None:
    a raw key, on a `--raw-keys` cluster only)."""
    return SessionSpec(
        protocol=SessionProtocol.KEYGEN,
        request=new_request_id(),
        parties=committee,
        threshold=threshold,
        key_id=key_id,
        wallet=wallet or "",
    )


def presign_spec(
    wallet: WalletRow, signers: tuple[int, ...], path: Sequence[int] = ()
) -> SessionSpec:
    """A presign among `signers` for the BIP32 `path` (fixed at presign)."""
    return SessionSpec(
        protocol=SessionProtocol.PRESIGN,
        request=new_request_id(),
        parties=tuple(signers),
        threshold=wallet.threshold,
        key_id=bytes.fromhex(wallet.key_id),
        aux_id=bytes.fromhex(wallet.aux_id),
        path=tuple(path),
    )


def identify_spec(failed: SessionSpec, request: str) -> SessionSpec:
    """Presign identification among the signers of the failed presign `failed`; `request` is the
    identification id every signer's abort report named (and awaits)."""
    return SessionSpec(
        protocol=SessionProtocol.PRESIGN_IDENTIFY,
        request=bytes.fromhex(request),
        parties=failed.parties,
        threshold=len(failed.parties),
        key_id=failed.key_id,
    )


def reshare_spec(
    wallet: WalletRow,
    dealers: tuple[int, ...],
    committee: tuple[int, ...],
    threshold: int,
    *,
    refresh: bool,
    authorization: Sequence[GovernanceSignature] = (),
) -> SessionSpec:
    """A re-share of the wallet's current version (a refresh when `refresh`: same committee,
    same t) from `dealers` to `committee` with threshold t′; a policy wallet's plan carries
    the officers' signatures over it (`plan_statement`)."""
    return SessionSpec(
        protocol=SessionProtocol.REFRESH if refresh else SessionProtocol.RESHARE,
        request=new_request_id(),
        parties=tuple(sorted(set(dealers) | set(committee))),
        threshold=threshold,
        key_id=bytes.fromhex(wallet.key_id),
        plan_old=wallet.key_public,
        dealers=tuple(dealers),
        new_parties=tuple(committee),
        wallet=wallet.policy_wallet or "",
        authorization=tuple(authorization),
    )


def plan_statement(
    wallet: WalletRow,
    dealers: tuple[int, ...],
    committee: tuple[int, ...],
    threshold: int,
    *,
    refresh: bool,
    policy_hash: str,
) -> dict[str, Any]:
    """What the officers sign to authorise `reshare_spec(wallet, dealers, committee, …)`."""
    key = codec.decode_key_public(wallet.key_public)
    return key_plan_statement(
        key_id=wallet.key_id,
        epoch=key.epoch,
        protocol=str(SessionProtocol.REFRESH if refresh else SessionProtocol.RESHARE),
        old_parties=key.parties,
        dealers=dealers,
        new_parties=committee,
        threshold=threshold,
        wallet=wallet.policy_wallet or "",
        policy_hash=policy_hash,
    )
