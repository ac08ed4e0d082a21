"""A key-share node's logic, independent of HTTP: `NodeService`, the façade the app, the CLI and
the tests use.  It runs the session lifecycle itself and delegates every other job to a module
of its own:

  sessions.py    session records and replies (`Session`, `SessionReply`, TTL and limits)
  parties.py     which protocol party a spec runs, on which stored inputs
  results.py     storing a finished session's output (sealed) before it reports "done"
  state.py       sealing/unsealing and reading the node's stored secrets back
  quarantine.py  failed sessions as security events (attacks.md A03)
  signing.py     the one code path that issues partials (presignature consumed first)
  decision.py    the policy decision on a wallet request; receipts.py its velocity receipts
  key_gate.py    which wallet a new key belongs to; the officers' quorum for a re-share
  governance.py  the node's policy chain and freezes; audit.py its audit log
  versions.py    storage confirmations and activation of pending key versions (A12)
  metrics.py     the node's Prometheus registry; logs go through `signer.logs`

Every session is created from a `SessionSpec` and then fed envelopes; each call returns the
envelopes to relay next and the session's status.  On completion the result is stored before
the status says "done"; an aborted session stores nothing, reports the culprits and the failed
check, and quarantines (A03): the parties it names, or — when a cryptographic failure names
nobody — its party set, in this node's own database, so no coordinator can turn failures into
an oracle by retrying.  A presign whose output check failed keeps its identification state (in
memory, for the session TTL) until the coordinator runs `presign_identify/v1`.  One re-share or
refresh per key is in flight at a time.

Each outcome is logged as a structured event (session id, party, protocol, outcome, code,
check, culprits — never an input or a payload) and counted in `NodeMetrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hsm.errors import HsmError
from signer.errors import CryptoMisuse, EncodingError, InvalidParameter
from signer.logs import log_event
from signer.node import receipts
from signer.node.api import (
    AllowanceRequest,
    CancellationRequest,
    Finding,
    IdentifyResult,
    InternalTransferRequest,
    SessionProtocol,
    SessionResult,
    SignReply,
    SignRequest,
    TransactionRequest,
    VelocityReceipt,
)
from signer.node.audit import AuditKind
from signer.node.confirmation import ActivationReply, KeyConfirmation, KeyVersionState
from signer.node.decision import PolicyGate, audit_fields
from signer.node.enforcement import Enforcement
from signer.node.envelope import Endpoint, Envelope, EnvelopeRejected, NodeCard
from signer.node.errors import NodeError
from signer.node.faults import failpoint
from signer.node.key_gate import KeyGate
from signer.node.metrics import NodeMetrics
from signer.node.parties import new_party
from signer.node.quarantine import NOT_SECURITY_EVENTS, Quarantine
from signer.node.results import Results
from signer.node.sessions import (
    MAX_SESSIONS,
    SESSION_TTL_SECONDS,
    Session,
    SessionReply,
    abort_json,
    rejection,
)
from signer.node.signing import Signing
from signer.node.spec import SessionSpec
from signer.node.state import NodeState, Sealer
from signer.node.store import NodeStore, StoreError
from signer.node.versions import KeyVersions
from signer.paillier import PaillierSecretKey
from signer.problems import ErrorCode
from signer.protocol.aux_info import AuxInfo
from signer.protocol.base import Message, MessageRefused, Party, ProtocolAbort, SessionConfig
from signer.protocol.keygen import KeyShare
from signer.protocol.presign_identify import (
    Identification,
    IdentificationRequired,
    IdentificationState,
)
from signer.protocol.sign import HashScheme

# Re-exported: these names have always been importable from here.
__all__ = [
    "MAX_SESSIONS",
    "NOT_SECURITY_EVENTS",
    "SESSION_TTL_SECONDS",
    "NodeService",
    "Sealer",
    "SessionReply",
    "abort_json",
]

log = logging.getLogger("tessera.node")

#: Sessions that create or move a key: each start, and each refusal of one, is audited.
_KEY_PROTOCOLS = (SessionProtocol.KEYGEN, SessionProtocol.RESHARE, SessionProtocol.REFRESH)


class NodeService:
    def __init__(
        self,
        node_id: str,
        index: int,
        store: NodeStore,
        sealer: Sealer,
        endpoint: Endpoint,
        paillier_source: Callable[[], PaillierSecretKey],
        metrics: NodeMetrics | None = None,
        enforcement: Enforcement | None = None,
    ) -> None:
        self.node_id = node_id
        self.index = index
        self.store = store
        self.sealer = sealer
        self._paillier = paillier_source
        self.metrics = metrics if metrics is not None else NodeMetrics()
        # Without one given (a test's in-process node): no genesis, no raw keys, a read-only
        # audit log and a ledger next to the database — a node that signs nothing at all.
        self.enforcement = enforcement or Enforcement.open(store, genesis=None, raw_keys=False)
        self.governance = self.enforcement.governance
        self.audit = self.enforcement.audit
        self.gate = PolicyGate(
            store,
            self.governance,
            self.enforcement.ledger,
            raw_keys=self.enforcement.raw_keys,
            observe=self.metrics.decided,
        )
        self.key_gate = KeyGate(store, self.governance, raw_keys=self.enforcement.raw_keys)
        self.state = NodeState(node_id, index, store, sealer)
        self.results = Results(self.state)
        self.quarantine = Quarantine(store, index, self.audit)
        self.signing = Signing(
            self.state, self.quarantine, self.gate, self.audit, lambda: self.endpoint.roster
        )
        self.key_versions = KeyVersions(self.state, endpoint)
        self._sessions: dict[bytes, Session] = {}
        self._identifications: dict[bytes, tuple[IdentificationState, float]] = {}
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> Endpoint:
        return self.key_versions.endpoint

    @endpoint.setter
    def endpoint(self, endpoint: Endpoint) -> None:
        self.key_versions.endpoint = endpoint

    @property
    def card(self) -> NodeCard:
        return self.endpoint.roster.card(self.index)

    # --- stored state (state.py) ---------------------------------------------------------------
    def key_share(self, key_id: bytes) -> KeyShare:
        return self.state.key_share(key_id)

    def aux_info(self, aux_id: bytes) -> AuxInfo:
        return self.state.aux_info(aux_id)

    # --- sessions ------------------------------------------------------------------------------
    def start(self, spec: SessionSpec) -> SessionReply:
        try:
            reply = self._start(spec)
        except NodeError as exc:
            if spec.protocol in _KEY_PROTOCOLS:
                # Key management is a policy decision too (key_gate.py): refusals are audited.
                self._refused(
                    str(spec.protocol), {"key_id": spec.key_id.hex(), "wallet": spec.wallet}, exc
                )
            # Refused before anything ran: counted, logged with its code, never the spec.
            self.metrics.session_outcome(str(spec.protocol), "refused", None)
            log_event(
                log,
                "session.refused",
                level=logging.WARNING,
                party=self.index,
                protocol=str(spec.protocol),
                outcome="refused",
                code=exc.code.value,
                culprit=exc.culprit,
            )
            raise
        if spec.protocol in _KEY_PROTOCOLS:
            self.audit.record(
                AuditKind.NODE_KEY,
                {
                    "action": str(spec.protocol),
                    "key_id": spec.key_id.hex(),
                    "wallet": spec.wallet or None,
                    "parties": list(spec.parties),
                    "new_parties": list(spec.new_parties),
                    "threshold": spec.threshold,
                    "authorised_by": sorted({s.officer for s in spec.authorization}),
                    "policy_hash": self.governance.policy_hash(),
                },
            )
        return reply

    def _start(self, spec: SessionSpec) -> SessionReply:
        if self.index not in spec.parties:
            raise NodeError(
                ErrorCode.NOT_A_PARTY, f"party {self.index} is not in {list(spec.parties)}"
            )
        # Identifying a culprit is always allowed, even among quarantined parties.
        if spec.protocol != SessionProtocol.PRESIGN_IDENTIFY:
            self.quarantine.refuse(spec.parties)
        try:
            config = SessionConfig(
                spec.protocol, spec.parties, self.index, spec.threshold, spec.key_id, spec.request
            )
            party, finish = self._party(spec, config)
        except (InvalidParameter, EncodingError, CryptoMisuse, StoreError) as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        instance = config.instance()
        try:
            # Durable and before round 1: this node never signs two different round-1
            # messages for one session, not even after a restart, so two validly signed
            # different payloads from one sender always prove that sender lied — a coordinator
            # cannot replay a request id to frame an honest node for equivocation.
            self.store.record_session_start(instance.hex(), spec.protocol)
        except StoreError as exc:
            raise NodeError(
                ErrorCode.DUPLICATE_SESSION,
                "this node already started a session with this request id",
            ) from exc
        with self._lock:
            self._expire()
            if instance in self._sessions:
                raise NodeError(
                    ErrorCode.DUPLICATE_SESSION, "a session with this request id is running"
                )
            if len(self._sessions) >= MAX_SESSIONS:
                raise NodeError(ErrorCode.BUSY, f"{MAX_SESSIONS} sessions are running")
            if spec.protocol in (SessionProtocol.RESHARE, SessionProtocol.REFRESH):
                # Under the lock that also inserts the session: two plans started at once
                # cannot both pass (and a finishing session stores its pending version before
                # it leaves `_sessions`, so one of the two checks always sees it).
                self._refuse_plan_in_flight(spec.key_id)
            session = Session(spec, party, finish)
            self._sessions[instance] = session
        log_event(
            log,
            "session.start",
            session=instance,
            party=self.index,
            protocol=str(spec.protocol),
            parties=spec.parties,
        )
        with session.lock:
            try:
                outgoing = party.start()
            except ProtocolAbort as abort:  # e.g. INTERNAL in round 1: a failed session
                outgoing = list(abort.outgoing)
                session.status = "aborted"
                session.abort = abort_json(abort)
                self._on_abort(instance, session.spec, abort)
            return self._reply(instance, session, outgoing)

    def deliver(self, instance: bytes, envelopes: Sequence[Envelope]) -> SessionReply:
        with self._lock:
            session = self._sessions.get(instance)
        if session is None:
            raise NodeError(ErrorCode.UNKNOWN_SESSION, f"no running session {instance.hex()[:16]}")
        with session.lock:
            session.touched = time.monotonic()
            outgoing: list[Message] = []
            rejected: list[dict[str, Any]] = []
            for envelope in envelopes:
                if session.status != "running" or session.halted:
                    break
                try:
                    message = self.endpoint.open(envelope)
                    if message.session != instance:
                        raise EnvelopeRejected(envelope.sender, "FORMAT", "another session")
                    outgoing.extend(session.party.receive(message))
                except (EnvelopeRejected, CryptoMisuse, MessageRefused) as exc:
                    # Not from a pinned peer, altered, or from a pinned node that is not a party
                    # of this session: drop it, report it, keep waiting — one signed envelope
                    # from outside the session must not end it (attacks.md A17).
                    report = rejection(envelope, exc)
                    rejected.append(report)
                    log_event(
                        log,
                        "envelope.rejected",
                        level=logging.WARNING,
                        session=instance,
                        party=self.index,
                        protocol=str(session.spec.protocol),
                        check=report["check"],
                        culprit=report["sender"],
                    )
                except ProtocolAbort as abort:
                    # Any failure inside the party, INTERNAL included, arrives here as a
                    # ProtocolAbort (base.py): never a 500.  INTERNAL names nobody and is not
                    # in NOT_SECURITY_EVENTS, so it freezes the party set like any
                    # unattributed failure.
                    outgoing.extend(abort.outgoing)
                    session.status = "aborted"
                    session.abort = abort_json(abort)
                    self._on_abort(instance, session.spec, abort)
            if session.status == "running" and session.halted:
                # Another session's failure quarantined a party of this one: stop here, send
                # nothing more, so concurrent sessions cannot multiply what a failure tells.
                outgoing = []
                session.status = "aborted"
                session.abort = {
                    "protocol": session.spec.protocol,
                    "round": 0,
                    "code": "QUARANTINED",
                    "culprits": [],
                    "detail": session.halted,
                }
            reply = self._reply(instance, session, outgoing)
            if rejected:
                reply.abort = {**(reply.abort or {}), "rejected": rejected}
            return reply

    def cancel(self, instance: bytes) -> bool:
        """Forget a running session (the coordinator gave up on it); True if there was one."""
        with self._lock:
            session = self._sessions.pop(instance, None)
        if session is not None:
            self._ended(instance, session, "cancelled")
        return session is not None

    @property
    def running_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _reply(self, instance: bytes, session: Session, outgoing: list[Message]) -> SessionReply:
        if session.status == "running" and session.party.done:
            failpoint("session.before_store")
            try:
                session.result = session.finish(session.party.result)
            except NodeError as exc:
                # nothing was stored (the store refused the output): over on this node
                with self._lock:
                    self._sessions.pop(instance, None)
                self._outcome(instance, session, "aborted", code=exc.code.value)
                raise
            session.status = "done"
            failpoint("session.after_store")
        envelopes = [self.endpoint.seal(m) for m in outgoing]
        if session.status != "running":
            with self._lock:
                self._sessions.pop(instance, None)
            self._outcome(instance, session, session.status)
        return SessionReply(instance, session.status, envelopes, session.result, session.abort)

    def _outcome(
        self, instance: bytes, session: Session, outcome: str, *, code: str | None = None
    ) -> None:
        """Log and count a session's end: done, or aborted with the failed check and the
        parties it names (the abort's detail stays out: it may describe a peer's message)."""
        seconds = time.monotonic() - session.started
        protocol = str(session.spec.protocol)
        self.metrics.session_outcome(protocol, outcome, seconds)
        fields: dict[str, Any] = {}
        if outcome == "aborted":
            abort = session.abort or {}
            check = abort.get("code")
            fields = {
                "code": code
                or (ErrorCode.QUARANTINED.value if check == "QUARANTINED" else "SESSION_FAILED"),
                "check": check,
                "culprit": abort.get("culprits") or None,
            }
        log_event(
            log,
            f"session.{outcome}",
            level=logging.INFO if outcome == "done" else logging.WARNING,
            session=instance,
            party=self.index,
            protocol=protocol,
            outcome=outcome,
            seconds=round(seconds, 6),
            **fields,
        )

    def _ended(self, instance: bytes, session: Session, outcome: str) -> None:
        """A running session left without an outcome of its own (cancelled, expired)."""
        seconds = time.monotonic() - session.started
        protocol = str(session.spec.protocol)
        self.metrics.session_outcome(protocol, outcome, seconds)
        log_event(
            log,
            f"session.{outcome}",
            session=instance,
            party=self.index,
            protocol=protocol,
            outcome=outcome,
            seconds=round(seconds, 6),
        )

    def _expire(self) -> None:
        now = time.monotonic()
        for instance, session in list(self._sessions.items()):
            if now - session.touched > SESSION_TTL_SECONDS:
                del self._sessions[instance]
                self._ended(instance, session, "expired")
        for request, (_, kept) in list(self._identifications.items()):
            if now - kept > SESSION_TTL_SECONDS:
                del self._identifications[request]

    def _refuse_plan_in_flight(self, key_id: bytes) -> None:
        """One re-share or refresh per key at a time (caller holds `self._lock`).  Two plans of
        one version that both complete leave the nodes split between two new versions with no
        old share left (attacks.md A12 T12c, done with concurrent plans instead of a split
        broadcast), so a plan is in flight — and a second one refused — while this node runs a
        re-share session of the key (until it aborts, is cancelled or expires) and while it
        holds a pending version of the key (until that is activated by a complete set of
        confirmations, or discarded by this node's operator: `tessera node key
        discard-pending`).  Neither can lock the key for good: a session ends within the TTL,
        and the operator can always discard."""
        for other in self._sessions.values():
            if other.spec.protocol in (SessionProtocol.RESHARE, SessionProtocol.REFRESH) and (
                other.spec.key_id == key_id
            ):
                raise NodeError(
                    ErrorCode.PLAN_IN_FLIGHT,
                    f"a {other.spec.protocol} session of key {key_id.hex()[:16]} is running here",
                )
        pending = self.store.pending_key(key_id.hex())
        if pending is not None:
            raise NodeError(
                ErrorCode.PLAN_IN_FLIGHT,
                f"key {key_id.hex()[:16]} epoch {pending.epoch} is pending here: it is activated "
                "by its storage confirmations, or discarded by this node's operator",
            )

    # --- failures (quarantine.py, attacks.md A03) ------------------------------------------------
    def _on_abort(self, instance: bytes, spec: SessionSpec, abort: ProtocolAbort) -> None:
        """Record the failure where no coordinator can undo it (`Quarantine.record_abort`).  A
        failed presign output check also keeps the state its identification needs; the set
        stays frozen until the operator clears it."""
        if isinstance(abort, IdentificationRequired):
            state = abort.identification
            with self._lock:
                self._identifications[state.request()] = (state, time.monotonic())
        self.quarantine.record_abort(instance, spec, abort)
        self._halt_blocked(instance)

    def _halt_blocked(self, failed: bytes) -> None:
        """Mark every other running session that the quarantine now blocks (identification
        excepted: it is how a culprit gets named); each stops at its next delivery."""
        with self._lock:
            running = [(i, s) for i, s in self._sessions.items() if i != failed]
        for _, other in running:
            if other.spec.protocol == SessionProtocol.PRESIGN_IDENTIFY or other.halted:
                continue
            blocked = self.quarantine.blocking(other.spec.parties)
            if blocked is not None:
                other.halted = blocked

    def _finish_identify(self, result: Identification, spec: SessionSpec) -> SessionResult:
        """Every party this node found lying is quarantined; the identification state is gone."""
        with self._lock:
            self._identifications.pop(spec.request, None)
        for finding in result.findings:
            if finding.party != self.index:
                self.quarantine.record(
                    "party",
                    [finding.party],
                    spec,
                    result.session_id,
                    finding.check.value,
                    f"identification of {result.equation.value}: {finding.detail}",
                )
        self._halt_blocked(b"")
        return IdentifyResult(
            failed_session=result.session_id.hex(),
            equation=result.equation.value,
            culprits=sorted(result.culprits),
            findings=[
                Finding(party=f.party, check=f.check.value, detail=f.detail)
                for f in result.findings
            ],
        )

    def _party(
        self, spec: SessionSpec, config: SessionConfig
    ) -> tuple[Party[Any], Callable[[Any], SessionResult]]:
        """The party and result-storing function for `spec` (parties.py); a method so that
        tests can substitute a malicious party (tests/node_local.py)."""
        identification = None
        if spec.protocol == SessionProtocol.PRESIGN_IDENTIFY:
            with self._lock:
                kept = self._identifications.get(spec.request)
            identification = None if kept is None else kept[0]
        return new_party(
            spec,
            config,
            state=self.state,
            results=self.results,
            paillier=self._paillier,
            identification=identification,
            finish_identify=lambda r: self._finish_identify(r, spec),
            key_gate=self.key_gate,
        )

    # --- key versions (versions.py) ------------------------------------------------------------
    def confirm(self, key_id: bytes, epoch: int) -> KeyConfirmation:
        return self.key_versions.confirm(key_id, epoch)

    def activate(
        self, key_id: bytes, epoch: int, statements: Sequence[KeyConfirmation]
    ) -> ActivationReply:
        return self.key_versions.activate(key_id, epoch, statements)

    def versions(self, key_id: bytes) -> list[KeyVersionState]:
        return self.key_versions.versions(key_id)

    # --- signing (signing.py, decision.py, receipts.py) ----------------------------------------
    def sign(
        self, key_id: bytes, presignature_id: bytes, message: bytes, scheme: HashScheme
    ) -> SignReply:
        """This node's partial signature on raw `message` (a raw key only: `sign_raw`)."""
        return self._signed(
            "sign_raw",
            {"key_id": key_id.hex(), "presignature_id": presignature_id.hex()},
            lambda: self.signing.sign_raw(key_id, presignature_id, message, scheme),
        )

    def sign_transaction(self, request: SignRequest) -> SignReply:
        """This node's partial signature on a wallet transaction its policy allows."""
        return self._signed(
            "sign",
            _request_fields(request) | {"presignature_id": request.presignature_id},
            lambda: self.signing.sign_transaction(request)[0],
        )

    def sign_cancellation(self, request: CancellationRequest) -> SignReply:
        """This node's partial signature on a cancellation of what it signed for a request."""
        return self._signed(
            "sign_cancel",
            {
                "key_id": request.key_id,
                "request_id": request.request_id,
                "presignature_id": request.presignature_id,
            },
            lambda: self.signing.sign_cancellation(request),
        )

    def sign_allowance(self, request: AllowanceRequest) -> SignReply:
        """This node's partial signature on the allowance a token batch spends."""
        return self._signed(
            "sign_allowance",
            {
                "key_id": request.key_id,
                "request_id": request.request_id,
                "presignature_id": request.presignature_id,
            },
            lambda: self.signing.sign_allowance(request),
        )

    def sign_internal(self, request: InternalTransferRequest) -> SignReply:
        """This node's partial signature on a transfer between two of a wallet's addresses."""
        return self._signed(
            "sign_internal",
            {
                "key_id": request.key_id,
                "request_id": request.request_id,
                "presignature_id": request.presignature_id,
            },
            lambda: self.signing.sign_internal(request),
        )

    def receipt(self, request: TransactionRequest) -> VelocityReceipt:
        """Reserve the request's amount in this node's ledger and return the signed receipt
        (receipts.py).  Refusals are audited like a refused signature."""
        try:
            decided = self.gate.decide(request, "receipt")
            self.gate.reserve(decided)
            issued = receipts.issue(
                self.endpoint,
                decided.decoded.intent,
                policy_hash=decided.policy_hash,
                limits=decided.limits,
            )
        except (NodeError, HsmError) as exc:
            self._refused("receipt", _request_fields(request), exc)
            raise
        self.audit.record(
            AuditKind.NODE_RECEIPT,
            {
                **audit_fields(decided),
                "key_id": request.key_id,
                "limits": issued.limits,
                "window_seconds": issued.window_seconds,
            },
        )
        return issued

    def _signed(
        self, action: str, fields: dict[str, Any], issue: Callable[[], SignReply]
    ) -> SignReply:
        """Issued and refused signatures are logged with their code (and culprit, when one is
        named), counted and — refusals; issued ones are recorded with the presignature's
        consumption — audited; the message, the presignature's secret and the partial never
        are."""
        try:
            reply = issue()
        except (NodeError, HsmError) as exc:
            self._refused(action, fields, exc)
            raise
        self.metrics.signature_issued()
        log_event(
            log,
            "signature.issued",
            party=self.index,
            key=bytes.fromhex(fields["key_id"]),
            presignature=bytes.fromhex(fields["presignature_id"]),
            outcome="issued",
            code="ok",
        )
        return reply

    def _refused(self, action: str, fields: dict[str, Any], exc: NodeError | HsmError) -> None:
        code = exc.code if isinstance(exc, NodeError) else ErrorCode.HSM
        # (a session refusal is logged by start)
        if action in (
            "sign",
            "sign_raw",
            "sign_cancel",
            "sign_allowance",
            "sign_internal",
            "receipt",
        ):
            if action != "receipt":
                self.metrics.signature_refused(code)
            log_event(
                log,
                "signature.refused" if action != "receipt" else "receipt.refused",
                level=logging.WARNING,
                party=self.index,
                key=bytes.fromhex(fields["key_id"]),
                outcome="refused",
                code=code.value,
                culprit=exc.culprit if isinstance(exc, NodeError) else None,
            )
        node_error = exc if isinstance(exc, NodeError) else None
        self.audit.record(
            AuditKind.NODE_REFUSED,
            {
                **fields,
                "action": action,
                "code": code.value,
                "check": None if node_error is None else node_error.check,
                "rule": None if node_error is None else node_error.rule,
                "policy_hash": (
                    node_error.policy_hash
                    if node_error is not None and node_error.policy_hash
                    else self.governance.policy_hash()
                ),
                "detail": (node_error.detail if node_error is not None else str(exc))[:500],
            },
        )


def _request_fields(request: TransactionRequest) -> dict[str, Any]:
    """What a refusal's audit record says of the request: ids only (the request id at most
    128 characters), never the transaction or the approvals."""
    return {"key_id": request.key_id, "request_id": request.request_id[:128]}
