"""Issuing this node's partial signatures: the one code path that produces one.

Two doors lead here, and both go through the checks below:

* `sign_transaction` (`POST /v1/sign`): a wallet transaction, after the policy decision
  (signer/node/decision.py), the velocity receipts (signer/node/receipts.py) and the sender
  check: the node derives the sending address from its own key and the derivation path bound
  to the presignature at presign time, and refuses a transaction that claims another;
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

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from signer.chains.evm import ChainError, Transfer, address_of, decode_signing_payload
from signer.chains.replacement import replacement_problem
from signer.node import codec
from signer.node.api import SignReply, SignRequest
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
from signer.protocol.presign import PresignaturePublic
from signer.protocol.sign import HashScheme, issue_partial


def _replacement_problem(stored: bytes | None, new: Transfer) -> str | None:
    if stored is None:
        return "it was signed before replacements were recorded"
    try:
        old = decode_signing_payload(stored)
    except ChainError:  # pragma: no cover - stored only after it decoded
        return "the stored transaction does not decode"
    return replacement_problem(old, new)


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
        self._check_sender(request, presignature, decided)
        receipts = self._check_receipts(request, presignature, decided)
        intent = decided.decoded.intent

        def record(session: Session) -> None:
            # Core statements, not the ORM's unit of work: this runs on every signature.
            now = time.time()
            existing = session.execute(
                text("SELECT payload_hash, payload FROM signed_requests WHERE request_id = :id"),
                {"id": intent.request_id},
            ).first()
            payload_hash = decided.decoded.payload_hash.hex()
            if existing is not None and existing[0] != payload_hash:
                # only a fee replacement of what it signed last (signer/chains/replacement.py)
                problem = _replacement_problem(existing[1], decided.decoded.transfer)
                if problem is not None:
                    raise NodeError(
                        ErrorCode.REQUEST_REUSED,
                        f"request {intent.request_id} already signed another transaction "
                        f"here: {problem}",
                        check="request_id",
                        policy_hash=decided.policy_hash,
                    )
                replaces = existing[0]
                session.execute(
                    text(
                        "UPDATE signed_requests SET payload_hash = :hash, payload = :payload, "
                        "signed_at = :at WHERE request_id = :id"
                    ),
                    {
                        "hash": payload_hash,
                        "payload": bytes.fromhex(request.transaction),
                        "at": now,
                        "id": intent.request_id,
                    },
                )
            else:
                replaces = None
            if existing is None:
                session.execute(
                    insert(SignedRequestRow).values(
                        request_id=intent.request_id,
                        intent_digest=intent.digest_hex(),
                        payload_hash=payload_hash,
                        key_id=request.key_id,
                        signed_at=now,
                        payload=bytes.fromhex(request.transaction),
                    )
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

    @staticmethod
    def _check_sender(request: SignRequest, presignature: _Presignature, decided: Decided) -> None:
        derived = address_of(presignature.public.derivation.public_key)
        if derived.lower() != request.sender.lower():
            path = "/".join(str(i) for i in presignature.public.derivation.path) or "(root)"
            raise NodeError(
                ErrorCode.SENDER_MISMATCH,
                f"the transaction claims sender {request.sender}; this key at path {path} "
                f"(bound to the presignature) is {derived}",
                check="sender",
                policy_hash=decided.policy_hash,
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
