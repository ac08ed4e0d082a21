"""The coordinator's own database (SQLModel on SQLite): wallets, aux-info sets, the public data of
presignatures it can use, the blame log and the quarantine mirror: the parties and party sets
it no longer uses after a failure — the same exclusion model as each node's own quarantine
(`signer.node.exclusion`), which the nodes enforce on their own.  Nothing secret
is ever here — the coordinator never sees a share, a Paillier factor or a point-to-point
payload.

A presignature is marked used here *before* partial signatures are requested, so the
coordinator does not ask twice for the same one; the nodes enforce single use independently
(and are what keeps it single-use should a power loss take back the mark, which is committed
without an fsync of its own: `take_presignature`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Index, UniqueConstraint, or_, text
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from policies.sqlite import Sync, defer_sync, sqlite_engine, sync_wal
from signer.errors import TesseraError
from signer.node.exclusion import (
    Exclusion,
    ExclusionError,
    add_exclusion,
    clear_exclusion,
    first_blocking,
    list_exclusions,
)
from signer.problems import ErrorCode


class CoordinatorStoreError(TesseraError):
    """A request the coordinator's database refuses; `code` says why, as the nodes would."""

    def __init__(self, detail: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> None:
        self.code = code
        super().__init__(detail)


class _CoordinatorTable(SQLModel, registry=registry()):
    """Own metadata: the node's and the coordinator's tables never mix."""


class WalletRow(_CoordinatorTable, table=True):
    __tablename__ = "wallets"
    key_id: str = Field(primary_key=True)
    name: str = Field(index=True, unique=True)
    threshold: int
    epoch: int
    key_public: bytes
    aux_id: str
    created_at: float
    # The policy wallet the nodes bound the key to (None: a raw key).
    policy_wallet: str | None = None


class PendingVersionRow(_CoordinatorTable, table=True):
    """A re-share or refresh whose new version is not yet active everywhere: until every
    member's storage confirmation is in (`statements` None) the wallet stays on its old
    version; once they are, the set is kept here until every node has it (`confirm_pending`)."""

    __tablename__ = "pending_versions"
    key_id: str = Field(primary_key=True)
    epoch: int
    key_public: bytes
    aux_id: str
    threshold: int
    parties: str  # dealers ∪ new committee: every node the confirmations go to
    statements: str | None = None  # JSON list of signer.node.confirmation.ConfirmationBody
    created_at: float


class AuxSetRow(_CoordinatorTable, table=True):
    __tablename__ = "aux_sets"
    aux_id: str = Field(primary_key=True)
    parties: str
    state: str  # active | retired
    created_at: float


class PresignatureRow(_CoordinatorTable, table=True):
    __tablename__ = "presignatures"
    presignature_id: str = Field(primary_key=True)
    key_id: str = Field(index=True)
    epoch: int
    signers: str
    path: str
    public: bytes
    state: str = Field(index=True)  # available | used | revoked
    created_at: float


class BlameRow(_CoordinatorTable, table=True):
    __tablename__ = "blame"
    id: int | None = Field(default=None, primary_key=True)
    at: float
    operation: str
    reporter: int | None
    culprit: int
    code: str
    detail: str


class QuarantineMirrorRow(Exclusion, _CoordinatorTable, table=True):
    """An entry of the coordinator's quarantine mirror: a party or party set it stops using
    after a failure classified by `coordinator.failures` (or a node's refusal because of its own
    quarantine) — never chosen again until an operator clears it."""

    __tablename__ = "quarantine_mirror"
    operation: str
    reason: str


class NonceAccountRow(_CoordinatorTable, table=True):
    """The next nonce Tessera gives out for one sending address on one chain
    (`coordinator.nonces`)."""

    __tablename__ = "nonce_accounts"
    chain_id: int = Field(primary_key=True)
    address: str = Field(primary_key=True)  # EIP-55
    next_nonce: int
    synced_at: float  # when it was last compared with the chain


class PayoutRow(_CoordinatorTable, table=True):
    """One payout on chain (`coordinator.payouts`): what was asked, the nonce it holds, the
    exact bytes signed and sent, and how far it got.  `payout_id` is also the request id the
    nodes see, so a payout is signed under one id however often it is retried."""

    __tablename__ = "payouts"
    __table_args__ = (
        # one payout per nonce of an address: what makes a doubled nonce impossible
        UniqueConstraint("chain_id", "sender", "nonce", name="uq_payouts_nonce"),
    )
    payout_id: str = Field(primary_key=True)
    wallet: str
    path: str  # the BIP32 path of the sending key, "" for the wallet's own key
    chain_id: int
    sender: str
    asset: str
    destination: str
    amount: str  # exact decimal text in the asset's units
    fee_level: str
    initiator: str
    state: str = Field(index=True)  # see coordinator.payouts.PayoutState
    nonce: int | None = None
    payload: bytes | None = None  # the unsigned signing payload, fixed once the nonce is
    raw: bytes | None = None  # the signed transaction, stored before it is ever sent
    tx_hash: str | None = Field(default=None, index=True)
    block_number: int | None = None
    block_hash: str | None = None
    reason: str | None = None  # why it failed (a refusal's code and detail, a revert reason)
    # the officers' approvals (JSON list of approval documents) the nodes are shown with it:
    # kept so that a payout resumed after a crash is signed with them again
    approvals: str = "[]"
    # earlier signed versions replaced by a speed-up or a cancellation (JSON list of {"tx_hash",
    # "raw", "payload"}): one of them may still be the one mined
    replaced: str = "[]"
    created_at: float
    updated_at: float
    # a batch paid in one transaction through the disperse contract: JSON list of [destination,
    # amount] (destination is then the contract, amount the sum); last, as coordinator_0006
    # adds it
    legs: str | None = None
    # "payout", or "allowance": the ERC-20 approve a token batch spends, made for the batch
    # `for_payout` names (coordinator/payouts.py); last, as coordinator_0007 adds them
    kind: str = Field(default="payout", sa_column_kwargs={"server_default": "payout"})
    for_payout: str | None = Field(default=None, index=True)


class DepositAddressRow(_CoordinatorTable, table=True):
    """A deposit address: a wallet's non-hardened child at (DEPOSIT_BRANCH, index), bound to
    one customer reference (`coordinator.deposits`)."""

    __tablename__ = "deposit_addresses"
    # named unique indexes, not two table constraints: SQLite numbers the autoindexes of
    # constraints in an order SQLAlchemy does not fix, which would make the schema drift
    __table_args__ = (
        Index("uq_deposit_addresses_customer", "wallet", "customer_ref", unique=True),
        Index("uq_deposit_addresses_child", "wallet", "child", unique=True),
    )
    address: str = Field(primary_key=True)  # EIP-55; the same on every EVM chain
    wallet: str
    child: int  # the index under the deposit branch
    customer_ref: str
    created_at: float


class DepositRow(_CoordinatorTable, table=True):
    """A transfer to a deposit address seen on chain: `log_index` -1 for a native transfer (the
    transaction's value), else the ERC-20 Transfer log's index."""

    __tablename__ = "deposits"
    chain_id: int = Field(primary_key=True)
    tx_hash: str = Field(primary_key=True)
    log_index: int = Field(primary_key=True)
    address: str = Field(index=True)
    asset: str
    units: str  # the amount in the asset's smallest unit (decimal digits)
    amount: str  # exact decimal text in the asset's units
    block_number: int
    block_hash: str
    state: str = Field(index=True)  # seen | credited | dropped | reversed
    seen_at: float
    credited_at: float | None = None


class ScannedBlockRow(_CoordinatorTable, table=True):
    """The hash of a block the deposit watcher scanned: how it notices a reorg."""

    __tablename__ = "scanned_blocks"
    chain_id: int = Field(primary_key=True)
    number: int = Field(primary_key=True)
    hash: str


class DepositCursorRow(_CoordinatorTable, table=True):
    __tablename__ = "deposit_cursors"
    chain_id: int = Field(primary_key=True)
    next_block: int  # the first block not scanned yet
    updated_at: float


#: `take_presignature`'s one statement: the oldest available row of a pool, marked used.
_TAKE = text(
    "UPDATE presignatures SET state = 'used' WHERE presignature_id = ("
    "SELECT presignature_id FROM presignatures WHERE key_id = :key AND epoch = :epoch "
    "AND signers = :signers AND path = :path AND state = 'available' "
    "ORDER BY created_at LIMIT 1) AND state = 'available' RETURNING *"
)


class CoordinatorStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = sqlite_engine(path)
        # Commits of `Sync.DEFERRED` sessions so far, and how many of them `sync` has made
        # durable (a count taken before its fdatasync, so never more than it covered).
        self._unsynced = 0
        self._synced = 0
        self._sync_lock = threading.Lock()
        # What a killed predecessor committed without an fsync is still only in the OS's cache:
        # on disk before anything here acts on it.
        sync_wal(path)
        # Imported on first use: alembic and the scripts load only once a database opens.
        from coordinator.migrations import SCHEMA  # noqa: PLC0415
        from policies.schema import ensure  # noqa: PLC0415

        # Tables at head on a new file; an older or unknown revision refuses to open until the
        # operator runs `tessera cluster migrate`.
        try:
            ensure(self.engine, SCHEMA, path)
        except BaseException:
            self.engine.dispose()
            raise

    @contextmanager
    def session(self, sync: Sync = Sync.NOW) -> Iterator[Session]:
        """A session on the database.  Its commits are on disk before they return (`Sync.NOW`,
        the default), or written without an fsync of their own (`Sync.DEFERRED`,
        `Sync.WITH_NEXT`: see `Sync` for when each may be used)."""
        with Session(self.engine, expire_on_commit=False) as session:
            if sync is not Sync.NOW:
                defer_sync(session.connection())
            try:
                yield session
            finally:
                if sync is Sync.DEFERRED:
                    with self._sync_lock:
                        self._unsynced += 1  # counted whether it committed or not: no harm

    def unsynced(self) -> bool:
        """Whether state written with `Sync.DEFERRED` may not be on disk yet."""
        return self._unsynced > self._synced

    def sync(self) -> None:
        """Make every commit made so far durable: one fdatasync of the write-ahead log (what a
        synced commit does), taken without SQLite's write lock, so that writers on other
        threads go on meanwhile; nothing when no `Sync.DEFERRED` commit is waiting."""
        with self._sync_lock:
            upto = self._unsynced
        if upto <= self._synced:
            return
        sync_wal(self.path)
        with self._sync_lock:
            self._synced = max(self._synced, upto)

    async def barrier(self) -> None:
        """`sync`, awaited in a worker thread (the event loop goes on): what a task awaits
        before it acts outside the process on state written with `Sync.DEFERRED`."""
        if self.unsynced():
            await asyncio.to_thread(self.sync)

    def close(self) -> None:
        self.engine.dispose()

    # --- wallets -------------------------------------------------------------------------------
    def add_wallet(self, row: WalletRow) -> None:
        with self.session() as session:
            if session.exec(select(WalletRow).where(WalletRow.name == row.name)).first():
                raise CoordinatorStoreError(f"a wallet named {row.name!r} exists")
            session.add(row)
            session.commit()

    def update_wallet(
        self, key_id: str, epoch: int, key_public: bytes, aux_id: str, threshold: int
    ) -> None:
        """A new key version (refresh, re-share): its presignatures from before are revoked."""
        with self.session() as session:
            row = session.get(WalletRow, key_id)
            if row is None:
                raise CoordinatorStoreError(f"no wallet {key_id[:16]}")
            row.epoch, row.key_public, row.aux_id = epoch, key_public, aux_id
            row.threshold = threshold
            session.add(row)
            session.execute(
                text(
                    "UPDATE presignatures SET state = 'revoked' "
                    "WHERE key_id = :key AND state = 'available'"
                ),
                {"key": key_id},
            )
            session.commit()

    def wallet(self, name_or_id: str) -> WalletRow:
        with self.session() as session:
            # One query for either; should a name equal another wallet's key id, the key id wins
            # (as when it was looked up first).
            rows = session.exec(
                select(WalletRow).where(
                    or_(col(WalletRow.key_id) == name_or_id, col(WalletRow.name) == name_or_id)
                )
            ).all()
            row = next((r for r in rows if r.key_id == name_or_id), rows[0] if rows else None)
            if row is None:
                raise CoordinatorStoreError(f"no wallet {name_or_id!r}", ErrorCode.NOT_FOUND)
            return row

    def wallets(self) -> list[WalletRow]:
        with self.session() as session:
            return list(session.exec(select(WalletRow)))

    # --- pending key versions ------------------------------------------------------------------
    def put_pending(self, row: PendingVersionRow) -> None:
        with self.session() as session:
            existing = session.get(PendingVersionRow, row.key_id)
            if existing is not None:
                raise CoordinatorStoreError(
                    f"key {row.key_id[:16]} has pending epoch {existing.epoch}: confirm it first"
                )
            session.add(row)
            session.commit()

    def pending(self, key_id: str) -> PendingVersionRow | None:
        with self.session() as session:
            return session.get(PendingVersionRow, key_id)

    def set_pending_statements(self, key_id: str, statements: str) -> None:
        with self.session() as session:
            row = session.get(PendingVersionRow, key_id)
            if row is None:
                raise CoordinatorStoreError(f"no pending version of key {key_id[:16]}")
            row.statements = statements
            session.add(row)
            session.commit()

    def drop_pending(self, key_id: str) -> None:
        with self.session() as session:
            row = session.get(PendingVersionRow, key_id)
            if row is not None:
                session.delete(row)
                session.commit()

    # --- aux-info ------------------------------------------------------------------------------
    def add_aux(self, aux_id: str, parties: str) -> None:
        with self.session() as session:
            for old in session.exec(select(AuxSetRow).where(AuxSetRow.parties == parties)):
                old.state = "retired"
                session.add(old)
            session.add(
                AuxSetRow(aux_id=aux_id, parties=parties, state="active", created_at=time.time())
            )
            session.commit()

    def active_aux(self, parties: str) -> str | None:
        with self.session() as session:
            row = session.exec(
                select(AuxSetRow).where(AuxSetRow.parties == parties, AuxSetRow.state == "active")
            ).first()
            return None if row is None else row.aux_id

    # --- presignatures -------------------------------------------------------------------------
    def add_presignature(self, row: PresignatureRow) -> None:
        with self.session() as session:
            session.add(row)
            session.commit()

    def take_presignature(
        self, key_id: str, epoch: int, signers: str, path: str
    ) -> PresignatureRow | None:
        """Mark the oldest available presignature for (key, signers, path) used and return it:
        one statement (UPDATE … RETURNING), so two takers never get the same row and the pick
        costs one round trip to SQLite, not a read, a write and a re-read."""
        # Without an fsync of its own: the nodes, not this row, keep a presignature from being
        # used twice (each marks it consumed on its own disk before it answers), and the take
        # is made durable by the signed bytes' commit, before anything leaves for the chain.
        # Should a power loss drop it, the row is taken again and the nodes refuse it
        # (PRESIGNATURE_USED): the next one is taken (`Coordinator._sign`).
        with self.session(Sync.WITH_NEXT) as session:
            taken = session.execute(
                _TAKE, {"key": key_id, "epoch": epoch, "signers": signers, "path": path}
            ).first()
            session.commit()
        return None if taken is None else PresignatureRow(**taken._mapping)

    def release_presignature(self, presignature_id: str) -> bool:
        """Return a taken presignature to the pool: only for one that every signer refused
        before consuming anything (`Coordinator._sign_with` decides); True if it was used."""
        with self.session() as session:
            released = session.execute(
                text(
                    "UPDATE presignatures SET state = 'available' "
                    "WHERE presignature_id = :id AND state = 'used'"
                ),
                {"id": presignature_id},
            )
            session.commit()
            return bool(released.rowcount == 1)  # type: ignore[attr-defined]

    def pool_depth(self, key_id: str, epoch: int, signers: str, path: str) -> int:
        with self.session() as session:
            result = session.execute(
                text(
                    "SELECT COUNT(*) FROM presignatures WHERE key_id = :key AND epoch = :epoch "
                    "AND signers = :signers AND path = :path AND state = 'available'"
                ),
                {"key": key_id, "epoch": epoch, "signers": signers, "path": path},
            )
            return int(result.scalar_one())

    def pools(self, key_id: str) -> dict[str, int]:
        with self.session() as session:
            rows = session.execute(
                text(
                    "SELECT signers, path, COUNT(*) FROM presignatures "
                    "WHERE key_id = :key AND state = 'available' GROUP BY signers, path"
                ),
                {"key": key_id},
            )
            return {f"{signers} m/{path}": int(count) for signers, path, count in rows}

    # --- blame ---------------------------------------------------------------------------------
    def record_blame(
        self, operation: str, reporter: int | None, culprit: int, code: str, detail: str
    ) -> None:
        with self.session() as session:
            session.add(
                BlameRow(
                    at=time.time(),
                    operation=operation,
                    reporter=reporter,
                    culprit=culprit,
                    code=code,
                    detail=detail[:1000],
                )
            )
            session.commit()

    def blame(self) -> list[BlameRow]:
        with self.session() as session:
            return list(session.exec(select(BlameRow).order_by(BlameRow.at)))  # type: ignore[arg-type]

    # --- the quarantine mirror ---------------------------------------------------------------
    def quarantine(
        self, kind: str, parties: tuple[int, ...], key_id: str, operation: str, reason: str
    ) -> QuarantineMirrorRow:
        """Add a mirror entry unless an active one of the same kind and parties exists."""
        row = QuarantineMirrorRow(
            kind=kind,
            parties=",".join(str(i) for i in sorted(parties)),
            key_id=key_id,
            operation=operation,
            reason=reason[:1000],
            created_at=time.time(),
        )
        with self.session() as session:
            return add_exclusion(session, QuarantineMirrorRow, row)

    def quarantine_mirror(self, *, include_cleared: bool = False) -> list[QuarantineMirrorRow]:
        with self.session() as session:
            return list_exclusions(session, QuarantineMirrorRow, include_cleared)

    def quarantined(self, parties: tuple[int, ...]) -> QuarantineMirrorRow | None:
        """The active entry that keeps this party set from being chosen, if any."""
        return first_blocking(self.quarantine_mirror(), parties)

    def clear_quarantine(self, entry: int, reason: str) -> QuarantineMirrorRow:
        with self.session() as session:
            try:
                return clear_exclusion(session, QuarantineMirrorRow, entry, reason)
            except ExclusionError as exc:
                raise CoordinatorStoreError(str(exc)) from exc
