"""The nonce manager: one counter per (chain, sending address), kept in the coordinator's database.

The rules (docs/chains.md, "Nonces"):

1. A nonce is reserved durably before anything is signed with it (its commit, or the store's
   barrier the engine awaits after it, before the nodes are asked): one statement takes the
   account's next nonce and moves the counter (`UPDATE … RETURNING`), in the same transaction
   that writes it into the payout; the table's unique (chain, sender, nonce) makes a second
   payout at one nonce impossible.
2. The payout engine reserves and signs under one lock per account (`lock`), so a nonce is
   given out only when every smaller one holds a signed transaction or has been handed back.
   A payout refused before a signature exists gives its nonce back (`release`): it is the
   account's last, so the counter simply steps back and no gap is ever left.
3. `sync` compares the counter with the chain (`eth_getTransactionCount`, pending) when an
   account is first used and whenever the engine starts: a chain count above the counter means
   nonces were used outside Tessera (another wallet holding the key, a manual send) — reported as
   `NonceConflict` (the counter moves up to the chain, so no later payout collides) and logged.

One coordinator process per database: the lock is the process's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from coordinator.rpc import ChainRpc
from coordinator.store import CoordinatorStore, NonceAccountRow
from policies.sqlite import Sync
from signer.chains.evm import ChainError
from signer.problems import ErrorCode

log = logging.getLogger(__name__)

_TAKE = text(
    "UPDATE nonce_accounts SET next_nonce = next_nonce + 1 "
    "WHERE chain_id = :chain AND address = :address RETURNING next_nonce - 1"
)
_ASSIGN = text(
    "UPDATE payouts SET nonce = :nonce, payload = :payload, state = :state, updated_at = :at "
    "WHERE payout_id = :payout AND nonce IS NULL"
)
_GIVE_BACK = text(
    "UPDATE nonce_accounts SET next_nonce = next_nonce - 1 "
    "WHERE chain_id = :chain AND address = :address AND next_nonce = :nonce + 1"
)


class NonceConflict(ChainError):
    """The chain has seen nonces of a Tessera address that Tessera never gave out."""

    code = ErrorCode.NONCE_CONFLICT

    def __init__(self, chain_id: int, address: str, ours: int, chain: int) -> None:
        self.chain_id = chain_id
        self.address = address
        self.ours = ours
        self.chain = chain
        super().__init__(
            f"chain {chain_id}: {address} has used nonces up to {chain - 1} on chain, Tessera "
            f"gave out up to {ours - 1}: {chain - ours} transaction(s) sent outside Tessera "
            f"(the counter now starts at {chain})"
        )


@dataclass(frozen=True)
class SyncReport:
    chain_id: int
    address: str
    next_nonce: int
    chain_nonce: int
    created: bool

    @property
    def external(self) -> int:
        """How many nonces the chain used that Tessera never gave out."""
        return max(0, self.chain_nonce - self.next_nonce)


class NonceManager:
    def __init__(self, store: CoordinatorStore) -> None:
        self._store = store
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}

    def lock(self, chain_id: int, address: str) -> asyncio.Lock:
        """The account's lock: held from reservation until the nonce holds a signature or is
        given back."""
        return self._locks.setdefault((chain_id, address), asyncio.Lock())

    def next_nonce(self, chain_id: int, address: str) -> int | None:
        with self._store.session() as session:
            row = session.get(NonceAccountRow, (chain_id, address))
            return None if row is None else row.next_nonce

    async def sync(self, rpc: ChainRpc, address: str) -> SyncReport:
        """Create the account from the chain's count, or compare with it; a count above ours
        moves the counter up and raises `NonceConflict` (after recording the move)."""
        chain_nonce = await rpc.nonce(address, "pending")
        now = time.time()
        with self._store.session() as session:
            row = session.get(NonceAccountRow, (rpc.chain_id, address))
            created = row is None
            if row is None:
                row = NonceAccountRow(
                    chain_id=rpc.chain_id, address=address, next_nonce=chain_nonce, synced_at=now
                )
            report = SyncReport(rpc.chain_id, address, row.next_nonce, chain_nonce, created)
            row.next_nonce = max(row.next_nonce, chain_nonce)
            row.synced_at = now
            session.add(row)
            session.commit()
        if not created and report.external:
            conflict = NonceConflict(rpc.chain_id, address, report.next_nonce, chain_nonce)
            log.warning("%s", conflict)
            raise conflict
        return report

    def reserve(
        self,
        chain_id: int,
        address: str,
        payout_id: str,
        payload_for: Callable[[int], bytes],
        state: str,
    ) -> tuple[int, bytes]:
        """Take the account's next nonce for `payout_id` and fix its payload, atomically:
        `payload_for(nonce)` builds the unsigned transaction at that nonce.  Written without an
        fsync of its own (`Sync.DEFERRED`): the engine awaits the store's barrier before the
        nodes are asked to sign it (rule 1)."""
        with self._store.session(Sync.DEFERRED) as session:
            taken = session.execute(_TAKE, {"chain": chain_id, "address": address}).scalar()
            if taken is None:
                session.rollback()
                raise ChainError(f"chain {chain_id}: {address} has no nonce account (sync first)")
            nonce = int(taken)
            payload = payload_for(nonce)
            done = session.execute(
                _ASSIGN,
                {
                    "nonce": nonce,
                    "payload": payload,
                    "state": state,
                    "at": time.time(),
                    "payout": payout_id,
                },
            )
            if getattr(done, "rowcount", 0) != 1:
                session.rollback()
                raise ChainError(f"payout {payout_id} already holds a nonce")
            session.commit()
        return nonce, payload

    def release(
        self, chain_id: int, address: str, payout_id: str, nonce: int, state: str, reason: str
    ) -> bool:
        """Give back the nonce of a payout that holds no signature; True if the counter stepped
        back (it was the account's last nonce, as the lock makes it)."""
        with self._store.session() as session:
            stepped = session.execute(
                _GIVE_BACK, {"chain": chain_id, "address": address, "nonce": nonce}
            )
            session.execute(
                text(
                    "UPDATE payouts SET nonce = NULL, payload = NULL, state = :state, "
                    "reason = :reason, updated_at = :at WHERE payout_id = :payout AND raw IS NULL"
                ),
                {"state": state, "reason": reason, "at": time.time(), "payout": payout_id},
            )
            session.commit()
        if getattr(stepped, "rowcount", 0) == 1:
            return True
        # Not the account's last nonce: a later one was given out while this one held no
        # signature, which the engine's lock rules out. Said loudly: it needs a fill.
        log.warning(
            "chain %s: nonce %s of %s given back below the counter", chain_id, nonce, address
        )
        return False

    def forget(self, chain_id: int, address: str) -> int:
        """Drop the account and its payouts: only for a development chain that was reset (the
        demo's in-process chain starts empty on every run), never for a real one — there, the
        counter and the payouts are the record of what was signed.  Returns payouts dropped."""
        with self._store.session() as session:
            dropped = session.execute(
                text("DELETE FROM payouts WHERE chain_id = :chain AND sender = :address"),
                {"chain": chain_id, "address": address},
            )
            session.execute(
                text("DELETE FROM nonce_accounts WHERE chain_id = :chain AND address = :address"),
                {"chain": chain_id, "address": address},
            )
            session.commit()
        return int(getattr(dropped, "rowcount", 0))
