"""JSON-RPC over HTTP for `coordinator.rpc.ChainRpc`: web3's provider interface on one kept-alive
aiohttp session per event loop.

web3's own `AsyncHTTPProvider` opens a new TCP connection for every request (its connector is
built with `force_close`) and first takes a threading lock through the default thread pool:
about ten event-loop turns per call, against four for a POST on a kept-alive connection.  On
the signer API's event loop every turn may wait behind another task's step, so each turn
saved is taken off a payout's way to its signature (docs/benchmarks.md).  The request and its
answer are encoded and decoded by web3's own `AsyncJSONBaseProvider`, so everything above
(formatters, errors) is web3's as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from web3.providers.async_base import AsyncJSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

_HEADERS = {"Content-Type": "application/json"}


class KeptAliveHTTPProvider(AsyncJSONBaseProvider):
    """An HTTP JSON-RPC endpoint reached over a kept-alive connection pool (per event loop)."""

    def __init__(self, endpoint_uri: str, *, timeout: float) -> None:
        super().__init__()
        self.endpoint_uri = endpoint_uri
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __str__(self) -> str:
        # the host only, never the URL's path or query (API keys live there), wherever web3
        # prints a provider
        host = self.endpoint_uri.split("//", 1)[-1].split("/", 1)[0]
        return f"kept-alive HTTP JSON-RPC {host}"

    def _session_here(self) -> aiohttp.ClientSession:
        # A session belongs to the loop it was made on; a ChainRpc used from another loop (a
        # CLI command's asyncio.run after another) gets a session of its own there.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, raise_for_status=True, headers=_HEADERS
            )
            self._loop = loop
        return self._session

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        body = self.encode_rpc_request(method, params)
        async with self._session_here().post(self.endpoint_uri, data=body) as response:
            raw = await response.read()
        return self.decode_rpc_response(raw)

    async def disconnect(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()
