"""Request limits at the node's door, as ASGI middleware in front of the API: the request
target and header size, the body size and the time the body may take to arrive.  Each refusal
is a `Problem` (414, 431, 413, 408) sent before the app sees the request, and the connection is
closed after it (``connection: close``) — the rest of an oversize or stalled body is never read.

Why our own middleware: uvicorn has no body limit and no body read timeout, and its h11 parser
only knows one size for the whole request head (`h11_max_incomplete_event_size`), beyond which
it drops the connection with a bare 400.  `tessera node run` sets that above these limits
(`SERVER_HEAD_BYTES`), so every head up to it gets a proper problem from here.

The body is read here in full (it is bounded by the limit) and replayed to the app: the app's
JSON parsing then never runs on a partial or oversize body, and no read can stall inside a
route handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signer.node.api import (
    BODY_TIMEOUT_SECONDS,
    MAX_BODY_BYTES,
    MAX_ENVELOPE_BATCH_BYTES,
    MAX_HEADER_BYTES,
    MAX_TARGET_BYTES,
)
from signer.problems import PROBLEM_MEDIA_TYPE, STATUS, ErrorCode, Problem

#: What uvicorn's h11 parser may buffer for one request head: well above MAX_TARGET_BYTES +
#: MAX_HEADER_BYTES, so a head between those limits and this one gets a 414/431 problem; only a
#: head beyond it (1 MiB) is dropped by the server itself (a plain 400, connection closed).
SERVER_HEAD_BYTES = 1 << 20


def body_limit(path: str) -> int:
    """The body limit of a route: envelope deliveries carry whole protocol rounds."""
    return MAX_ENVELOPE_BATCH_BYTES if path.endswith("/envelopes") else MAX_BODY_BYTES


class RequestLimits:
    """Pure ASGI middleware enforcing the limits of `signer.node.api` (overridable for tests)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        node: int | None = None,
        max_target: int = MAX_TARGET_BYTES,
        max_headers: int = MAX_HEADER_BYTES,
        limit: Callable[[str], int] = body_limit,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.node = node
        self.max_target = max_target
        self.max_headers = max_headers
        self.limit = limit
        self.body_timeout = body_timeout

    async def _refuse(self, send: Send, code: ErrorCode, detail: str) -> None:
        body = Problem.of(code, detail, node=self.node).model_dump_json(exclude_none=True)
        await send(
            {
                "type": "http.response.start",
                "status": STATUS[code],
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = len(raw_path) + len(scope.get("query_string", b"")) + 1
        if target > self.max_target:
            await self._refuse(
                send, ErrorCode.URI_TOO_LONG, f"the request target is over {self.max_target} bytes"
            )
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_headers:
            await self._refuse(
                send, ErrorCode.HEADERS_TOO_LARGE, f"the headers are over {self.max_headers} bytes"
            )
            return
        limit = self.limit(scope["path"])
        declared = [v for k, v in headers if k == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                await self._refuse(send, ErrorCode.BAD_REQUEST, "content-length is not a number")
                return
            if length > limit:
                # Refused on the header alone: not one byte of the body is read.
                await self._refuse(
                    send, ErrorCode.PAYLOAD_TOO_LARGE, f"the body is over {limit} bytes"
                )
                return
        body = bytearray()
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        more = True
        while more:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.0))
            except TimeoutError:
                await self._refuse(
                    send,
                    ErrorCode.REQUEST_TIMEOUT,
                    f"the body did not arrive within {self.body_timeout:g} s",
                )
                return
            if message["type"] == "http.disconnect":
                return  # nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                # Counted as it streams: a chunked body, or one longer than its Content-Length.
                await self._refuse(
                    send, ErrorCode.PAYLOAD_TOO_LARGE, f"the body is over {limit} bytes"
                )
                return
            more = bool(message.get("more_body", False))
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that yields the buffered body once, then the real channel (so the
    app still learns of a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
