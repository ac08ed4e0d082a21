"""End-to-end protection of protocol messages between nodes (DESIGN.md §3 "Transport").

Every `signer.protocol.base.Message` leaves a node as an `Envelope`:

* signed with the sender's node identity key (Ed25519 or P-256 in its HSM token) over a
  domain-separated encoding of the header (cluster, protocol, session, round, sender,
  recipient, kind) and the body — so the coordinator can neither forge nor alter a message,
  and two validly signed, different payloads for one (session, round, sender) are a
  transferable proof of equivocation (attacks.md A12);
* point-to-point bodies encrypted to the recipient: X25519 between the two nodes' pinned
  key-agreement keys, HKDF-SHA256 over a fresh 16-byte salt and the header → a key and nonce
  used once, ChaCha20-Poly1305 with the header as associated data.

A receiver accepts an envelope only from a pinned peer (`Roster`), only for itself (or a
broadcast), and only with a valid signature; every rejection is an `EnvelopeRejected` naming
the claimed sender and the failed check.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hsm.identity import IdentityPublicKey, verify_identity
from signer.encoding import Encodable, encode
from signer.errors import TesseraError
from signer.protocol.base import MAX_PAYLOAD_BYTES, Message

ENVELOPE_VERSION = 1
SALT_BYTES = 16
_SIGN_TAG = "tessera/envelope/sign/v1"
_KDF_TAG = b"tessera/envelope/p2p/v1"
_CARD_TAG = "tessera/node-card/v1"


class EnvelopeRejected(TesseraError):
    """An envelope that must not be processed: `sender` is the party it claims to come from,
    `check` what failed (UNKNOWN_SENDER, SIGNATURE, RECIPIENT, DECRYPT, CLUSTER, FORMAT)."""

    def __init__(self, sender: int | None, check: str, detail: str) -> None:
        self.sender = sender
        self.check = check
        self.detail = detail
        who = f"party {sender}" if sender is not None else "unknown party"
        super().__init__(f"envelope from {who} rejected: {check}: {detail}")


class IdentitySigner(Protocol):
    """What a node's identity key offers (hsm.keystore.KeyStore satisfies it)."""

    def identity_public_key(self) -> IdentityPublicKey: ...

    def sign_identity(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class NodeCard:
    """A node's public identity as pinned by its peers: party index, identity key, X25519
    key-agreement key and address, self-signed with the identity key."""

    node_id: str
    index: int
    identity: IdentityPublicKey
    kex_public: bytes  # raw X25519 public key, 32 bytes
    url: str
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        fields: list[Encodable] = [
            _CARD_TAG,
            self.node_id,
            self.index,
            self.identity.algorithm,
            self.identity.public_bytes,
            self.kex_public,
            self.url,
        ]
        return encode(fields)

    def signed_by(self, signer: IdentitySigner) -> NodeCard:
        return NodeCard(
            self.node_id,
            self.index,
            self.identity,
            self.kex_public,
            self.url,
            signer.sign_identity(self.signed_bytes()),
        )

    def verify(self) -> None:
        if len(self.kex_public) != 32:
            raise EnvelopeRejected(self.index, "FORMAT", "key-agreement key is not 32 bytes")
        if not verify_identity(self.identity, self.signed_bytes(), self.signature):
            raise EnvelopeRejected(
                self.index, "SIGNATURE", f"card of {self.node_id!r} is not self-signed"
            )

    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.signed_bytes()).digest()

    def to_dict(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "index": self.index,
            "identity": self.identity.to_dict(),
            "kex_public": self.kex_public.hex(),
            "url": self.url,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> NodeCard:
        try:
            identity = doc["identity"]
            if not isinstance(identity, Mapping):
                raise TypeError("identity must be an object")
            index = doc["index"]
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError("index must be an integer")
            card = cls(
                node_id=str(doc["node_id"]),
                index=index,
                identity=IdentityPublicKey.from_dict(identity),
                kex_public=bytes.fromhex(str(doc["kex_public"])),
                url=str(doc["url"]),
                signature=bytes.fromhex(str(doc["signature"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeRejected(None, "FORMAT", f"malformed node card: {exc}") from exc
        card.verify()
        return card


@dataclass(frozen=True)
class Roster:
    """The pinned cluster: every node's verified card by party index."""

    cluster_id: bytes
    cards: Mapping[int, NodeCard]

    def __post_init__(self) -> None:
        ids = [card.node_id for card in self.cards.values()]
        if len(set(ids)) != len(ids):
            raise EnvelopeRejected(None, "FORMAT", "two cards with one node id")
        for index, card in self.cards.items():
            if card.index != index:
                raise EnvelopeRejected(index, "FORMAT", "card filed under another index")
            card.verify()

    def card(self, index: int) -> NodeCard:
        card = self.cards.get(index)
        if card is None:
            raise EnvelopeRejected(index, "UNKNOWN_SENDER", "no pinned node has this index")
        return card


@dataclass(frozen=True)
class Envelope:
    """A signed (and, point-to-point, encrypted) protocol message on the wire."""

    cluster_id: bytes
    protocol: str
    session: bytes
    round: int
    sender: int
    recipient: int | None
    broadcast: bool
    salt: bytes
    body: bytes
    signature: bytes

    def header(self) -> bytes:
        fields: list[Encodable] = [
            ENVELOPE_VERSION,
            self.cluster_id,
            self.protocol,
            self.session,
            self.round,
            self.sender,
            0 if self.recipient is None else self.recipient,
            int(self.broadcast),
        ]
        return encode(fields)

    def signed_bytes(self) -> bytes:
        return encode([_SIGN_TAG, self.header(), self.salt, self.body])

    def to_dict(self) -> dict[str, object]:
        return {
            "cluster": self.cluster_id.hex(),
            "protocol": self.protocol,
            "session": self.session.hex(),
            "round": self.round,
            "sender": self.sender,
            "recipient": self.recipient,
            "broadcast": self.broadcast,
            "salt": self.salt.hex(),
            "body": self.body.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> Envelope:
        sender = doc.get("sender")
        claimed = sender if isinstance(sender, int) and not isinstance(sender, bool) else None
        try:
            recipient = doc["recipient"]
            round_number = doc["round"]
            if isinstance(round_number, bool) or not isinstance(round_number, int):
                raise TypeError("round must be an integer")
            if recipient is not None and (
                isinstance(recipient, bool) or not isinstance(recipient, int)
            ):
                raise TypeError("recipient must be an integer or null")
            if claimed is None:
                raise TypeError("sender must be an integer")
            broadcast = doc["broadcast"]
            if not isinstance(broadcast, bool):
                raise TypeError("broadcast must be a boolean")
            body = bytes.fromhex(str(doc["body"]))
            if len(body) > 2 * MAX_PAYLOAD_BYTES:
                raise ValueError("body too large")
            return cls(
                cluster_id=bytes.fromhex(str(doc["cluster"])),
                protocol=str(doc["protocol"]),
                session=bytes.fromhex(str(doc["session"])),
                round=round_number,
                sender=claimed,
                recipient=recipient,
                broadcast=broadcast,
                salt=bytes.fromhex(str(doc["salt"])),
                body=body,
                signature=bytes.fromhex(str(doc["signature"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeRejected(claimed, "FORMAT", f"malformed envelope: {exc}") from exc


def _p2p_cipher(
    shared: bytes, salt: bytes, header: bytes, sender: NodeCard, recipient: NodeCard
) -> tuple[ChaCha20Poly1305, bytes]:
    info = hashlib.sha256(
        encode([_KDF_TAG, header, sender.fingerprint(), recipient.fingerprint()])
    ).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=salt, info=info).derive(shared)
    return ChaCha20Poly1305(okm[:32]), okm[32:]


@dataclass
class Endpoint:
    """One node's side of the transport: its identity signer, its X25519 key and the roster."""

    me: int
    signer: IdentitySigner
    kex_private: X25519PrivateKey
    roster: Roster

    def seal(self, message: Message) -> Envelope:
        if message.sender != self.me:
            raise EnvelopeRejected(message.sender, "FORMAT", "sealing another party's message")
        salt = b""
        body = message.payload
        draft = Envelope(
            self.roster.cluster_id,
            message.protocol,
            message.session,
            message.round,
            message.sender,
            message.recipient,
            message.broadcast,
            salt,
            body,
            b"",
        )
        if not message.broadcast:
            if message.recipient is None:
                raise EnvelopeRejected(
                    self.me, "FORMAT", "point-to-point message without recipient"
                )
            recipient = self.roster.card(message.recipient)
            salt = secrets.token_bytes(SALT_BYTES)
            shared = self.kex_private.exchange(
                X25519PublicKey.from_public_bytes(recipient.kex_public)
            )
            header = draft.header()
            cipher, nonce = _p2p_cipher(shared, salt, header, self.roster.card(self.me), recipient)
            body = cipher.encrypt(nonce, message.payload, header)
        unsigned = Envelope(**{**draft.__dict__, "salt": salt, "body": body})
        signature = self.signer.sign_identity(unsigned.signed_bytes())
        return Envelope(**{**unsigned.__dict__, "signature": signature})

    def open(self, envelope: Envelope) -> Message:
        """Verify (and decrypt) an envelope addressed to this node."""
        sender = envelope.sender
        if envelope.cluster_id != self.roster.cluster_id:
            raise EnvelopeRejected(sender, "CLUSTER", "envelope for another cluster")
        if sender == self.me:
            raise EnvelopeRejected(sender, "UNKNOWN_SENDER", "envelope claims to come from me")
        card = self.roster.card(sender)
        if not verify_identity(card.identity, envelope.signed_bytes(), envelope.signature):
            raise EnvelopeRejected(sender, "SIGNATURE", "identity signature does not verify")
        if envelope.recipient not in (None, self.me):
            raise EnvelopeRejected(sender, "RECIPIENT", f"addressed to {envelope.recipient}")
        if envelope.broadcast:
            if envelope.salt:
                raise EnvelopeRejected(sender, "FORMAT", "broadcast with an encryption salt")
            payload = envelope.body
        else:
            if envelope.recipient != self.me or len(envelope.salt) != SALT_BYTES:
                raise EnvelopeRejected(sender, "FORMAT", "point-to-point without salt/recipient")
            shared = self.kex_private.exchange(X25519PublicKey.from_public_bytes(card.kex_public))
            header = envelope.header()
            cipher, nonce = _p2p_cipher(
                shared, envelope.salt, header, card, self.roster.card(self.me)
            )
            try:
                payload = cipher.decrypt(nonce, envelope.body, header)
            except InvalidTag as exc:
                raise EnvelopeRejected(sender, "DECRYPT", "authentication tag mismatch") from exc
        return Message(
            envelope.protocol,
            envelope.session,
            envelope.round,
            sender,
            envelope.recipient,
            payload,
            envelope.broadcast,
        )
