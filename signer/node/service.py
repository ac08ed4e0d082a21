"""A key-share node's logic, independent of HTTP: sessions of the sans-IO protocols driven by
the coordinator's relayed envelopes, durable results, and the one-round signing path.

Every session is created from a `SessionSpec` (what to run, with whom) and then fed envelopes;
each call returns the envelopes to relay next and the session's status.  On completion the
result is stored before the status says "done": key shares, aux-info secrets and
presignatures sealed by the node's HSM (AAD: node id, key or object id, version, purpose).
An aborted session stores nothing and reports the culprits and the failed check.

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

from signer.errors import Check, CryptoMisuse, EncodingError, InvalidParameter, TesseraError
from signer.node import codec
from signer.node.envelope import Endpoint, Envelope, EnvelopeRejected, NodeCard
from signer.node.faults import failpoint
from signer.node.store import (
    NodeStore,
    PresignatureRow,
    QuarantineRow,
    StoreError,
    join_indices,
    join_path,
)
from signer.paillier import PaillierSecretKey
from signer.problems import ErrorCode
from signer.protocol.aux_info import AuxInfo, AuxInfoParty
from signer.protocol.base import Message, Party, ProtocolAbort, SessionConfig
from signer.protocol.keygen import KeygenParty, KeyShare
from signer.protocol.presign import Presignature, PresignParty
from signer.protocol.presign_identify import PROTOCOL as IDENTIFY_PROTOCOL
from signer.protocol.presign_identify import (
    Identification,
    IdentificationRequired,
    IdentificationState,
    PresignIdentifyParty,
)
from signer.protocol.reshare import PROTOCOL as RESHARE_PROTOCOL
from signer.protocol.reshare import (
    REFRESH_PROTOCOL,
    RefreshParty,
    ReshareParty,
    ResharePlan,
    ReshareResult,
)
from signer.protocol.sign import HashScheme, issue_partial

#: A session that made no progress for this long is forgotten (the coordinator retries).
SESSION_TTL_SECONDS = 600.0
MAX_SESSIONS = 256

#: Failures that name nobody and freeze nothing: both are found before any secret is used
#: (round-1 session contexts that differ — e.g. a node on an older key version — and a message
#: from a party outside the session), so their outcome cannot depend on a secret.
NOT_SECURITY_EVENTS = frozenset({Check.MISMATCH, Check.PARTY_INDEX})


class NodeError(TesseraError):
    """A request the node refuses; `code` is stable for clients (`signer.problems.ErrorCode`),
    `culprit` and `check` say whom and what, when known.  Crosses HTTP as a `Problem`."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        culprit: int | None = None,
        check: str | None = None,
    ) -> None:
        self.code = code
        self.detail = detail
        self.culprit = culprit
        self.check = check
        super().__init__(f"{code.value}: {detail}")


class Sealer(Protocol):
    """The HSM operations a node needs (hsm.keystore.KeyStore satisfies it)."""

    def seal(
        self, plaintext: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes: ...

    def unseal(
        self, blob: bytes, *, node_id: str, key_id: str, share_version: int, purpose: str
    ) -> bytes: ...


@dataclass(frozen=True)
class SessionSpec:
    """What the coordinator asks a node to run.  Validated here; the protocol validates the
    rest (and every party checks, in round 1, that the others run on the same inputs)."""

    protocol: str
    request: bytes
    parties: tuple[int, ...]
    threshold: int
    key_id: bytes
    path: tuple[int, ...] = ()
    aux_id: bytes = b""
    plan_old: bytes = b""  # codec.encode_key_public of the version being re-shared
    dealers: tuple[int, ...] = ()
    new_parties: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SessionSpec:
        try:
            spec = cls(
                protocol=str(doc["protocol"]),
                request=bytes.fromhex(str(doc["request"])),
                parties=tuple(_ints(doc["parties"], "parties")),
                threshold=_int(doc["threshold"], "threshold"),
                key_id=bytes.fromhex(str(doc.get("key_id", ""))),
                path=tuple(_ints(doc.get("path", []), "path")),
                aux_id=bytes.fromhex(str(doc.get("aux_id", ""))),
                plan_old=bytes.fromhex(str(doc.get("plan_old", ""))),
                dealers=tuple(_ints(doc.get("dealers", []), "dealers")),
                new_parties=tuple(_ints(doc.get("new_parties", []), "new_parties")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, f"session spec: {exc}") from exc
        return spec

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "request": self.request.hex(),
            "parties": list(self.parties),
            "threshold": self.threshold,
            "key_id": self.key_id.hex(),
            "path": list(self.path),
            "aux_id": self.aux_id.hex(),
            "plan_old": self.plan_old.hex(),
            "dealers": list(self.dealers),
            "new_parties": list(self.new_parties),
        }


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be an integer")
    return value


def _ints(value: object, where: str) -> list[int]:
    if not isinstance(value, list) or len(value) > 4096:
        raise TypeError(f"{where} must be a list of integers")
    return [_int(v, where) for v in value]


@dataclass
class SessionReply:
    session: bytes
    status: str  # running | done | aborted
    envelopes: list[Envelope] = field(default_factory=list)
    result: dict[str, Any] | None = None
    abort: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session.hex(),
            "status": self.status,
            "envelopes": [e.to_dict() for e in self.envelopes],
            "result": self.result,
            "abort": self.abort,
        }


@dataclass
class _Session:
    spec: SessionSpec
    party: Party[Any]
    finish: Callable[[Any], dict[str, Any]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.monotonic)
    status: str = "running"
    result: dict[str, Any] | None = None
    abort: dict[str, Any] | None = None
    halted: str | None = None  # set when a new quarantine entry blocks this running session


def abort_json(abort: ProtocolAbort) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "protocol": abort.protocol,
        "round": abort.round,
        "code": abort.code.value,
        "culprits": sorted(abort.culprits),
        "detail": abort.detail,
    }
    if isinstance(abort, IdentificationRequired):
        # the request id of the identification session every signer is now ready to run
        doc["identification"] = abort.identification.request().hex()
    return doc


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
        row = self.store.active_key(key_id.hex())
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

    def aux_info(self, aux_id: bytes) -> AuxInfo:
        row = self.store.aux(aux_id.hex())
        secret = self._unseal(row.sealed_secret, aux_id.hex(), 0, "aux_info")
        aux = codec.aux_info(row.public, self.index, secret)
        if aux.aux_id() != aux_id:
            raise NodeError(
                ErrorCode.CORRUPT, f"aux-info record {aux_id.hex()[:16]} does not match its id"
            )
        return aux

    # --- sessions ------------------------------------------------------------------------------
    def start(self, spec: SessionSpec) -> SessionReply:
        if self.index not in spec.parties:
            raise NodeError(
                ErrorCode.NOT_A_PARTY, f"party {self.index} is not in {list(spec.parties)}"
            )
        if spec.protocol != IDENTIFY_PROTOCOL:  # identifying a culprit is always allowed
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
            session = _Session(spec, party, finish)
            self._sessions[instance] = session
        with session.lock:
            outgoing = party.start()
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
                except (EnvelopeRejected, CryptoMisuse) as exc:
                    # Not from a pinned peer, or altered: drop it, report it, keep waiting.
                    rejected.append(_rejection(envelope, exc))
                except ProtocolAbort as abort:
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
            session.result = session.finish(session.party.result)
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
            if other.spec.protocol == IDENTIFY_PROTOCOL or other.halted:
                continue
            row = self.store.blocking(other.spec.parties)
            if row is not None:
                other.halted = row.describe()

    def _party(
        self, spec: SessionSpec, config: SessionConfig
    ) -> tuple[Party[Any], Callable[[Any], dict[str, Any]]]:
        if spec.protocol == "keygen/v1":
            return KeygenParty(config), self._finish_keygen
        if spec.protocol == "aux_info/v1":
            return AuxInfoParty(config, self._paillier()), self._finish_aux
        if spec.protocol == "presign/v1":
            key = self.key_share(spec.key_id)
            aux = self.aux_info(spec.aux_id)
            party = PresignParty(config, key, aux, spec.path)
            return party, lambda p: self._finish_presign(p, spec)
        if spec.protocol == IDENTIFY_PROTOCOL:
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
        if spec.protocol in (RESHARE_PROTOCOL, REFRESH_PROTOCOL):
            old = codec.decode_key_public(spec.plan_old)
            if old.key_id != spec.key_id:
                raise NodeError(ErrorCode.BAD_REQUEST, "plan is for another key")
            plan = ResharePlan(old, spec.dealers, spec.new_parties, spec.threshold)
            share = self.key_share(spec.key_id) if self.index in plan.dealers else None
            if share is not None and share.public_data() != old:
                raise NodeError(
                    ErrorCode.STALE_PLAN, "the plan's key version is not this node's active one"
                )
            if spec.protocol == REFRESH_PROTOCOL:
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

    def _finish_keygen(self, share: KeyShare) -> dict[str, Any]:
        public = share.public_data()
        encoded = codec.encode_key_public(public)
        self._store_key(share, encoded, share.key_id, share.epoch)
        return _key_result(public, encoded)

    def _finish_aux(self, aux: AuxInfo) -> dict[str, Any]:
        aux_id = aux.aux_id()
        sealed = self._seal(aux.own.to_bytes(), aux_id.hex(), 0, "aux_info")
        self.store.put_aux(aux_id.hex(), aux.parties, codec.encode_aux_public(aux), sealed)
        return {"aux_id": aux_id.hex(), "parties": list(aux.parties)}

    def _finish_presign(self, presignature: Presignature, spec: SessionSpec) -> dict[str, Any]:
        public = presignature.public
        key_row = self.store.active_key(spec.key_id.hex())
        encoded = codec.encode_presignature_public(public)
        pid = public.presignature_id.hex()
        sealed = self._seal(
            codec.take_presignature_secret(presignature), pid, key_row.epoch, "presignature"
        )
        self.store.put_presignature(
            PresignatureRow(
                presignature_id=pid,
                key_id=spec.key_id.hex(),
                epoch=key_row.epoch,
                signers=join_indices(public.signers),
                path=join_path(public.derivation.path),
                aux_id=spec.aux_id.hex(),
                public=encoded,
                sealed_secret=sealed,
                state="available",
                created_at=time.time(),
            )
        )
        return {"presignature_id": pid, "public": encoded.hex(), "epoch": key_row.epoch}

    def _finish_identify(self, result: Identification, spec: SessionSpec) -> dict[str, Any]:
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
        return {
            "failed_session": result.session_id.hex(),
            "equation": result.equation.value,
            "culprits": sorted(result.culprits),
            "findings": [
                {"party": f.party, "check": f.check.value, "detail": f.detail}
                for f in result.findings
            ],
        }

    def _finish_reshare(self, result: ReshareResult) -> dict[str, Any]:
        encoded = codec.encode_key_public(result.key)
        self._store_key(result.share, encoded, result.key.key_id, result.key.epoch)
        return {**_key_result(result.key, encoded), "member": result.share is not None}

    # --- signing -------------------------------------------------------------------------------
    def sign(
        self, key_id: bytes, presignature_id: bytes, message: bytes, scheme: HashScheme
    ) -> dict[str, Any]:
        """This node's partial signature on `message` with one of its presignatures."""
        pid = presignature_id.hex()
        row = self.store.presignature(pid)
        if row is None or row.key_id != key_id.hex():
            raise NodeError(
                ErrorCode.UNKNOWN_PRESIGNATURE, f"no presignature {pid[:16]} for this key"
            )
        key_row = self.store.active_key(key_id.hex())
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
        return {"index": self.index, "presignature_id": pid, "partial": f"{partial:064x}"}


def _rejection(envelope: Envelope, exc: TesseraError) -> dict[str, Any]:
    if isinstance(exc, EnvelopeRejected):
        return {"sender": exc.sender, "check": exc.check, "detail": exc.detail}
    return {"sender": envelope.sender, "check": "MISDIRECTED", "detail": str(exc)}


def _key_result(public: Any, encoded: bytes) -> dict[str, Any]:
    return {
        "key_id": public.key_id.hex(),
        "epoch": public.epoch,
        "public_key": public.public_key.to_bytes().hex(),
        "key_public": encoded.hex(),
    }
