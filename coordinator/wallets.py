"""Aux-info and wallets: the committee's Paillier keys (reusable across its keys) and t-of-n
DKGs across the nodes."""

from __future__ import annotations

import logging
import secrets
import time

from coordinator.sessions import SessionRunner, same
from coordinator.specs import Operation, aux_info_spec, keygen_spec
from coordinator.store import CoordinatorStoreError, WalletRow
from signer.logs import log_event
from signer.node import codec
from signer.node.api import AuxResult, KeyResult, join_indices

logger = logging.getLogger("tessera.coordinator.wallets")


class WalletOps(SessionRunner):
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
        results = await self._run(Operation.AUX_INFO, aux_info_spec(committee, replaces))
        aux_id = same(results, AuxResult, "aux_id", "aux-info ids")
        self.store.add_aux(aux_id, join_indices(committee))
        return aux_id

    async def create_wallet(
        self,
        name: str,
        parties: tuple[int, ...] | None = None,
        *,
        policy_wallet: str | None = None,
    ) -> WalletRow:
        """DKG among `parties` (all nodes by default) with the cluster's threshold, for the
        policy's wallet `policy_wallet`: every node binds the new key to it for good (None: a
        raw key, which only a `--raw-keys` cluster holds and which signs no transaction)."""
        committee = parties or self.parties
        if any(w.name == name for w in self.store.wallets()):
            raise CoordinatorStoreError(f"a wallet named {name!r} exists")  # before any DKG
        aux_id = await self.ensure_aux(committee)
        key_id = secrets.token_bytes(16)
        spec = keygen_spec(committee, self.threshold, key_id, policy_wallet)
        results = await self._run(Operation.KEYGEN, spec)
        key_public = bytes.fromhex(same(results, KeyResult, "key_public", "key versions"))
        public = codec.decode_key_public(key_public)
        row = WalletRow(
            key_id=key_id.hex(),
            name=name,
            threshold=self.threshold,
            epoch=public.epoch,
            key_public=key_public,
            aux_id=aux_id,
            created_at=time.time(),
            policy_wallet=policy_wallet,
        )
        self.store.add_wallet(row)
        log_event(logger, "wallet.created", key=row.key_id, parties=committee, outcome="created")
        return row
