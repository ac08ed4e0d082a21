"""A key-share node's logic, independent of HTTP: sessions of the sans-IO protocols driven by
the coordinator's relayed envelopes, durable results, and the one-round signing path.

Every session is created from a `SessionSpec` (what to run, with whom) and then fed envelopes;
each call returns the envelopes to relay next and the session's status.  On completion the
result is stored before the status says "done": key shares, aux-info secrets and
presignatures sealed by the node's HSM (AAD: node id, key or object id, version, purpose).
An aborted session stores nothing and reports the culprits and the failed check.  A re-share or
refresh stores its output as a *pending* key version; the old one stays active until `activate`
gets a storage confirmation from every member of the new committee (`confirm`,
signer/node/confirmation.py), and one such plan per key is in flight at a time.

A failed session is a security event (attacks.md A03), never a retryable error: the parties it
names are quarantined, and a cryptographic failure that names nobody freezes its party set, in
this node's own database — so no coordinator can turn failures into an oracle by retrying.  A
presign whose output check failed keeps its identification state (in memory, for the session
TTL) until the coordinator runs `presign_identify/v1`, which names the party that lied.

Signing consumes the presignature durably *before* computing the partial signature
(`store.consume_presignature`), so a crash at any point can lose a presignature but never
reuse one; a presignature is only usable for its key version, signer set and path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from signer.curve import Point
from signer.errors import Check, CryptoMisuse, EncodingError, InvalidParameter, TesseraError
from signer.node import codec
from signer.node.api import (
    AbortReport,
    AuxResult,
    Finding,
    IdentifyResult,
    KeyResult,
    PresignResult,
    ReshareReport,
    SessionProtocol,
    SessionResult,
    SignReply,
    join_indices,
    join_path,
)
from signer.node.confirmation import (
    ActivationReply,
    ConfirmationRejected,
    KeyConfirmation,
    KeyVersionState,
    check_set,
)
from signer.node.envelope import Endpoint, Envelope, EnvelopeRejected, NodeCard
from signer.node.errors import NodeError
from signer.node.faults import failpoint
from signer.node.spec import SessionSpec
from signer.node.store import (
    KeyConfirmationRow,
    KeyVersionRow,
    NodeStore,
    PresignatureRow,
    QuarantineRow,
    StoreError,
)
from signer.paillier import PaillierSecretKey
from signer.problems import ErrorCode
from signer.protocol.aux_info import AuxInfo, AuxInfoParty
from signer.protocol.base import Message, MessageRefused, Party, ProtocolAbort, SessionConfig
from signer.protocol.keygen import KeygenParty, KeyPublic, KeyShare
from signer.protocol.presign import Presignature, PresignParty
from signer.protocol.presign_identify import (
    Identification,
    IdentificationRequired,
    IdentificationState,
    PresignIdentifyParty,
)
from signer.protocol.reshare import (
    RefreshParty,
    ReshareParty,
    ResharePlan,
    ReshareResult,
)
from signer.protocol.sign import HashScheme, issue_partial

#: A session that made no progress for this long is forgotten (the coordinator retries).
SESSION_TTL_SECONDS = 600.0
MAX_SESSIONS = 256

#: Failures that name nobody and freeze nothing: round-1 session contexts that differ (e.g. a
#: node on an older key version) are found before any secret is used, so their outcome cannot
#: depend on a secret.  (A message from outside the party set no longer aborts anything: the
#: party refuses it and the session goes on, `MessageRefused`.)
NOT_SECURITY_EVENTS = frozenset({Check.MISMATCH})


class Sealer(Protocol):
    """The HSM operations a node needs (hsm.keystore.KeyStore satisfies it)."""

    def seal(
        self, plaintext: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes: ...

    def unseal(
        self, blob: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes: ...


@dataclass
class SessionReply:
    session: bytes
    status: str  # running | done | aborted
    envelopes: list[Envelope] = field(default_factory=list)
    result: SessionResult | None = None
    abort: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session.hex(),
            "status": self.status,
            "envelopes": [e.to_dict() for e in self.envelopes],
            "result": None if self.result is None else self.result.model_dump(),
            "abort": self.abort,
        }


@dataclass
class _Session:
    spec: SessionSpec
    party: Party[Any]
    finish: Callable[[Any], SessionResult]
    lock: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.monotonic)
    status: str = "running"
    result: SessionResult | None = None
    abort: dict[str, Any] | None = None
    halted: str | None = None  # set when a new quarantine entry blocks this running session


def abort_json(abort: ProtocolAbort) -> dict[str, Any]:
    """The abort's wire report (`signer.node.api.AbortReport`, checked as it is built)."""
    report = AbortReport(
        protocol=abort.protocol,
        round=abort.round,
        code=abort.code.value,
        culprits=sorted(abort.culprits),
        detail=abort.detail,
        # the request id of the identification session every signer is now ready to run
        identification=(
            abort.identification.request().hex()
            if isinstance(abort, IdentificationRequired)
            else None
        ),
    )
    return report.model_dump(exclude_none=True, exclude={"rejected"})


class NodeService:
    def __init__(
        self,
        node_id: str,
        index: int,
        store: NodeStore,
        sealer: Sealer,
        endpoint: Endpoint,
        paillier_source: Callable[[], PaillierSecretKey],
    ) -> None:
        self.node_id = node_id
        self.index = index
        self.store = store
        self.sealer = sealer
        self.endpoint = endpoint
        self._paillier = paillier_source
        self._sessions: dict[bytes, _Session] = {}
        self._identifications: dict[bytes, tuple[IdentificationState, float]] = {}
        self._lock = threading.Lock()

    @property
    def card(self) -> NodeCard:
        return self.endpoint.roster.card(self.index)

    # --- sealing -------------------------------------------------------------------------------
    def _seal(self, data: bytes, ref: str, version: int, purpose: str) -> bytes:
        return self.sealer.seal(
            data, node_id=self.node_id, key_id=ref, share_version=version, purpose=purpose
        )

    def _unseal(self, blob: bytes, ref: str, version: int, purpose: str) -> bytes:
        return self.sealer.unseal(
            blob, node_id=self.node_id, key_id=ref, share_version=version, purpose=purpose
        )

    # --- loading state -------------------------------------------------------------------------
    def key_share(self, key_id: bytes) -> KeyShare:
        row = self._active_key(key_id)
        if row.sealed_share is None:
            raise NodeError(
                ErrorCode.NO_SHARE, f"this node holds no share of key {key_id.hex()[:16]}"
            )
        public = codec.decode_key_public(row.public)
        secret = self._unseal(row.sealed_share, key_id.hex(), row.epoch, "key_share")
        share = codec.key_share(public, secret)
        if share.index != self.index:
            raise NodeError(ErrorCode.CORRUPT, "stored share belongs to another party index")
        return share

    def _active_key(self, key_id: bytes) -> KeyVersionRow:
        try:
            return self.store.active_key(key_id.hex())
        except StoreError as exc:
            raise NodeError(ErrorCode.UNKNOWN_KEY, str(exc)) from exc

    def aux_info(self, aux_id: bytes) -> AuxInfo:
        row = self.store.aux(aux_id.hex())
        secret = self._unseal(row.sealed_secret, aux_id.hex(), 0, "aux_info")
        aux = codec.aux_info(row.public, self.index, secret)
        if aux.aux_id() != aux_id:
            raise NodeError(
                ErrorCode.CORRUPT, f"aux-info record {aux_id.hex()[:16]} does not match its id"
            )
        return aux

    def _replaced_moduli(self, aux_id: bytes) -> frozenset[int]:
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

    # --- sessions ------------------------------------------------------------------------------
    def start(self, spec: SessionSpec) -> SessionReply:
        if self.index not in spec.parties:
            raise NodeError(
                ErrorCode.NOT_A_PARTY, f"party {self.index} is not in {list(spec.parties)}"
            )
        # Identifying a culprit is always allowed, even among quarantined parties.
        if spec.protocol != SessionProtocol.PRESIGN_IDENTIFY:
            self._refuse_quarantined(spec.parties)
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
            session = _Session(spec, party, finish)
            self._sessions[instance] = session
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
                    # from outside the session must not end it (attacks.md A19 T19f).
                    rejected.append(_rejection(envelope, exc))
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
        return session is not None

    @property
    def running_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _reply(self, instance: bytes, session: _Session, outgoing: list[Message]) -> SessionReply:
        if session.status == "running" and session.party.done:
            failpoint("session.before_store")
            try:
                session.result = session.finish(session.party.result)
            except NodeError:
                # nothing was stored (the store refused the output): over on this node
                with self._lock:
                    self._sessions.pop(instance, None)
                raise
            session.status = "done"
            failpoint("session.after_store")
        envelopes = [self.endpoint.seal(m) for m in outgoing]
        if session.status != "running":
            with self._lock:
                self._sessions.pop(instance, None)
        return SessionReply(instance, session.status, envelopes, session.result, session.abort)

    def _expire(self) -> None:
        now = time.monotonic()
        for instance, session in list(self._sessions.items()):
            if now - session.touched > SESSION_TTL_SECONDS:
                del self._sessions[instance]
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

    # --- quarantine (attacks.md A03) -------------------------------------------------------------
    def _refuse_quarantined(self, parties: Sequence[int]) -> None:
        row = self.store.blocking(tuple(parties))
        if row is not None:
            raise NodeError(
                ErrorCode.QUARANTINED,
                f"{row.describe()}; only this node's operator can clear it "
                "(tessera node quarantine clear)",
            )

    def _quarantine(
        self,
        kind: str,
        parties: Sequence[int],
        spec: SessionSpec,
        session: bytes,
        code: str,
        detail: str,
    ) -> None:
        self.store.quarantine(
            QuarantineRow(
                kind=kind,
                parties=join_indices(tuple(sorted(parties))),
                key_id=spec.key_id.hex(),
                protocol=spec.protocol,
                session=session.hex(),
                code=code,
                detail=detail[:1000],
                created_at=time.time(),
            )
        )

    def _on_abort(self, instance: bytes, spec: SessionSpec, abort: ProtocolAbort) -> None:
        """Record the failure where no coordinator can undo it: named parties are quarantined;
        a failure that names nobody freezes the party set (unless it cannot depend on a secret,
        NOT_SECURITY_EVENTS).  A failed presign output check also keeps the state its
        identification needs; the set stays frozen until the operator clears it."""
        if isinstance(abort, IdentificationRequired):
            state = abort.identification
            with self._lock:
                self._identifications[state.request()] = (state, time.monotonic())
        culprits = sorted(abort.culprits - {self.index})
        code = abort.code.value
        for culprit in culprits:
            self._quarantine("party", [culprit], spec, instance, code, abort.detail)
        if not culprits and abort.code not in NOT_SECURITY_EVENTS:
            self._quarantine("signer_set", spec.parties, spec, instance, code, abort.detail)
        self._halt_blocked(instance)

    def _halt_blocked(self, failed: bytes) -> None:
        """Mark every other running session that the quarantine now blocks (identification
        excepted: it is how a culprit gets named); each stops at its next delivery."""
        with self._lock:
            running = [(i, s) for i, s in self._sessions.items() if i != failed]
        for _, other in running:
            if other.spec.protocol == SessionProtocol.PRESIGN_IDENTIFY or other.halted:
                continue
            row = self.store.blocking(other.spec.parties)
            if row is not None:
                other.halted = row.describe()

    def _party(
        self, spec: SessionSpec, config: SessionConfig
    ) -> tuple[Party[Any], Callable[[Any], SessionResult]]:
        if spec.protocol == SessionProtocol.KEYGEN:
            return KeygenParty(config), self._finish_keygen
        if spec.protocol == SessionProtocol.AUX_INFO:
            previous = self._replaced_moduli(spec.aux_id)
            return AuxInfoParty(config, self._paillier(), previous), self._finish_aux
        if spec.protocol == SessionProtocol.PRESIGN:
            key = self.key_share(spec.key_id)
            aux = self.aux_info(spec.aux_id)
            party = PresignParty(config, key, aux, spec.path)
            return party, lambda p: self._finish_presign(p, spec, key.epoch)
        if spec.protocol == SessionProtocol.PRESIGN_IDENTIFY:
            with self._lock:
                kept = self._identifications.get(spec.request)
            if kept is None:
                raise NodeError(
                    ErrorCode.UNKNOWN_SESSION,
                    "no failed presign awaits identification under this request",
                )
            state = kept[0]
            if state.session_config() != config:
                raise NodeError(
                    ErrorCode.BAD_REQUEST, "identification spec differs from the failed presign"
                )
            return PresignIdentifyParty(config, state), lambda r: self._finish_identify(r, spec)
        if spec.protocol in (SessionProtocol.RESHARE, SessionProtocol.REFRESH):
            old = codec.decode_key_public(spec.plan_old)
            if old.key_id != spec.key_id:
                raise NodeError(ErrorCode.BAD_REQUEST, "plan is for another key")
            plan = ResharePlan(old, spec.dealers, spec.new_parties, spec.threshold)
            share = self.key_share(spec.key_id) if self.index in plan.dealers else None
            current = self._active_public(spec.key_id)
            if (share is not None and share.public_data() != old) or (
                current is not None and current != old  # a member that is no dealer, too
            ):
                raise NodeError(
                    ErrorCode.STALE_PLAN, "the plan's key version is not this node's active one"
                )
            if spec.protocol == SessionProtocol.REFRESH:
                if share is None or not plan.is_refresh:
                    raise NodeError(
                        ErrorCode.BAD_REQUEST, "a refresh re-shares to the same committee"
                    )
                return RefreshParty(config, share), self._finish_reshare
            return ReshareParty(config, plan, share), self._finish_reshare
        raise NodeError(ErrorCode.BAD_REQUEST, f"unknown protocol {spec.protocol!r}")

    # --- results -------------------------------------------------------------------------------
    def _store_key(
        self, share: KeyShare | None, public_bytes: bytes, key_id: bytes, epoch: int
    ) -> None:
        sealed = None
        if share is not None:
            sealed = self._seal(codec.encode_share_secret(share), key_id.hex(), epoch, "key_share")
        self.store.put_key_version(key_id.hex(), epoch, public_bytes, sealed)

    def _finish_keygen(self, share: KeyShare) -> SessionResult:
        public = share.public_data()
        encoded = codec.encode_key_public(public)
        self._store_key(share, encoded, share.key_id, share.epoch)
        return _key_result(public, encoded)

    def _finish_aux(self, aux: AuxInfo) -> SessionResult:
        aux_id = aux.aux_id()
        sealed = self._seal(aux.own.to_bytes(), aux_id.hex(), 0, "aux_info")
        self.store.put_aux(aux_id.hex(), aux.parties, codec.encode_aux_public(aux), sealed)
        return AuxResult(aux_id=aux_id.hex(), parties=list(aux.parties))

    def _finish_presign(
        self, presignature: Presignature, spec: SessionSpec, epoch: int
    ) -> SessionResult:
        """Stored under the epoch of the share the session started with, never the epoch active
        at the end: a re-share activated meanwhile must not relabel an old-share presignature
        as the new version's (its partials would then fail and blame an honest node)."""
        public = presignature.public
        encoded = codec.encode_presignature_public(public)
        pid = public.presignature_id.hex()
        sealed = self._seal(
            codec.take_presignature_secret(presignature), pid, epoch, "presignature"
        )
        row = PresignatureRow(
            presignature_id=pid,
            key_id=spec.key_id.hex(),
            epoch=epoch,
            signers=join_indices(public.signers),
            path=join_path(public.derivation.path),
            aux_id=spec.aux_id.hex(),
            public=encoded,
            sealed_secret=sealed,
            state="available",
            created_at=time.time(),
        )
        try:
            self.store.put_presignature(row)  # refused unless that version is still active
        except StoreError as exc:
            raise NodeError(
                ErrorCode.STALE_PRESIGNATURE,
                f"key version {epoch} was replaced while this presign ran; nothing stored",
            ) from exc
        return PresignResult(presignature_id=pid, public=encoded.hex(), epoch=epoch)

    def _finish_identify(self, result: Identification, spec: SessionSpec) -> SessionResult:
        """Every party this node found lying is quarantined; the identification state is gone."""
        with self._lock:
            self._identifications.pop(spec.request, None)
        for finding in result.findings:
            if finding.party != self.index:
                self._quarantine(
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

    def _finish_reshare(self, result: ReshareResult) -> SessionResult:
        """The new version is stored *pending*: the old one stays active and usable until every
        member of the new committee has confirmed storing its share (`activate`).  A relay that
        withheld the last echo from some parties can make only some of them finish; erasing
        the old share here would then lose the key (signer/node/confirmation.py)."""
        key = result.key
        encoded = codec.encode_key_public(key)
        sealed = None
        if result.share is not None:
            secret = codec.encode_share_secret(result.share)
            sealed = self._seal(secret, key.key_id.hex(), key.epoch, "key_share")
        try:
            self.store.put_pending_version(key.key_id.hex(), key.epoch, encoded, sealed)
        except StoreError as exc:  # (the in-flight rule makes this unreachable by a relay)
            raise NodeError(ErrorCode.STALE_PLAN, str(exc)) from exc
        return ReshareReport(
            key_id=key.key_id.hex(),
            epoch=key.epoch,
            public_key=key.public_key.to_bytes().hex(),
            key_public=encoded.hex(),
            member=result.share is not None,
            state="pending",
            fingerprint=key.fingerprint().hex(),
        )

    # --- key versions: confirmation and activation ------------------------------------------------
    def _active_public(self, key_id: bytes) -> KeyPublic | None:
        try:
            row = self.store.active_key(key_id.hex())
        except StoreError:
            return None
        return codec.decode_key_public(row.public)

    def _version(self, key_id: bytes, epoch: int) -> tuple[KeyVersionRow, KeyPublic]:
        row = self.store.key_version(key_id.hex(), epoch)
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
        row, public = self._version(key_id, epoch)
        if self.index not in public.parties or row.sealed_share is None:
            raise NodeError(
                ErrorCode.NOT_A_PARTY, "only a member of the new committee confirms its share"
            )
        if row.state == "active":
            mine = self.store.confirmation(key_id.hex(), epoch, self.index)
            if mine is None or mine.fingerprint != public.fingerprint().hex():
                raise NodeError(ErrorCode.NO_PENDING_VERSION, "active without a confirmation")
            return self._statement(mine)
        secret = self._unseal(row.sealed_share, key_id.hex(), epoch, "key_share")
        share = codec.key_share(public, secret)
        if share.index != self.index or Point.base_mul(share.secret_share) != public.public_share(
            self.index
        ):
            raise NodeError(ErrorCode.CORRUPT, "stored pending share does not match its version")
        cluster = self.endpoint.roster.cluster_id
        statement = KeyConfirmation.issue(self.endpoint.signer, cluster, self.index, public)
        record = KeyConfirmationRow(
            key_id=key_id.hex(),
            epoch=epoch,
            signer=self.index,
            fingerprint=statement.fingerprint.hex(),
            signature=statement.signature,
            origin="signed",
            created_at=time.time(),
        )
        try:
            recorded = self.store.record_own_confirmation(record, row.public)
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
            self.endpoint.roster.cluster_id,
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
            activated = self.store.activate_pending(key_id.hex(), epoch, row.public, received)
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
        for row in self.store.key_versions(key_id.hex()):
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

    # --- signing -------------------------------------------------------------------------------
    def sign(
        self, key_id: bytes, presignature_id: bytes, message: bytes, scheme: HashScheme
    ) -> SignReply:
        """This node's partial signature on `message` with one of its presignatures."""
        pid = presignature_id.hex()
        row = self.store.presignature(pid)
        if row is None or row.key_id != key_id.hex():
            raise NodeError(
                ErrorCode.UNKNOWN_PRESIGNATURE, f"no presignature {pid[:16]} for this key"
            )
        key_row = self._active_key(key_id)
        if row.epoch != key_row.epoch:
            raise NodeError(ErrorCode.STALE_PRESIGNATURE, "made for an older key version")
        public = codec.decode_presignature_public(
            row.public, codec.decode_key_public(key_row.public)
        )
        self._refuse_quarantined(public.signers)
        failpoint("sign.before_consume")
        try:
            consumed = self.store.consume_presignature(pid)  # durable before anything leaves
        except StoreError as exc:
            raise NodeError(ErrorCode.PRESIGNATURE_USED, str(exc)) from exc
        failpoint("sign.after_consume")
        secret = self._unseal(consumed.sealed_secret, pid, consumed.epoch, "presignature")
        presignature = codec.presignature(public, secret)
        partial = issue_partial(presignature, message, scheme)
        failpoint("sign.after_partial")
        return SignReply(index=self.index, presignature_id=pid, partial=f"{partial:064x}")


def _rejection(envelope: Envelope, exc: TesseraError) -> dict[str, Any]:
    if isinstance(exc, EnvelopeRejected):
        return {"sender": exc.sender, "check": exc.check, "detail": exc.detail}
    if isinstance(exc, MessageRefused):
        return {"sender": exc.sender, "check": exc.check.value, "detail": exc.detail}
    return {"sender": envelope.sender, "check": "MISDIRECTED", "detail": str(exc)}


def _key_result(public: KeyPublic, encoded: bytes) -> KeyResult:
    return KeyResult(
        key_id=public.key_id.hex(),
        epoch=public.epoch,
        public_key=public.public_key.to_bytes().hex(),
        key_public=encoded.hex(),
    )
