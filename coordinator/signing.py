"""Signing: a presignature from the pool (or an interactive presign on the spot), partial
signatures from its signers, each checked on its own before combining, and the final signature
verified before it is returned.

Signing never needs a node to trust the coordinator with anything secret, and the coordinator
trusts no single node's word: presignature public data must be reported identically by every
party; each partial signature is checked on its own (`signer.protocol.sign.combine`), so a bad
one is named, its node recorded in the blame log and the quarantine mirror.  When a node is down
or blamed, the coordinator retries with another signer set.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from coordinator.client import NodeRefused, NodeUnavailable
from coordinator.driver import SessionFailed
from coordinator.errors import SigningFailed, SignRequestInvalid
from coordinator.failures import FailureKind, classify
from coordinator.health import OPERATIONAL_CODES
from coordinator.pools import PoolOps
from coordinator.specs import Operation, new_request_id
from coordinator.store import CoordinatorStoreError, PresignatureRow, WalletRow
from signer.errors import Check, EncodingError
from signer.logs import Timer, bind, log_event
from signer.node import codec
from signer.node.api import MAX_SIGN_MESSAGE_BYTES, SignReply, join_indices, join_path
from signer.node.exclusion import first_blocking
from signer.problems import ErrorCode
from signer.protocol.keygen import KeyPublic
from signer.protocol.sign import HashScheme, PartialSignatureInvalid, Signature, combine

logger = logging.getLogger("tessera.coordinator.signing")

#: A node's policy refused the request itself (signer/node/decision.py): no other signer set
#: would sign it, so it is not retried, and nothing was consumed.
POLICY_REFUSALS = frozenset(
    {
        ErrorCode.NO_GENESIS,
        ErrorCode.NO_POLICY,
        ErrorCode.POLICY_DENIED,
        ErrorCode.TRANSACTION_INVALID,
        ErrorCode.UNSUPPORTED_TRANSACTION,
        ErrorCode.INTENT_MISMATCH,
        ErrorCode.SENDER_MISMATCH,
        ErrorCode.RECEIPTS_MISSING,
        ErrorCode.REQUEST_REUSED,
        ErrorCode.CANCEL_REFUSED,
        ErrorCode.ALLOWANCE_REFUSED,
        ErrorCode.INTERNAL_TRANSFER_REFUSED,
        ErrorCode.FEE_ABOVE_CEILING,
        ErrorCode.RAW_SIGNING_REFUSED,
    }
)

#: A signer's refusal with one of these codes comes before it consumes anything
#: (`NodeService.sign` consumes only after every check; the limits and validation refuse before
#: the route runs).  PRESIGNATURE_USED, HSM (the unseal comes after the consume) and INTERNAL
#: are not here: after them the presignature may be spent.
NOTHING_CONSUMED = frozenset(
    {
        ErrorCode.BAD_REQUEST,
        ErrorCode.VALIDATION,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.URI_TOO_LONG,
        ErrorCode.HEADERS_TOO_LARGE,
        ErrorCode.REQUEST_TIMEOUT,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ErrorCode.NOT_PINNED,
        ErrorCode.UNKNOWN_KEY,
        ErrorCode.NO_SHARE,
        ErrorCode.UNKNOWN_PRESIGNATURE,
        ErrorCode.STALE_PRESIGNATURE,
        ErrorCode.QUARANTINED,
        *POLICY_REFUSALS,
    }
)
#: ...of which these also say the presignature can never sign (unknown to a signer, or for
#: another key version): it stays used rather than being offered again.
NEVER_USABLE = frozenset(
    {
        ErrorCode.UNKNOWN_KEY,
        ErrorCode.NO_SHARE,
        ErrorCode.UNKNOWN_PRESIGNATURE,
        ErrorCode.STALE_PRESIGNATURE,
    }
)

#: What a failed presign on the spot says about the request (`SigningFailed.code`): nodes down
#: or stalled are BUSY (try later), a quarantine refusal QUARANTINED, anything else a failed
#: session.
_SESSION_CODES = {
    FailureKind.UNAVAILABLE: ErrorCode.BUSY,
    FailureKind.QUARANTINED: ErrorCode.QUARANTINED,
}


@dataclass
class SignOutcome:
    signature: Signature
    signers: tuple[int, ...]
    presignature_id: str
    attempts: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


#: How a signer is asked for its partial on presignature `presignature_id` (default: raw bytes).
Ask = Callable[[int, str], Awaitable[SignReply]]


def _failure_rank(failure: BaseException) -> int:
    if isinstance(failure, NodeUnavailable):
        return 0
    return 1 if isinstance(failure, NodeRefused) else 2


class SigningOps(PoolOps):
    def signer_sets(self, key: KeyPublic, excluded: set[int]) -> list[tuple[int, ...]]:
        """Every t-subset of the key's committee without the excluded nodes, the nodes down
        (`self.health`) and the parties and sets in the quarantine mirror."""
        down = self.health.down()
        usable = [i for i in key.parties if i not in excluded and i not in down]
        subsets = (tuple(c) for c in itertools.combinations(usable, key.threshold))
        mirror = self.store.quarantine_mirror()  # read once, not once per subset
        return [s for s in subsets if first_blocking(mirror, s) is None]

    async def sign(
        self,
        wallet_name: str,
        message: bytes,
        scheme: HashScheme,
        path: Sequence[int] = (),
        preferred: tuple[int, ...] | None = None,
    ) -> SignOutcome:
        """A verified signature of `message` by the wallet's key (derived along `path`), from
        a pooled presignature if one exists for a usable signer set, else from an interactive
        presign on the spot; retried with other sets as nodes fail.  One log record and one
        metric per request, whatever its outcome."""
        return await self._observed(
            wallet_name, lambda: self._sign(wallet_name, message, scheme, path, preferred)
        )

    async def _observed(
        self, wallet_name: str, attempt: Callable[[], Awaitable[SignOutcome]]
    ) -> SignOutcome:
        """One log record and one metric per signing request, whatever its outcome."""
        request = new_request_id().hex()
        timer = Timer()
        with bind(request=request):
            try:
                outcome = await attempt()
            except (SigningFailed, SignRequestInvalid) as exc:
                self.metrics.refused(exc.code)
                log_event(
                    logger,
                    "signature.refused",
                    level=logging.WARNING,
                    outcome="refused",
                    code=exc.code,
                    key=wallet_name,
                    seconds=timer.seconds,
                    detail=str(exc),
                )
                raise
            except CoordinatorStoreError as exc:
                self.metrics.refused(exc.code)
                raise
            self.metrics.issued()
            log_event(
                logger,
                "signature.issued",
                outcome="issued",
                key=wallet_name,
                parties=outcome.signers,
                presignature=outcome.presignature_id,
                attempt=len(outcome.attempts) + 1,
                seconds=timer.seconds,
            )
            return outcome

    async def _sign(
        self,
        wallet_name: str,
        message: bytes,
        scheme: HashScheme,
        path: Sequence[int],
        preferred: tuple[int, ...] | None,
        ask: Ask | None = None,
        excluded_from_start: frozenset[int] = frozenset(),
        wallet: WalletRow | None = None,
    ) -> SignOutcome:
        # Checked here, before a presignature is taken: a request every node would refuse
        # must not spend one (an empty message once spent two).
        if not isinstance(message, bytes) or not message:
            raise SignRequestInvalid("the message is empty")
        if len(message) > MAX_SIGN_MESSAGE_BYTES:
            raise SignRequestInvalid(f"the message is over {MAX_SIGN_MESSAGE_BYTES} bytes")
        if not isinstance(scheme, HashScheme):
            raise SignRequestInvalid(f"unknown hash scheme {scheme!r}")
        if wallet is None:  # (a transaction request has read it already)
            wallet = self.store.wallet(wallet_name)
        key = codec.decode_key_public(wallet.key_public)
        steps = tuple(path)
        excluded: set[int] = set(excluded_from_start)
        attempts: list[str] = []
        tried_fresh: set[tuple[int, ...]] = set()
        await self.health.refresh()  # a node back since its last failure may be chosen again
        checked = False
        code = ErrorCode.BUSY  # what SigningFailed will say if nothing more telling happens
        refusal: NodeRefused | None = None  # a node's refusal of the request itself
        for _ in range(4 * len(key.parties)):
            sets = self.signer_sets(key, excluded)  # mirrored quarantine is left out
            if not sets and not checked and self.health.down() & set(key.parties):
                # Only nodes still in their back-off stand in the way: rather than fail the
                # request, check them now (once per request).
                checked = True
                await self.health.refresh(force=True)
                sets = self.signer_sets(key, excluded)
            if not sets:
                break
            if preferred in sets:
                sets.remove(preferred)
                sets.insert(0, preferred)
            chosen: tuple[tuple[int, ...], PresignatureRow] | None = None
            for signers in sets:
                row = self.store.take_presignature(
                    wallet.key_id, wallet.epoch, join_indices(signers), join_path(steps)
                )
                if row is not None:
                    chosen = (signers, row)
                    break
            started = time.perf_counter()
            timings: dict[str, float] = {}
            if chosen is None:
                untried = [s for s in sets if s not in tried_fresh]
                if not untried:
                    break  # a set is presigned with at most once per request
                signers = untried[0]
                tried_fresh.add(signers)
                try:
                    fresh = await self.presign(wallet, signers, steps)
                except SessionFailed as failure:
                    verdict = classify(failure)
                    code = _SESSION_CODES.get(verdict.kind, ErrorCode.SESSION_FAILED)
                    attempts.append(f"presign {list(signers)}: {verdict.kind}: {failure}")
                    excluded |= verdict.exclude  # a quarantined set is now in the mirror (_run)
                    continue
                row = self.store.take_presignature(
                    wallet.key_id, wallet.epoch, fresh.signers, fresh.path
                )
                if row is None:
                    attempts.append(f"presign {list(signers)}: presignature vanished")
                    continue
                chosen = (signers, row)
                timings["presign"] = time.perf_counter() - started
            signers, row = chosen
            self._wake_keepers()  # the pool is one short: let an idle keeper refill it now
            try:
                signature = await self._sign_with(wallet, key, signers, row, message, scheme, ask)
            except EncodingError as exc:
                # The pooled row does not decode (e.g. made before the presignature format
                # gained its key version): nothing was sent to a node; the row stays taken.
                attempts.append(f"presignature {row.presignature_id[:16]} unreadable: {exc}")
                continue
            except NodeUnavailable as exc:
                attempts.append(f"{list(signers)}: node {exc.index} unavailable")
                self.health.mark_down(exc.index, str(exc))
                excluded.add(exc.index)
                continue
            except NodeRefused as exc:
                code = exc.code
                attempts.append(f"{list(signers)}: node {exc.index} refused {exc.code}")
                if exc.code is ErrorCode.VALIDATION or exc.code in POLICY_REFUSALS:
                    refusal = exc
                    break  # the nodes refuse the request itself: no other set would take it
                if exc.code is ErrorCode.QUARANTINED:  # the node is honest; the set is not usable
                    self.store.quarantine(
                        "signer_set", signers, wallet.key_id, Operation.SIGN, str(exc)
                    )
                elif exc.code not in (
                    ErrorCode.PRESIGNATURE_USED,
                    ErrorCode.UNKNOWN_PRESIGNATURE,
                ):
                    if exc.code in OPERATIONAL_CODES:
                        self.health.mark_down(exc.index, str(exc))
                    excluded.add(exc.index)
                continue
            except PartialSignatureInvalid as exc:
                code = ErrorCode.SESSION_FAILED
                for culprit in exc.culprits:
                    self.store.record_blame(Operation.SIGN, None, culprit, Check.EQUATION, str(exc))
                    self.store.quarantine(
                        "party", (culprit,), wallet.key_id, Operation.SIGN, str(exc)
                    )
                attempts.append(f"{list(signers)}: bad partial from {sorted(exc.culprits)}")
                excluded |= set(exc.culprits)
                continue
            timings["sign"] = time.perf_counter() - started - timings.get("presign", 0.0)
            # Counted down, not recounted: a GROUP BY per signature cost more than the gauge
            # is worth; the keeper sets it from the store on every refill (pools.py).
            self.metrics.pool_taken(wallet.name)
            return SignOutcome(signature, signers, row.presignature_id, attempts, timings)
        raise SigningFailed(attempts, code, refusal=refusal)

    async def _sign_with(
        self,
        wallet: WalletRow,
        key: KeyPublic,
        signers: tuple[int, ...],
        row: PresignatureRow,
        message: bytes,
        scheme: HashScheme,
        ask: Ask | None = None,
    ) -> Signature:
        public = codec.decode_presignature_public(row.public, key)

        def raw(i: int) -> Awaitable[SignReply]:
            return self.clients[i].sign(wallet.key_id, row.presignature_id, message, scheme.value)

        replies = await asyncio.gather(
            *((raw(i) if ask is None else ask(i, row.presignature_id)) for i in signers),
            return_exceptions=True,
        )
        failed = [r for r in replies if isinstance(r, BaseException)]
        if failed:
            refusals = [r for r in failed if isinstance(r, NodeRefused)]
            codes = {r.code for r in refusals}
            if len(refusals) == len(replies) and codes <= NOTHING_CONSUMED - NEVER_USABLE:
                # Every signer refused before consuming: no partial exists anywhere, and no
                # node failed to answer (it might have consumed), so the presignature is
                # intact — back to the pool.  If any signer answered or timed out, it is spent.
                self.store.release_presignature(row.presignature_id)
            # an unreachable node first (it is excluded), then a refusal, then anything else
            failed.sort(key=_failure_rank)
            raise failed[0]
        partials: dict[int, int] = {}
        for index, reply in zip(signers, replies, strict=True):
            if isinstance(reply, BaseException):  # (none is left: narrows the type)
                raise reply
            if reply.index != index or reply.presignature_id != row.presignature_id:
                raise PartialSignatureInvalid(frozenset({index}), "answer for something else")
            partials[index] = int(reply.partial, 16)
        return combine(public, message, scheme, partials, key)
