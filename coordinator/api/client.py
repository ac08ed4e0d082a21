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
from collections.abc import Mapping
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
from coordinator.api.models import Accepted, Withdrawal, WithdrawalCreate, WithdrawalPage
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
