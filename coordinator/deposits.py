"""Deposit addresses and the deposit watcher (docs/chains.md, "Deposits").

**Addresses.**  A customer's deposit address is the wallet key's non-hardened BIP32 child at
path (DEPOSIT_BRANCH, index) — derived from the public key and chain code alone, so a batch of
1,000 needs no MPC round and no node (`DepositAddresses.assign`).  Each is bound to one customer
reference; asking again for a reference returns its address, so a retried call never hands a
customer a second one.  The hot wallet's own address is the root path, never a deposit address.
The same address receives on every EVM chain.

**Watcher.**  `DepositWatcher.scan` reads the blocks after its cursor: value transfers whose
recipient is a deposit address, and `Transfer` logs of the chain's registered ERC-20 contracts
whose `to` is one.  In one database transaction it records what it found (state `seen`), the
scanned blocks' hashes and the new cursor: a crash before the commit rescans the same blocks,
after it never rescans them, so a transfer is recorded once (its key is the chain, transaction
hash and log index).  A deposit is `credited` — once, by a single guarded update — when its block
has the registry's confirmations and is still the canonical one there.  Before reading on, every
pass compares the hashes of the recent scanned blocks with the chain's: a block that changed is
a reorg, the cursor moves back to it, the deposits seen in the dropped blocks become `dropped`
(and `seen` again when the rescan finds their transaction re-included), and a deposit that was
already credited and vanished becomes `reversed` for an operator to act on: credit never moves
silently.

Not seen by the watcher: ether that reaches an address from inside a contract call (an internal
transaction has no transaction of its own; reading them needs a tracing node), and what a
wallet's own address sends a deposit address (the gas of a token sweep, coordinator/payouts.py):
that is no customer's deposit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from eth_utils.address import to_checksum_address
from sqlalchemy import text
from sqlmodel import col, select

from coordinator.registry import Chain
from coordinator.rpc import ChainRpc
from coordinator.store import (
    CoordinatorStore,
    DepositAddressRow,
    DepositCursorRow,
    DepositRow,
    ScannedBlockRow,
)
from policies.document import AMOUNT_CONTEXT, amount_str
from signer.chains.evm import address_of
from signer.errors import TesseraError
from signer.node import codec
from signer.problems import ErrorCode
from signer.protocol.hd import HARDENED, derive

#: Deposit addresses live at (DEPOSIT_BRANCH, index) under the wallet key.
DEPOSIT_BRANCH: Final = 1
MAX_BATCH: Final = 1000
#: keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC: Final = bytes.fromhex(
    "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
)
#: Blocks read per pass at most; a watcher far behind catches up over several passes.
MAX_BLOCKS_PER_PASS: Final = 500
#: Scanned block hashes kept beyond the confirmations: how deep a reorg is noticed.
REORG_MARGIN: Final = 64
_REFERENCE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")


class DepositError(TesseraError):
    def __init__(self, detail: str, code: ErrorCode = ErrorCode.VALIDATION) -> None:
        self.code = code
        super().__init__(detail)


class DepositAddresses:
    """Deposit addresses of the coordinator's wallets."""

    def __init__(self, store: CoordinatorStore) -> None:
        self.store = store

    def assign(self, wallet: str, customer_refs: Sequence[str]) -> list[DepositAddressRow]:
        """The deposit address of each customer reference, in order: existing ones as they
        are, new ones derived at the next indices and stored in one transaction."""
        if not 1 <= len(customer_refs) <= MAX_BATCH:
            raise DepositError(f"a batch has 1 to {MAX_BATCH} customer references")
        bad = [
            i
            for i, ref in enumerate(customer_refs)
            if not isinstance(ref, str) or not _REFERENCE.match(ref)
        ]
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DepositError(
                f"customer reference #{bad[0] + 1}{more} is not 1-128 of A-Z a-z 0-9 . _ : @ / -"
            )
        if len(set(customer_refs)) != len(customer_refs):
            raise DepositError("a customer reference appears twice in the batch")
        row = self.store.wallet(wallet)
        if row.policy_wallet is None:
            raise DepositError(f"wallet {wallet!r} is a raw key: it has no deposit addresses")
        key = codec.decode_key_public(row.key_public)
        branch = derive(key.public_key, key.chain_code, (DEPOSIT_BRANCH,))
        with self.store.session() as session:
            existing = {
                r.customer_ref: r
                for r in session.exec(
                    select(DepositAddressRow).where(
                        DepositAddressRow.wallet == row.name,
                        col(DepositAddressRow.customer_ref).in_(list(customer_refs)),
                    )
                )
            }
            last = session.execute(
                text("SELECT max(child) FROM deposit_addresses WHERE wallet = :w"),
                {"w": row.name},
            ).scalar()
            child = -1 if last is None else int(last)
            now = time.time()
            out = []
            for ref in customer_refs:
                found = existing.get(ref)
                if found is None:
                    child += 1
                    if child >= HARDENED:
                        raise DepositError("the wallet has no non-hardened child index left")
                    address = address_of(
                        derive(branch.public_key, branch.chain_code, (child,)).public_key
                    )
                    found = DepositAddressRow(
                        address=address,
                        wallet=row.name,
                        child=child,
                        customer_ref=ref,
                        created_at=now,
                    )
                    session.add(found)
                out.append(found)
            session.commit()
        return out

    def path_of(self, address: str) -> tuple[str, tuple[int, ...]]:
        """(wallet, BIP32 path) of a deposit address: what signs a sweep from it."""
        with self.store.session() as session:
            row = session.get(DepositAddressRow, address)
        if row is None:
            raise DepositError("not a deposit address", ErrorCode.NOT_FOUND)
        return row.wallet, (DEPOSIT_BRANCH, row.child)

    def addresses(self) -> set[str]:
        with self.store.session() as session:
            return set(session.exec(select(DepositAddressRow.address)))


@dataclass(frozen=True)
class ScanReport:
    chain_id: int
    first_block: int
    last_block: int  # -1: nothing new to scan
    seen: tuple[DepositRow, ...]
    credited: tuple[DepositRow, ...]
    reorged_from: int | None  # the first block a reorg replaced, if one was noticed


class DepositWatcher:
    """Deposits to the coordinator's deposit addresses on one chain."""

    def __init__(
        self,
        store: CoordinatorStore,
        chain: Chain,
        rpc: ChainRpc,
        *,
        start_block: int | None = None,
    ) -> None:
        self.store = store
        self.chain = chain
        self.rpc = rpc
        self.start_block = start_block
        self.addresses = DepositAddresses(store)

    def _cursor(self) -> int | None:
        with self.store.session() as session:
            row = session.get(DepositCursorRow, self.chain.chain_id)
            return None if row is None else row.next_block

    async def scan(self) -> ScanReport:
        """One pass: notice reorgs, read new blocks, credit what has its confirmations."""
        await self.rpc.check_chain_id()
        head = await self.rpc.block_number()
        cursor = self._cursor()
        if cursor is None:
            cursor = head if self.start_block is None else self.start_block
        reorged = await self._reorg_check(cursor)
        if reorged is not None:
            cursor = reorged
        last = min(head, cursor + MAX_BLOCKS_PER_PASS - 1)
        seen: list[DepositRow] = []
        hashes: dict[int, bytes] = {}
        if cursor <= last:
            found = await self._read(cursor, last, hashes)
            if found is None:  # the chain moved under the read: the next pass reads again
                last = cursor - 1
            else:
                seen = found
        self._record(cursor, last, seen, hashes)
        credited = await self._credit(head)
        return ScanReport(self.chain.chain_id, cursor, last, tuple(seen), tuple(credited), reorged)

    async def _reorg_check(self, cursor: int) -> int | None:
        """The first scanned block whose hash is no longer the chain's, after marking what was
        seen in it and after it (None: no reorg)."""
        with self.store.session() as session:
            scanned = list(
                session.exec(
                    select(ScannedBlockRow)
                    .where(ScannedBlockRow.chain_id == self.chain.chain_id)
                    .order_by(col(ScannedBlockRow.number).desc())
                )
            )
        first_bad: int | None = None
        for block in scanned:  # newest first, until one still matches
            canonical = await self.rpc.block_hash(block.number)
            if canonical is not None and "0x" + canonical.hex() == block.hash:
                break
            first_bad = block.number
        if first_bad is None:
            return None
        with self.store.session() as session:
            params = {"chain": self.chain.chain_id, "from": first_bad, "at": time.time()}
            session.execute(
                text(
                    "UPDATE deposits SET state = CASE state WHEN 'credited' THEN 'reversed' "
                    "ELSE 'dropped' END WHERE chain_id = :chain AND block_number >= :from "
                    "AND state IN ('seen', 'credited')"
                ),
                params,
            )
            session.execute(
                text("DELETE FROM scanned_blocks WHERE chain_id = :chain AND number >= :from"),
                params,
            )
            session.execute(
                text(
                    "UPDATE deposit_cursors SET next_block = :from, updated_at = :at "
                    "WHERE chain_id = :chain"
                ),
                params,
            )
            session.commit()
        return first_bad

    async def _read(
        self, first: int, last: int, hashes: dict[int, bytes]
    ) -> list[DepositRow] | None:
        ours = self.addresses.addresses()
        # what the wallets send their own deposit addresses (a token sweep's gas) is no deposit
        home = self._home_addresses()
        now = time.time()
        out: list[DepositRow] = []
        native = self.chain.native
        for number in range(first, last + 1):
            block = await self.rpc.block(number)
            if block is None:
                return None
            hashes[number] = block.hash
            for tx_hash, sender, to, value in block.transfers:
                if to in ours and sender not in home:
                    out.append(
                        self._row(
                            tx_hash,
                            -1,
                            to,
                            native.symbol,
                            value,
                            native.decimals,
                            number,
                            block.hash,
                            now,
                        )
                    )
        tokens = {t.address: (symbol, t) for symbol, t in self.chain.tokens.items()}
        if tokens and ours:
            for log in await self.rpc.logs(first, last, list(tokens), TRANSFER_TOPIC):
                if len(log.topics) != 3 or len(log.data) != 32:
                    continue  # not the standard Transfer(address indexed, address indexed, uint256)
                to = to_checksum_address(log.topics[2][12:])
                if to not in ours or to_checksum_address(log.topics[1][12:]) in home:
                    continue
                if hashes.get(log.block_number) != log.block_hash:
                    return None  # the log is from a block other than the one read
                symbol, token = tokens[log.address]
                value = int.from_bytes(log.data, "big")
                if value:
                    out.append(
                        self._row(
                            log.tx_hash,
                            log.log_index,
                            to,
                            symbol,
                            value,
                            token.decimals,
                            log.block_number,
                            log.block_hash,
                            now,
                        )
                    )
        return out

    def _home_addresses(self) -> set[str]:
        """Each policy wallet's own address (its key at the root path)."""
        out: set[str] = set()
        for wallet in self.store.wallets():
            if wallet.policy_wallet:
                key = codec.decode_key_public(wallet.key_public)
                out.add(address_of(derive(key.public_key, key.chain_code, ()).public_key))
        return out

    def _row(
        self,
        tx_hash: bytes,
        log_index: int,
        to: str,
        asset: str,
        units: int,
        decimals: int,
        number: int,
        block_hash: bytes,
        now: float,
    ) -> DepositRow:
        return DepositRow(
            chain_id=self.chain.chain_id,
            tx_hash="0x" + tx_hash.hex(),
            log_index=log_index,
            address=to,
            asset=asset,
            units=str(units),
            amount=amount_str(Decimal(units).scaleb(-decimals, AMOUNT_CONTEXT)),
            block_number=number,
            block_hash="0x" + block_hash.hex(),
            state="seen",
            seen_at=now,
        )

    def _record(
        self, first: int, last: int, seen: list[DepositRow], hashes: dict[int, bytes]
    ) -> None:
        keep_from = last - self.chain.confirmations - REORG_MARGIN
        with self.store.session() as session:
            for row in seen:
                existing = session.get(DepositRow, (row.chain_id, row.tx_hash, row.log_index))
                if existing is None:
                    session.add(row)
                elif existing.state == "dropped":
                    # re-included after a reorg: seen again, in its new block
                    existing.block_number, existing.block_hash = row.block_number, row.block_hash
                    existing.state = "seen"
                    session.add(existing)
            for number in range(first, last + 1):
                session.merge(
                    ScannedBlockRow(
                        chain_id=self.chain.chain_id,
                        number=number,
                        hash="0x" + hashes[number].hex(),
                    )
                )
            session.execute(
                text("DELETE FROM scanned_blocks WHERE chain_id = :chain AND number < :keep"),
                {"chain": self.chain.chain_id, "keep": keep_from},
            )
            session.merge(
                DepositCursorRow(
                    chain_id=self.chain.chain_id, next_block=last + 1, updated_at=time.time()
                )
            )
            session.commit()

    async def _credit(self, head: int) -> list[DepositRow]:
        """Credit the seen deposits with their confirmations (their block was re-checked
        against the chain by this pass's reorg check, and is checked once more here)."""
        depth = max(self.chain.confirmations, 1)
        with self.store.session() as session:
            due = list(
                session.exec(
                    select(DepositRow).where(
                        DepositRow.chain_id == self.chain.chain_id,
                        DepositRow.state == "seen",
                        DepositRow.block_number <= head - depth + 1,
                    )
                )
            )
        credited = []
        for row in due:
            canonical = await self.rpc.block_hash(row.block_number)
            if canonical is None or "0x" + canonical.hex() != row.block_hash:
                continue  # the next pass's reorg check handles it
            with self.store.session() as session:
                done = session.execute(
                    text(
                        "UPDATE deposits SET state = 'credited', credited_at = :at "
                        "WHERE chain_id = :chain AND tx_hash = :tx AND log_index = :log "
                        "AND state = 'seen'"
                    ),
                    {
                        "at": time.time(),
                        "chain": row.chain_id,
                        "tx": row.tx_hash,
                        "log": row.log_index,
                    },
                )
                session.commit()
            if getattr(done, "rowcount", 0) == 1:
                row.state = "credited"
                credited.append(row)
        return credited

    def deposits(self, state: str | None = None) -> list[DepositRow]:
        with self.store.session() as session:
            query = select(DepositRow).where(DepositRow.chain_id == self.chain.chain_id)
            if state is not None:
                query = query.where(DepositRow.state == state)
            return list(session.exec(query.order_by(col(DepositRow.block_number))))
