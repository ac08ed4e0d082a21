"""Refresh and re-share: fresh aux-info for the committee, then the re-share session; the new
version stays *pending* on every node until every new member has signed that it stored its share
(`signer/node/confirmation.py`), and only then does the wallet follow it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence

from coordinator.client import NodeRefused, NodeReplyInvalid, NodeUnavailable
from coordinator.driver import SessionFailed
from coordinator.errors import InconsistentReports, ReshareUnconfirmed
from coordinator.sessions import same
from coordinator.specs import Operation, reshare_spec
from coordinator.store import CoordinatorStoreError, PendingVersionRow, WalletRow
from coordinator.wallets import WalletOps
from policies.governance import GovernanceSignature
from signer.logs import log_event
from signer.node import codec
from signer.node.api import ReshareReport, join_indices
from signer.node.confirmation import ConfirmationBody
from signer.problems import ErrorCode

logger = logging.getLogger("tessera.coordinator.resharing")


class ReshareOps(WalletOps):
    async def refresh(
        self, wallet_name: str, authorization: Sequence[GovernanceSignature] = ()
    ) -> WalletRow:
        """Fresh aux-info for the committee, then fresh shares of the same key (epoch + 1);
        old presignatures are revoked on every node and here.  A policy wallet's refresh
        carries the officers' `authorization` of the plan (`specs.plan_statement`)."""
        wallet = self.store.wallet(wallet_name)
        old = codec.decode_key_public(wallet.key_public)
        return await self._reshare(
            wallet, old.parties, old.parties, old.threshold, True, authorization
        )

    async def reshare(
        self,
        wallet_name: str,
        new_parties: tuple[int, ...],
        new_threshold: int,
        dealers: tuple[int, ...] | None = None,
        authorization: Sequence[GovernanceSignature] = (),
    ) -> WalletRow:
        """Move the wallet's key to a new committee (add, remove or replace nodes, change t):
        fresh aux-info for the new committee, then the re-share session among the dealers
        (by default every old holder outside the quarantine mirror — the way to move a key
        away from a quarantined node) and the committee."""
        wallet = self.store.wallet(wallet_name)
        old = codec.decode_key_public(wallet.key_public)
        usable = tuple(i for i in old.parties if self.store.quarantined((i,)) is None)
        chosen = dealers if dealers is not None else usable
        return await self._reshare(
            wallet,
            tuple(sorted(chosen)),
            tuple(sorted(new_parties)),
            new_threshold,
            False,
            authorization,
        )

    async def _reshare(
        self,
        wallet: WalletRow,
        dealers: tuple[int, ...],
        committee: tuple[int, ...],
        threshold: int,
        refresh: bool,
        authorization: Sequence[GovernanceSignature] = (),
    ) -> WalletRow:
        old = codec.decode_key_public(wallet.key_public)
        in_flight = self.store.pending(wallet.key_id)
        if in_flight is not None:  # the nodes refuse it too (PLAN_IN_FLIGHT); ask nothing
            raise CoordinatorStoreError(
                f"wallet {wallet.name!r} has pending epoch {in_flight.epoch}: confirm_pending "
                "(or, if it can never be confirmed, abandon_pending) first"
            )
        aux_id = await self.run_aux_info(committee, replaces=wallet.aux_id)
        spec = reshare_spec(
            wallet, dealers, committee, threshold, refresh=refresh, authorization=authorization
        )
        try:
            operation = Operation.REFRESH if refresh else Operation.RESHARE
            results = await self._run(operation, spec)
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
            key_public = bytes.fromhex(same(results, ReshareReport, "key_public", "key versions"))
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
        log_event(logger, "key.version.active", key=key_id, epoch=epoch, outcome="active")
        return self.store.wallet(key_id)
