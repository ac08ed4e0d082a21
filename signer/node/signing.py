"""The one-round signing path: a partial signature with a named presignature.

The presignature is consumed durably *before* the partial signature is computed
(`store.consume_presignature`), so a crash at any point can lose a presignature but never
reuse one (attacks.md A11: a reused nonce gives the key away); a presignature is only usable
for its key version, signer set and path, and not with a quarantined party (A03).
"""

from __future__ import annotations

from signer.node import codec
from signer.node.api import SignReply
from signer.node.errors import NodeError
from signer.node.faults import failpoint
from signer.node.quarantine import Quarantine
from signer.node.state import NodeState
from signer.node.store import StoreError
from signer.problems import ErrorCode
from signer.protocol.sign import HashScheme, issue_partial


class Signing:
    """Issues this node's partial signatures."""

    def __init__(self, state: NodeState, quarantine: Quarantine) -> None:
        self.state = state
        self.quarantine = quarantine

    def sign(
        self, key_id: bytes, presignature_id: bytes, message: bytes, scheme: HashScheme
    ) -> SignReply:
        """This node's partial signature on `message` with one of its presignatures."""
        store = self.state.store
        pid = presignature_id.hex()
        row = store.presignature(pid)
        if row is None or row.key_id != key_id.hex():
            raise NodeError(
                ErrorCode.UNKNOWN_PRESIGNATURE, f"no presignature {pid[:16]} for this key"
            )
        key_row = self.state.active_key(key_id)
        if row.epoch != key_row.epoch:
            raise NodeError(ErrorCode.STALE_PRESIGNATURE, "made for an older key version")
        public = codec.decode_presignature_public(
            row.public, codec.decode_key_public(key_row.public)
        )
        self.quarantine.refuse(public.signers)
        failpoint("sign.before_consume")
        try:
            consumed = store.consume_presignature(pid)  # durable before anything leaves
        except StoreError as exc:
            raise NodeError(ErrorCode.PRESIGNATURE_USED, str(exc)) from exc
        failpoint("sign.after_consume")
        secret = self.state.unseal(consumed.sealed_secret, pid, consumed.epoch, "presignature")
        presignature = codec.presignature(public, secret)
        partial = issue_partial(presignature, message, scheme)
        failpoint("sign.after_partial")
        return SignReply(index=self.state.index, presignature_id=pid, partial=f"{partial:064x}")
