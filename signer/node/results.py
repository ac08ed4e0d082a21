"""Durable session results: each finished protocol's output is stored *before* its session
reports "done" — key shares, aux-info secrets and presignatures sealed by the node's HSM.

A re-share or refresh stores its output as a *pending* key version: the old one stays active
until every member of the new committee confirms storing its share (signer/node/versions.py,
signer/node/confirmation.py).  A store that refuses the output (the key version was replaced
meanwhile) is a `NodeError`, and nothing is stored.
"""

from __future__ import annotations

import time

from signer.node import codec
from signer.node.api import (
    AuxResult,
    KeyResult,
    PresignResult,
    ReshareReport,
    SessionResult,
    join_indices,
    join_path,
)
from signer.node.errors import NodeError
from signer.node.policy_tables import KeyBindingRow
from signer.node.spec import SessionSpec
from signer.node.state import NodeState
from signer.node.store import PresignatureRow, StoreError
from signer.problems import ErrorCode
from signer.protocol.aux_info import AuxInfo
from signer.protocol.keygen import KeyPublic, KeyShare
from signer.protocol.presign import Presignature
from signer.protocol.reshare import ReshareResult


class Results:
    """Stores the outputs of keygen, aux-info, presign and re-share sessions."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    def keygen(self, share: KeyShare, binding: KeyBindingRow) -> SessionResult:
        """The new key and its wallet binding, in one transaction (key_gate.py)."""
        public = share.public_data()
        encoded = codec.encode_key_public(public)
        secret = codec.encode_share_secret(share)
        sealed = self.state.seal(secret, share.key_id.hex(), share.epoch, "key_share")
        try:
            self.state.store.put_key_version(
                share.key_id.hex(), share.epoch, encoded, sealed, binding=binding
            )
        except StoreError as exc:
            raise NodeError(ErrorCode.WALLET_BOUND, str(exc), check="wallet") from exc
        return key_result(public, encoded)

    def aux(self, aux: AuxInfo) -> SessionResult:
        aux_id = aux.aux_id()
        sealed = self.state.seal(aux.own.to_bytes(), aux_id.hex(), 0, "aux_info")
        self.state.store.put_aux(aux_id.hex(), aux.parties, codec.encode_aux_public(aux), sealed)
        return AuxResult(aux_id=aux_id.hex(), parties=list(aux.parties))

    def presign(self, presignature: Presignature, spec: SessionSpec, epoch: int) -> SessionResult:
        """Stored under the epoch of the share the session started with, never the epoch active
        at the end: a re-share activated meanwhile must not relabel an old-share presignature
        as the new version's (its partials would then fail and blame an honest node)."""
        public = presignature.public
        encoded = codec.encode_presignature_public(public)
        pid = public.presignature_id.hex()
        sealed = self.state.seal(
            codec.take_presignature_secret(presignature), pid, epoch, "presignature"
        )
        row = PresignatureRow(
            presignature_id=pid,
            key_id=spec.key_id.hex(),
            epoch=epoch,
            signers=join_indices(public.signers),
            path=join_path(public.derivation.path),
            aux_id=spec.aux_id.hex(),
            public=encoded,
            sealed_secret=sealed,
            state="available",
            created_at=time.time(),
        )
        try:
            self.state.store.put_presignature(row)  # refused unless that version is still active
        except StoreError as exc:
            raise NodeError(
                ErrorCode.STALE_PRESIGNATURE,
                f"key version {epoch} was replaced while this presign ran; nothing stored",
            ) from exc
        return PresignResult(presignature_id=pid, public=encoded.hex(), epoch=epoch)

    def reshare(self, result: ReshareResult, binding: KeyBindingRow | None) -> SessionResult:
        """The new version is stored *pending*: the old one stays active and usable until every
        member of the new committee has confirmed storing its share (`activate`).  A relay that
        withheld the last echo from some parties can make only some of them finish; erasing
        the old share here would then lose the key (signer/node/confirmation.py)."""
        key = result.key
        encoded = codec.encode_key_public(key)
        sealed = None
        if result.share is not None:
            secret = codec.encode_share_secret(result.share)
            sealed = self.state.seal(secret, key.key_id.hex(), key.epoch, "key_share")
        try:
            self.state.store.put_pending_version(
                key.key_id.hex(), key.epoch, encoded, sealed, binding=binding
            )
        except StoreError as exc:  # (the in-flight rule makes this unreachable by a relay)
            raise NodeError(ErrorCode.STALE_PLAN, str(exc)) from exc
        return ReshareReport(
            key_id=key.key_id.hex(),
            epoch=key.epoch,
            public_key=key.public_key.to_bytes().hex(),
            key_public=encoded.hex(),
            member=result.share is not None,
            state="pending",
            fingerprint=key.fingerprint().hex(),
        )


def key_result(public: KeyPublic, encoded: bytes) -> KeyResult:
    return KeyResult(
        key_id=public.key_id.hex(),
        epoch=public.epoch,
        public_key=public.public_key.to_bytes().hex(),
        key_public=encoded.hex(),
    )
