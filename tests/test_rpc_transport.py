"""The chain client's HTTP transport (coordinator/rpc_transport.py): one kept-alive connection
for a loop's calls, a new session on another loop, and the transport's failures still read as
an unreachable URL.  The endpoint is aiohttp's own web server answering `eth_blockNumber`, so
the test sees every connection and request; the chain calls themselves run against Hardhat
and eth-tester in the chain tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from web3 import AsyncWeb3

from coordinator.rpc import ChainRpc, ChainUnavailable
from coordinator.rpc_transport import KeptAliveHTTPProvider


class Endpoint:
    """A JSON-RPC endpoint on a free local port recording who asked what."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.peers: list[tuple[str, int]] = []
        self.methods: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.peers.append(request.transport.get_extra_info("peername")[:2])  # type: ignore[union-attr]
        body = json.loads(await request.read())
        self.methods.append(body["method"])
        answer = {"jsonrpc": "2.0", "id": body["id"], "result": hex(len(self.methods))}
        return web.json_response(answer, status=self.status)

    async def __aenter__(self) -> Endpoint:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def test_a_loops_calls_share_one_kept_alive_connection() -> None:
    async def go() -> tuple[list[int], Endpoint]:
        async with Endpoint() as endpoint:
            rpc = ChainRpc.connect(1, [endpoint.url])
            try:
                numbers = [await rpc.block_number() for _ in range(5)]
                numbers += await asyncio.gather(*(rpc.block_number() for _ in range(3)))
            finally:
                await rpc.aclose()
            return numbers, endpoint

    numbers, endpoint = asyncio.run(go())
    assert sorted(numbers) == list(range(1, 9))
    assert endpoint.methods == ["eth_blockNumber"] * 8
    # the five one after the other on one connection; three at once need at most three
    assert len(set(endpoint.peers[:5])) == 1
    assert len(set(endpoint.peers)) <= 3


def test_a_client_used_from_a_second_event_loop_gets_a_session_there() -> None:
    async def serve_twice() -> list[int]:
        async with Endpoint() as endpoint:
            provider = KeptAliveHTTPProvider(endpoint.url, timeout=5)
            rpc = ChainRpc(1, [AsyncWeb3(provider)])
            got = []
            # each call on a loop of its own (a thread's asyncio.run), as a CLI's commands are
            for _ in range(2):
                got.append(await asyncio.to_thread(lambda: asyncio.run(rpc.block_number())))
            await asyncio.to_thread(lambda: asyncio.run(rpc.aclose()))
            return got

    assert asyncio.run(serve_twice()) == [1, 2]


@pytest.mark.parametrize("status", [502, 503])
def test_an_http_error_of_the_endpoint_is_an_unreachable_url(status: int) -> None:
    async def go() -> None:
        async with Endpoint(status) as endpoint:
            rpc = ChainRpc.connect(1, [endpoint.url])
            try:
                with pytest.raises(ChainUnavailable, match="ClientResponseError"):
                    await rpc.block_number()
            finally:
                await rpc.aclose()

    asyncio.run(go())


def test_the_provider_names_the_host_only() -> None:
    provider = KeptAliveHTTPProvider("https://rpc.example:8545/v3/SECRET-API-KEY?x=1", timeout=5)
    assert str(provider) == "kept-alive HTTP JSON-RPC rpc.example:8545"
