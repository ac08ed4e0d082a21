"""What a node holds, read back: its HSM-sealed secrets and the public records next to them.

`NodeState` is the one place that seals and unseals (AAD: node id, key or object id, version,
purpose — `hsm.sealing`) and turns stored rows into the protocol's objects: the active key
share, aux-info secrets, the moduli an aux-info refresh replaces.  Everything a session or a
signature needs from disk comes through here, so a stored record that does not match what it
claims to be (another party's share, an aux-info under the wrong id) is refused as CORRUPT in
one place.
"""

from __future__ import annotations

from typing import Protocol

from signer.node import codec
from signer.node.errors import NodeError
from signer.node.store import KeyVersionRow, NodeStore, StoreError
from signer.problems import ErrorCode
from signer.protocol.aux_info import AuxInfo
from signer.protocol.keygen import KeyPublic, KeyShare


class Sealer(Protocol):
    """The HSM operations a node needs (hsm.keystore.KeyStore satisfies it)."""

    def seal(
        self, plaintext: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes: ...

    def unseal(
        self, blob: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes: ...


class NodeState:
    """A node's sealed state in its store, opened through its HSM."""

    def __init__(self, node_id: str, index: int, store: NodeStore, sealer: Sealer) -> None:
        self.node_id = node_id
        self.index = index
        self.store = store
        self.sealer = sealer

    # --- sealing -------------------------------------------------------------------------------
    def seal(self, data: bytes, ref: str, version: int, purpose: str) -> bytes:
        return self.sealer.seal(
            data, node_id=self.node_id, key_id=ref, share_version=version, purpose=purpose
        )

    def unseal(self, blob: bytes, ref: str, version: int, purpose: str) -> bytes:
        return self.sealer.unseal(
            blob, node_id=self.node_id, key_id=ref, share_version=version, purpose=purpose
        )

    # --- loading state -------------------------------------------------------------------------
    def key_share(self, key_id: bytes) -> KeyShare:
        row = self.active_key(key_id)
        if row.sealed_share is None:
            raise NodeError(
                ErrorCode.NO_SHARE, f"this node holds no share of key {key_id.hex()[:16]}"
            )
        public = codec.decode_key_public(row.public)
        secret = self.unseal(row.sealed_share, key_id.hex(), row.epoch, "key_share")
        share = codec.key_share(public, secret)
        if share.index != self.index:
            raise NodeError(ErrorCode.CORRUPT, "stored share belongs to another party index")
        return share

    def active_key(self, key_id: bytes) -> KeyVersionRow:
        try:
            return self.store.active_key(key_id.hex())
        except StoreError as exc:
            raise NodeError(ErrorCode.UNKNOWN_KEY, str(exc)) from exc

    def active_public(self, key_id: bytes) -> KeyPublic | None:
        try:
            row = self.store.active_key(key_id.hex())
        except StoreError:
            return None
        return codec.decode_key_public(row.public)

    def aux_info(self, aux_id: bytes) -> AuxInfo:
        row = self.store.aux(aux_id.hex())
        secret = self.unseal(row.sealed_secret, aux_id.hex(), 0, "aux_info")
        aux = codec.aux_info(row.public, self.index, secret)
        if aux.aux_id() != aux_id:
            raise NodeError(
                ErrorCode.CORRUPT, f"aux-info record {aux_id.hex()[:16]} does not match its id"
            )
        return aux

    def replaced_moduli(self, aux_id: bytes) -> frozenset[int]:
        """The Paillier moduli of the aux-info that an aux_info/v1 session replaces (its spec's
        `aux_id`, set for refresh and re-share): none of them may come back, neither a peer's
        nor our own (AuxInfoParty, issue 9 item 4).  A node without that record (a new
        committee member) has nothing to compare; the members that hold it check."""
        if not aux_id:
            return frozenset()
        try:
            row = self.store.aux(aux_id.hex())
        except StoreError:
            return frozenset()
        _, params = codec.decode_aux_public(row.public)
        return frozenset(p.n for p in params)
