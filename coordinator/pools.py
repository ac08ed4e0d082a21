"""Presignature pools: presign sessions whose public data the coordinator keeps, per (wallet,
signer set, path), filled to a depth on request or kept full in the background."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential

from coordinator.driver import SessionFailed
from coordinator.errors import InconsistentReports, SetQuarantined
from coordinator.failures import classify
from coordinator.sessions import SessionRunner, same
from coordinator.specs import Operation, presign_spec
from coordinator.store import PresignatureRow, WalletRow
from signer.node import codec
from signer.node.api import PresignResult, join_indices, join_path

#: The keeper's longest pause between passes that found nothing to do: a pool that stays full
#: (or a target that cannot be worked on) costs one pass per this many seconds, not per `interval`.
MAX_KEEPER_INTERVAL = 8.0


@dataclass(frozen=True)
class PoolTarget:
    """A presignature pool to keep filled: wallet name, signer set, derivation path, depth."""

    wallet: str
    signers: tuple[int, ...]
    path: tuple[int, ...] = ()
    depth: int = 8


class PoolOps(SessionRunner):
    def _pool_gauge(self, wallet: WalletRow) -> None:
        self.metrics.pool(wallet.name, sum(self.store.pools(wallet.key_id).values()))

    async def presign(
        self, wallet: WalletRow, signers: tuple[int, ...], path: tuple[int, ...]
    ) -> PresignatureRow:
        results = await self._run(Operation.PRESIGN, presign_spec(wallet, signers, path))
        public = bytes.fromhex(same(results, PresignResult, "public", "presignature data"))
        pid = same(results, PresignResult, "presignature_id", "presignature ids")
        key = codec.decode_key_public(wallet.key_public)
        codec.decode_presignature_public(public, key)  # validates what we will combine with
        row = PresignatureRow(
            presignature_id=pid,
            key_id=wallet.key_id,
            epoch=wallet.epoch,
            signers=join_indices(signers),
            path=join_path(path),
            public=public,
            state="available",
            created_at=time.time(),
        )
        self.store.add_presignature(row)
        self._pool_gauge(wallet)
        return row

    async def fill_pool(
        self,
        wallet: WalletRow,
        signers: tuple[int, ...],
        path: tuple[int, ...],
        depth: int,
        concurrency: int = 2,
    ) -> int:
        """Run presign sessions until `depth` presignatures are available; returns how many
        were made."""
        key = (wallet.key_id, wallet.epoch, join_indices(signers), join_path(path))
        missing = max(0, depth - self.store.pool_depth(*key))
        made = 0
        while made < missing:
            batch = min(concurrency, missing - made)
            await asyncio.gather(*(self.presign(wallet, signers, path) for _ in range(batch)))
            made += batch
        return made

    async def _keeper_pass(
        self, targets: Sequence[PoolTarget], paused: set[PoolTarget], stop: asyncio.Event
    ) -> bool:
        """One pass over the targets; True if it made a presignature (or the keeper stops)."""
        if stop.is_set():
            return True
        down = await self.health.refresh()
        self.metrics.nodes(self.parties, down)
        made = 0
        for target in targets:
            if target in paused or self.store.quarantined(target.signers) is not None:
                continue
            if down & set(target.signers):
                continue  # tried again once a health check sees the node back
            wallet = self.store.wallet(target.wallet)
            try:
                made += await self.fill_pool(wallet, target.signers, target.path, target.depth)
            except SessionFailed as failure:
                if not classify(failure).retry_same_set:
                    paused.add(target)  # never retried on its own (A03)
            except (InconsistentReports, SetQuarantined):
                paused.add(target)
        return made > 0

    async def keep_pools(
        self,
        targets: Sequence[PoolTarget],
        stop: asyncio.Event,
        interval: float = 0.5,
        max_interval: float = MAX_KEEPER_INTERVAL,
    ) -> None:
        """Keep every target pool at its depth in the background until `stop` is set.  After a
        pass that made presignatures the next one follows `interval` later; after each pass
        that found nothing to do the pause doubles, up to `max_interval` (tenacity's
        exponential wait), so an idle keeper does not poll the store and the nodes' health
        twice a second.  A failed presign is in the blame log (`_run`); the keeper tries a
        target again only after an operational failure (node down, stall) — after any other
        failure it leaves the target alone."""
        paused: set[PoolTarget] = set()
        wake = asyncio.Event()  # a presignature was drawn (`_wake_keepers`): refill now

        async def pause(seconds: float) -> None:
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
                wake.clear()

        self._keeper_wakeups.append(wake)
        try:
            await self._keep(targets, stop, interval, max_interval, paused, pause)
        finally:
            self._keeper_wakeups.remove(wake)

    async def _keep(
        self,
        targets: Sequence[PoolTarget],
        stop: asyncio.Event,
        interval: float,
        max_interval: float,
        paused: set[PoolTarget],
        pause: Callable[[float], Awaitable[None]],
    ) -> None:
        def stopped(_: RetryCallState) -> bool:
            return stop.is_set()

        def idle_to_false(_: RetryCallState) -> bool:
            return False

        while not stop.is_set():
            # One AsyncRetrying per busy spell: the back-off starts again from `interval`
            # after any pass that did work.
            retrying = AsyncRetrying(
                wait=wait_exponential(multiplier=interval, min=interval, max=max_interval),
                retry=retry_if_result(lambda worked: not worked),
                stop=stopped,
                sleep=pause,
                retry_error_callback=idle_to_false,
            )
            await retrying(self._keeper_pass, targets, paused, stop)
            if not stop.is_set():
                await pause(interval)
