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
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.client import NodeClient, NodeRefused, NodeUnavailable
from coordinator.driver import SessionDriver, SessionFailed, new_request_id
from coordinator.failures import FailureKind, classify
from coordinator.store import CoordinatorStore, CoordinatorStoreError, PresignatureRow, WalletRow
from signer.errors import TesseraError
from signer.node import codec
from signer.node.store import join_indices, join_path
from signer.protocol.keygen import KeyPublic
from signer.protocol.sign import HashScheme, PartialSignatureInvalid, Signature, combine

AUX_KEY_ID = b"aux-info"


class SigningFailed(TesseraError):
    """No signer set could produce a verified signature; `attempts` says what happened."""

    def __init__(self, attempts: list[str]) -> None:
        self.attempts = attempts
        super().__init__("no signer set produced a signature: " + "; ".join(attempts))


class InconsistentReports(TesseraError):
    """Parties of one session reported different public outputs."""


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


def _same(results: Mapping[int, dict[str, Any]], field_name: str, what: str) -> Any:
    values = {str(r[field_name]) for r in results.values()}
    if len(values) != 1:
        raise InconsistentReports(f"parties reported different {what}")
    return next(iter(results.values()))[field_name]


class Coordinator:
    def __init__(
        self,
        clients: Mapping[int, NodeClient],
        threshold: int,
        store: CoordinatorStore,
        traffic: list[dict[str, Any]] | None = None,
    ) -> None:
        self.clients = clients
        self.parties = tuple(sorted(clients))
        self.threshold = threshold
        self.store = store
        self.driver = SessionDriver(clients, traffic)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def _blame(self, operation: str, failure: SessionFailed) -> None:
        for reporter, abort in failure.aborts.items():
            for culprit in abort.get("culprits", []):
                self.store.record_blame(
                    operation, reporter, culprit, str(abort.get("code")), str(abort.get("detail"))
                )

    async def _run(self, operation: str, spec: dict[str, Any]) -> dict[int, dict[str, Any]]:
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
        failure.identified = {
            i: frozenset(int(c) for c in r.get("culprits", [])) for i, r in results.items()
        }
        for reporter, result in results.items():
            for finding in result.get("findings", []):
                self.store.record_blame(
                    "presign-identify",
                    reporter,
                    int(finding["party"]),
                    str(finding["check"]),
                    str(finding["detail"]),
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

    async def run_aux_info(self, parties: tuple[int, ...] | None = None) -> str:
        """Fresh aux-info (new Paillier keys, proven again) for a committee."""
        committee = parties or self.parties
        spec = {
            "protocol": "aux_info/v1",
            "request": new_request_id(),
            "parties": list(committee),
            "threshold": 2,
            "key_id": AUX_KEY_ID.hex(),
        }
        results = await self._run("aux-info", spec)
        aux_id = str(_same(results, "aux_id", "aux-info ids"))
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
        key_public = bytes.fromhex(str(_same(results, "key_public", "key versions")))
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
        spec = {
            "protocol": "presign/v1",
            "request": new_request_id(),
            "parties": list(signers),
            "threshold": wallet.threshold,
            "key_id": wallet.key_id,
            "aux_id": wallet.aux_id,
            "path": list(path),
        }
        results = await self._run("presign", spec)
        public = bytes.fromhex(str(_same(results, "public", "presignature data")))
        pid = str(_same(results, "presignature_id", "presignature ids"))
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
            for target in targets:
                if target in paused or self.store.suspended(target.signers) is not None:
                    continue
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
        """Every t-subset of the key's committee without the excluded nodes and without the
        suspended parties and sets."""
        usable = [i for i in key.parties if i not in excluded]
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
        wallet = self.store.wallet(wallet_name)
        key = codec.decode_key_public(wallet.key_public)
        steps = tuple(path)
        excluded: set[int] = set()
        attempts: list[str] = []
        tried_fresh: set[tuple[int, ...]] = set()
        for _ in range(4 * len(key.parties)):
            sets = self.signer_sets(key, excluded)  # suspended sets are left out
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
            except NodeUnavailable as exc:
                attempts.append(f"{list(signers)}: node {exc.index} unavailable")
                excluded.add(exc.index)
                continue
            except NodeRefused as exc:
                attempts.append(f"{list(signers)}: node {exc.index} refused {exc.code}")
                if exc.code == "QUARANTINED":  # the node is honest; the set is not usable
                    self.store.suspend("signer_set", signers, wallet.key_id, "sign", str(exc))
                elif exc.code not in ("PRESIGNATURE_USED", "UNKNOWN_PRESIGNATURE"):
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
        partials: dict[int, int] = {}
        for index, reply in zip(signers, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            if reply.get("index") != index or reply.get("presignature_id") != row.presignature_id:
                raise PartialSignatureInvalid(frozenset({index}), "answer for something else")
            try:
                partials[index] = int(str(reply["partial"]), 16)
            except (KeyError, ValueError) as exc:
                raise PartialSignatureInvalid(frozenset({index}), "malformed partial") from exc
        return combine(public, message, scheme, partials)

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
        aux_id = await self.run_aux_info(committee)
        spec = {
            "protocol": "refresh/v1" if refresh else "reshare/v1",
            "request": new_request_id(),
            "parties": sorted(set(dealers) | set(committee)),
            "threshold": threshold,
            "key_id": wallet.key_id,
            "plan_old": wallet.key_public.hex(),
            "dealers": list(dealers),
            "new_parties": list(committee),
        }
        results = await self._run("refresh" if refresh else "re-share", spec)
        key_public = bytes.fromhex(str(_same(results, "key_public", "key versions")))
        public = codec.decode_key_public(key_public)
        if public.public_key != old.public_key or public.epoch != old.epoch + 1:
            raise InconsistentReports("the new version changed the public key or skipped an epoch")
        if public.parties != committee or public.threshold != threshold:
            raise InconsistentReports("the new version is not for the planned committee")
        self.store.update_wallet(wallet.key_id, public.epoch, key_public, aux_id, threshold)
        return self.store.wallet(wallet.key_id)
