"""Key-share nodes in one process, for tests that need a malicious node's *protocol* behaviour
(a party class of the malicious-party harness) behind the real node logic: `NodeService` with a
real SQLite store and real signed/encrypted envelopes, driven by the real coordinator through
`LocalClient`, an in-process stand-in for the HTTP client.

What is replaced, and why: the identity key and the sealing KEK live in software here
(`SoftwareIdentity`, `SoftwareSealer`: AES-256-GCM with the same AAD as `hsm.sealing`), so that
several nodes fit in one process — SoftHSM2 allows one logged-in session per process.  The
HSM-backed versions of both run in the multi-process cluster tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import paillier_key
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coordinator.client import NodeRefused
from hsm.identity import IdentityPublicKey
from hsm.sealing import NONCE_BYTES, SealContext, encode_blob, parse_blob
from policies.bundle import GovernanceBundle
from signer.node.api import (
    GovernanceReply,
    Health,
    PolicyStatus,
    SessionResult,
    SessionState,
    SignReply,
    SignRequest,
    TransactionRequest,
    VelocityReceipt,
)
from signer.node.audit import IdentitySigner
from signer.node.confirmation import (
    ActivationBody,
    ActivationReply,
    ConfirmationBody,
    KeyConfirmation,
    KeyVersionState,
)
from signer.node.enforcement import Enforcement
from signer.node.envelope import Endpoint, Envelope, EnvelopeRejected, NodeCard, Roster
from signer.node.errors import NodeError
from signer.node.service import NodeService
from signer.node.spec import SessionSpec
from signer.node.store import NodeStore
from signer.problems import ErrorCode, Problem
from signer.protocol.base import Party, SessionConfig
from signer.protocol.presign import PresignParty
from signer.protocol.sign import HashScheme


class SoftwareIdentity:
    """An Ed25519 identity outside any token."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._public = IdentityPublicKey("ed25519", raw)

    def identity_public_key(self) -> IdentityPublicKey:
        return self._public

    def sign_identity(self, message: bytes) -> bytes:
        return self._key.sign(message)


def make_endpoints(n: int, cluster: bytes = b"c" * 32) -> dict[int, Endpoint]:
    """n endpoints of one cluster, every card pinned by every node."""
    identities = {i: SoftwareIdentity() for i in range(1, n + 1)}
    kex = {i: X25519PrivateKey.generate() for i in identities}
    cards = {
        i: NodeCard(
            f"node-{i}",
            i,
            identities[i].identity_public_key(),
            kex[i]
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            f"http://127.0.0.1:{9000 + i}",
        ).signed_by(identities[i])
        for i in identities
    }
    roster = Roster(cluster, cards)
    return {i: Endpoint(i, identities[i], kex[i], roster) for i in identities}


class SoftwareSealer:
    """AES-256-GCM under a key in memory, with `hsm.sealing`'s blob format and AAD."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def seal(
        self, plaintext: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes:
        context = SealContext(node_id, key_id, share_version, purpose)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return encode_blob(nonce, self._aead.encrypt(nonce, plaintext, context.aad()))

    def unseal(
        self, blob: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes:
        context = SealContext(node_id, key_id, share_version, purpose)
        parsed = parse_blob(blob, context)
        return self._aead.decrypt(parsed.nonce, parsed.ciphertext_and_tag, context.aad())


class ScriptedNode(NodeService):
    """A node whose presign party class a test can swap for a malicious one (None: honest);
    `starts` counts the sessions it was asked to start, by protocol."""

    presign_class: type[PresignParty] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starts: dict[str, int] = {}

    def start(self, spec: SessionSpec) -> Any:
        self.starts[spec.protocol] = self.starts.get(spec.protocol, 0) + 1
        return super().start(spec)

    def _party(
        self, spec: SessionSpec, config: SessionConfig
    ) -> tuple[Party[Any], Callable[[Any], SessionResult]]:
        party, finish = super()._party(spec, config)
        if spec.protocol == "presign/v1" and self.presign_class is not None:
            key = self.key_share(spec.key_id)
            party = self.presign_class(config, key, self.aux_info(spec.aux_id), spec.path)
        return party, finish


def make_nodes(
    root: Path,
    n: int,
    paillier_offset: int = 0,
    *,
    genesis: str | None = None,
    raw_keys: bool = True,
) -> dict[int, ScriptedNode]:
    """n nodes with their own SQLite files under `root`; node i's aux-info uses fixture Paillier
    key i + paillier_offset (a test-only speed-up: no prime generation).  Protocol tests sign
    raw bytes, so the nodes hold raw keys and no policy unless told otherwise."""
    root.mkdir(parents=True, exist_ok=True)
    endpoints = make_endpoints(n)
    nodes = {}
    for i in endpoints:
        store = NodeStore(root / f"node-{i}.db")
        nodes[i] = ScriptedNode(
            f"node-{i}",
            i,
            store,
            SoftwareSealer(),
            endpoints[i],
            lambda i=i: paillier_key(i + paillier_offset),
            enforcement=Enforcement.open(
                store,
                genesis=genesis,
                raw_keys=raw_keys,
                signer=IdentitySigner(endpoints[i].signer, f"node-{i}"),
                ledger_path=root / f"node-{i}-velocity.db",
            ),
        )
    return nodes


class LocalClient:
    """`coordinator.client.NodeClient`'s interface over a `NodeService` in this process; a
    node's refusal becomes `NodeRefused` with the same `Problem` the HTTP app would send
    (`signer.node.app`: NodeError as is, a rejected envelope as ENVELOPE_REJECTED naming its
    sender), and replies are the same `signer.node.api` models."""

    def __init__(self, index: int, node: NodeService) -> None:
        self.index = index
        self.node = node

    def _refused(self, exc: NodeError | EnvelopeRejected) -> NodeRefused:
        if isinstance(exc, EnvelopeRejected):
            problem = Problem.of(
                ErrorCode.ENVELOPE_REJECTED,
                exc.detail,
                culprit=exc.sender,
                check=exc.check,
                node=self.index,
            )
        else:
            problem = Problem.of(
                exc.code,
                exc.detail,
                culprit=exc.culprit,
                check=exc.check,
                node=self.index,
                rule=exc.rule,
                policy_hash=exc.policy_hash,
            )
        return NodeRefused(self.index, problem)

    async def aclose(self) -> None:
        return None

    async def health(self) -> Health:
        return Health(
            node_id=self.node.node_id,
            index=self.index,
            pinned=True,
            sessions=self.node.running_sessions,
            quarantined=len(self.node.store.quarantines()),
        )

    async def start(self, spec: dict[str, Any]) -> SessionState:
        try:
            reply = self.node.start(SessionSpec.from_json(spec))
        except NodeError as exc:
            raise self._refused(exc) from exc
        return SessionState.model_validate(reply.to_json())

    async def deliver(self, session: str, envelopes: list[dict[str, Any]]) -> SessionState:
        try:
            batch = [Envelope.from_dict(doc) for doc in envelopes]
            reply = self.node.deliver(bytes.fromhex(session), batch)
        except (NodeError, EnvelopeRejected) as exc:
            raise self._refused(exc) from exc
        return SessionState.model_validate(reply.to_json())

    async def cancel(self, session: str) -> bool:
        return self.node.cancel(bytes.fromhex(session))

    async def sign(
        self, key_id: str, presignature_id: str, message: bytes, scheme: str
    ) -> SignReply:
        try:
            return self.node.sign(
                bytes.fromhex(key_id), bytes.fromhex(presignature_id), message, HashScheme(scheme)
            )
        except NodeError as exc:
            raise self._refused(exc) from exc

    async def sign_transaction(self, request: SignRequest) -> SignReply:
        try:
            return self.node.sign_transaction(request)
        except NodeError as exc:
            raise self._refused(exc) from exc

    async def receipt(self, request: TransactionRequest) -> VelocityReceipt:
        try:
            return self.node.receipt(request)
        except NodeError as exc:
            raise self._refused(exc) from exc

    async def governance(self) -> PolicyStatus:
        return self.node.governance.status()

    async def governance_chain(self) -> GovernanceBundle:
        return self.node.governance.bundle()

    async def relay_governance(self, bundle: GovernanceBundle) -> GovernanceReply:
        try:
            return self.node.governance.accept(bundle)
        except NodeError as exc:
            raise self._refused(exc) from exc

    async def versions(self, key_id: str) -> list[KeyVersionState]:
        return self.node.versions(bytes.fromhex(key_id))

    async def confirmation(self, key_id: str, epoch: int) -> ConfirmationBody:
        try:
            return self.node.confirm(bytes.fromhex(key_id), epoch).to_body()
        except NodeError as exc:
            raise self._refused(exc) from exc

    async def activate(
        self, key_id: str, epoch: int, statements: list[ConfirmationBody]
    ) -> ActivationReply:
        # through the route's own body model, as over HTTP
        body = ActivationBody.model_validate(ActivationBody(statements=statements).model_dump())
        try:
            return self.node.activate(
                bytes.fromhex(key_id),
                epoch,
                [KeyConfirmation.from_body(s) for s in body.statements],
            )
        except NodeError as exc:
            raise self._refused(exc) from exc
