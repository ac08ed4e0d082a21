"""The node API's wire models: every request and reply body whose shape is fixed, one
definition imported by the node (`signer.node.app`), the coordinator's client
(`coordinator.client`) and the in-process test client — so the two sides of the boundary cannot
drift apart.  Refusals are `signer.problems.Problem`.

Each request model is the node's door: it is validated before anything is recorded or run
(a refused session start burns no `session_starts` row), and a refusal names the field and
what is wrong without echoing the value (`signer.problems.validation_detail`).

The limits below are the single definition of what the node accepts; `docs/nodes.md` lists
them with the reasoning.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from policies.governance import GovernanceSignature
from signer.params import MAX_PARTY_INDEX
from signer.protocol import aux_info, keygen, presign, presign_identify, reshare
from signer.protocol.hd import HARDENED, MAX_DEPTH
from signer.protocol.sign import HashScheme

#: The key id every aux-info session runs under (aux-info belongs to a committee, not a key).
AUX_KEY_ID = b"aux-info"

#: Key ids are 1..64 bytes.  The HSM sealing context (`hsm.sealing`) takes the hex key id up
#: to 1024 bytes, but a key must also be usable afterwards: `/v1/sign` and the presignature
#: listing take at most 64 bytes, so that is the bound everywhere (a longer key id used to be
#: stored as an active key that nothing could sign with).  The coordinator uses 16 bytes.
KEY_ID_MAX_BYTES = 64

#: Request ids (`SessionConfig.request`): 16..64 bytes, as the protocol layer requires.
REQUEST_MIN_BYTES = 16
REQUEST_MAX_BYTES = 64

#: Parties of one session.  Far above any committee we run (every party of a session talks
#: to every other, and aux-info costs each node O(n) proofs of ≈200 KB), and the figure the
#: body limit below is computed from.
MAX_SESSION_PARTIES = 16

#: Officer approvals (or plan signatures) attached to one request: as many as a policy may
#: have officers.
MAX_APPROVALS = 100

#: A message to sign: at most 1 MiB (hex on the wire: twice that).
MAX_SIGN_MESSAGE_BYTES = 1 << 20

#: The largest protocol message a node sends is aux-info round 3: Πmod (≈102 KB) + Πprm
#: (≈100 KB) + Πfac (≈5 KB) and the parameters, ≈220 KB per recipient.  Hex doubles it in an
#: envelope, so one delivery (one envelope from each of the other MAX_SESSION_PARTIES - 1
#: parties, plus their small broadcasts and echoes) is at most ≈ 15 × 450 KB ≈ 7 MB.
#: 16 MiB leaves more than 2× margin.
MAX_ENVELOPE_BATCH_BYTES = 16 << 20
#: Every other body (a sign request is at most 2 MiB of hex message; a roster of 16 cards is a
#: few KB): 4 MiB.
MAX_BODY_BYTES = 4 << 20
#: Envelopes in one delivery: each of 15 peers sends a round's broadcast, its point-to-point
#: message and echo at most, in at most a few rounds queued by the relay.
MAX_BATCH_ENVELOPES = 1024

#: The request target (path and query) and all header lines together.  Far above anything the
#: coordinator sends (≈100 bytes of target, ≈200 bytes of headers).
MAX_TARGET_BYTES = 8 << 10
MAX_HEADER_BYTES = 16 << 10
#: The whole body must arrive within this many seconds of the request head (16 MiB at ≈1 MB/s).
BODY_TIMEOUT_SECONDS = 30.0


class SessionProtocol(StrEnum):
    """The protocols a node runs as sessions; each value is its protocol module's `PROTOCOL`
    (the name bound into every transcript), so the name has one definition."""

    KEYGEN = keygen.PROTOCOL
    AUX_INFO = aux_info.PROTOCOL
    PRESIGN = presign.PROTOCOL
    PRESIGN_IDENTIFY = presign_identify.PROTOCOL
    REFRESH = reshare.REFRESH_PROTOCOL
    RESHARE = reshare.PROTOCOL


PartyIndex = Annotated[StrictInt, Field(ge=1, le=MAX_PARTY_INDEX)]
PathStep = Annotated[StrictInt, Field(ge=0, lt=HARDENED)]
Parties = Annotated[list[PartyIndex], Field(max_length=MAX_SESSION_PARTIES)]
Hex32 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
HexBytes = Annotated[StrictStr, Field(pattern=r"^([0-9a-f]{2})+$")]
KeyIdHex = Annotated[StrictStr, Field(pattern=rf"^([0-9a-f]{{2}}){{1,{KEY_ID_MAX_BYTES}}}$")]
RequestHex = Annotated[
    StrictStr,
    Field(pattern=rf"^([0-9a-f]{{2}}){{{REQUEST_MIN_BYTES},{REQUEST_MAX_BYTES}}}$"),
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sorted_distinct(name: str, values: list[int]) -> None:
    if len(set(values)) != len(values) or sorted(values) != values:
        raise ValueError(f"{name}: party indices must be distinct and sorted")


class SessionStart(_Wire):
    """`POST /v1/sessions`: what to run, with whom (`signer.node.service.SessionSpec`)."""

    protocol: SessionProtocol
    request: RequestHex
    parties: Annotated[list[PartyIndex], Field(min_length=2, max_length=MAX_SESSION_PARTIES)]
    threshold: Annotated[StrictInt, Field(ge=1, le=MAX_SESSION_PARTIES)]
    key_id: KeyIdHex
    path: Annotated[list[PathStep], Field(max_length=MAX_DEPTH)] = []
    aux_id: Annotated[StrictStr, Field(pattern=r"^([0-9a-f]{64})?$")] = ""
    # codec.encode_key_public of the version being re-shared: a few KB for 16 parties
    plan_old: Annotated[StrictStr, Field(pattern=r"^([0-9a-f]{2})*$", max_length=1 << 17)] = ""
    dealers: Parties = []
    new_parties: Parties = []
    # The policy wallet a keygen creates the key for, or a re-share/refresh moves ("": a raw
    # key, which only a node made with --raw-keys holds).  Bound to the key for good.
    wallet: Annotated[StrictStr, Field(pattern=r"^([a-z0-9][a-z0-9_-]{0,31})?$")] = ""
    # A wallet key's re-share or refresh: the officers' signatures over the plan (key_gate.py).
    authorization: Annotated[list[GovernanceSignature], Field(max_length=MAX_APPROVALS)] = []

    @model_validator(mode="after")
    def _consistent(self) -> SessionStart:
        # Checked here rather than by the protocol so that a refused spec is refused before the
        # node records a session start (and before a whole DKG runs on a key id nothing can
        # seal or sign with).
        _sorted_distinct("parties", self.parties)
        _sorted_distinct("dealers", self.dealers)
        _sorted_distinct("new_parties", self.new_parties)
        if self.threshold > len(self.parties):
            raise ValueError("threshold: larger than the number of parties")
        aux = self.key_id == AUX_KEY_ID.hex()
        if (self.protocol == SessionProtocol.AUX_INFO) != aux:
            raise ValueError(
                "key_id: aux_info/v1 runs under the aux-info marker, and only aux_info/v1 does"
            )
        if self.protocol == SessionProtocol.PRESIGN and not self.aux_id:
            raise ValueError("aux_id: presign/v1 needs the aux-info id")
        if self.path and self.protocol != SessionProtocol.PRESIGN:
            raise ValueError("path: only presign/v1 takes a derivation path")
        if self.protocol in (SessionProtocol.REFRESH, SessionProtocol.RESHARE):
            if not self.plan_old or not self.dealers or not self.new_parties:
                raise ValueError("plan_old: a re-share needs plan_old, dealers and new_parties")
            if not set(self.dealers) | set(self.new_parties) <= set(self.parties):
                raise ValueError("dealers: dealers and new_parties must be parties")
        elif self.plan_old or self.dealers or self.new_parties or self.authorization:
            raise ValueError("plan_old: only refresh/v1 and reshare/v1 take a plan")
        keyed = (SessionProtocol.KEYGEN, SessionProtocol.REFRESH, SessionProtocol.RESHARE)
        if self.wallet and self.protocol not in keyed:
            raise ValueError("wallet: only keygen, refresh and reshare name a wallet")
        return self


class EnvelopeBatch(_Wire):
    """`POST /v1/sessions/{id}/envelopes`.  Each envelope is checked by
    `Envelope.from_dict`, which knows its claimed sender (to report a malformed one)."""

    envelopes: Annotated[list[dict[str, Any]], Field(max_length=MAX_BATCH_ENVELOPES)]


class AbortReport(BaseModel):
    """Why a session ended without output (`signer.node.service.abort_json`), plus any
    envelopes the node dropped on that delivery.  Extra members are allowed: the report is
    built by the protocol layer, which may add protocol-specific facts."""

    model_config = ConfigDict(extra="allow", frozen=True)

    protocol: str | None = None
    round: int | None = None
    code: str | None = None
    culprits: list[int] = []
    detail: str | None = None
    identification: str | None = None
    rejected: list[dict[str, Any]] = []


class KeyResult(_Wire):
    """A keygen's result on a node: the new key version (`codec.encode_key_public`, hex)."""

    kind: Literal["key"] = "key"
    key_id: KeyIdHex
    epoch: Annotated[StrictInt, Field(ge=0)]
    public_key: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{66}$")]
    key_public: HexBytes


class ReshareReport(_Wire):
    """A re-share's or refresh's result on a node: the new version, stored *pending*."""

    kind: Literal["reshare"] = "reshare"
    key_id: KeyIdHex
    epoch: Annotated[StrictInt, Field(ge=0)]
    public_key: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{66}$")]
    key_public: HexBytes
    member: StrictBool  # whether this node holds a share of the new version
    state: Literal["pending"]
    fingerprint: Hex32


class AuxResult(_Wire):
    kind: Literal["aux_info"] = "aux_info"
    aux_id: Hex32
    parties: list[StrictInt]


class PresignResult(_Wire):
    kind: Literal["presign"] = "presign"
    presignature_id: Hex32
    public: HexBytes  # codec.encode_presignature_public
    epoch: Annotated[StrictInt, Field(ge=0)]


class Finding(_Wire):
    party: StrictInt
    check: StrictStr
    detail: StrictStr


class IdentifyResult(_Wire):
    """A presign identification's result on a node: whom it found lying, and why."""

    kind: Literal["identify"] = "identify"
    failed_session: Hex32
    equation: StrictStr
    culprits: list[StrictInt]
    findings: list[Finding]


#: What a finished session reports, by protocol (`kind` tells them apart on the wire).
SessionResult = Annotated[
    KeyResult | ReshareReport | AuxResult | PresignResult | IdentifyResult,
    Field(discriminator="kind"),
]


class SessionState(_Wire):
    """A session's state after a start or a delivery: envelopes to relay, and the result or
    the abort when it ended."""

    session: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    status: Literal["running", "done", "aborted"]
    envelopes: list[dict[str, Any]] = []
    result: SessionResult | None = None
    abort: AbortReport | None = None


class CancelReply(_Wire):
    cancelled: StrictBool


class RawSignRequest(_Wire):
    """`POST /v1/sign/raw`: a partial signature on raw bytes with a named presignature.  Only a
    key bound to no wallet (a node made with `--raw-keys`: benchmarks, protocol tests) signs
    raw bytes; a wallet key refuses (RAW_SIGNING_REFUSED)."""

    key_id: KeyIdHex
    presignature_id: Hex32
    message: Annotated[
        StrictStr,
        Field(pattern=r"^([0-9a-f]{2})+$", max_length=2 * MAX_SIGN_MESSAGE_BYTES),
    ]
    scheme: HashScheme


#: An unsigned transaction a node decodes: EIP-1559/legacy signing payloads of a transfer are
#: ≈ 100–200 bytes; a batch payout's calldata (the chains issue) stays far below 128 KiB.
MAX_TRANSACTION_BYTES = 128 << 10
#: Velocity receipts attached to one request: one per committee member at most.
MAX_RECEIPTS = MAX_SESSION_PARTIES


class TransactionRequest(_Wire):
    """What a node needs to decide a wallet transaction (signer/node/decision.py): the unsigned
    transaction it decodes itself, the request id and initiator that travel with it, what the
    coordinator claims it is (refused when the decoded intent differs), and the officers'
    approvals.  The node trusts none of it because the coordinator sent it."""

    key_id: KeyIdHex
    transaction: Annotated[
        StrictStr,
        Field(pattern=r"^([0-9a-f]{2})+$", max_length=2 * MAX_TRANSACTION_BYTES),
    ]
    request_id: StrictStr
    initiator: StrictStr
    intent: dict[str, Any]
    approvals: Annotated[list[dict[str, Any]], Field(max_length=MAX_APPROVALS)] = []


class VelocityReceipt(_Wire):
    """A node's statement, signed with its identity key, that it durably reserved `amount` of
    `asset` for `request_id` from `wallet` and that its own window totals stay within the
    limits (signer/node/receipts.py)."""

    node: PartyIndex
    cluster: Hex32
    request_id: StrictStr
    intent_digest: Hex32
    wallet: StrictStr
    asset: StrictStr
    amount: StrictStr
    policy_hash: Hex32
    limits: list[StrictStr]
    window_seconds: StrictInt
    signature: Annotated[StrictStr, Field(pattern=r"^([0-9a-f]{2}){32,80}$")]


class SignRequest(TransactionRequest):
    """`POST /v1/sign`: this node's partial signature on a wallet transaction, with a named
    presignature, the sender the transaction claims (checked against the key and the path
    bound at presign time) and, for a velocity-limited intent, the nodes' receipts."""

    presignature_id: Hex32
    sender: Annotated[StrictStr, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
    receipts: Annotated[list[VelocityReceipt], Field(max_length=MAX_RECEIPTS)] = []


#: The request ids a node accepts (as `policies.intent` validates them in an intent).
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class _SenderTransactionRequest(_Wire):
    """A wallet transaction that moves nothing, so no intent, approvals or receipts go with it:
    `transaction` (the unsigned payload) from `sender`, under `request_id`."""

    key_id: KeyIdHex
    transaction: Annotated[
        StrictStr,
        Field(pattern=r"^([0-9a-f]{2})+$", max_length=2 * MAX_TRANSACTION_BYTES),
    ]
    request_id: Annotated[StrictStr, Field(pattern=REQUEST_ID_PATTERN)]
    presignature_id: Hex32
    sender: Annotated[StrictStr, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]


class CancellationRequest(_SenderTransactionRequest):
    """`POST /v1/sign/cancel`: this node's partial signature on a cancellation of what it signed
    last for `request_id` — a 0-value self-send from `sender` at the same nonce
    (signer/chains/replacement.py); the node signs it only for a request it signed itself, from
    the same sender."""


class AllowanceRequest(_SenderTransactionRequest):
    """`POST /v1/sign/allowance`: this node's partial signature on an ERC-20 `approve` of a
    policy token to the policy's disperse contract, the allowance a token batch spends
    (signer/chains/allowance.py); under one request id only that approve or a fee replacement
    of it (signer/chains/replacement.py)."""


class InternalTransferRequest(_SenderTransactionRequest):
    """`POST /v1/sign/internal`: this node's partial signature on a transfer between two
    addresses of the key's wallet — from `sender` (the presignature's path) to the wallet's
    address at `destination_path`, which the node derives itself (signer/chains/internal.py):
    a deposit address swept to the wallet's own address, or gas sent to a deposit address."""

    destination_path: Annotated[list[PathStep], Field(max_length=MAX_DEPTH)]


class SignReply(_Wire):
    index: PartyIndex
    presignature_id: Hex32
    partial: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class Health(_Wire):
    node_id: str
    index: PartyIndex
    pinned: bool
    sessions: int
    quarantined: int
    # The policy version this node enforces (None: none in force yet), so a lagging node shows.
    policy_hash: str | None = None
    policy_version: int | None = None


class KeyVersion(_Wire):
    key_id: str
    epoch: int
    key_public: str


class PresignatureListing(_Wire):
    available: list[str]
    counts: dict[str, int]


class Pinned(_Wire):
    pinned: bool


# Text forms of a party set ("1,3") and a derivation path ("0/5"), as the node and the
# coordinator store and compare them (pool rows, aux-info sets, exclusion entries).


def join_indices(parties: tuple[int, ...]) -> str:
    return ",".join(str(i) for i in parties)


def join_path(path: tuple[int, ...]) -> str:
    return "/".join(str(i) for i in path)


# --- governance (signer/node/governance.py) ------------------------------------------------------

# The bundle an officer or the coordinator posts (`POST /v1/governance`) is
# `policies.bundle.GovernanceBundle`: one definition for the officers' CLI and the node.


class PendingPolicy(_Wire):
    policy_hash: Hex32
    version: StrictInt
    effective_at: StrictStr  # RFC 3339 UTC, by this node's clock


class PolicyStatus(_Wire):
    """What a node enforces (`GET /v1/governance`, no token: hashes and wallet ids only)."""

    genesis: Hex32 | None
    policy_hash: Hex32 | None
    policy_version: StrictInt | None
    pending: PendingPolicy | None = None
    frozen: list[StrictStr] = []


class GovernanceOutcome(_Wire):
    """What the node did with one item of a bundle."""

    item: StrictStr  # "version 2 (1a2b3c4d5e6f)", "freeze hot-1 #0"
    outcome: Literal["accepted", "known"]


class GovernanceReply(_Wire):
    status: PolicyStatus
    results: list[GovernanceOutcome]


class AuditHead(_Wire):
    """`GET /v1/audit/head`: where the node's audit log stands (the coordinator can read it,
    never write it) and the node's last identity-signed checkpoint."""

    seq: Annotated[StrictInt, Field(ge=0)]  # 0: empty log
    hash: StrictStr | None
    checkpoint: dict[str, Any] | None
