"""The node's HTTP API (FastAPI), for the coordinator only: every route but /v1/health needs
the node's bearer token.  Bodies are JSON; binary values are hex; their models are in
`signer.node.api`.  Every refusal — a node error, a validation error, an unknown route, an
oversize or slow request (`signer.node.limits`), an unexpected exception — is a
`signer.problems.Problem` served as ``application/problem+json`` (`docs/errors.md` lists the
codes).  Bad input is never answered with a 5xx, and a refusal never echoes the input.

Every request gets a request id — the caller's ``X-Request-Id`` if it is a short token of
letters, digits and ``._-``, else a fresh random one — bound to every log record made while it
is served (`signer.logs.bind`) and echoed in the ``X-Request-Id`` response header.  One access
record per request: method, route template, status, seconds; never the body, the query or
the Authorization header.  A refusal logs its code and culprit, never the input.

  GET  /v1/health                        node id, index, whether the roster is pinned
  GET  /metrics                          Prometheus text exposition (counts only; no token)
  GET  /v1/card                          the node's self-signed card
  POST /v1/roster                        pin the cluster roster (once)
  POST /v1/sessions                      start a protocol session → first envelopes
  POST /v1/sessions/{session}/envelopes  deliver relayed envelopes → envelopes to relay next
  DELETE /v1/sessions/{session}          forget a session the coordinator gave up on
  POST /v1/sign                          partial signature on a wallet transaction, after the
                                         node's own policy decision (signer/node/decision.py)
  POST /v1/sign/cancel                   partial signature on a cancellation (a 0-value self-send
                                         at the nonce) of what the node signed for a request
  POST /v1/sign/allowance                partial signature on an ERC-20 approve of a policy token
                                         to the policy's disperse contract (a token batch's)
  POST /v1/sign/internal                 partial signature on a transfer between two addresses of
                                         the key's wallet (a deposit address's sweep, its gas)
  POST /v1/sign/raw                      partial signature on raw bytes: raw keys only
  POST /v1/receipts                      reserve a velocity-limited intent here and return the
                                         signed receipt (signer/node/receipts.py)
  GET  /v1/keys                          active key versions (public data)
  GET  /v1/keys/{key_id}/presignatures   available presignature ids (by signers and path)
  GET  /v1/keys/{key_id}/versions        every version of the key here: pending/active/retired
  POST /v1/keys/{key_id}/versions/{epoch}/confirmation
                                         this node's signed storage confirmation of its pending
                                         version (signer/node/confirmation.py)
  POST /v1/keys/{key_id}/versions/{epoch}/activate
                                         activate the pending version with the complete set of
                                         confirmations (old share erased, in one transaction)
  GET  /v1/quarantine                    active quarantine entries (read-only: clearing one
                                         is a local operator action, `tessera node quarantine`)
  GET  /v1/governance                    the policy version in force, pending, frozen wallets
                                         (no token: hashes and wallet ids only)
  POST /v1/governance                    policy versions and freeze orders (no token: the
                                         documents authenticate themselves, so an officer can
                                         push straight to the node; signer/node/governance.py)
  GET  /v1/governance/chain              every document this node accepted, to relay on
  GET  /v1/audit/head                    the audit log's head and last checkpoint (read-only)

Every reply, refusals included, carries the header ``Tessera-Policy-Hash``: the hash of the
policy version the node enforces (``none`` before its genesis), so a lagging node shows at once.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hsm.errors import HsmError
from policies.bundle import GovernanceBundle
from signer.errors import TesseraError
from signer.logs import Timer, bind, log_event
from signer.node.api import (
    AllowanceRequest,
    AuditHead,
    CancellationRequest,
    CancelReply,
    EnvelopeBatch,
    GovernanceReply,
    Health,
    InternalTransferRequest,
    KeyVersion,
    Pinned,
    PolicyStatus,
    PresignatureListing,
    RawSignRequest,
    SessionStart,
    SessionState,
    SignReply,
    SignRequest,
    TransactionRequest,
    VelocityReceipt,
)
from signer.node.confirmation import (
    ActivationBody,
    ActivationReply,
    ConfirmationBody,
    KeyConfirmation,
    KeyVersionState,
)
from signer.node.envelope import Envelope, EnvelopeRejected
from signer.node.errors import NodeError
from signer.node.limits import RequestLimits
from signer.node.metrics import CONTENT_TYPE
from signer.node.runtime import NodeRuntime, roster_from_json
from signer.node.service import NodeService
from signer.node.spec import SessionSpec
from signer.node.store import StoreError
from signer.problems import PROBLEM_MEDIA_TYPE, ErrorCode, Problem, validation_detail

log = logging.getLogger("tessera.node")
access = logging.getLogger("tessera.node.access")

REQUEST_ID_HEADER = "x-request-id"
POLICY_HASH_HEADER = "tessera-policy-hash"
#: A caller's request id is kept only if it is this kind of short token: anything else (long,
#: spaces, quotes, control characters) could forge or bloat log lines, so it is replaced.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-Id if sane, else a fresh random id (16 hex digits)."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER.encode():
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return secrets.token_hex(8)


class RequestContext:
    """Pure ASGI middleware, outermost: request id (bound for the request, kept in the scope's
    state for the problem form, echoed in the response) and the access record.  Pure ASGI rather
    than `BaseHTTPMiddleware`, so the bound context is the request's own task context, which
    FastAPI copies into the worker thread of a sync route.  A node passes its index and its
    policy hash (a header on every answer); the signer API (coordinator/api/app.py) neither,
    but its `before_reply`: awaited before each answer starts (its store's sync, so that no
    answer shows state a power loss could still take back), and `answered`, told each
    answer's route template and status (its request counter)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        node: int | None = None,
        policy_hash: Callable[[], str | None] | None = None,
        before_reply: Callable[[], Awaitable[None]] | None = None,
        answered: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.node = node
        self.policy_hash = policy_hash
        self.before_reply = before_reply
        self.answered = answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(list(scope.get("headers", [])))
        scope.setdefault("state", {})["request_id"] = rid
        timer = Timer()
        status = 500  # if the app dies before answering, the server answers 500
        ours = {REQUEST_ID_HEADER.encode()}
        if self.policy_hash is not None:
            ours.add(POLICY_HASH_HEADER.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                if self.before_reply is not None:
                    await self.before_reply()
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                if self.policy_hash is not None:
                    headers.append(
                        (POLICY_HASH_HEADER.encode(), (self.policy_hash() or "none").encode())
                    )
                message = {**message, "headers": headers}
            await send(message)

        context: dict[str, object] = {"request": rid}
        if self.node is not None:
            context["node"] = self.node
        with bind(**context):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = scope.get("route")
                # The route template ("/v1/sessions/{session}"), not the path: no ids, no query.
                template = getattr(route, "path", None) or "unmatched"
                if self.answered is not None:
                    self.answered(template, status)
                log_event(
                    access,
                    "http.request",
                    method=str(scope.get("method", "")),
                    route=template,
                    status=status,
                    seconds=timer.seconds,
                )


#: Starlette's own refusals (unknown route, wrong method, a malformed body it could not parse)
#: by status; anything else it raises is a bad request.
_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


#: Path parameters of the key-version routes (module level: FastAPI resolves the annotations).
KeyIdPath = Annotated[str, Path(pattern=r"^([0-9a-f]{2}){1,64}$")]
EpochPath = Annotated[int, Path(ge=0, le=2**32)]
#: The other path and query parameters, checked at the door like bodies: a session instance
#: id (SHA-256), a signer set ("1,2": up to MAX_SESSION_PARTIES indices) and a derivation path
#: ("0/5": at most 255 non-hardened steps).
SessionPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
SignersQuery = Annotated[str, Query(pattern=r"^[0-9]{1,5}(,[0-9]{1,5}){1,15}$")]
DerivationQuery = Annotated[str, Query(pattern=r"^([0-9]{1,10}(/[0-9]{1,10}){0,254})?$")]


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    return Response(
        problem.model_dump_json(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def create_app(runtime: NodeRuntime, **limits: Any) -> FastAPI:
    """The node's API; `limits` override `RequestLimits`' defaults (tests use small ones)."""
    app = FastAPI(title=f"Tessera node {runtime.config.node_id}", docs_url=None, redoc_url=None)
    node = runtime.config.index
    app.add_middleware(RequestLimits, node=node, **limits)
    # added last: outermost, sees every refusal
    app.add_middleware(RequestContext, node=node, policy_hash=runtime.governance.policy_hash)

    def problem(
        code: ErrorCode,
        detail: str,
        *,
        culprit: int | None = None,
        check: str | None = None,
        rule: str | None = None,
        policy_hash: str | None = None,
    ) -> Response:
        # The code, check and culprit only: the detail may quote what the caller sent.
        log_event(
            log,
            "request.refused",
            level=logging.WARNING,
            code=code.value,
            check=check,
            culprit=culprit,
        )
        return problem_response(
            Problem.of(
                code,
                detail,
                culprit=culprit,
                check=check,
                node=node,
                rule=rule,
                policy_hash=policy_hash,
            )
        )

    # async: a sync dependency costs every guarded request a trip through the thread pool.
    async def authorised(authorization: str = Header(default="")) -> None:
        expected = f"Bearer {runtime.api_token}"
        if not secrets.compare_digest(authorization.encode(), expected.encode()):
            raise NodeError(ErrorCode.UNAUTHORIZED, "missing or wrong bearer token")

    def service() -> NodeService:
        runtime.reload_roster()
        if runtime.service is None:
            raise NodeError(ErrorCode.NOT_PINNED, "no cluster roster pinned yet")
        return runtime.service

    @app.exception_handler(NodeError)
    async def node_error(_: Request, exc: NodeError) -> Response:
        return problem(
            exc.code,
            exc.detail,
            culprit=exc.culprit,
            check=exc.check,
            rule=exc.rule,
            policy_hash=exc.policy_hash,
        )

    @app.exception_handler(EnvelopeRejected)
    async def envelope_error(_: Request, exc: EnvelopeRejected) -> Response:
        return problem(ErrorCode.ENVELOPE_REJECTED, exc.detail, culprit=exc.sender, check=exc.check)

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> Response:
        code = ErrorCode.ROSTER_PINNED if "roster" in exc.what else ErrorCode.BAD_REQUEST
        return problem(code, str(exc))

    @app.exception_handler(HsmError)
    async def hsm_error(_: Request, exc: HsmError) -> Response:
        return problem(ErrorCode.HSM, str(exc))

    @app.exception_handler(TesseraError)
    async def tessera_error(_: Request, exc: TesseraError) -> Response:
        return problem(ErrorCode.BAD_REQUEST, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default handler echoes the input, which fails on NaN/Infinity (a 500) and
        # grows with the body; the field path and the message are enough.
        return problem(ErrorCode.VALIDATION, validation_detail(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
        detail = exc.detail if isinstance(exc.detail, str) else code.value
        log_event(log, "request.refused", level=logging.WARNING, code=code.value)
        return problem_response(
            Problem.of(code, detail, node=node), headers=dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # Logged with the exception's type only (signer.logs drops tracebacks: their locals
        # and messages may quote input); the reply says nothing of it (nor of the input).
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        log_event(
            log,
            "request.internal_error",
            level=logging.ERROR,
            method=request.method,
            route=route,
            code=ErrorCode.INTERNAL.value,
            reason=type(exc).__name__,
        )
        return problem(ErrorCode.INTERNAL, "unexpected error; see the node's log")

    guard = [Depends(authorised)]

    @app.get("/v1/health")
    def health() -> Health:
        status = runtime.governance.status()
        return Health(
            node_id=runtime.config.node_id,
            index=runtime.config.index,
            pinned=runtime.service is not None,
            sessions=0 if runtime.service is None else runtime.service.running_sessions,
            quarantined=len(runtime.store.quarantines()),
            policy_hash=status.policy_hash,
            policy_version=status.policy_version,
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        # Counts, durations and public key ids only (signer/node/metrics.py): no token needed,
        # like /v1/health, so a Prometheus server needs no coordinator credentials.
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/v1/card", dependencies=guard)
    def card() -> dict[str, Any]:
        return runtime.card.to_dict()

    @app.post("/v1/roster", dependencies=guard)
    def pin(body: dict[str, Any]) -> Pinned:
        runtime.pin(roster_from_json(body))
        return Pinned(pinned=True)

    @app.post("/v1/sessions", dependencies=guard)
    def start(body: SessionStart) -> SessionState:
        return SessionState.model_validate(service().start(SessionSpec.from_start(body)).to_json())

    @app.post("/v1/sessions/{session}/envelopes", dependencies=guard)
    def deliver(session: SessionPath, batch: EnvelopeBatch) -> SessionState:
        try:
            instance = bytes.fromhex(session)
        except ValueError as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, "session id is not hex") from exc
        envelopes = [Envelope.from_dict(doc) for doc in batch.envelopes]
        return SessionState.model_validate(service().deliver(instance, envelopes).to_json())

    @app.delete("/v1/sessions/{session}", dependencies=guard)
    def cancel(session: SessionPath) -> CancelReply:
        try:
            instance = bytes.fromhex(session)
        except ValueError as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, "session id is not hex") from exc
        return CancelReply(cancelled=service().cancel(instance))

    @app.post("/v1/sign", dependencies=guard)
    def sign(request: SignRequest) -> SignReply:
        return service().sign_transaction(request)

    @app.post("/v1/sign/cancel", dependencies=guard)
    def sign_cancel(request: CancellationRequest) -> SignReply:
        return service().sign_cancellation(request)

    @app.post("/v1/sign/allowance", dependencies=guard)
    def sign_allowance(request: AllowanceRequest) -> SignReply:
        return service().sign_allowance(request)

    @app.post("/v1/sign/internal", dependencies=guard)
    def sign_internal(request: InternalTransferRequest) -> SignReply:
        return service().sign_internal(request)

    @app.post("/v1/sign/raw", dependencies=guard)
    def sign_raw(request: RawSignRequest) -> SignReply:
        return service().sign(
            bytes.fromhex(request.key_id),
            bytes.fromhex(request.presignature_id),
            bytes.fromhex(request.message),
            request.scheme,
        )

    @app.post("/v1/receipts", dependencies=guard)
    def receipt(request: TransactionRequest) -> VelocityReceipt:
        return service().receipt(request)

    @app.get("/v1/keys", dependencies=guard)
    def keys() -> list[KeyVersion]:
        return [
            KeyVersion(key_id=row.key_id, epoch=row.epoch, key_public=row.public.hex())
            for row in runtime.store.active_keys()
        ]

    @app.get("/v1/keys/{key_id}/presignatures", dependencies=guard)
    def presignatures(
        key_id: KeyIdPath, signers: SignersQuery, path: DerivationQuery = ""
    ) -> PresignatureListing:
        try:
            parties = tuple(int(i) for i in signers.split(","))
            steps = tuple(int(i) for i in path.split("/")) if path else ()
        except ValueError as exc:
            raise NodeError(ErrorCode.BAD_REQUEST, "signers/path malformed") from exc
        return PresignatureListing(
            available=runtime.store.available_presignatures(key_id, parties, steps),
            counts=runtime.store.presignature_counts(key_id),
        )

    @app.get("/v1/keys/{key_id}/versions", dependencies=guard)
    def versions(key_id: KeyIdPath) -> list[KeyVersionState]:
        return service().versions(bytes.fromhex(key_id))

    @app.post("/v1/keys/{key_id}/versions/{epoch}/confirmation", dependencies=guard)
    def confirmation(key_id: KeyIdPath, epoch: EpochPath) -> ConfirmationBody:
        return service().confirm(bytes.fromhex(key_id), epoch).to_body()

    @app.post("/v1/keys/{key_id}/versions/{epoch}/activate", dependencies=guard)
    def activate(key_id: KeyIdPath, epoch: EpochPath, body: ActivationBody) -> ActivationReply:
        statements = [KeyConfirmation.from_body(s) for s in body.statements]
        return service().activate(bytes.fromhex(key_id), epoch, statements)

    @app.get("/v1/quarantine", dependencies=guard)
    def quarantine() -> list[dict[str, Any]]:
        return [row.to_json() for row in runtime.store.quarantines()]

    @app.get("/v1/governance")
    def governance_status() -> PolicyStatus:
        return runtime.governance.status()

    @app.post("/v1/governance")
    def governance(bundle: GovernanceBundle) -> GovernanceReply:
        # No token, no roster needed: every document is checked against the officers of the
        # version before it, so whoever delivers it — coordinator or officer — is irrelevant.
        return runtime.governance.accept(bundle)

    @app.get("/v1/governance/chain", dependencies=guard)
    def governance_chain() -> GovernanceBundle:
        return runtime.governance.bundle()

    @app.get("/v1/audit/head", dependencies=guard)
    def audit_head() -> AuditHead:
        head = runtime.audit.head()
        checkpoint = runtime.audit.last_checkpoint()
        return AuditHead(
            seq=0 if head is None else head.seq,
            hash=None if head is None else head.hash,
            checkpoint=None if checkpoint is None else checkpoint.model_dump(mode="json"),
        )

    return app
