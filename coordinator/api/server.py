"""`tessera serve`: the signer API as a long-running service — uvicorn serving the routes of
`coordinator.api.app` over a local cluster's coordinator, with its background workers: the
presignature pool keeper, the withdrawal workers (signing, broadcast, confirmation tracking)
and the webhook dispatcher.  Everything it needs to resume is in the coordinator's database,
so a killed service picks every withdrawal and undelivered webhook up again when restarted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coordinator.api.app import create_app
from coordinator.api.auth import Authenticator, RateLimiter
from coordinator.api.models import Readiness
from coordinator.api.screening import Screener, ScreeningError, check_url, load_screen_key
from coordinator.api.webhooks import WebhookDispatcher, load_or_create_signing_key
from coordinator.api.withdrawals import WithdrawalService
from coordinator.cluster import LocalCluster
from coordinator.engine import Coordinator, PoolTarget
from coordinator.payouts import PayoutEngine
from coordinator.registry import ChainRegistry
from coordinator.rpc import ChainRpc
from signer.logs import log_event

log = logging.getLogger("tessera.api")

#: The service's webhook signing key, next to the cluster's coordinator database.
WEBHOOK_KEY_FILE = "webhook-signing.pem"
#: The key the service signs its screening requests with (`coordinator.api.screening`).
SCREENING_KEY_FILE = "screening-signing.pem"


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: uvicorn re-raises a caught SIGTERM
    once it has stopped, which would end the process before the workers are stopped; `run`
    handles SIGINT/SIGTERM itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8700
    #: TLS for the listener: a PEM certificate chain and its key (both or neither)
    certfile: Path | None = None
    keyfile: Path | None = None
    #: presignatures kept ready per policy wallet (0: no keeper)
    pool_depth: int = 8
    initiator: str = "withdrawal-service"
    webhook_urls: list[str] = field(default_factory=list)
    #: the external screen (docs/api.md, "Screening"): its URL and Ed25519 public key (a file
    #: or its base64url text), each withdrawal's screening deadline and the longest deferral
    screening_url: str | None = None
    screening_key: str | Ed25519PublicKey | None = None
    screening_timeout: float = 5.0
    screening_max_defer: float = 3600.0


@dataclass
class Service:
    """The running parts of one `tessera serve`, for the CLI, the demo and tests."""

    coordinator: Coordinator
    engine: PayoutEngine
    withdrawals: WithdrawalService
    authenticator: Authenticator
    webhooks: WebhookDispatcher
    rpcs: dict[int, ChainRpc]
    server: uvicorn.Server
    screener: Screener | None = None

    async def aclose(self) -> None:
        if self.screener is not None:
            await self.screener.aclose()
        await self.coordinator.aclose()
        for rpc in self.rpcs.values():
            await rpc.aclose()


def build(cluster: LocalCluster, registry: ChainRegistry, options: ServeOptions) -> Service:
    root = cluster.root
    rpcs = {
        cid: ChainRpc.connect(cid, registry.chain(cid).rpc_urls) for cid in registry.chain_ids()
    }
    coordinator = cluster.coordinator()
    engine = PayoutEngine(coordinator, registry, rpcs)
    screener = screener_of(root, options)
    withdrawals = WithdrawalService(
        coordinator.store, engine, initiator=options.initiator, screener=screener
    )
    authenticator = Authenticator(coordinator.store)
    webhooks = WebhookDispatcher(
        coordinator.store, load_or_create_signing_key(root / WEBHOOK_KEY_FILE)
    )
    # an endpoint an operator disabled stays disabled across restarts with the same flags
    known = {e.url for e in webhooks.endpoints(include_disabled=True)}
    for url in options.webhook_urls:
        if url not in known:
            webhooks.add_endpoint(url)

    async def readiness() -> Readiness:
        down = await coordinator.health.refresh()
        chains: dict[str, bool] = {}
        for cid, rpc in rpcs.items():
            try:
                await rpc.block_number()
                chains[str(cid)] = True
            except Exception:
                chains[str(cid)] = False
        up = sorted(set(coordinator.parties) - down)
        # ready when a signing quorum of nodes answers and every chain does
        ready = len(up) >= min((w.threshold for w in coordinator.store.wallets()), default=1)
        return Readiness(
            ready=ready and all(chains.values()),
            nodes_up=up,
            nodes_down=sorted(down),
            chains=chains,
        )

    app = create_app(
        withdrawals, authenticator, RateLimiter(), readiness=readiness, webhooks=webhooks
    )
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        ssl_certfile=None if options.certfile is None else str(options.certfile),
        ssl_keyfile=None if options.keyfile is None else str(options.keyfile),
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    return Service(
        coordinator, engine, withdrawals, authenticator, webhooks, rpcs, _Server(config), screener
    )


def screener_of(root: Path, options: ServeOptions) -> Screener | None:
    """The external screen of `options` (None when no URL is configured), signing with the
    service's screening key in `root` (made on first use)."""
    if options.screening_url is None:
        return None
    check_url(options.screening_url)
    if options.screening_key is None:
        raise ScreeningError("a screening URL needs the screen's public key (--screening-key)")
    key = options.screening_key
    return Screener(
        options.screening_url,
        key if isinstance(key, Ed25519PublicKey) else load_screen_key(key),
        load_or_create_signing_key(root / SCREENING_KEY_FILE),
        timeout=options.screening_timeout,
        max_defer=options.screening_max_defer,
    )


def pool_targets(coordinator: Coordinator, depth: int) -> list[PoolTarget]:
    """One pool per policy wallet, for its first `threshold` nodes."""
    parties = sorted(coordinator.parties)
    return [
        PoolTarget(w.name, tuple(parties[: w.threshold]), (), depth)
        for w in coordinator.store.wallets()
        if w.policy_wallet and depth > 0
    ]


async def run(
    service: Service,
    options: ServeOptions,
    started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until uvicorn stops (SIGINT/SIGTERM), with the workers beside it."""
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(service.withdrawals.run(stop)),
        asyncio.create_task(service.webhooks.run(stop)),
    ]
    targets = pool_targets(service.coordinator, options.pool_depth)
    if targets:
        workers.append(asyncio.create_task(service.coordinator.keep_pools(targets, stop)))
    loop = asyncio.get_running_loop()

    def shut_down() -> None:
        service.server.should_exit = True

    for number in (signal.SIGINT, signal.SIGTERM):
        # only the main thread may (a service run in a thread is stopped by should_exit)
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(number, shut_down)
    log_event(log, "api.start", host=options.host, port=options.port)
    try:
        serving = asyncio.create_task(service.server.serve())
        if started is not None:
            while not service.server.started and not serving.done():
                await asyncio.sleep(0.02)
            await started()
        await serving
    finally:
        stop.set()
        for worker in workers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(worker, 10)
        await service.aclose()
        log_event(log, "api.stop")
