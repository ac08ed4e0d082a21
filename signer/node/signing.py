"""Issuing this node's partial signatures: the one code path that produces one.

Five doors lead here, and each goes through the checks below:

* `sign_transaction` (`POST /v1/sign`): a wallet transaction, after the policy decision
  (signer/node/decision.py), the velocity receipts (signer/node/receipts.py) and the sender
  check: the node derives the sending address from its own key and the derivation path bound
  to the presignature at presign time, and refuses a transaction that claims another;
* `sign_cancellation` (`POST /v1/sign/cancel`): a 0-value self-send at the nonce of what this
  node signed last for a request, from the same sender (signer/chains/replacement.py).  It
  moves nothing, so no policy rule, approval or receipt applies; it is signed only for a
  request this node signed, and after it the request can only be cancelled again (faster),
  never revived;
* `sign_allowance` (`POST /v1/sign/allowance`): an ERC-20 `approve` of a policy token to the
  policy's disperse contract, the allowance a token batch spends (signer/chains/allowance.py).
  It moves nothing itself — the contract spends it only in batches every node decides — so no
  policy rule applies; any other spender is refused (attacks.md T21p).  It is recorded under its
  request id like a transaction: only a fee replacement or a cancellation may follow it;
* `sign_internal` (`POST /v1/sign/internal`): a transfer between two addresses of the key's
  wallet — a deposit address swept to the wallet's address, gas sent to a deposit address
  (signer/chains/internal.py).  Nothing leaves the wallet, so no policy rule applies; the node
  derives the recipient from its own key and the destination path, and refuses any other
  (INTERNAL_TRANSFER_REFUSED).  Recorded like an allowance;
* `sign_raw` (`POST /v1/sign/raw`): raw bytes, for a raw key only (a node made with
  `--raw-keys`, for benchmarks and protocol tests); a wallet key can never get here.

The presignature is consumed durably *before* the partial signature is computed
(`store.consume_presignature`), so a crash at any point can lose a presignature but never
reuse one (attacks.md A11: a reused nonce gives the key away); a presignature is only usable
for its key version, signer set and path, and not with a quarantined party (A03).  For a
transaction, the request it signs, the approvals it counted and its audit record are written
in that same transaction: a refusal at that point consumes nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from policies.document import amount_str
from policies.governance import ActivatedVersion
from signer.chains.allowance import read_allowance
from signer.chains.errors import TransactionRefused
from signer.chains.evm import ChainError, Transfer, address_of, decode_signing_payload
from signer.chains.fees import check_fee_ceiling
from signer.chains.intent import decode_transaction
from signer.chains.internal import read_internal
from signer.chains.replacement import cancellation_problem, replacement_problem
from signer.node import codec
from signer.node.api import (
    AllowanceRequest,
    CancellationRequest,
    InternalTransferRequest,
    SignReply,
    SignRequest,
    join_path,
)
from signer.node.audit import AuditKind, NodeAudit
from signer.node.decision import Decided, PolicyGate, audit_fields
from signer.node.envelope import Roster
from signer.node.errors import NodeError
from signer.node.faults import failpoint
from signer.node.policy_tables import SignedRequestRow, UsedApprovalRow
from signer.node.quarantine import Quarantine
from signer.node.receipts import count, receipt_quorum
from signer.node.state import NodeState
from signer.node.store import PresignatureView, StoreError
from signer.problems import ErrorCode
from signer.protocol.hd import derive
from signer.protocol.presign import PresignaturePublic
from signer.protocol.sign import HashScheme, issue_partial

_SIGNED_ROW = text(
    "SELECT payload_hash, payload, sender, key_id FROM signed_requests WHERE request_id = :id"
)
_REPLACE = text(
    "UPDATE signed_requests SET payload_hash = :hash, payload = :payload, signed_at = :at "
    "WHERE request_id = :id"
)


def _stored_transfer(stored: bytes | None) -> Transfer | str:
    """The transaction signed last for a request, or why there is none to compare with."""
    if stored is None:
        return "it was signed before replacements were recorded"
    try:
        return decode_signing_payload(stored)
    except ChainError:  # pragma: no cover - stored only after it decoded
        return "the stored transaction does not decode"


def _replacement_problem(
    stored: bytes | None, stored_sender: str | None, new: Transfer, sender: str
) -> str | None:
    old = _stored_transfer(stored)
    if isinstance(old, str):
        return old
    if stored_sender is None or stored_sender.lower() != sender.lower():
        # the same transaction from another of the wallet's addresses is a second payout
        return "a replacement is sent from the address the request was signed from"
    return replacement_problem(old, new)


def _hold_request(
    session: Session,
    request: SignRequest | AllowanceRequest | InternalTransferRequest,
    payload: bytes,
    payload_hash: str,
    transfer: Transfer,
    digest: str,
    policy_hash: str,
) -> str | None:
    """Make `request_id` hold this transaction in `signed_requests`, in the transaction that
    consumes the presignature: a new request is recorded; the same bytes again are nothing new;
    anything else only as a fee replacement of what it holds (signer/chains/replacement.py),
    from the same key and address — else REQUEST_REUSED.  The payload hash it replaces, if any."""
    existing = session.execute(_SIGNED_ROW, {"id": request.request_id}).first()
    now = time.time()
    if existing is None:
        session.execute(
            insert(SignedRequestRow).values(
                request_id=request.request_id,
                intent_digest=digest,
                payload_hash=payload_hash,
                key_id=request.key_id,
                signed_at=now,
                payload=payload,
                sender=request.sender,
            )
        )
        return None
    if existing[0] == payload_hash:
        return None
    problem = (
        "it was signed with another key"
        if existing[3] != request.key_id
        else _replacement_problem(existing[1], existing[2], transfer, request.sender)
    )
    if problem is not None:
        raise NodeError(
            ErrorCode.REQUEST_REUSED,
            f"request {request.request_id} already signed another transaction here: {problem}",
            check="request_id",
            policy_hash=policy_hash,
        )
    session.execute(
        _REPLACE, {"hash": payload_hash, "payload": payload, "at": now, "id": request.request_id}
    )
    return str(existing[0])


_Read = TypeVar("_Read")


@dataclass(frozen=True)
class _Presignature:
    row: PresignatureView
    public: PresignaturePublic
    committee: tuple[int, ...]  # the parties of the key version it was made for


class Signing:
    """Issues this node's partial signatures."""

    def __init__(
        self,
        state: NodeState,
        quarantine: Quarantine,
        gate: PolicyGate,
        audit: NodeAudit,
        roster: Callable[[], Roster],
    ) -> None:
        self.state = state
        self.quarantine = quarantine
        self.gate = gate
        self.audit = audit
        self.roster = roster

    def _presignature(self, key_id: bytes, presignature_id: bytes) -> _Presignature:
        pid = presignature_id.hex()
        row, key_row, quarantined = self.state.store.signing_view(pid, key_id.hex())
        if row is None or row.key_id != key_id.hex():
            raise NodeError(
                ErrorCode.UNKNOWN_PRESIGNATURE, f"no presignature {pid[:16]} for this key"
            )
        if key_row is None:
            raise NodeError(
                ErrorCode.UNKNOWN_KEY, f"key {key_id.hex()[:16]}: no active version on this node"
            )
        if row.epoch != key_row.epoch:
            raise NodeError(ErrorCode.STALE_PRESIGNATURE, "made for an older key version")
        key = codec.decode_key_public(key_row.public)
        public = codec.decode_presignature_public(row.public, key)
        self.quarantine.refuse(public.signers, quarantined)
        return _Presignature(row, public, key.parties)

    def _issue(
        self,
        presignature: _Presignature,
        message: bytes,
        scheme: HashScheme,
        record: Callable[[Session], None] | None = None,
    ) -> SignReply:
        pid = presignature.row.presignature_id
        failpoint("sign.before_consume")
        row = presignature.row  # its sealed secret and version, read before (they never change)
        try:
            self.state.store.consume_presignature(pid, record)  # durable first
        except StoreError as exc:
            raise NodeError(ErrorCode.PRESIGNATURE_USED, str(exc)) from exc
        except IntegrityError as exc:  # serialised by SQLite's write lock; defence in depth
            raise NodeError(
                ErrorCode.REQUEST_REUSED, "the request or an approval was recorded meanwhile"
            ) from exc
        failpoint("sign.after_consume")
        secret = self.state.unseal(row.sealed_secret, pid, row.epoch, "presignature")
        partial = issue_partial(codec.presignature(presignature.public, secret), message, scheme)
        failpoint("sign.after_partial")
        return SignReply(index=self.state.index, presignature_id=pid, partial=f"{partial:064x}")

    def sign_raw(
        self, key_id: bytes, presignature_id: bytes, message: bytes, scheme: HashScheme
    ) -> SignReply:
        """This node's partial signature on raw `message`: a raw key's only."""
        presignature = self._presignature(key_id, presignature_id)
        self.gate.require_raw(key_id.hex())
        return self._issue(presignature, message, scheme)

    def sign_transaction(self, request: SignRequest) -> tuple[SignReply, Decided]:
        """This node's partial signature on a wallet transaction the policy allows."""
        decided = self.gate.decide(request)
        key_id = bytes.fromhex(request.key_id)
        presignature = self._presignature(key_id, bytes.fromhex(request.presignature_id))
        self._check_sender(request.sender, presignature, decided.policy_hash)
        receipts = self._check_receipts(request, presignature, decided)
        intent = decided.decoded.intent

        def record(session: Session) -> None:
            # Core statements, not the ORM's unit of work: this runs on every signature.
            now = time.time()
            payload_hash = decided.decoded.payload_hash.hex()
            replaces = _hold_request(
                session,
                request,
                bytes.fromhex(request.transaction),
                payload_hash,
                decided.decoded.transfer,
                intent.digest_hex(),
                decided.policy_hash,
            )
            for approval in request.approvals:
                nonce = approval.get("nonce")
                if nonce not in decided.approvals.nonces:
                    continue  # not counted: not used up either
                used = session.execute(
                    text("SELECT request_id FROM approvals_used WHERE nonce = :nonce"),
                    {"nonce": nonce},
                ).first()
                if used is not None and used[0] != intent.request_id:
                    raise NodeError(
                        ErrorCode.POLICY_DENIED,
                        f"approval nonce {nonce} was just used for another request",
                        check="approval_replay",
                        policy_hash=decided.policy_hash,
                    )
                if used is None:
                    session.execute(
                        insert(UsedApprovalRow).values(
                            nonce=nonce,
                            officer=str(approval.get("officer")),
                            request_id=intent.request_id,
                            used_at=now,
                        )
                    )
            self.audit.append(
                session,
                AuditKind.NODE_SIGNED,
                {
                    **audit_fields(decided),
                    "key_id": request.key_id,
                    "presignature_id": request.presignature_id,
                    "signers": list(presignature.public.signers),
                    "path": list(presignature.public.derivation.path),
                    "receipts": sorted(receipts),
                    # the payload hash this signature replaces (a speed-up), if any
                    **({"replaces": replaces} if replaces is not None else {}),
                },
            )

        reply = self._issue(
            presignature, bytes.fromhex(request.transaction), HashScheme.KECCAK256, record
        )
        # The reservation is not "committed" in the ledger: it already counts, like a
        # committed entry, until its longest window has passed (receipts.py), and what was
        # signed is in `signed_requests` and the audit record written with the consumption.
        # A second fsync per signature would buy nothing the limits need.
        return reply, decided

    def sign_cancellation(self, request: CancellationRequest) -> SignReply:
        """This node's partial signature on a cancellation of what it signed for a request."""
        wallet = self.gate.wallet_of(request.key_id)  # a wallet key: a raw key signed nothing
        link = self.gate.governance.require_policy(self.gate.clock())
        payload = bytes.fromhex(request.transaction)
        new, _nothing = self._read(payload, link, lambda transfer: None)
        presignature = self._sender_presignature(request, link.policy_hash)
        payload_hash = hashlib.sha256(payload).hexdigest()

        def refuse(why: str) -> NodeError:
            return NodeError(
                ErrorCode.CANCEL_REFUSED,
                f"request {request.request_id}: {why}",
                check="cancellation",
                policy_hash=link.policy_hash,
            )

        def record(session: Session) -> None:
            existing = session.execute(_SIGNED_ROW, {"id": request.request_id}).first()
            if existing is None:
                raise refuse("this node signed nothing for it, so there is nothing to cancel")
            stored_hash, stored, stored_sender, key_id = existing
            if key_id != request.key_id:
                raise refuse("it was signed with another key")
            if stored_sender is None or stored_sender.lower() != request.sender.lower():
                raise refuse("a cancellation is sent from the address the request was signed from")
            old = _stored_transfer(stored)
            if isinstance(old, str):
                raise refuse(old)
            if stored_hash != payload_hash:
                problem = cancellation_problem(old, new, request.sender)
                if problem is not None:
                    raise refuse(problem)
                session.execute(
                    _REPLACE,
                    {
                        "hash": payload_hash,
                        "payload": payload,
                        "at": time.time(),
                        "id": request.request_id,
                    },
                )
            self.audit.append(
                session,
                AuditKind.NODE_CANCELLED,
                {
                    "request_id": request.request_id,
                    "wallet": wallet,
                    "payload_hash": payload_hash,
                    "cancels": stored_hash,
                    "nonce": new.nonce,
                    "chain_id": new.chain_id,
                    "policy_hash": link.policy_hash,
                    "policy_version": link.version,
                    "key_id": request.key_id,
                    "presignature_id": request.presignature_id,
                    "signers": list(presignature.public.signers),
                    "path": list(presignature.public.derivation.path),
                },
            )

        return self._issue(presignature, payload, HashScheme.KECCAK256, record)

    def sign_allowance(self, request: AllowanceRequest) -> SignReply:
        """This node's partial signature on the allowance a token batch spends: an ERC-20
        `approve` of a policy token to the policy's disperse contract (attacks.md T21p)."""
        wallet = self.gate.wallet_of(request.key_id)  # a wallet key: a raw key signs no approve
        link = self.gate.governance.require_policy(self.gate.clock())
        payload = bytes.fromhex(request.transaction)
        new, allowance = self._read(
            payload, link, lambda transfer: read_allowance(transfer, link.document)
        )
        presignature = self._sender_presignature(request, link.policy_hash)
        # what the allowance grants, the same for a fee replacement of it
        grants = f"{new.chain_id}:{allowance.token}:{allowance.spender}:{allowance.amount}"
        record = self._recorded_once(
            request,
            payload,
            new,
            link,
            presignature,
            b"tessera.allowance\0" + grants.encode(),
            AuditKind.NODE_ALLOWANCE,
            {
                "wallet": wallet,
                "asset": allowance.asset,
                "token": allowance.token,
                "spender": allowance.spender,
                "amount": str(allowance.amount),
            },
        )
        return self._issue(presignature, payload, HashScheme.KECCAK256, record)

    def sign_internal(self, request: InternalTransferRequest) -> SignReply:
        """This node's partial signature on a transfer between two addresses of the key's
        wallet (signer/chains/internal.py): the recipient derived here, from this node's key."""
        wallet = self.gate.wallet_of(request.key_id)  # a wallet key: a raw key moves nothing
        link = self.gate.governance.require_policy(self.gate.clock())
        if wallet in self.gate.governance.freezes.frozen_wallets():
            raise NodeError(
                ErrorCode.POLICY_DENIED,
                f"wallet {wallet} is frozen",
                check="frozen",
                policy_hash=link.policy_hash,
            )
        payload = bytes.fromhex(request.transaction)
        try:
            key_row = self.state.store.active_key(request.key_id)
        except StoreError as exc:
            raise NodeError(ErrorCode.UNKNOWN_KEY, str(exc)) from exc
        # the recipient from this node's own key: never an address the coordinator names
        key = codec.decode_key_public(key_row.public)
        destination = address_of(
            derive(key.public_key, key.chain_code, request.destination_path).public_key
        )
        new, movement = self._read(
            payload,
            link,
            lambda transfer: read_internal(
                transfer, link.document, sender=request.sender, destination=destination
            ),
        )
        presignature = self._sender_presignature(request, link.policy_hash)
        path = list(presignature.public.derivation.path)
        moves = (
            f"{new.chain_id}:{movement.asset}:{join_path(tuple(path))}>"
            f"{join_path(tuple(request.destination_path))}:{amount_str(movement.amount)}"
        )
        record = self._recorded_once(
            request,
            payload,
            new,
            link,
            presignature,
            b"tessera.internal\0" + moves.encode(),
            AuditKind.NODE_INTERNAL,
            {
                "wallet": wallet,
                "asset": movement.asset,
                "destination": destination,
                "destination_path": list(request.destination_path),
                "amount": amount_str(movement.amount),
            },
        )
        return self._issue(presignature, payload, HashScheme.KECCAK256, record)

    def _recorded_once(
        self,
        request: AllowanceRequest | InternalTransferRequest,
        payload: bytes,
        new: Transfer,
        link: ActivatedVersion,
        presignature: _Presignature,
        what: bytes,
        kind: AuditKind,
        fields: dict[str, object],
    ) -> Callable[[Session], None]:
        """The record of a signature that moves nothing a policy rule decides (an allowance,
        an internal transfer), written with the presignature's consumption: the request id
        holds this transaction (digest `what`), and afterwards only the same bytes, a fee
        replacement or a cancellation of it (REQUEST_REUSED otherwise)."""
        payload_hash = hashlib.sha256(payload).hexdigest()
        digest = hashlib.sha256(what).hexdigest()

        def record(session: Session) -> None:
            replaces = _hold_request(
                session, request, payload, payload_hash, new, digest, link.policy_hash
            )
            self.audit.append(
                session,
                kind,
                {
                    "request_id": request.request_id,
                    **fields,
                    "payload_hash": payload_hash,
                    "chain_id": new.chain_id,
                    "nonce": new.nonce,
                    "policy_hash": link.policy_hash,
                    "policy_version": link.version,
                    "key_id": request.key_id,
                    "presignature_id": request.presignature_id,
                    "signers": list(presignature.public.signers),
                    "path": list(presignature.public.derivation.path),
                    **({"replaces": replaces} if replaces is not None else {}),
                },
            )

        return record

    @staticmethod
    def _read(
        payload: bytes, link: ActivatedVersion, read: Callable[[Transfer], _Read]
    ) -> tuple[Transfer, _Read]:
        """Decode `payload`, check its fee against the policy's ceiling and `read` it; a refusal
        is this node's, under the version in force."""
        try:
            transfer = decode_transaction(payload)
            check_fee_ceiling(transfer, link.document)  # every route burns fees alike
            return transfer, read(transfer)
        except TransactionRefused as exc:
            raise NodeError(
                exc.code, exc.detail, check=exc.check, policy_hash=link.policy_hash
            ) from exc

    def _sender_presignature(
        self,
        request: CancellationRequest | AllowanceRequest | InternalTransferRequest,
        policy_hash: str,
    ) -> _Presignature:
        """The request's presignature, made for the key and path of the sender it names."""
        presignature = self._presignature(
            bytes.fromhex(request.key_id), bytes.fromhex(request.presignature_id)
        )
        self._check_sender(request.sender, presignature, policy_hash)
        return presignature

    @staticmethod
    def _check_sender(sender: str, presignature: _Presignature, policy_hash: str) -> None:
        derived = address_of(presignature.public.derivation.public_key)
        if derived.lower() != sender.lower():
            path = "/".join(str(i) for i in presignature.public.derivation.path) or "(root)"
            raise NodeError(
                ErrorCode.SENDER_MISMATCH,
                f"the transaction claims sender {sender}; this key at path {path} "
                f"(bound to the presignature) is {derived}",
                check="sender",
                policy_hash=policy_hash,
            )

    def _check_receipts(
        self, request: SignRequest, presignature: _Presignature, decided: Decided
    ) -> frozenset[int]:
        """A velocity-limited intent needs receipts from q committee nodes, this one included
        (receipts.py): its own receipt under the version in force, and its reservation still
        live in its own ledger."""
        if not decided.limits:
            return frozenset()
        needed = receipt_quorum(
            decided.limits, len(presignature.committee), len(presignature.public.signers)
        )
        if not self.gate.holds_reservation(decided):
            raise NodeError(
                ErrorCode.RECEIPTS_MISSING,
                "this node holds no velocity reservation for the request: ask it for a receipt "
                "(POST /v1/receipts) first",
                check="own_receipt",
                policy_hash=decided.policy_hash,
            )
        counted, problems = count(
            request.receipts,
            self.roster(),
            presignature.committee,
            decided.decoded.intent,
            policy_hash=decided.policy_hash,
            limits=decided.limits,
        )
        if self.state.index not in counted:
            # Its own receipt, bound to the version in force: a reservation made under an
            # older version was checked against older limits.
            raise NodeError(
                ErrorCode.RECEIPTS_MISSING,
                "the request carries no receipt of this node under the policy in force"
                + (f" ({'; '.join(problems)})" if problems else ""),
                check="own_receipt",
                policy_hash=decided.policy_hash,
            )
        if len(counted) < needed:
            why = f"; not counted: {'; '.join(problems)}" if problems else ""
            raise NodeError(
                ErrorCode.RECEIPTS_MISSING,
                f"{len(counted)} of the {needed} velocity receipts needed (nodes "
                f"{sorted(counted)}){why}",
                check="receipts",
                policy_hash=decided.policy_hash,
            )
        return counted
