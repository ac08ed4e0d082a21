"""HTTP client for one key-share node's API (`signer/node/app.py`)."""

from __future__ import annotations

from typing import Any

import httpx

from signer.errors import TesseraError


class NodeUnavailable(TesseraError):
    """The node did not answer (down, unreachable, timed out)."""

    def __init__(self, index: int, detail: str) -> None:
        self.index = index
        self.detail = detail
        super().__init__(f"node {index} unavailable: {detail}")


class NodeRefused(TesseraError):
    """The node answered with an error: `code` is its stable error code."""

    def __init__(self, index: int, status: int, code: str, detail: str) -> None:
        self.index = index
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(f"node {index} refused ({status} {code}): {detail}")


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
            try:
                body = response.json()
                code, detail = str(body["error"]), str(body["detail"])
            except (ValueError, KeyError, TypeError):
                code, detail = "HTTP", response.text[:500]
            raise NodeRefused(self.index, response.status_code, code, detail)
        return response.json()

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/health")
        return result

    async def card(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/card")
        return result

    async def pin(self, roster: dict[str, Any]) -> None:
        await self._call("POST", "/v1/roster", json=roster)

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/v1/sessions", json=spec)
        return result

    async def deliver(self, session: str, envelopes: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/v1/sessions/{session}/envelopes", json={"envelopes": envelopes}
        )
        return result

    async def cancel(self, session: str) -> bool:
        result: dict[str, Any] = await self._call("DELETE", f"/v1/sessions/{session}")
        return bool(result.get("cancelled"))

    async def sign(
        self, key_id: str, presignature_id: str, message: bytes, scheme: str
    ) -> dict[str, Any]:
        body = {
            "key_id": key_id,
            "presignature_id": presignature_id,
            "message": message.hex(),
            "scheme": scheme,
        }
        result: dict[str, Any] = await self._call("POST", "/v1/sign", json=body)
        return result

    async def presignatures(self, key_id: str, signers: str, path: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", f"/v1/keys/{key_id}/presignatures", params={"signers": signers, "path": path}
        )
        return result
