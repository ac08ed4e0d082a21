"""The coordinator's operations over a cluster of node processes: aux-info, wallets (DKG),
presignature pools, signing with retries, refresh and re-share.

Signing never needs a node to trust the coordinator with anything secret, and the coordinator
trusts no single node's word: presignature public data and key versions must be reported
identically by every party; each partial signature is checked on its own before combining
(`signer.protocol.sign.combine`), so a bad one is named and its node recorded in the blame log;
the final signature is verified before it is returned.  When a node is down or blamed, the
coordinator retries with another signer set (a presignature from the pool if one exists,
otherwise an interactive presign on the spot).

A failed session is classified (`coordinator.failures`): only operational failures are ever
retried with the same party set.  A presign whose output check failed is followed by the
identification session; named culprits are suspended, and a cryptographic failure that names
nobody suspends its party set (attacks.md A03) — in this store, and independently in every
node's quarantine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from coordinator.client import NodeClient, NodeRefused, NodeReplyInvalid, NodeUnavailable
from coordinator.driver import SessionDriver, SessionFailed, new_request_id
from coordinator.failures import FailureKind, classify
from coordinator.health import OPERATIONAL_CODES, NodeHealth
from coordinator.store import (
    CoordinatorStore,
    CoordinatorStoreError,
    PendingVersionRow,
    PresignatureRow,
    WalletRow,
)
from signer.errors import EncodingError, TesseraError
from signer.node import codec
from signer.node.api import (
    AUX_KEY_ID,
    MAX_SIGN_MESSAGE_BYTES,
    AuxResult,
    IdentifyResult,
    KeyResult,
    PresignResult,
    ReshareReport,
    SessionResult,
    join_indices,
    join_path,
)
from signer.node.confirmation import ConfirmationBody
from signer.problems import ErrorCode
from signer.protocol.keygen import KeyPublic
from signer.protocol.sign import HashScheme, PartialSignatureInvalid, Signature, combine

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


class SigningFailed(TesseraError):
    """No signer set could produce a verified signature; `attempts` says what happened."""

    def __init__(self, attempts: list[str]) -> None:
        self.attempts = attempts
        super().__init__("no signer set produced a signature: " + "; ".join(attempts))


class InconsistentReports(TesseraError):
    """Parties of one session reported different public outputs."""


class SignRequestInvalid(TesseraError):
    """A signing request no node would accept (refused before any presignature is taken)."""


class ReshareUnconfirmed(TesseraError):
    """A re-share or refresh ran but its new version is not active on every node.

    `confirmed` False: some members of the new committee gave no storage confirmation
    (`failed` says why); the wallet stays on the old version, which every node still holds.
    `confirmed` True: the set is complete and the wallet moved to the new version, but the
    nodes in `failed` have not received it yet.  Either way `Coordinator.confirm_pending`
    retries; nothing is lost meanwhile."""

    def __init__(self, key_id: str, epoch: int, *, confirmed: bool, failed: dict[int, str]) -> None:
        self.key_id = key_id
        self.epoch = epoch
        self.confirmed = confirmed
        self.failed = failed
        nodes = sorted(failed)
        reasons = "; ".join(f"node {j}: {failed[j]}" for j in nodes)
        if confirmed:
            what = (
                f"epoch {epoch} of key {key_id[:16]} is confirmed and the wallet is on it, but "
                f"nodes {nodes} have not activated it yet"
            )
        else:
            what = (
                f"epoch {epoch} of key {key_id[:16]} is not confirmed: no storage confirmation "
                f"from nodes {nodes}; the wallet stays on epoch {epoch - 1}, which every node "
                "still holds"
            )
        super().__init__(f"{what} ({reasons}); retry with confirm_pending")


class SetSuspended(TesseraError):
    """The coordinator will not run a session among these parties: a failure suspended one of
    them (or the set) and no operator has cleared it."""


@dataclass(frozen=True)
class PoolTarget:
    """A presignature pool to keep filled: wallet name, signer set, derivation path, depth."""

    wallet: str
    signers: tuple[int, ...]
    path: tuple[int, ...] = ()
    depth: int = 8


@dataclass
class SignOutcome:
    signature: Signature
    signers: tuple[int, ...]
    presignature_id: str
    attempts: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _failure_rank(failure: BaseException) -> int:
    if isinstance(failure, NodeUnavailable):
        return 0
    return 1 if isinstance(failure, NodeRefused) else 2


R = TypeVar("R", bound=BaseModel)


def _of_kind(results: Mapping[int, SessionResult], model: type[R]) -> dict[int, R]:
    """Every party's result, each of the kind the session's protocol outputs."""
    typed: dict[int, R] = {i: r for i, r in results.items() if isinstance(r, model)}
    if len(typed) != len(results):
        odd = sorted(set(results) - set(typed))
        raise InconsistentReports(f"parties {odd} reported another kind of result")
    return typed


def _same(
    results: Mapping[int, SessionResult], model: type[BaseModel], field_name: str, what: str
) -> str:
    """The value every party reported for `field_name` (a `model` result), or
    InconsistentReports: the coordinator trusts no single node's word."""
    values = {str(getattr(r, field_name)) for r in _of_kind(results, model).values()}
    if len(values) != 1:
        raise InconsistentReports(f"parties reported different {what}")
    return values.pop()


def presign_spec(
    wallet: WalletRow, signers: tuple[int, ...], path: Sequence[int] = ()
) -> dict[str, Any]:
    """The session spec (SessionSpec JSON) of a presign among `signers` for `path`."""
    return {
        "protocol": "presign/v1",
        "request": new_request_id(),
        "parties": list(signers),
        "threshold": wallet.threshold,
        "key_id": wallet.key_id,
        "aux_id": wallet.aux_id,
        "path": list(path),
    }


def reshare_spec(
    wallet: WalletRow,
    dealers: tuple[int, ...],
    committee: tuple[int, ...],
    threshold: int,
    *,
    refresh: bool,
) -> dict[str, Any]:
    """The session spec of a re-share of the wallet's current version (a refresh when
    `refresh`: same committee, same t) from `dealers` to `committee` with threshold t′."""
    return {
        "protocol": "refresh/v1" if refresh else "reshare/v1",
        "request": new_request_id(),
        "parties": sorted(set(dealers) | set(committee)),
        "threshold": threshold,
        "key_id": wallet.key_id,
        "plan_old": wallet.key_public.hex(),
        "dealers": list(dealers),
        "new_parties": list(committee),
    }


class Coordinator:
    def __init__(
        self,
        clients: Mapping[int, NodeClient],
        threshold: int,
        store: CoordinatorStore,
        traffic: list[dict[str, Any]] | None = None,
        health: NodeHealth | None = None,
    ) -> None:
        self.clients = clients
        self.parties = tuple(sorted(clients))
        self.threshold = threshold
        self.store = store
        self.driver = SessionDriver(clients, traffic)
        # nodes that failed operationally are not chosen until a health check sees them back
        self.health = health if health is not None else NodeHealth(clients)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def _blame(self, operation: str, failure: SessionFailed) -> None:
        for reporter, abort in failure.aborts.items():
            for culprit in abort.get("culprits", []):
                self.store.record_blame(
                    operation, reporter, culprit, str(abort.get("code")), str(abort.get("detail"))
                )

    async def _run(self, operation: str, spec: dict[str, Any]) -> dict[int, SessionResult]:
        parties = tuple(int(i) for i in spec["parties"])
        suspended = self.store.suspended(parties)
        if suspended is not None:
            raise SetSuspended(
                f"{operation} among {list(parties)}: suspended (entry {suspended.id}, "
                f"{suspended.operation}: {suspended.reason})"
            )
        try:
            return await self.driver.run(spec)
        except SessionFailed as failure:
            for index, reason in failure.unavailable.items():
                code = failure.refused.get(index)
                if code is None or code in OPERATIONAL_CODES:
                    self.health.mark_down(index, reason)
            self._blame(operation, failure)
            if classify(failure).kind is FailureKind.IDENTIFICATION:
                await self._identify(failure, spec)
            self._suspend(operation, failure, spec)
            raise

    async def _identify(self, failure: SessionFailed, spec: dict[str, Any]) -> None:
        """Run presign identification among the failed presign's signers (every one of them
        kept what it needs); each node's verdict goes to `failure.identified` and the blame
        log.  If it cannot complete, the failure stays unattributed."""
        request = classify(failure).identification
        if request is None:
            return
        identify = {
            "protocol": "presign_identify/v1",
            "request": request,
            "parties": list(spec["parties"]),
            "threshold": len(spec["parties"]),
            "key_id": spec["key_id"],
        }
        try:
            results = await self.driver.run(identify)
        except SessionFailed as inner:
            self._blame("presign-identify", inner)
            failure.identified = {
                i: frozenset(int(c) for c in a.get("culprits", [])) for i, a in inner.aborts.items()
            }
            return
        identified = _of_kind(results, IdentifyResult)
        failure.identified = {i: frozenset(r.culprits) for i, r in identified.items()}
        for reporter, result in identified.items():
            for finding in result.findings:
                self.store.record_blame(
                    "presign-identify", reporter, finding.party, finding.check, finding.detail
                )

    def _suspend(self, operation: str, failure: SessionFailed, spec: dict[str, Any]) -> None:
        """Never again (until an operator says so): named culprits, or the whole party set if
        a cryptographic failure named nobody."""
        verdict = classify(failure)
        key_id = str(spec.get("key_id", ""))
        if verdict.kind is FailureKind.ATTRIBUTED:
            for culprit in sorted(verdict.culprits):
                self.store.suspend("party", (culprit,), key_id, operation, str(failure))
        elif verdict.security_event or verdict.kind is FailureKind.QUARANTINED:
            # (a node's own quarantine is mirrored too, so the set is not offered again)
            parties = tuple(int(i) for i in spec["parties"])
            self.store.suspend("signer_set", parties, key_id, operation, str(failure))

    # --- aux-info and wallets ------------------------------------------------------------------
    async def ensure_aux(self, parties: tuple[int, ...] | None = None) -> str:
        """The active aux-info of a committee (all nodes by default), run if there is none;
        aux-info is reusable across every key of the same committee."""
        committee = parties or self.parties
        existing = self.store.active_aux(join_indices(committee))
        if existing is not None:
            return existing
        return await self.run_aux_info(committee)

    async def run_aux_info(
        self, parties: tuple[int, ...] | None = None, replaces: str | None = None
    ) -> str:
        """Fresh aux-info (new Paillier keys, proven again) for a committee.  `replaces`: the
        aux-info this one replaces (refresh, re-share); its moduli must not come back, which
        every node that holds it checks (AuxInfoParty, issue 9 item 4)."""
        committee = parties or self.parties
        spec = {
            "protocol": "aux_info/v1",
            "request": new_request_id(),
            "parties": list(committee),
            "threshold": 2,
            "key_id": AUX_KEY_ID.hex(),
        }
        if replaces:
            spec["aux_id"] = replaces
        results = await self._run("aux-info", spec)
        aux_id = _same(results, AuxResult, "aux_id", "aux-info ids")
        self.store.add_aux(aux_id, join_indices(committee))
        return aux_id

    async def create_wallet(self, name: str, parties: tuple[int, ...] | None = None) -> WalletRow:
        """DKG among `parties` (all nodes by default) with the cluster's threshold."""
        committee = parties or self.parties
        if any(w.name == name for w in self.store.wallets()):
            raise CoordinatorStoreError(f"a wallet named {name!r} exists")  # before any DKG
        aux_id = await self.ensure_aux(committee)
        key_id = secrets.token_bytes(16)
        spec = {
            "protocol": "keygen/v1",
            "request": new_request_id(),
            "parties": list(committee),
            "threshold": self.threshold,
            "key_id": key_id.hex(),
        }
        results = await self._run("keygen", spec)
        key_public = bytes.fromhex(_same(results, KeyResult, "key_public", "key versions"))
        public = codec.decode_key_public(key_public)
        row = WalletRow(
            key_id=key_id.hex(),
            name=name,
            threshold=self.threshold,
            epoch=public.epoch,
            key_public=key_public,
            aux_id=aux_id,
            created_at=time.time(),
        )
        self.store.add_wallet(row)
        return row

    # --- presignatures -------------------------------------------------------------------------
    async def presign(
        self, wallet: WalletRow, signers: tuple[int, ...], path: tuple[int, ...]
    ) -> PresignatureRow:
        results = await self._run("presign", presign_spec(wallet, signers, path))
        public = bytes.fromhex(_same(results, PresignResult, "public", "presignature data"))
        pid = _same(results, PresignResult, "presignature_id", "presignature ids")
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

    async def keep_pools(
        self, targets: Sequence[PoolTarget], stop: asyncio.Event, interval: float = 0.5
    ) -> None:
        """Keep every target pool at its depth in the background until `stop` is set: after
        each pass, wait `interval` (or less, if stopped).  A failed presign is in the blame log
        (`_run`); the keeper tries a target again on the next pass only after an operational
        failure (node down, stall) — after any other failure it leaves the target alone."""
        paused: set[PoolTarget] = set()
        while not stop.is_set():
            down = await self.health.refresh()
            for target in targets:
                if target in paused or self.store.suspended(target.signers) is not None:
                    continue
                if down & set(target.signers):
                    continue  # tried again once a health check sees the node back
                wallet = self.store.wallet(target.wallet)
                try:
                    await self.fill_pool(wallet, target.signers, target.path, target.depth)
                except SessionFailed as failure:
                    if not classify(failure).retry_same_set:
                        paused.add(target)  # never retried on its own (A03)
                except (InconsistentReports, SetSuspended):
                    paused.add(target)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue

    # --- signing -------------------------------------------------------------------------------
    def signer_sets(self, key: KeyPublic, excluded: set[int]) -> list[tuple[int, ...]]:
        """Every t-subset of the key's committee without the excluded nodes, the nodes down
        (`self.health`) and the suspended parties and sets."""
        down = self.health.down()
        usable = [i for i in key.parties if i not in excluded and i not in down]
        subsets = (tuple(c) for c in itertools.combinations(usable, key.threshold))
        return [s for s in subsets if self.store.suspended(s) is None]

    async def sign(
        self,
        wallet_name: str,
        message: bytes,
        scheme: HashScheme,
        path: Sequence[int] = (),
        preferred: tuple[int, ...] | None = None,
    ) -> SignOutcome:
        # Checked here, before a presignature is taken: a request every node would refuse
        # must not spend one (an empty message once spent two).
        if not isinstance(message, bytes) or not message:
            raise SignRequestInvalid("the message is empty")
        if len(message) > MAX_SIGN_MESSAGE_BYTES:
            raise SignRequestInvalid(f"the message is over {MAX_SIGN_MESSAGE_BYTES} bytes")
        if not isinstance(scheme, HashScheme):
            raise SignRequestInvalid(f"unknown hash scheme {scheme!r}")
        wallet = self.store.wallet(wallet_name)
        key = codec.decode_key_public(wallet.key_public)
        steps = tuple(path)
        excluded: set[int] = set()
        attempts: list[str] = []
        tried_fresh: set[tuple[int, ...]] = set()
        await self.health.refresh()  # a node back since its last failure may be chosen again
        checked = False
        for _ in range(4 * len(key.parties)):
            sets = self.signer_sets(key, excluded)  # suspended sets are left out
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
                    attempts.append(f"presign {list(signers)}: {verdict.kind}: {failure}")
                    excluded |= verdict.exclude  # a quarantined set is now suspended (_run)
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
            try:
                signature = await self._sign_with(wallet, key, signers, row, message, scheme)
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
                attempts.append(f"{list(signers)}: node {exc.index} refused {exc.code}")
                if exc.code is ErrorCode.VALIDATION:
                    break  # the nodes refuse the request itself: no other set would take it
                if exc.code is ErrorCode.QUARANTINED:  # the node is honest; the set is not usable
                    self.store.suspend("signer_set", signers, wallet.key_id, "sign", str(exc))
                elif exc.code not in (
                    ErrorCode.PRESIGNATURE_USED,
                    ErrorCode.UNKNOWN_PRESIGNATURE,
                ):
                    if exc.code in OPERATIONAL_CODES:
                        self.health.mark_down(exc.index, str(exc))
                    excluded.add(exc.index)
                continue
            except PartialSignatureInvalid as exc:
                for culprit in exc.culprits:
                    self.store.record_blame("sign", None, culprit, "EQUATION", str(exc))
                    self.store.suspend("party", (culprit,), wallet.key_id, "sign", str(exc))
                attempts.append(f"{list(signers)}: bad partial from {sorted(exc.culprits)}")
                excluded |= set(exc.culprits)
                continue
            timings["sign"] = time.perf_counter() - started - timings.get("presign", 0.0)
            return SignOutcome(signature, signers, row.presignature_id, attempts, timings)
        raise SigningFailed(attempts)

    async def _sign_with(
        self,
        wallet: WalletRow,
        key: KeyPublic,
        signers: tuple[int, ...],
        row: PresignatureRow,
        message: bytes,
        scheme: HashScheme,
    ) -> Signature:
        public = codec.decode_presignature_public(row.public, key)
        replies = await asyncio.gather(
            *(
                self.clients[i].sign(wallet.key_id, row.presignature_id, message, scheme.value)
                for i in signers
            ),
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

    # --- refresh and re-share --------------------------------------------------------------------
    async def refresh(self, wallet_name: str) -> WalletRow:
        """Fresh aux-info for the committee, then fresh shares of the same key (epoch + 1);
        old presignatures are revoked on every node and here."""
        wallet = self.store.wallet(wallet_name)
        old = codec.decode_key_public(wallet.key_public)
        return await self._reshare(wallet, old.parties, old.parties, old.threshold, refresh=True)

    async def reshare(
        self,
        wallet_name: str,
        new_parties: tuple[int, ...],
        new_threshold: int,
        dealers: tuple[int, ...] | None = None,
    ) -> WalletRow:
        """Move the wallet's key to a new committee (add, remove or replace nodes, change t):
        fresh aux-info for the new committee, then the re-share session among the dealers
        (by default every old holder that is not suspended — the way to move a key away from
        a quarantined node) and the committee."""
        wallet = self.store.wallet(wallet_name)
        old = codec.decode_key_public(wallet.key_public)
        usable = tuple(i for i in old.parties if self.store.suspended((i,)) is None)
        chosen = dealers if dealers is not None else usable
        return await self._reshare(
            wallet, tuple(sorted(chosen)), tuple(sorted(new_parties)), new_threshold, False
        )

    async def _reshare(
        self,
        wallet: WalletRow,
        dealers: tuple[int, ...],
        committee: tuple[int, ...],
        threshold: int,
        refresh: bool,
    ) -> WalletRow:
        old = codec.decode_key_public(wallet.key_public)
        in_flight = self.store.pending(wallet.key_id)
        if in_flight is not None:  # the nodes refuse it too (PLAN_IN_FLIGHT); ask nothing
            raise CoordinatorStoreError(
                f"wallet {wallet.name!r} has pending epoch {in_flight.epoch}: confirm_pending "
                "(or, if it can never be confirmed, abandon_pending) first"
            )
        aux_id = await self.run_aux_info(committee, replaces=wallet.aux_id)
        spec = reshare_spec(wallet, dealers, committee, threshold, refresh=refresh)
        try:
            results = await self._run("refresh" if refresh else "re-share", spec)
        except SessionFailed:
            # The session can fail on some parties only (a stall, a withheld message): if every
            # member of the new committee still finished with one version, it can be confirmed
            # like any other — otherwise the members that finished keep a pending copy that can
            # never be, which their operators discard (docs/nodes.md "Key versions").
            held = await self._held_by_every_member(wallet.key_id, old.epoch + 1, committee)
            if held is None:
                raise
            key_public = held
        else:
            key_public = bytes.fromhex(_same(results, ReshareReport, "key_public", "key versions"))
        public = codec.decode_key_public(key_public)
        if public.public_key != old.public_key or public.epoch != old.epoch + 1:
            raise InconsistentReports("the new version changed the public key or skipped an epoch")
        if public.parties != committee or public.threshold != threshold:
            raise InconsistentReports("the new version is not for the planned committee")
        # Every party now holds the new version *pending*, next to the old one (still active
        # and signing).  The wallet follows only once it is confirmed (`_confirm`).
        pending = PendingVersionRow(
            key_id=wallet.key_id,
            epoch=public.epoch,
            key_public=key_public,
            aux_id=aux_id,
            threshold=threshold,
            parties=join_indices(tuple(sorted(set(dealers) | set(committee)))),
            created_at=time.time(),
        )
        self.store.put_pending(pending)
        return await self._confirm(pending)

    async def _held_by_every_member(
        self, key_id: str, epoch: int, committee: tuple[int, ...]
    ) -> bytes | None:
        """The pending version `epoch` of the key if every member reports the same one, else
        None.  (The members' storage confirmations are what proves it; this only decides
        whether asking for them can succeed.)"""
        replies = await asyncio.gather(
            *(self.clients[j].versions(key_id) for j in committee), return_exceptions=True
        )
        found: set[str] = set()
        for reply in replies:
            if isinstance(reply, NodeUnavailable | NodeRefused | NodeReplyInvalid):
                return None
            if isinstance(reply, BaseException):
                raise reply
            pending = [v for v in reply if v.epoch == epoch and v.state == "pending" and v.share]
            if len(pending) != 1:
                return None
            found.add(pending[0].key_public)
        if len(found) != 1:
            return None
        return bytes.fromhex(found.pop())

    async def confirm_pending(self, wallet_name: str) -> WalletRow:
        """Finish a re-share or refresh whose confirmation did not complete (a node was down,
        or its statements were lost): collect the storage confirmations that are missing, or
        deliver the complete set again to every node.  Both are idempotent on the nodes."""
        wallet = self.store.wallet(wallet_name)
        pending = self.store.pending(wallet.key_id)
        if pending is None:
            raise CoordinatorStoreError(f"wallet {wallet.name!r} has no pending key version")
        return await self._confirm(pending)

    def abandon_pending(self, wallet_name: str) -> None:
        """Forget a pending version that can never be confirmed (its nodes' operators discard
        their copies: `tessera node key discard-pending`).  Refused once it is confirmed: the
        nodes may already be on it."""
        wallet = self.store.wallet(wallet_name)
        pending = self.store.pending(wallet.key_id)
        if pending is None:
            raise CoordinatorStoreError(f"wallet {wallet.name!r} has no pending key version")
        if pending.statements is not None:
            raise CoordinatorStoreError(f"epoch {pending.epoch} is confirmed: confirm_pending")
        self.store.drop_pending(wallet.key_id)

    async def _confirm(self, pending: PendingVersionRow) -> WalletRow:
        """Storage confirmations from every member of the new committee, then the set to every
        node of the session (dealers ∪ committee), each of which then retires its old share in
        one transaction.  The wallet moves to the new version only once the set is complete:
        before, it stays on the old one, which every node still holds
        (signer/node/confirmation.py)."""
        key_id, epoch = pending.key_id, pending.epoch
        public = codec.decode_key_public(pending.key_public)
        if pending.statements is None:
            replies = await asyncio.gather(
                *(self.clients[j].confirmation(key_id, epoch) for j in public.parties),
                return_exceptions=True,
            )
            statements: list[ConfirmationBody] = []
            missing: dict[int, str] = {}
            expected = public.fingerprint().hex()
            for j, reply in zip(public.parties, replies, strict=True):
                if isinstance(reply, NodeUnavailable | NodeRefused | NodeReplyInvalid):
                    missing[j] = str(reply)
                elif isinstance(reply, BaseException):
                    raise reply
                elif (reply.signer, reply.key_id, reply.epoch, reply.fingerprint) != (
                    j,
                    key_id,
                    epoch,
                    expected,
                ):  # (the nodes check the signatures; this only catches a wrong answer early)
                    missing[j] = f"node {j} confirmed something else"
                else:
                    statements.append(reply)
            if missing:
                raise ReshareUnconfirmed(key_id, epoch, confirmed=False, failed=missing)
            encoded = json.dumps([s.model_dump() for s in statements])
            self.store.set_pending_statements(key_id, encoded)
        else:
            statements = [
                ConfirmationBody.model_validate(s) for s in json.loads(pending.statements)
            ]
        parties = tuple(int(i) for i in pending.parties.split(","))
        delivered = await asyncio.gather(
            *(self.clients[j].activate(key_id, epoch, statements) for j in parties),
            return_exceptions=True,
        )
        failed: dict[int, str] = {}
        for j, outcome in zip(parties, delivered, strict=True):
            if isinstance(outcome, NodeUnavailable | NodeRefused | NodeReplyInvalid):
                if (
                    j not in public.parties
                    and isinstance(outcome, NodeRefused)
                    and outcome.code is ErrorCode.NO_PENDING_VERSION
                ):
                    continue  # a leaving dealer that never finished: nothing to activate there
                failed[j] = str(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        # Confirmed: every new share is stored, so the wallet follows the new version even if
        # some nodes have yet to receive the set (they keep it pending; confirm_pending again).
        if self.store.wallet(key_id).epoch != epoch:  # (a retry must not revoke new pools)
            self.store.update_wallet(
                key_id, epoch, pending.key_public, pending.aux_id, pending.threshold
            )
        if failed:
            raise ReshareUnconfirmed(key_id, epoch, confirmed=True, failed=failed)
        self.store.drop_pending(key_id)
        return self.store.wallet(key_id)
