"""HTTP client for one key-share node's API (`signer/node/app.py`).

A refusal arrives as a `signer.problems.Problem` and becomes `NodeRefused` with its
`ErrorCode`; a reply is parsed into its `signer.node.api` model, so the coordinator never
works on an unchecked dict.  An error body that is not a problem (a proxy, a crashed worker)
still becomes a typed refusal, with a code derived from the status.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from policies.bundle import GovernanceBundle
from signer.errors import TesseraError
from signer.node.api import (
    AllowanceRequest,
    AuditHead,
    CancellationRequest,
    CancelReply,
    GovernanceReply,
    Health,
    InternalTransferRequest,
    PolicyStatus,
    PresignatureListing,
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
    KeyVersionState,
)
from signer.problems import ErrorCode, Problem, clip
from signer.protocol.sign import PartialSignatureInvalid

M = TypeVar("M", bound=BaseModel)

#: The code of a refusal whose body is not a problem, by HTTP status: each code's own status
#: where exactly one code has it, else the generic code of its class.
_BY_STATUS: dict[int, ErrorCode] = {
    408: ErrorCode.REQUEST_TIMEOUT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    414: ErrorCode.URI_TOO_LONG,
    431: ErrorCode.HEADERS_TOO_LARGE,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION,
    503: ErrorCode.BUSY,
}


def problem_of(index: int, response: httpx.Response) -> Problem:
    """The problem a refusal carries, or one made up from its status (detail: the body's
    start, clipped) when the body is not a problem."""
    try:
        return Problem.model_validate_json(response.content)
    except ValidationError:
        status = response.status_code
        if status in _BY_STATUS:
            code = _BY_STATUS[status]
        else:
            code = ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST
        text = clip(response.text or f"HTTP {status}", 200)
        return Problem.of(code, f"not a problem body (HTTP {status}): {text}", node=index)


class NodeUnavailable(TesseraError):
    """The node did not answer (down, unreachable, timed out)."""

    def __init__(self, index: int, detail: str) -> None:
        self.index = index
        self.detail = detail
        super().__init__(f"node {index} unavailable: {detail}")


class NodeRefused(TesseraError):
    """The node answered with a refusal: `code` is its stable `ErrorCode`, `problem` the
    whole problem (culprit, check, node)."""

    def __init__(self, index: int, problem: Problem) -> None:
        self.index = index
        self.problem = problem
        self.status = problem.status
        self.code = problem.code
        self.detail = problem.detail
        super().__init__(
            f"node {index} refused ({problem.status} {problem.code}): {problem.detail}"
        )

    @classmethod
    def of(cls, index: int, code: ErrorCode, detail: str) -> NodeRefused:
        return cls(index, Problem.of(code, detail, node=index))


class NodeReplyInvalid(TesseraError):
    """The node answered 2xx with a body that is not the route's model."""

    def __init__(self, index: int, detail: str) -> None:
        self.index = index
        super().__init__(f"node {index} sent a malformed reply: {detail}")


class NodeClient:
    def __init__(self, index: int, url: str, api_token: str, timeout: float = 300.0) -> None:
        self.index = index
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise NodeUnavailable(self.index, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise NodeRefused(self.index, problem_of(self.index, response))
        try:
            return response.json()
        except ValueError as exc:
            raise NodeReplyInvalid(self.index, "not JSON") from exc

    async def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        body = await self._call(method, path, **kwargs)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise NodeReplyInvalid(self.index, f"not a {model.__name__}") from exc

    async def health(self) -> Health:
        return await self._model(Health, "GET", "/v1/health")

    async def card(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/card")
        return result

    async def pin(self, roster: dict[str, Any]) -> None:
        await self._call("POST", "/v1/roster", json=roster)

    async def start(self, spec: dict[str, Any]) -> SessionState:
        return await self._model(SessionState, "POST", "/v1/sessions", json=spec)

    async def deliver(self, session: str, envelopes: list[dict[str, Any]]) -> SessionState:
        return await self._model(
            SessionState,
            "POST",
            f"/v1/sessions/{session}/envelopes",
            json={"envelopes": envelopes},
        )

    async def cancel(self, session: str) -> bool:
        reply = await self._model(CancelReply, "DELETE", f"/v1/sessions/{session}")
        return reply.cancelled

    async def sign(
        self, key_id: str, presignature_id: str, message: bytes, scheme: str
    ) -> SignReply:
        body = {
            "key_id": key_id,
            "presignature_id": presignature_id,
            "message": message.hex(),
            "scheme": scheme,
        }
        try:
            return await self._model(SignReply, "POST", "/v1/sign/raw", json=body)
        except NodeReplyInvalid as exc:
            # a signer that answers with something that is not a partial is to blame
            raise PartialSignatureInvalid(frozenset({self.index}), str(exc)) from exc

    async def sign_transaction(self, request: SignRequest) -> SignReply:
        """The node's partial on a wallet transaction, after its own policy decision."""
        try:
            return await self._model(
                SignReply, "POST", "/v1/sign", json=request.model_dump(mode="json")
            )
        except NodeReplyInvalid as exc:
            raise PartialSignatureInvalid(frozenset({self.index}), str(exc)) from exc

    async def _partial(self, route: str, request: BaseModel) -> SignReply:
        """The node's partial signature from one of its routes for a transaction that moves
        nothing a policy rule decides; a malformed reply blames the node."""
        try:
            return await self._model(SignReply, "POST", route, json=request.model_dump(mode="json"))
        except NodeReplyInvalid as exc:
            raise PartialSignatureInvalid(frozenset({self.index}), str(exc)) from exc

    async def sign_cancellation(self, request: CancellationRequest) -> SignReply:
        """The node's partial on a cancellation of what it signed for a request."""
        return await self._partial("/v1/sign/cancel", request)

    async def sign_allowance(self, request: AllowanceRequest) -> SignReply:
        """The node's partial on an ERC-20 approve to the policy's disperse contract."""
        return await self._partial("/v1/sign/allowance", request)

    async def sign_internal(self, request: InternalTransferRequest) -> SignReply:
        """The node's partial on a transfer between two addresses of the key's wallet."""
        return await self._partial("/v1/sign/internal", request)

    async def receipt(self, request: TransactionRequest) -> VelocityReceipt:
        """The node's signed velocity receipt for the request (it reserves the amount)."""
        return await self._model(
            VelocityReceipt, "POST", "/v1/receipts", json=request.model_dump(mode="json")
        )

    # --- governance and audit (signer/node/governance.py, signer/node/audit.py) ----------------
    async def governance(self) -> PolicyStatus:
        return await self._model(PolicyStatus, "GET", "/v1/governance")

    async def governance_chain(self) -> GovernanceBundle:
        return await self._model(GovernanceBundle, "GET", "/v1/governance/chain")

    async def relay_governance(self, bundle: GovernanceBundle) -> GovernanceReply:
        return await self._model(
            GovernanceReply, "POST", "/v1/governance", json=bundle.model_dump(mode="json")
        )

    async def audit_head(self) -> AuditHead:
        return await self._model(AuditHead, "GET", "/v1/audit/head")

    async def presignatures(self, key_id: str, signers: str, path: str) -> PresignatureListing:
        return await self._model(
            PresignatureListing,
            "GET",
            f"/v1/keys/{key_id}/presignatures",
            params={"signers": signers, "path": path},
        )

    # --- key versions: storage confirmations (signer/node/confirmation.py) ----------------------
    async def versions(self, key_id: str) -> list[KeyVersionState]:
        body = await self._call("GET", f"/v1/keys/{key_id}/versions")
        try:
            return [KeyVersionState.model_validate(item) for item in body]
        except (TypeError, ValidationError) as exc:
            raise NodeReplyInvalid(self.index, "not a list of KeyVersionState") from exc

    async def confirmation(self, key_id: str, epoch: int) -> ConfirmationBody:
        """The node's signed statement that it stored its share of pending version `epoch`."""
        return await self._model(
            ConfirmationBody, "POST", f"/v1/keys/{key_id}/versions/{epoch}/confirmation"
        )

    async def activate(
        self, key_id: str, epoch: int, statements: list[ConfirmationBody]
    ) -> ActivationReply:
        """Hand the node the complete set of statements for its pending version `epoch`."""
        body = ActivationBody(statements=statements).model_dump()
        return await self._model(
            ActivationReply, "POST", f"/v1/keys/{key_id}/versions/{epoch}/activate", json=body
        )
