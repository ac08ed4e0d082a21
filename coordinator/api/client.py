"""The Python client of the signer API (httpx, sync and async): every request signed with the
client's Ed25519 key (`coordinator.api.auth.sign_request`), typed answers, and refusals as
`ApiRefused` carrying the problem.

A submission is retried (transport errors, 429, 5xx) with exponential back-off and always the
same `client_request_id`, so a retry after a lost answer gets the withdrawal the first attempt
made rather than a second one (custody.md §2.5); each attempt is signed anew (a fresh nonce).

    client = TesseraClient("http://127.0.0.1:8700", key_id, private_key)
    accepted = client.create_withdrawal(WithdrawalCreate(client_request_id="w-1", ...))
    client.wait(accepted.id)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from coordinator.api.auth import sign_request
from coordinator.api.models import (
    Accepted,
    BatchAccepted,
    DepositAddressBatch,
    PolicyEvaluation,
    WalletBalances,
    WalletInfo,
    Withdrawal,
    WithdrawalCreate,
    WithdrawalPage,
)
from coordinator.api.webhook_models import WebhookDeliveryPage, WebhookEndpoint, WebhookResent
from coordinator.api.webhooks import verify_webhook
from signer.errors import TesseraError
from signer.problems import Problem

__all__ = ["ApiRefused", "AsyncTesseraClient", "TesseraClient", "verify_webhook"]

M = TypeVar("M", bound=BaseModel)
#: Statuses worth another attempt of the same request (the service was busy or away).
_RETRIED: Final = frozenset({429, 500, 502, 503, 504})


class ApiRefused(TesseraError):
    """The service refused: `problem` is its RFC 9457 problem (code, detail, request id)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.status = problem.status
        self.code = problem.code
        super().__init__(f"{problem.status} {problem.code}: {problem.detail}")


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ApiRefused) and exc.status in _RETRIED


def _answer(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        problem = Problem.model_validate(response.json())
    except ValueError:
        problem = Problem.of(
            _code_of(response.status_code), f"HTTP {response.status_code} without a problem body"
        )
    raise ApiRefused(problem)


def _code_of(status: int) -> Any:
    from signer.problems import ErrorCode  # noqa: PLC0415

    return {401: ErrorCode.UNAUTHORIZED, 404: ErrorCode.NOT_FOUND, 429: ErrorCode.RATE_LIMITED}.get(
        status, ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST
    )


def _batch_body(withdrawals: Sequence[WithdrawalCreate]) -> dict[str, Any]:
    return {"withdrawals": [w.model_dump(mode="json") for w in withdrawals]}


def _deposit_body(chain_id: int, count: int | None, labels: Sequence[str] | None) -> dict[str, Any]:
    """The body of a deposit-address request: `count` defaults to the number of labels."""
    if count is None:
        count = 1 if labels is None else len(labels)
    body: dict[str, Any] = {"chain_id": chain_id, "count": count}
    if labels is not None:
        body["labels"] = list(labels)
    return body


def _resend_body(
    event_id: int | None, withdrawal_id: str | None, tx_hash: str | None
) -> dict[str, Any]:
    """The body of a webhook resend: the one key given (the service refuses none or more)."""
    chosen = {"event_id": event_id, "withdrawal_id": withdrawal_id, "tx_hash": tx_hash}
    return {k: v for k, v in chosen.items() if v is not None}


class _Signed:
    """What the sync and async clients share: the key, and a signed request's parts."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey, attempts: int) -> None:
        self.key_id = key_id
        self.private_key = private_key
        self.attempts = attempts

    def prepare(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any
    ) -> tuple[str, bytes, dict[str, str]]:
        query = urlencode([(k, v) for k, v in (params or {}).items() if v is not None], doseq=True)
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        # sign the path as httpx will send it: percent-encoded, as the server reads it
        sent = httpx.URL(path).raw_path.decode("ascii").partition("?")[0]
        headers = sign_request(self.private_key, self.key_id, method, sent, query, content)
        if body is not None:
            headers["Content-Type"] = "application/json"
        target = path + (f"?{query}" if query else "")
        return target, content, headers

    def retrying_kwargs(self) -> dict[str, Any]:
        return {
            "retry": retry_if_exception(_retryable),
            "stop": stop_after_attempt(self.attempts),
            "wait": wait_exponential(multiplier=0.2, max=5),
            "reraise": True,
        }


class TesseraClient(_Signed):
    """The synchronous client."""

    def __init__(
        self,
        base_url: str,
        key_id: str,
        private_key: Ed25519PrivateKey,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        verify: bool | str = True,
    ) -> None:
        super().__init__(key_id, private_key, attempts)
        self.http = httpx.Client(base_url=base_url, timeout=timeout, verify=verify)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TesseraClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = False,
    ) -> Any:
        def once() -> Any:
            target, content, signed = self.prepare(method, path, params, body)
            response = self.http.request(
                method, target, content=content, headers={**signed, **(headers or {})}
            )
            return _answer(response)

        if not retry:
            return once()
        return Retrying(**self.retrying_kwargs())(once)

    def create_withdrawal(
        self, withdrawal: WithdrawalCreate, *, idempotency_key: str | None = None
    ) -> Accepted:
        extra = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        body = withdrawal.model_dump(mode="json")
        return Accepted.model_validate(
            self.request("POST", "/v1/withdrawals", body=body, headers=extra, retry=True)
        )

    def withdrawal(self, withdrawal_id: str) -> Withdrawal:
        return Withdrawal.model_validate(self.request("GET", f"/v1/withdrawals/{withdrawal_id}"))

    def by_client_request_id(self, client_request_id: str) -> Withdrawal | None:
        page = WithdrawalPage.model_validate(
            self.request("GET", "/v1/withdrawals", params={"client_request_id": client_request_id})
        )
        return page.items[0] if page.items else None

    def withdrawals(self, **filters: Any) -> WithdrawalPage:
        return WithdrawalPage.model_validate(self.request("GET", "/v1/withdrawals", params=filters))

    def cancel(self, withdrawal_id: str) -> Withdrawal:
        return Withdrawal.model_validate(
            self.request("POST", f"/v1/withdrawals/{withdrawal_id}/cancel")
        )

    def intent(self, withdrawal_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", f"/v1/withdrawals/{withdrawal_id}/intent")
        return answer

    def approve(self, withdrawal_id: str, approval: Mapping[str, Any]) -> Withdrawal:
        return Withdrawal.model_validate(
            self.request("POST", f"/v1/withdrawals/{withdrawal_id}/approvals", body=dict(approval))
        )

    def pending_approvals(self) -> list[Withdrawal]:
        return [Withdrawal.model_validate(w) for w in self.request("GET", "/v1/approvals")]

    def submit_batch(
        self, withdrawals: Sequence[WithdrawalCreate], *, idempotency_key: str | None = None
    ) -> BatchAccepted:
        """Submit withdrawals as one unit (all stored, or none); retried like a single
        submission, with the same `client_request_id`s."""
        extra = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        body = _batch_body(withdrawals)
        return BatchAccepted.model_validate(
            self.request("POST", "/v1/withdrawals/batch", body=body, headers=extra, retry=True)
        )

    def evaluate(self, withdrawal: WithdrawalCreate) -> PolicyEvaluation:
        """The policy's dry run of `withdrawal`: nothing is stored."""
        body = withdrawal.model_dump(mode="json")
        return PolicyEvaluation.model_validate(
            self.request("POST", "/v1/policy/evaluate", body=body, retry=True)
        )

    def wallets(self) -> list[WalletInfo]:
        return [WalletInfo.model_validate(w) for w in self.request("GET", "/v1/wallets")]

    def wallet(self, name: str) -> WalletInfo:
        return WalletInfo.model_validate(self.request("GET", f"/v1/wallets/{name}"))

    def balances(self, name: str) -> WalletBalances:
        return WalletBalances.model_validate(self.request("GET", f"/v1/wallets/{name}/balances"))

    def deposit_addresses(
        self,
        name: str,
        chain_id: int,
        count: int | None = None,
        *,
        labels: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> DepositAddressBatch:
        """Deposit addresses of wallet `name`: one per label (retried: a label gets its
        address again), or `count` fresh ones (retried only with an `idempotency_key`)."""
        extra = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        body = _deposit_body(chain_id, count, labels)
        return DepositAddressBatch.model_validate(
            self.request(
                "POST",
                f"/v1/wallets/{name}/deposit-addresses",
                body=body,
                headers=extra,
                retry=labels is not None or idempotency_key is not None,
            )
        )

    def wait(
        self, withdrawal_id: str, *, timeout: float = 120.0, poll: float = 0.1, until: Any = None
    ) -> Withdrawal:
        """Poll until the withdrawal is terminal (or in one of `until`'s statuses)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.withdrawal(withdrawal_id)
            if current.terminal or (until is not None and current.status in until):
                return current
            if time.monotonic() > deadline:
                return current
            time.sleep(poll)

    # --- webhook administration (admin) ---------------------------------------------------
    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        return [
            WebhookEndpoint.model_validate(e) for e in self.request("GET", "/v1/webhooks/endpoints")
        ]

    def add_webhook_endpoint(self, url: str) -> WebhookEndpoint:
        """Add a receiver (retried: a URL with an endpoint already gets that one back)."""
        return WebhookEndpoint.model_validate(
            self.request("POST", "/v1/webhooks/endpoints", body={"url": url}, retry=True)
        )

    def disable_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return WebhookEndpoint.model_validate(
            self.request("POST", f"/v1/webhooks/endpoints/{endpoint_id}/disable", retry=True)
        )

    def enable_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return WebhookEndpoint.model_validate(
            self.request("POST", f"/v1/webhooks/endpoints/{endpoint_id}/enable", retry=True)
        )

    def webhook_deliveries(
        self,
        status: str | None = None,
        *,
        endpoint_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> WebhookDeliveryPage:
        """A page of deliveries (`status="dead"`: the dead letters)."""
        params = {"status": status, "endpoint_id": endpoint_id, "cursor": cursor, "limit": limit}
        return WebhookDeliveryPage.model_validate(
            self.request("GET", "/v1/webhooks/deliveries", params=params)
        )

    def resend_webhooks(
        self,
        *,
        event_id: int | None = None,
        withdrawal_id: str | None = None,
        tx_hash: str | None = None,
    ) -> WebhookResent:
        """Deliver again (exactly one of an event, a withdrawal's events, a transaction's);
        not retried: each call makes new deliveries."""
        body = _resend_body(event_id, withdrawal_id, tx_hash)
        return WebhookResent.model_validate(self.request("POST", "/v1/webhooks/resend", body=body))


class AsyncTesseraClient(_Signed):
    """The asynchronous client (the same calls, awaited)."""

    def __init__(
        self,
        base_url: str,
        key_id: str,
        private_key: Ed25519PrivateKey,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
        verify: bool | str = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        super().__init__(key_id, private_key, attempts)
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            verify=verify,
            limits=limits or httpx.Limits(max_connections=200, max_keepalive_connections=200),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = False,
    ) -> Any:
        async def once() -> Any:
            target, content, signed = self.prepare(method, path, params, body)
            response = await self.http.request(
                method, target, content=content, headers={**signed, **(headers or {})}
            )
            return _answer(response)

        if not retry:
            return await once()
        return await AsyncRetrying(**self.retrying_kwargs())(once)

    async def create_withdrawal(
        self, withdrawal: WithdrawalCreate, *, idempotency_key: str | None = None
    ) -> Accepted:
        extra = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        body = withdrawal.model_dump(mode="json")
        return Accepted.model_validate(
            await self.request("POST", "/v1/withdrawals", body=body, headers=extra, retry=True)
        )

    async def withdrawal(self, withdrawal_id: str) -> Withdrawal:
        return Withdrawal.model_validate(
            await self.request("GET", f"/v1/withdrawals/{withdrawal_id}")
        )

    async def by_client_request_id(self, client_request_id: str) -> Withdrawal | None:
        page = WithdrawalPage.model_validate(
            await self.request(
                "GET", "/v1/withdrawals", params={"client_request_id": client_request_id}
            )
        )
        return page.items[0] if page.items else None

    async def cancel(self, withdrawal_id: str) -> Withdrawal:
        return Withdrawal.model_validate(
            await self.request("POST", f"/v1/withdrawals/{withdrawal_id}/cancel")
        )

    async def submit_batch(
        self, withdrawals: Sequence[WithdrawalCreate], *, idempotency_key: str | None = None
    ) -> BatchAccepted:
        extra = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        body = _batch_body(withdrawals)
        return BatchAccepted.model_validate(
            await self.request(
                "POST", "/v1/withdrawals/batch", body=body, headers=extra, retry=True
            )
        )

    async def evaluate(self, withdrawal: WithdrawalCreate) -> PolicyEvaluation:
        body = withdrawal.model_dump(mode="json")
        return PolicyEvaluation.model_validate(
            await self.request("POST", "/v1/policy/evaluate", body=body, retry=True)
        )

    async def wallets(self) -> list[WalletInfo]:
        return [WalletInfo.model_validate(w) for w in await self.request("GET", "/v1/wallets")]

    async def wallet(self, name: str) -> WalletInfo:
        return WalletInfo.model_validate(await self.request("GET", f"/v1/wallets/{name}"))

    async def balances(self, name: str) -> WalletBalances:
        return WalletBalances.model_validate(
            await self.request("GET", f"/v1/wallets/{name}/balances")
        )

    async def deposit_addresses(
        self,
        name: str,
        chain_id: int,
        count: int | None = None,
        *,
        labels: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> DepositAddressBatch:
        extra = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        body = _deposit_body(chain_id, count, labels)
        return DepositAddressBatch.model_validate(
            await self.request(
                "POST",
                f"/v1/wallets/{name}/deposit-addresses",
                body=body,
                headers=extra,
                retry=labels is not None or idempotency_key is not None,
            )
        )

    async def wait(
        self, withdrawal_id: str, *, timeout: float = 120.0, poll: float = 0.1, until: Any = None
    ) -> Withdrawal:
        import asyncio  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while True:
            current = await self.withdrawal(withdrawal_id)
            if current.terminal or (until is not None and current.status in until):
                return current
            if time.monotonic() > deadline:
                return current
            await asyncio.sleep(poll)

    # --- webhook administration (admin) ---------------------------------------------------
    async def webhook_endpoints(self) -> list[WebhookEndpoint]:
        answer = await self.request("GET", "/v1/webhooks/endpoints")
        return [WebhookEndpoint.model_validate(e) for e in answer]

    async def add_webhook_endpoint(self, url: str) -> WebhookEndpoint:
        """Add a receiver (retried: a URL with an endpoint already gets that one back)."""
        return WebhookEndpoint.model_validate(
            await self.request("POST", "/v1/webhooks/endpoints", body={"url": url}, retry=True)
        )

    async def disable_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return WebhookEndpoint.model_validate(
            await self.request("POST", f"/v1/webhooks/endpoints/{endpoint_id}/disable", retry=True)
        )

    async def enable_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return WebhookEndpoint.model_validate(
            await self.request("POST", f"/v1/webhooks/endpoints/{endpoint_id}/enable", retry=True)
        )

    async def webhook_deliveries(
        self,
        status: str | None = None,
        *,
        endpoint_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> WebhookDeliveryPage:
        """A page of deliveries (`status="dead"`: the dead letters)."""
        params = {"status": status, "endpoint_id": endpoint_id, "cursor": cursor, "limit": limit}
        return WebhookDeliveryPage.model_validate(
            await self.request("GET", "/v1/webhooks/deliveries", params=params)
        )

    async def resend_webhooks(
        self,
        *,
        event_id: int | None = None,
        withdrawal_id: str | None = None,
        tx_hash: str | None = None,
    ) -> WebhookResent:
        """Deliver again (exactly one of an event, a withdrawal's events, a transaction's);
        not retried: each call makes new deliveries."""
        body = _resend_body(event_id, withdrawal_id, tx_hash)
        return WebhookResent.model_validate(
            await self.request("POST", "/v1/webhooks/resend", body=body)
        )
