"""A payout's fee quote and gas estimate, asked of the chain ahead of the moment they are used.

The signer API accepts a withdrawal and then screens it, dry-runs the policy and stores its
payout before the engine fixes the transaction (`PayoutEngine._reserve_and_sign`): the chain's
two reads (`eth_feeHistory` and `eth_estimateGas`, about 10 ms on a local Hardhat node) can
run during those steps instead of after them.  `QuotesAhead.ask` starts them for a payout
about to be stored; `take` hands them over if they were asked for the very same transaction
(sender, recipient, value, calldata, fee level) at most `FRESH_SECONDS` ago, else nothing — and
the engine asks the chain then, as it always did.  They are reads: nothing is reserved, sent
or stored, and a read that failed ahead is simply asked again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from coordinator.fees import FeeLevel, Fees, estimate_gas, quote_fees
from coordinator.registry import Chain
from coordinator.rpc import ChainRpc

#: How old a quote asked ahead may be when it is used: about the time from a withdrawal's
#: acceptance to its signing when no officer is waited for, well under a block on any chain
#: (a withdrawal that waited for officers is quoted anew).
FRESH_SECONDS: Final = 2.0
#: At most this many quotes are kept waiting (one per payout about to be stored).
_KEPT: Final = 1024


@dataclass(frozen=True)
class Quoted:
    """What a quote was asked for: the transaction's every input to the two reads."""

    chain_id: int
    sender: str
    to: str
    value: int
    data: bytes
    level: FeeLevel


def _estimate(rpc: ChainRpc, quoted: Quoted) -> asyncio.Task[int]:
    # A task from the start: it sends its request at the loop's next turn, ahead of whatever
    # is scheduled after this call (the worker that screens the withdrawal meanwhile).
    return asyncio.ensure_future(
        estimate_gas(rpc, quoted.sender, quoted.to, quoted.value, quoted.data)
    )


def _failed(task: asyncio.Task[Fees]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


async def _both(fees: asyncio.Future[Fees], gas: asyncio.Future[int]) -> tuple[Fees, int]:
    """Both reads' answers; when either fails, the fee quote's error wins (as when they were
    asked one after the other), and the other is still awaited."""
    try:
        await asyncio.wait((fees, gas))
    except asyncio.CancelledError:
        fees.cancel()
        gas.cancel()
        raise
    for read in (fees, gas):
        if not read.cancelled():
            read.exception()  # both retrieved, whichever is raised
    return fees.result(), gas.result()


async def read_quotes(rpc: ChainRpc, chain: Chain, quoted: Quoted) -> tuple[Fees, int]:
    """The fee quote and the gas estimate, asked at once (independent reads)."""
    fees = asyncio.ensure_future(quote_fees(rpc, chain, quoted.level))
    return await _both(fees, _estimate(rpc, quoted))


def _retrieved(task: asyncio.Task[Any]) -> None:
    # a quote nobody takes (a payout refused, cancelled or quoted anew) fails silently
    if not task.cancelled():
        task.exception()


class QuotesAhead:
    """The quotes asked ahead, by payout id (one event loop: the engine's)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._asked: dict[str, tuple[Quoted, float, asyncio.Task[tuple[Fees, int]]]] = {}
        #: the fee read shared per (chain, level), with the moment it was asked
        self._fees: dict[tuple[int, FeeLevel], tuple[float, asyncio.Task[Fees]]] = {}

    def _fee_read(
        self, rpc: ChainRpc, chain: Chain, level: FeeLevel
    ) -> tuple[float, asyncio.Task[Fees]]:
        """The chain's fee read at `level` asked within `FRESH_SECONDS` (and not failed), or a
        new one."""
        now = self._clock()
        kept = self._fees.get((chain.chain_id, level))
        if kept is not None and now - kept[0] <= FRESH_SECONDS and not _failed(kept[1]):
            return kept
        task = asyncio.ensure_future(quote_fees(rpc, chain, level))
        task.add_done_callback(_retrieved)
        self._fees[(chain.chain_id, level)] = (now, task)
        return now, task

    def ask(self, payout_id: str, rpc: ChainRpc, chain: Chain, quoted: Quoted) -> None:
        """Start the two reads for `payout_id`'s transaction (replacing any asked before)."""
        if len(self._asked) >= _KEPT:
            self._drop_stale()
        if len(self._asked) >= _KEPT:
            return  # as many fresh ones waiting: this payout is quoted when it is used
        self._drop(payout_id)
        fees_at, fees = self._fee_read(rpc, chain, quoted.level)
        # shielded: a payout's quote dropped (cancelled) leaves the shared fee read to the rest
        task = asyncio.ensure_future(_both(asyncio.shield(fees), _estimate(rpc, quoted)))
        task.add_done_callback(_retrieved)
        self._asked[payout_id] = (quoted, fees_at, task)

    async def take(self, payout_id: str, quoted: Quoted) -> tuple[Fees, int] | None:
        """The fee quote and gas estimate asked ahead for exactly `quoted`, fresh; None when
        there is none (never asked, too old, for another transaction, or it failed)."""
        entry = self._asked.pop(payout_id, None)
        if entry is None:
            return None
        asked_for, at, task = entry
        if asked_for != quoted or self._clock() - at > FRESH_SECONDS:
            task.cancel()
            return None
        try:
            return await task
        except Exception:  # whatever failed ahead, the caller's own read decides
            return None

    def _drop(self, payout_id: str) -> None:
        entry = self._asked.pop(payout_id, None)
        if entry is not None:
            entry[2].cancel()

    def _drop_stale(self) -> None:
        now = self._clock()
        for payout_id in [p for p, (_q, at, _t) in self._asked.items() if now - at > FRESH_SECONDS]:
            self._drop(payout_id)
