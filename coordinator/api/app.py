"""The signer API's HTTP routes (FastAPI): every request signed by an API client's key
(`coordinator.api.auth`), rate-limited per client, and answered with a model or an RFC 9457
problem carrying the request id — never a stack trace, never an echo of the input."""

# No `from __future__ import annotations`: the routes' dependency annotations are made
# inside `create_app` (they close over its authenticator), and FastAPI must see them as
# objects, not as names it would look up in this module.

import hashlib
import json
import logging
import time
import types
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, generate_latest
from sqlmodel import col, delete
from starlette.exceptions import HTTPException

from coordinator.api.auth import (
    ApiAuthError,
    Authenticator,
    Principal,
    RateLimiter,
)
from coordinator.api.auth import (
    Scope as ApiScope,
)
from coordinator.api.batch import submit_batch
from coordinator.api.evaluate import evaluate_withdrawal
from coordinator.api.lifecycle import Status
from coordinator.api.models import (
    Accepted,
    BatchAccepted,
    BatchItemAccepted,
    DepositAddressBatch,
    DepositAddressesCreate,
    Health,
    PolicyEvaluation,
    Readiness,
    WalletBalances,
    WalletInfo,
    Withdrawal,
    WithdrawalBatchCreate,
    WithdrawalCreate,
    WithdrawalEvent,
    WithdrawalPage,
)
from coordinator.api.tables import IdempotencyRow
from coordinator.api.wallets_view import WalletsView
from coordinator.api.webhook_models import (
    DELIVERY_CURSOR_PATTERN,
    ENDPOINT_ID_PATTERN,
    MAX_DELIVERY_PAGE,
    DeliveryState,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookResend,
    WebhookResent,
    delivery_view,
    endpoint_view,
)
from coordinator.api.webhooks import WebhookDispatcher, WebhookError
from coordinator.api.withdrawals import (
    CURSOR_PATTERN,
    MAX_PAGE,
    WithdrawalError,
    WithdrawalService,
    view,
)
from signer.logs import log_event
from signer.node.app import RequestContext
from signer.node.limits import RequestLimits
from signer.node.metrics import CONTENT_TYPE
from signer.problems import PROBLEM_MEDIA_TYPE, ErrorCode, Problem, validation_detail

log = logging.getLogger("tessera.api")

#: An `Idempotency-Key` and its response are kept at least this long (custody.md §2.5).
IDEMPOTENCY_SECONDS = 24 * 3600
#: The API's bodies are small: a withdrawal, an approval.
MAX_API_BODY = 64 * 1024

WithdrawalIdPath = Annotated[str, Path(pattern=r"^wd_[0-9a-f]{32}$")]
WalletNamePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", pattern=r"^[A-Za-z0-9._:-]{1,128}$")
]

_PROBLEM_STATUSES = (400, 401, 403, 404, 405, 409, 413, 414, 415, 422, 429, 503)
_PROBLEM_RESPONSE: dict[str, Any] = {
    "description": "An RFC 9457 problem (docs/errors.md)",
    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def _problem(
    request: Request,
    code: ErrorCode,
    detail: str,
    *,
    check: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    rid = getattr(request.state, "request_id", None)
    log_event(log, "request.refused", level=logging.WARNING, code=code.value, check=check)
    problem = Problem.of(code, detail, check=check, request_id=rid)
    return Response(
        problem.model_dump_json(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _many_valued(annotation: Any) -> bool:
    """Whether a query parameter's type takes a list (`status=A&status=B`)."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    return any(get_origin(t) in (list, tuple, set, frozenset) for t in (annotation, *options))


def _single_valued(route: APIRoute) -> tuple[str, ...]:
    """The names of the route's query parameters that take one value."""
    return tuple(
        field.alias
        for field in route.dependant.query_params
        if not _many_valued(field.field_info.annotation)
    )


def _refuse_repeated(request: Request, known: dict[str, tuple[str, ...]]) -> None:
    """A one-valued query parameter given more than once is refused, not read as its last
    value (FastAPI's reading): `client_request_id=a&client_request_id=b` asks for two things
    and would silently get one.  `known`: the one-valued names by route, found once."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.url.query:
        return
    key = f"{','.join(sorted(route.methods or ()))} {route.path}"
    names = known.get(key)
    if names is None:
        names = known[key] = _single_valued(route)
    for name in names:
        given = len(request.query_params.getlist(name))
        if given > 1:
            raise RequestValidationError(
                [
                    {
                        "type": "repeated",
                        "loc": ("query", name),
                        "msg": f"given {given} times; it takes one value",
                    }
                ]
            )


def create_app(
    service: WithdrawalService,
    authenticator: Authenticator,
    limiter: RateLimiter,
    *,
    readiness: Callable[[], Awaitable[Readiness]] | None = None,
    webhooks: WebhookDispatcher | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Tessera signer API",
        version="1",
        description="Withdrawals from Tessera's policy-enforcing MPC wallets (docs/api.md).",
        docs_url=None,
        redoc_url=None,
        # every route may refuse with a problem (docs/errors.md has the codes)
        responses={status: _PROBLEM_RESPONSE for status in _PROBLEM_STATUSES},
    )
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # the problem form every route refers to (its codes: an enum of their own)
        if app.openapi_schema is None:
            schema = plain_openapi()
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(problem.pop("$defs", {}))
            components["Problem"] = problem
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    registry = CollectorRegistry()
    requests = Counter(
        "tessera_api_requests",
        "Signer API requests by route and status",
        ["route", "status"],
        registry=registry,
    )
    app.add_middleware(RequestLimits, limit=lambda _path: MAX_API_BODY)

    def answered(route: str, status: int) -> None:
        requests.labels(route, str(status)).inc()

    # outermost: every answer carries the request id, and is counted; and none starts before
    # what it may show (a withdrawal stored or moved on, written with Sync.DEFERRED) is on disk
    barrier = None if service is None else service.store.barrier  # None: the document only
    app.add_middleware(RequestContext, before_reply=barrier, answered=answered)

    one_valued: dict[str, tuple[str, ...]] = {}

    def authorised(scope: ApiScope) -> Callable[[Request], Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            body = await request.body()
            # the path as it came over the wire (percent-escapes kept), which the client
            # signed; the decoded one would differ for any escaped character
            raw_path = request.scope.get("raw_path")
            path = raw_path.decode("latin-1") if raw_path else request.url.path
            principal = authenticator.authenticate(
                request.method,
                path,
                request.url.query,
                body,
                request.headers,
            )
            authenticator.require(principal, scope)
            limiter.check(principal)
            _refuse_repeated(request, one_valued)
            return principal

        return dependency

    Creator = Annotated[Principal, Depends(authorised(ApiScope.WITHDRAWALS_CREATE))]
    Reader = Annotated[Principal, Depends(authorised(ApiScope.WITHDRAWALS_READ))]
    Approver = Annotated[Principal, Depends(authorised(ApiScope.APPROVALS_WRITE))]

    def owner(principal: Principal) -> str | None:
        """Whose withdrawals the principal sees: its own, or everyone's for an admin and for
        officers (`approvals:write`), who approve any client's withdrawals."""
        if principal.scopes & {ApiScope.ADMIN, ApiScope.APPROVALS_WRITE}:
            return None
        return principal.client_id

    @app.exception_handler(ApiAuthError)
    async def auth_error(request: Request, exc: ApiAuthError) -> Response:
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return _problem(request, exc.code, exc.detail, headers=headers)

    @app.exception_handler(WithdrawalError)
    async def withdrawal_error(request: Request, exc: WithdrawalError) -> Response:
        return _problem(request, exc.code, exc.detail, check=exc.check)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _problem(request, ErrorCode.VALIDATION, validation_detail(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
        detail = exc.detail if isinstance(exc.detail, str) else code.value
        return _problem(request, code, detail, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        log_event(
            log,
            "request.internal_error",
            level=logging.ERROR,
            route=route,
            reason=type(exc).__name__,
        )
        return _problem(request, ErrorCode.INTERNAL, "unexpected error; see the service's log")

    # --- idempotency keys ----------------------------------------------------------------------
    def remembered(principal: Principal, key: str, digest: str) -> Response | None:
        now = time.time()
        with service.store.session() as session:
            session.execute(
                delete(IdempotencyRow).where(
                    col(IdempotencyRow.created_at) < now - IDEMPOTENCY_SECONDS
                )
            )
            session.commit()
            row = session.get(IdempotencyRow, (principal.client_id, key))
        if row is None:
            return None
        if row.request_hash != digest:
            raise WithdrawalError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key was used with another request in the last 24 h",
            )
        return JSONResponse(
            json.loads(row.response),
            status_code=row.status_code,
            headers={"Idempotent-Replayed": "true"},
        )

    def remember(principal: Principal, key: str, digest: str, status: int, body: Any) -> None:
        with service.store.session() as session:
            if session.get(IdempotencyRow, (principal.client_id, key)) is None:
                session.add(
                    IdempotencyRow(
                        client_id=principal.client_id,
                        key=key,
                        request_hash=digest,
                        status_code=status,
                        response=json.dumps(body),
                        created_at=time.time(),
                    )
                )
                session.commit()

    # --- withdrawals ---------------------------------------------------------------------------
    @app.post(
        "/v1/withdrawals",
        status_code=202,
        response_model=Accepted,
    )
    async def create_withdrawal(
        body: WithdrawalCreate,
        principal: Creator,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """Submit a withdrawal: 202 once it is stored (never waiting on signing); the same
        `client_request_id` with the same body gives the same withdrawal back."""
        digest = hashlib.sha256(b"POST /v1/withdrawals\n" + await request.body()).hexdigest()
        if idempotency_key is not None:
            earlier = remembered(principal, idempotency_key, digest)
            if earlier is not None:
                return earlier
        submitted = await service.submit(principal.client_id, body)
        answer = Accepted(
            id=submitted.row.withdrawal_id,
            status=Status(submitted.row.status),
            client_request_id=submitted.row.client_request_id,
        ).model_dump(mode="json")
        if idempotency_key is not None:
            remember(principal, idempotency_key, digest, 202, answer)
        headers = {"Location": f"/v1/withdrawals/{submitted.row.withdrawal_id}"}
        if submitted.replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(answer, status_code=202, headers=headers)

    @app.get("/v1/withdrawals/{withdrawal_id}", response_model=Withdrawal)
    async def get_withdrawal(withdrawal_id: WithdrawalIdPath, principal: Reader) -> Withdrawal:
        return view(service.get(owner(principal), withdrawal_id))

    @app.get("/v1/withdrawals/{withdrawal_id}/events", response_model=list[WithdrawalEvent])
    async def withdrawal_events(
        withdrawal_id: WithdrawalIdPath, principal: Reader
    ) -> list[WithdrawalEvent]:
        service.get(owner(principal), withdrawal_id)
        return [
            WithdrawalEvent(
                event_id=e.event_id or 0,
                withdrawal_id=e.withdrawal_id,
                status=Status(e.status),
                sub_status=e.sub_status,
                created_at=e.created_at,
            )
            for e in service.events(withdrawal_id)
        ]

    @app.get("/v1/withdrawals", response_model=WithdrawalPage)
    async def list_withdrawals(
        principal: Reader,
        status: Annotated[list[Status] | None, Query()] = None,
        wallet: Annotated[
            str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        ] = None,
        asset: Annotated[str | None, Query(pattern=r"^[A-Z0-9][A-Z0-9._-]{0,15}$")] = None,
        destination: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
        client_request_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] = None,
        created_after: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> WithdrawalPage:
        """Withdrawals oldest first, by cursor; `client_request_id` is the recovery path of a
        client whose submission timed out."""
        rows, next_cursor = service.page(
            owner(principal),
            statuses=status or (),
            wallet=wallet,
            asset=asset,
            destination=destination,
            client_request_id=client_request_id,
            created_after=created_after,
            cursor=cursor,
            limit=limit,
        )
        return WithdrawalPage(items=[view(r) for r in rows], next_cursor=next_cursor)

    @app.post(
        "/v1/withdrawals/{withdrawal_id}/cancel",
        response_model=Withdrawal,
    )
    async def cancel_withdrawal(withdrawal_id: WithdrawalIdPath, principal: Creator) -> Withdrawal:
        """Cancel a withdrawal not yet signing (409 NOT_CANCELLABLE after)."""
        return view(service.cancel(owner(principal), withdrawal_id))

    # --- approvals -----------------------------------------------------------------------------
    @app.get("/v1/approvals", response_model=list[Withdrawal])
    async def pending_approvals(
        principal: Approver, status: Annotated[str, Query(pattern="^pending$")] = "pending"
    ) -> list[Withdrawal]:
        """Withdrawals waiting for officers' approvals."""
        return [view(r) for r in service.pending_approvals()]

    @app.get("/v1/withdrawals/{withdrawal_id}/intent")
    async def withdrawal_intent(
        withdrawal_id: WithdrawalIdPath, principal: Approver
    ) -> dict[str, Any]:
        """The intent the nodes will evaluate: what an officer signs an approval of."""
        return service.intent_of(service.get(None, withdrawal_id))

    @app.post("/v1/withdrawals/{withdrawal_id}/approvals", response_model=Withdrawal)
    async def add_approval(
        withdrawal_id: WithdrawalIdPath,
        principal: Approver,
        document: Annotated[dict[str, Any], Body(description="a signed approval document")],
    ) -> Withdrawal:
        """An officer's signed approval (policies.approvals), checked against the policy and
        kept for the nodes, which verify it again themselves."""
        return view(await service.add_approval(None, withdrawal_id, document))

    # --- batch, dry run, wallets ---------------------------------------------------------
    wallets = WalletsView(service)

    @app.post("/v1/withdrawals/batch", status_code=202, response_model=BatchAccepted)
    async def create_withdrawal_batch(
        body: WithdrawalBatchCreate,
        principal: Creator,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """Submit up to 100 withdrawals as one unit: every one is checked before any is
        stored, and one wrong withdrawal refuses the batch (naming its index) with nothing
        stored; 202 with each one's id and status, in the batch's order.  Idempotent per
        withdrawal (`client_request_id`)."""
        digest = hashlib.sha256(b"POST /v1/withdrawals/batch\n" + await request.body()).hexdigest()
        if idempotency_key is not None:
            earlier = remembered(principal, idempotency_key, digest)
            if earlier is not None:
                return earlier
        submitted = await submit_batch(service, principal.client_id, body.withdrawals)
        answer = BatchAccepted(
            items=[
                BatchItemAccepted(
                    id=s.row.withdrawal_id,
                    status=Status(s.row.status),
                    client_request_id=s.row.client_request_id,
                    replayed=s.replayed,
                )
                for s in submitted
            ]
        ).model_dump(mode="json")
        if idempotency_key is not None:
            remember(principal, idempotency_key, digest, 202, answer)
        headers = {}
        if all(s.replayed for s in submitted):
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(answer, status_code=202, headers=headers)

    @app.post("/v1/policy/evaluate", response_model=PolicyEvaluation)
    async def evaluate_policy(body: WithdrawalCreate, principal: Creator) -> PolicyEvaluation:
        """The policy's dry run of a withdrawal (the body of `POST /v1/withdrawals`): the
        decision, the rule, the reasons and the approvals it needs — nothing stored, no
        nonce, no presignature, the `client_request_id` still free."""
        return await evaluate_withdrawal(service, principal.client_id, body)

    @app.get("/v1/wallets", response_model=list[WalletInfo])
    async def list_wallets(principal: Reader) -> list[WalletInfo]:
        """The policy wallets: each one's own address and the chains it sends on."""
        return await wallets.wallets()

    @app.get("/v1/wallets/{name}", response_model=WalletInfo)
    async def get_wallet(name: WalletNamePath, principal: Reader) -> WalletInfo:
        return await wallets.wallet(name)

    @app.get("/v1/wallets/{name}/balances", response_model=WalletBalances)
    async def wallet_balances(name: WalletNamePath, principal: Reader) -> WalletBalances:
        """The wallet's own address's balance of every registered asset of each of its
        chains, read from the chains now (decimal text)."""
        return await wallets.balances(name)

    @app.post("/v1/wallets/{name}/deposit-addresses", response_model=DepositAddressBatch)
    async def create_deposit_addresses(
        name: WalletNamePath,
        body: DepositAddressesCreate,
        principal: Creator,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """Derive deposit addresses of the wallet (no node is asked); a label (customer
        reference) asked again gets its address again."""
        digest = hashlib.sha256(
            b"POST /v1/wallets/deposit-addresses\n" + name.encode() + b"\n" + await request.body()
        ).hexdigest()
        if idempotency_key is not None:
            earlier = remembered(principal, idempotency_key, digest)
            if earlier is not None:
                return earlier
        answer = (await wallets.deposit_addresses(name, body)).model_dump(mode="json")
        if idempotency_key is not None:
            remember(principal, idempotency_key, digest, 200, answer)
        return JSONResponse(answer)

    # --- operations ------------------------------------------------------------------------
    @app.get("/v1/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/v1/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready: what is missing"}},
    )
    async def readyz() -> Response:
        if readiness is None:
            ready = Readiness(ready=True, nodes_up=[], nodes_down=[], chains={})
        else:
            ready = await readiness()
        return JSONResponse(ready.model_dump(mode="json"), status_code=200 if ready.ready else 503)

    @app.get(
        "/v1/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    # --- webhook administration (admin) ----------------------------------------------------
    Admin = Annotated[Principal, Depends(authorised(ApiScope.ADMIN))]
    EndpointIdPath = Annotated[str, Path(pattern=ENDPOINT_ID_PATTERN)]

    @app.exception_handler(WebhookError)
    async def webhook_error(request: Request, exc: WebhookError) -> Response:
        return _problem(request, exc.code, exc.detail)

    def dispatcher() -> WebhookDispatcher:
        if webhooks is None:
            raise WebhookError(ErrorCode.NOT_FOUND, "this service has no webhook dispatcher")
        return webhooks

    def endpoint_views(only: str | None = None) -> list[WebhookEndpoint]:
        hooks = dispatcher()
        counts = hooks.delivery_counts()
        return [
            endpoint_view(
                e,
                counts.get(e.endpoint_id, {}).get(DeliveryState.PENDING.value, 0),
                counts.get(e.endpoint_id, {}).get(DeliveryState.DEAD.value, 0),
            )
            for e in hooks.endpoints(include_disabled=True)
            if only is None or e.endpoint_id == only
        ]

    @app.get("/v1/webhooks/endpoints", response_model=list[WebhookEndpoint])
    async def list_webhook_endpoints(principal: Admin) -> list[WebhookEndpoint]:
        """Every webhook endpoint, disabled ones too, oldest first, with its counter and how
        many of its deliveries are pending and dead."""
        return endpoint_views()

    @app.post(
        "/v1/webhooks/endpoints",
        status_code=201,
        response_model=WebhookEndpoint,
        responses={200: {"model": WebhookEndpoint, "description": "the URL's endpoint already"}},
    )
    async def add_webhook_endpoint(body: WebhookEndpointCreate, principal: Admin) -> Response:
        """Add a receiver (201): it gets the events created from now on, numbered from 1.  A
        URL that has an endpoint already gets that one back (200, `Idempotent-Replayed`), so
        a retried request adds none twice; a disabled one stays disabled."""
        hooks = dispatcher()
        existing = [e for e in hooks.endpoints(include_disabled=True) if e.url == body.url]
        if existing:
            answer = endpoint_views(existing[0].endpoint_id)[0]
            return JSONResponse(
                answer.model_dump(mode="json"), headers={"Idempotent-Replayed": "true"}
            )
        made = hooks.add_endpoint(body.url)
        answer = endpoint_view(made, 0, 0)
        return JSONResponse(answer.model_dump(mode="json"), status_code=201)

    @app.post("/v1/webhooks/endpoints/{endpoint_id}/disable", response_model=WebhookEndpoint)
    async def disable_webhook_endpoint(
        endpoint_id: EndpointIdPath, principal: Admin
    ) -> WebhookEndpoint:
        """Stop fanning out and delivering to the endpoint; its deliveries stay, pending ones
        wait.  Idempotent."""
        dispatcher().disable_endpoint(endpoint_id)
        return endpoint_views(endpoint_id)[0]

    @app.post("/v1/webhooks/endpoints/{endpoint_id}/enable", response_model=WebhookEndpoint)
    async def enable_webhook_endpoint(
        endpoint_id: EndpointIdPath, principal: Admin
    ) -> WebhookEndpoint:
        """Deliver to the endpoint again, from where it stopped: the events of the time it was
        disabled too, numbered on without a gap.  Idempotent."""
        dispatcher().enable_endpoint(endpoint_id)
        return endpoint_views(endpoint_id)[0]

    @app.get("/v1/webhooks/deliveries", response_model=WebhookDeliveryPage)
    async def list_webhook_deliveries(
        principal: Admin,
        status: Annotated[DeliveryState | None, Query()] = None,
        endpoint_id: Annotated[str | None, Query(pattern=ENDPOINT_ID_PATTERN)] = None,
        cursor: Annotated[str | None, Query(pattern=DELIVERY_CURSOR_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DELIVERY_PAGE)] = 100,
    ) -> WebhookDeliveryPage:
        """Deliveries by (endpoint, sequence): `status=dead` lists the dead letters (a
        delivery given up on after its last attempt; resend its event)."""
        after = None
        if cursor is not None:
            last_endpoint, _, last_sequence = cursor.partition(":")
            after = (last_endpoint, int(last_sequence))
        rows = dispatcher().deliveries(
            endpoint_id,
            None if status is None else status.value,
            after=after,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = f"{rows[-1].endpoint_id}:{rows[-1].sequence}" if more and rows else None
        return WebhookDeliveryPage(items=[delivery_view(r) for r in rows], next_cursor=next_cursor)

    @app.post("/v1/webhooks/resend", response_model=WebhookResent)
    async def resend_webhooks(body: WebhookResend, principal: Admin) -> WebhookResent:
        """Deliver events again to every enabled endpoint — one event, every event of a
        withdrawal, or every event carrying a transaction hash — as new deliveries (new
        sequence numbers, the same `event_id`s).  404 when nothing matches."""
        hooks = dispatcher()
        if body.event_id is not None:
            made = hooks.resend_event(body.event_id)
        elif body.withdrawal_id is not None:
            made = hooks.resend_withdrawal(body.withdrawal_id)
        else:
            made = hooks.resend_tx_hash(body.tx_hash or "")
        return WebhookResent(deliveries=made)

    return app
