"""Storage confirmations: how a re-share or refresh ends without ever losing the key.

A re-share session's output is only a *pending* key version (`signer/node/store.py`).  The old
version stays active — usable for presign and signing — until the node holds a complete set of
storage confirmations for the new one:

  statement  = sign_identity(encode(["tessera/key-confirmation/v1", cluster id, key id,
                                     new epoch, KeyPublic.fingerprint() of the new version,
                                     signer's party index]))

one from **every** member of the new committee, each signed with that node's identity key (the
key its envelopes are signed with, pinned in the roster).  A member signs only after its new
share is durably stored, and for at most one version per (key, epoch): so a complete set proves
that every new share exists, and no two different versions of one epoch can both be confirmed
by a common member.

Why every member, not t′ of them: a relay that withholds the last echo of round 3 from some
parties (attacks.md A12 T12c, the re-sharing split view, done by a withholding coordinator
rather than by an equivocating dealer) lets some parties output the new version while the others
wait; if those that finished retired the old share at once, the new version would be held by
fewer than t′ and the old one by fewer than t.  Waiting for all n′ confirmations means the old
shares are erased only once every new share exists.

Statements authenticate themselves, so they travel through the coordinator, which can withhold
or reorder them but cannot forge one: `check_set` refuses anything but exactly one valid
statement from each member, for exactly this key, epoch and fingerprint (`ConfirmationRejected`
names the claimed signer and the failed check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from hsm.identity import verify_identity
from signer.encoding import Encodable, encode
from signer.errors import TesseraError
from signer.node.envelope import IdentitySigner, Roster
from signer.protocol.keygen import KeyPublic

_TAG = "tessera/key-confirmation/v1"

#: Largest committee a set can confirm (party indices are 1..255).
MAX_STATEMENTS = 255


class ConfirmationRejected(TesseraError):
    """A statement (or a set of them) that must not activate anything: `sender` is the party
    the statement claims to come from (None when the set as a whole is wrong, e.g. a member is
    missing), `check` what failed: FORMAT, UNKNOWN_SENDER, SIGNATURE, CLUSTER, KEY, EPOCH,
    FINGERPRINT, COMMITTEE, DUPLICATE."""

    def __init__(self, sender: int | None, check: str, detail: str) -> None:
        self.sender = sender
        self.check = check
        self.detail = detail
        who = f"party {sender}" if sender is not None else "the set"
        super().__init__(f"confirmation from {who} rejected: {check}: {detail}")


class ConfirmationBody(BaseModel):
    """The wire form of one statement (hex for bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    key_id: Annotated[str, Field(pattern=r"^([0-9a-f]{2}){1,64}$")]
    epoch: Annotated[int, Field(ge=0, le=2**32, strict=True)]
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    signer: Annotated[int, Field(ge=1, le=255, strict=True)]
    signature: Annotated[str, Field(pattern=r"^([0-9a-f]{2}){1,256}$")]


class ActivationBody(BaseModel):
    """`POST /v1/keys/{key_id}/versions/{epoch}/activate`: the complete set of statements."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statements: Annotated[list[ConfirmationBody], Field(min_length=1, max_length=MAX_STATEMENTS)]


class ActivationReply(BaseModel):
    """What `activate` did: `activated` is False when the version already was active."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str
    epoch: int
    state: str
    activated: bool
    fingerprint: str


class KeyVersionState(BaseModel):
    """One version of a key as a node holds it (`GET /v1/keys/{key_id}/versions`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epoch: int
    state: str  # pending | active | retired
    fingerprint: str
    parties: list[int]
    threshold: int
    share: bool  # whether this node holds a share of it
    key_public: str


@dataclass(frozen=True)
class KeyConfirmation:
    """Party `signer`'s signed statement that it durably stored its share of the key version
    (`key_id`, `epoch`) whose `KeyPublic.fingerprint()` is `fingerprint`."""

    cluster_id: bytes
    key_id: bytes
    epoch: int  # the new version's epoch; it replaces epoch - 1
    fingerprint: bytes
    signer: int
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        fields: list[Encodable] = [
            _TAG,
            self.cluster_id,
            self.key_id,
            self.epoch,
            self.fingerprint,
            self.signer,
        ]
        return encode(fields)

    @classmethod
    def issue(
        cls, signer: IdentitySigner, cluster_id: bytes, me: int, key: KeyPublic
    ) -> KeyConfirmation:
        draft = cls(cluster_id, key.key_id, key.epoch, key.fingerprint(), me)
        return cls(**{**draft.__dict__, "signature": signer.sign_identity(draft.signed_bytes())})

    def verify(self, roster: Roster) -> None:
        """The statement is signed by the pinned identity key of its claimed signer."""
        card = roster.cards.get(self.signer)
        if card is None:
            raise ConfirmationRejected(self.signer, "UNKNOWN_SENDER", "no pinned node has it")
        if not verify_identity(card.identity, self.signed_bytes(), self.signature):
            raise ConfirmationRejected(self.signer, "SIGNATURE", "identity signature invalid")

    def to_body(self) -> ConfirmationBody:
        return ConfirmationBody(
            cluster=self.cluster_id.hex(),
            key_id=self.key_id.hex(),
            epoch=self.epoch,
            fingerprint=self.fingerprint.hex(),
            signer=self.signer,
            signature=self.signature.hex(),
        )

    def to_dict(self) -> dict[str, object]:
        return self.to_body().model_dump()

    @classmethod
    def from_body(cls, body: ConfirmationBody) -> KeyConfirmation:
        return cls(
            cluster_id=bytes.fromhex(body.cluster),
            key_id=bytes.fromhex(body.key_id),
            epoch=body.epoch,
            fingerprint=bytes.fromhex(body.fingerprint),
            signer=body.signer,
            signature=bytes.fromhex(body.signature),
        )


def check_set(statements: Sequence[KeyConfirmation], key: KeyPublic, roster: Roster) -> None:
    """Exactly one authentic statement from every member of `key`'s committee, each for
    exactly this cluster, key, epoch and version; `ConfirmationRejected` otherwise.

    Authenticity is checked first: a statement that verifies is really its signer's, so a
    wrong content is a statement replayed from another context (another key, epoch or
    version), and the check names which."""
    seen: set[int] = set()
    for statement in statements:
        sender = statement.signer
        statement.verify(roster)
        if statement.cluster_id != roster.cluster_id:
            raise ConfirmationRejected(sender, "CLUSTER", "statement for another cluster")
        if statement.key_id != key.key_id:
            raise ConfirmationRejected(sender, "KEY", "statement for another key")
        if statement.epoch != key.epoch:
            raise ConfirmationRejected(
                sender, "EPOCH", f"statement for epoch {statement.epoch}, not {key.epoch}"
            )
        if statement.fingerprint != key.fingerprint():
            raise ConfirmationRejected(
                sender, "FINGERPRINT", "statement for another version of this epoch"
            )
        if sender not in key.parties:
            raise ConfirmationRejected(
                sender, "COMMITTEE", f"not a member of the new committee {list(key.parties)}"
            )
        if sender in seen:
            raise ConfirmationRejected(sender, "DUPLICATE", "two statements from one member")
        seen.add(sender)
    missing = sorted(set(key.parties) - seen)
    if missing:
        raise ConfirmationRejected(
            None, "COMMITTEE", f"no statement from members {missing} of the new committee"
        )
