"""Key versions on a node: storage confirmations and activation (signer/node/confirmation.py).

A re-share or refresh leaves a *pending* version (signer/node/results.py).  `confirm` is this
node's signed statement that it durably stored its share of it; `activate` makes it active
given a complete, valid set of such statements — one from every member of its committee — in
one transaction (old share erased, old presignatures revoked).  A relay that withheld the last
echo from some parties therefore cannot make the key be lost (attacks.md A12).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from signer.curve import Point
from signer.node import codec
from signer.node.confirmation import (
    ActivationReply,
    ConfirmationRejected,
    KeyConfirmation,
    KeyVersionState,
    check_set,
)
from signer.node.envelope import Endpoint
from signer.node.errors import NodeError
from signer.node.state import NodeState
from signer.node.store import KeyConfirmationRow, KeyVersionRow, StoreError
from signer.problems import ErrorCode
from signer.protocol.keygen import KeyPublic


class KeyVersions:
    """Confirmation, activation and listing of a node's key versions."""

    def __init__(self, state: NodeState, endpoint: Endpoint) -> None:
        self.state = state
        self.endpoint = endpoint

    @property
    def _cluster(self) -> bytes:
        return self.endpoint.roster.cluster_id

    def _version(self, key_id: bytes, epoch: int) -> tuple[KeyVersionRow, KeyPublic]:
        row = self.state.store.key_version(key_id.hex(), epoch)
        if row is None or row.state == "retired":
            state = "unknown" if row is None else row.state
            raise NodeError(
                ErrorCode.NO_PENDING_VERSION,
                f"key {key_id.hex()[:16]} epoch {epoch} is {state} on this node",
            )
        return row, codec.decode_key_public(row.public)

    def confirm(self, key_id: bytes, epoch: int) -> KeyConfirmation:
        """This node's signed statement that it durably stored its share of its pending version
        (key, epoch).  The share is read back from the database and checked against its public
        share first, so the statement is about what is on disk.  At most one version per
        (key, epoch) is ever confirmed: the statement is recorded before it is returned, and
        asking again returns the same one (also once the version is active)."""
        index, store = self.state.index, self.state.store
        row, public = self._version(key_id, epoch)
        if index not in public.parties or row.sealed_share is None:
            raise NodeError(
                ErrorCode.NOT_A_PARTY, "only a member of the new committee confirms its share"
            )
        if row.state == "active":
            mine = store.confirmation(key_id.hex(), epoch, index)
            if mine is None or mine.fingerprint != public.fingerprint().hex():
                raise NodeError(ErrorCode.NO_PENDING_VERSION, "active without a confirmation")
            return self._statement(mine)
        secret = self.state.unseal(row.sealed_share, key_id.hex(), epoch, "key_share")
        share = codec.key_share(public, secret)
        if share.index != index or Point.base_mul(share.secret_share) != public.public_share(index):
            raise NodeError(ErrorCode.CORRUPT, "stored pending share does not match its version")
        statement = KeyConfirmation.issue(self.endpoint.signer, self._cluster, index, public)
        record = KeyConfirmationRow(
            key_id=key_id.hex(),
            epoch=epoch,
            signer=index,
            fingerprint=statement.fingerprint.hex(),
            signature=statement.signature,
            origin="signed",
            created_at=time.time(),
        )
        try:
            recorded = store.record_own_confirmation(record, row.public)
        except StoreError as exc:
            code = (
                ErrorCode.CONFIRMATION_CONFLICT
                if "another version" in exc.detail
                else ErrorCode.NO_PENDING_VERSION
            )
            raise NodeError(code, str(exc)) from exc
        return self._statement(recorded)

    def _statement(self, row: KeyConfirmationRow) -> KeyConfirmation:
        return KeyConfirmation(
            self._cluster,
            bytes.fromhex(row.key_id),
            row.epoch,
            bytes.fromhex(row.fingerprint),
            row.signer,
            row.signature,
        )

    def activate(
        self, key_id: bytes, epoch: int, statements: Sequence[KeyConfirmation]
    ) -> ActivationReply:
        """Activate the pending version (key, epoch) given a complete, valid set of storage
        confirmations — one from every member of its committee, for exactly its fingerprint —
        in one transaction: old share erased, old presignatures revoked.  A repeated delivery
        of a valid set for the already active version changes nothing."""
        row, public = self._version(key_id, epoch)
        try:
            check_set(statements, public, self.endpoint.roster)
        except ConfirmationRejected as exc:
            raise NodeError(
                ErrorCode.CONFIRMATION_REJECTED, str(exc), culprit=exc.sender, check=exc.check
            ) from exc
        received = [
            KeyConfirmationRow(
                key_id=key_id.hex(),
                epoch=epoch,
                signer=s.signer,
                fingerprint=s.fingerprint.hex(),
                signature=s.signature,
                origin="received",
                created_at=time.time(),
            )
            for s in statements
        ]
        try:
            activated = self.state.store.activate_pending(key_id.hex(), epoch, row.public, received)
        except StoreError as exc:
            raise NodeError(ErrorCode.NO_PENDING_VERSION, str(exc)) from exc
        return ActivationReply(
            key_id=key_id.hex(),
            epoch=epoch,
            state="active",
            activated=activated,
            fingerprint=public.fingerprint().hex(),
        )

    def versions(self, key_id: bytes) -> list[KeyVersionState]:
        """Every version of the key this node knows, with its state (public data only)."""
        out = []
        for row in self.state.store.key_versions(key_id.hex()):
            public = codec.decode_key_public(row.public)
            out.append(
                KeyVersionState(
                    epoch=row.epoch,
                    state=row.state,
                    fingerprint=public.fingerprint().hex(),
                    parties=list(public.parties),
                    threshold=public.threshold,
                    share=row.sealed_share is not None,
                    key_public=row.public.hex(),
                )
            )
        return out
