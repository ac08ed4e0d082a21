"""The signer API over a chain world (tests/chain_world.py): real node processes, Hardhat
nodes, and the service (`coordinator.api.server`) served by uvicorn on a free port, in a
thread of its own with its own event loop — as `tessera serve` runs it, workers included."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chain_world import World, make_world, registry_for, stop_world
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from policy_world import INITIATOR

from coordinator.api.auth import ApiClients, Scope, load_private_key
from coordinator.api.client import AsyncTesseraClient, TesseraClient
from coordinator.api.server import ServeOptions, Service, build, run
from coordinator.api.webhooks import verify_webhook
from coordinator.ports import free_port
from coordinator.store import CoordinatorStore


@dataclass
class Key:
    key_id: str
    private_key: Ed25519PrivateKey
    client_id: str


class ServiceThread:
    """`tessera serve` in a thread: started, and stopped as SIGTERM would."""

    def __init__(self, world: World, options: ServeOptions) -> None:
        self.world = world
        self.options = options
        self.service: Service | None = None
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="signer-api", daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            # the Hardhat chains: the service reaches its chains over JSON-RPC URLs only
            registry = registry_for(self.world.chains, only=self.world.chains.hardhat)
            self.service = build(self.world.cluster, registry, self.options)

            async def started() -> None:
                self.ready.set()

            await run(self.service, self.options, started)

        try:
            asyncio.run(serve())
        except BaseException as exc:
            self.failed = exc
        finally:
            self.ready.set()

    def start(self) -> ServiceThread:
        self.thread.start()
        if not self.ready.wait(60) or self.failed is not None:
            raise RuntimeError(f"the service did not start: {self.failed!r}")
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.server.should_exit = True
        self.thread.join(60)

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"


@contextmanager
def api_world(root: Path, presignatures: int) -> Iterator[World]:
    """A chain world with `presignatures` pooled for the API's withdrawals, stopped after."""
    world = make_world(root, presignatures=presignatures)
    try:
        yield world
    finally:
        stop_world(world)


def exchange_key(world: World) -> Key:
    """The integrating withdrawal service's key: it submits and reads withdrawals."""
    return issue_key(world, "exchange", [Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ])


def issue_key(world: World, name: str, scopes: list[Scope], rate: int = 6000) -> Key:
    store = CoordinatorStore(world.cluster.root / "coordinator.db")
    try:
        issued = ApiClients(store).create(name, scopes, rate_per_minute=rate)
    finally:
        store.close()
    return Key(issued.key_id, load_private_key(issued.private_key_pem), issued.client_id)


@contextmanager
def serving(world: World, **options: object) -> Iterator[ServiceThread]:
    chosen = ServeOptions(port=free_port(), pool_depth=0, initiator=INITIATOR)
    for name, value in options.items():
        setattr(chosen, name, value)
    running = ServiceThread(world, chosen).start()
    try:
        yield running
    finally:
        running.stop()


def client(running: ServiceThread, key: Key) -> TesseraClient:
    return TesseraClient(running.url, key.key_id, key.private_key)


def async_client(running: ServiceThread, key: Key) -> AsyncTesseraClient:
    return AsyncTesseraClient(running.url, key.key_id, key.private_key)


class Receiver:
    """A webhook receiver on a free port: answers 500 to its first `failures` requests."""

    def __init__(self, public_key: str, failures: int = 0) -> None:
        self.failures = failures
        self.public_key = public_key
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                doc = verify_webhook(receiver.public_key, dict(self.headers), body)
                receiver.received.append(doc)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
