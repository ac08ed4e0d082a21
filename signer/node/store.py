"""A node's database (SQLModel on SQLite, WAL, synchronous=FULL): only public data and secrets
sealed by the node's HSM are ever written.

The presignature life cycle is the part that must survive crashes:

  available ──consume()──▶ consumed        (one UPDATE … WHERE state = 'available', committed
                                             and fsynced before the partial signature is
                                             computed, so a crash after it loses the
                                             presignature but can never reuse it)
  available ──new key version──▶ revoked    (refresh/re-share: old presignatures die with the
                                             key version they were made for)

Two concurrent `consume` calls on one id cannot both succeed: SQLite serialises writers and
the second UPDATE matches no row.

Key versions (`key_versions.state`; `signer/node/confirmation.py` says why):

  keygen ─────────────────────────────────────────────▶ active
  re-share/refresh output ──▶ pending ──activate()──▶ active   (one transaction: the old
                                 │                              active version retired, its
                                 │                              share erased, its presignatures
                                 │                              revoked, the set of storage
                                 │                              confirmations kept)
                                 └──discard_pending()──▶ (row deleted, logged in key_events)

At most one pending version per key; the active one stays usable until activation.  The
confirmations this node signed are kept for good (`key_confirmations`, origin "signed"): its
primary key (key, epoch, signer) is what stops a node from ever confirming two versions of one
epoch, even across a discard.  A database made before pending versions existed gains the two
tables with `tessera node migrate` (docs/nodes.md, "Schema versions and migrations").

Quarantine (attacks.md A03): a protocol failure is a security event, never a retryable error.
A party that an abort or an identification names is quarantined; a cryptographic failure that
names nobody freezes its exact party set.  Entries block new sessions and signatures until the
node's operator clears them locally (`tessera node quarantine clear`); they are never deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, select

from policies.sqlite import sqlite_engine
from signer.errors import TesseraError
from signer.node.api import join_indices, join_path
from signer.node.exclusion import (
    Exclusion,
    ExclusionError,
    add_exclusion,
    clear_exclusion,
    first_blocking,
    list_exclusions,
)
from signer.node.policy_tables import KeyBindingRow  # (and the policy's tables: same metadata)
from signer.node.tables import NodeTable


class StoreError(TesseraError):
    """A database row that is missing, in the wrong state, or inconsistent."""

    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"{what}: {detail}")


class SettingRow(NodeTable, table=True):
    __tablename__ = "settings"
    name: str = Field(primary_key=True)
    value: bytes


class KeyVersionRow(NodeTable, table=True):
    __tablename__ = "key_versions"
    key_id: str = Field(primary_key=True)  # hex
    epoch: int = Field(primary_key=True)
    public: bytes  # codec.encode_key_public
    sealed_share: bytes | None  # None: this node holds no share of this version
    state: str = Field(index=True)  # pending | active | retired
    created_at: float


class KeyConfirmationRow(NodeTable, table=True):
    """A storage confirmation (`signer.node.confirmation.KeyConfirmation`) this node signed
    (origin "signed") or received in the set that activated a version (origin "received")."""

    __tablename__ = "key_confirmations"
    key_id: str = Field(primary_key=True)  # hex
    epoch: int = Field(primary_key=True)  # the confirmed (new) version's epoch
    signer: int = Field(primary_key=True)
    fingerprint: str  # hex KeyPublic.fingerprint() of the confirmed version
    signature: bytes
    origin: str  # signed | received
    created_at: float


class KeyEventRow(NodeTable, table=True):
    """What happened to a key version, for the operator: pending, activated, discarded."""

    __tablename__ = "key_events"
    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(index=True)
    epoch: int
    action: str
    detail: str
    at: float


class AuxRow(NodeTable, table=True):
    __tablename__ = "aux_info"
    aux_id: str = Field(primary_key=True)  # hex
    parties: str  # "1,2,3"
    public: bytes
    sealed_secret: bytes
    state: str = Field(index=True)  # active | retired
    created_at: float


class PresignatureRow(NodeTable, table=True):
    __tablename__ = "presignatures"
    presignature_id: str = Field(primary_key=True)  # hex
    key_id: str = Field(index=True)
    epoch: int
    signers: str  # "1,3"
    path: str  # "0/5"
    aux_id: str
    public: bytes
    sealed_secret: bytes
    state: str = Field(index=True)  # available | consumed | revoked
    created_at: float
    consumed_at: float | None = None


class SessionStartRow(NodeTable, table=True):
    """Every session instance this node ever started: an instance is started at most once."""

    __tablename__ = "session_starts"
    instance: str = Field(primary_key=True)  # hex
    protocol: str
    started_at: float


#: One setting's value, read with a plain query (`NodeStore.setting`; the audit log reads the
#: checkpoint inside its own transaction with it).
SETTING_VALUE = text("SELECT value FROM settings WHERE name = :name")


class PresignatureView(NamedTuple):
    """The columns of a presignature that signing reads (`NodeStore.signing_view`)."""

    presignature_id: str
    key_id: str
    epoch: int
    public: bytes
    sealed_secret: bytes


class KeyView(NamedTuple):
    """The columns of a key's active version that signing reads."""

    epoch: int
    public: bytes


_PRESIGNATURE_VIEW = text(
    "SELECT presignature_id, key_id, epoch, public, sealed_secret FROM presignatures "
    "WHERE presignature_id = :id"
)
_KEY_VIEW = text("SELECT epoch, public FROM key_versions WHERE key_id = :key AND state = 'active'")


class QuarantineRow(Exclusion, NodeTable, table=True):
    __tablename__ = "quarantine"
    protocol: str
    session: str  # hex instance id of the failed session
    code: str
    detail: str

    def describe(self) -> str:
        what = f"party {self.parties}" if self.kind == "party" else f"party set [{self.parties}]"
        return (
            f"{what} quarantined (entry {self.id}: {self.protocol} session "
            f"{self.session[:16]}, {self.code}: {self.detail})"
        )


def _lock_key(session: Session, key_id: str) -> None:
    """Start the transaction with a write (rewriting the key's rows as they are), so that it
    holds SQLite's write lock before it reads: the checks that follow and the writes they allow
    are one serialised step (the driver would otherwise begin the transaction only at the first
    write, after the reads, and an operator's discard could slip between a confirmation's check
    and its record)."""
    session.execute(
        text("UPDATE key_versions SET state = state WHERE key_id = :key"), {"key": key_id}
    )


def _retire_active(session: Session, key_id: str) -> None:
    """Inside the caller's transaction: retire the key's active version (its share erased) and
    revoke its unused presignatures — they die with the version they were made for."""
    for old in session.exec(
        select(KeyVersionRow).where(KeyVersionRow.key_id == key_id, KeyVersionRow.state == "active")
    ):
        old.state = "retired"
        old.sealed_share = None
        session.add(old)
    for presignature in session.exec(
        select(PresignatureRow).where(
            PresignatureRow.key_id == key_id, PresignatureRow.state == "available"
        )
    ):
        presignature.state = "revoked"
        session.add(presignature)


def _bind(session: Session, binding: KeyBindingRow | None) -> None:
    """Add a key's wallet binding; a wallet or key already bound is refused (`StoreError`)."""
    if binding is None:
        return
    session.add(binding)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise StoreError(f"wallet {binding.wallet}", "is already bound to a key") from exc


def _event(key_id: str, epoch: int, action: str, detail: str) -> KeyEventRow:
    return KeyEventRow(key_id=key_id, epoch=epoch, action=action, detail=detail, at=time.time())


class NodeStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = sqlite_engine(path)
        # Imported on first use: alembic and the scripts load only once a database opens.
        from policies.schema import ensure  # noqa: PLC0415
        from signer.node.migrations import SCHEMA  # noqa: PLC0415

        # Tables at head on a new file; an older or unknown revision refuses to open (the node
        # refuses to start) until the operator runs `tessera node migrate`.
        try:
            ensure(self.engine, SCHEMA, path)
        except BaseException:
            self.engine.dispose()
            raise

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # --- settings ------------------------------------------------------------------------------
    def setting(self, name: str) -> bytes | None:
        # A plain query, not the ORM: the roster setting is read on every request
        # (`NodeRuntime.reload_roster`), and the ORM's identity map buys nothing for one value.
        with self.engine.connect() as connection:
            found = connection.execute(SETTING_VALUE, {"name": name}).first()
        return None if found is None else bytes(found[0])

    def set_setting(self, name: str, value: bytes, *, overwrite: bool = False) -> None:
        with self.session() as session:
            row = session.get(SettingRow, name)
            if row is not None and not overwrite and row.value != value:
                raise StoreError(f"setting {name!r}", "already set to another value")
            session.merge(SettingRow(name=name, value=value))
            session.commit()

    # --- key versions --------------------------------------------------------------------------
    def put_key_version(
        self,
        key_id: str,
        epoch: int,
        public: bytes,
        sealed_share: bytes | None,
        *,
        binding: KeyBindingRow | None = None,
    ) -> None:
        """Store a new active version; older versions of the key are retired (their shares
        erased) and their unused presignatures revoked — in one transaction, with the key's
        wallet binding when it is new (a wallet already bound refuses the whole store)."""
        with self.session() as session:
            existing = session.get(KeyVersionRow, (key_id, epoch))
            if existing is not None:
                raise StoreError(f"key {key_id[:16]} epoch {epoch}", "already stored")
            newer = session.exec(
                select(KeyVersionRow).where(
                    KeyVersionRow.key_id == key_id, KeyVersionRow.epoch > epoch
                )
            ).first()
            if newer is not None:
                raise StoreError(f"key {key_id[:16]}", f"epoch {newer.epoch} is newer")
            _retire_active(session, key_id)
            session.add(
                KeyVersionRow(
                    key_id=key_id,
                    epoch=epoch,
                    public=public,
                    sealed_share=sealed_share,
                    state="active",
                    created_at=time.time(),
                )
            )
            _bind(session, binding)
            session.commit()

    def active_key(self, key_id: str) -> KeyVersionRow:
        with self.session() as session:
            row = _active_key(session, key_id)
            if row is None:
                raise StoreError(f"key {key_id[:16]}", "no active version on this node")
            return row

    def active_keys(self) -> list[KeyVersionRow]:
        with self.session() as session:
            return list(session.exec(select(KeyVersionRow).where(KeyVersionRow.state == "active")))

    def key_version(self, key_id: str, epoch: int) -> KeyVersionRow | None:
        with self.session() as session:
            return session.get(KeyVersionRow, (key_id, epoch))

    def key_versions(self, key_id: str) -> list[KeyVersionRow]:
        with self.session() as session:
            query = select(KeyVersionRow).where(KeyVersionRow.key_id == key_id)
            return list(session.exec(query.order_by(KeyVersionRow.epoch)))  # type: ignore[arg-type]

    def pending_key(self, key_id: str) -> KeyVersionRow | None:
        """The key's pending (unconfirmed) version, if any: at most one exists."""
        with self.session() as session:
            return session.exec(
                select(KeyVersionRow).where(
                    KeyVersionRow.key_id == key_id, KeyVersionRow.state == "pending"
                )
            ).first()

    def put_pending_version(
        self,
        key_id: str,
        epoch: int,
        public: bytes,
        sealed_share: bytes | None,
        *,
        binding: KeyBindingRow | None = None,
    ) -> None:
        """Store a re-share's output as the key's pending version; nothing else changes (the
        active version, its share and its presignatures stay until `activate_pending`)."""
        with self.session() as session:
            _lock_key(session, key_id)
            pending = session.exec(
                select(KeyVersionRow).where(
                    KeyVersionRow.key_id == key_id, KeyVersionRow.state == "pending"
                )
            ).first()
            if pending is not None:
                raise StoreError(f"key {key_id[:16]}", f"epoch {pending.epoch} is pending")
            newer = session.exec(
                select(KeyVersionRow).where(
                    KeyVersionRow.key_id == key_id, KeyVersionRow.epoch >= epoch
                )
            ).first()
            if newer is not None:
                raise StoreError(f"key {key_id[:16]}", f"epoch {newer.epoch} is already stored")
            session.add(
                KeyVersionRow(
                    key_id=key_id,
                    epoch=epoch,
                    public=public,
                    sealed_share=sealed_share,
                    state="pending",
                    created_at=time.time(),
                )
            )
            member = "with" if sealed_share is not None else "without"
            session.add(_event(key_id, epoch, "pending", f"re-share output stored {member} share"))
            _bind(session, binding)
            session.commit()

    def confirmation(self, key_id: str, epoch: int, signer: int) -> KeyConfirmationRow | None:
        with self.session() as session:
            return session.get(KeyConfirmationRow, (key_id, epoch, signer))

    def confirmations(self, key_id: str, epoch: int) -> list[KeyConfirmationRow]:
        with self.session() as session:
            query = select(KeyConfirmationRow).where(
                KeyConfirmationRow.key_id == key_id, KeyConfirmationRow.epoch == epoch
            )
            return list(session.exec(query.order_by(KeyConfirmationRow.signer)))  # type: ignore[arg-type]

    def record_own_confirmation(self, row: KeyConfirmationRow, public: bytes) -> KeyConfirmationRow:
        """Durably note the statement this node signs for its pending version `public`, and
        return what is on record: the same statement again if this version was confirmed
        before; StoreError if the version is not pending here or if this node ever confirmed
        another version of this (key, epoch) — it never signs two."""
        with self.session() as session:
            _lock_key(session, row.key_id)
            existing = session.get(KeyConfirmationRow, (row.key_id, row.epoch, row.signer))
            if existing is not None:
                if existing.fingerprint != row.fingerprint:
                    raise StoreError(
                        f"key {row.key_id[:16]} epoch {row.epoch}",
                        "this node already confirmed another version of this epoch",
                    )
                return existing
            version = session.get(KeyVersionRow, (row.key_id, row.epoch))
            if version is None or version.state != "pending" or version.public != public:
                raise StoreError(f"key {row.key_id[:16]} epoch {row.epoch}", "not pending here")
            session.add(row)
            session.add(_event(row.key_id, row.epoch, "confirmed", "storage confirmation signed"))
            session.commit()
            session.refresh(row)
            return row

    def activate_pending(
        self, key_id: str, epoch: int, public: bytes, received: list[KeyConfirmationRow]
    ) -> bool:
        """Make the pending version `public` the active one, in one transaction: the set of
        confirmations that proves every new share is stored is kept, the old active version
        retired and its share erased, and its unused presignatures revoked.  True if activated
        now, False if it already was (a repeated delivery); StoreError if it is not pending."""
        where = f"key {key_id[:16]} epoch {epoch}"
        with self.session() as session:
            _lock_key(session, key_id)
            version = session.get(KeyVersionRow, (key_id, epoch))
            if version is not None and version.state == "active" and version.public == public:
                return False
            if version is None or version.state != "pending" or version.public != public:
                raise StoreError(where, "no such pending version here")
            for row in received:
                existing = session.get(KeyConfirmationRow, (row.key_id, row.epoch, row.signer))
                if existing is None:
                    session.add(row)
                elif existing.fingerprint != row.fingerprint:
                    raise StoreError(where, f"party {row.signer}'s statement differs on record")
            _retire_active(session, key_id)
            version.state = "active"
            session.add(version)
            detail = f"activated with {len(received)} storage confirmations"
            session.add(_event(key_id, epoch, "activated", detail))
            session.commit()
            return True

    def discard_pending(self, key_id: str, reason: str, *, force: bool = False) -> KeyVersionRow:
        """The operator's decision to drop the key's pending version (its share erased, the row
        deleted, the decision logged in key_events).  Refused if this node already signed a
        storage confirmation for it, unless `force`: with the statement out, the others may
        still activate that version and retire their old shares, so only the operator who knows
        it can never be confirmed (some member holds no pending version of it) may force it.
        The signed statement stays on record either way: this node never confirms another
        version of that epoch."""
        if not reason.strip():
            raise StoreError(f"key {key_id[:16]}", "discarding needs a reason")
        with self.session() as session:
            _lock_key(session, key_id)
            pending = session.exec(
                select(KeyVersionRow).where(
                    KeyVersionRow.key_id == key_id, KeyVersionRow.state == "pending"
                )
            ).first()
            if pending is None:
                raise StoreError(f"key {key_id[:16]}", "no pending version")
            signed = session.exec(
                select(KeyConfirmationRow).where(
                    KeyConfirmationRow.key_id == key_id,
                    KeyConfirmationRow.epoch == pending.epoch,
                    KeyConfirmationRow.origin == "signed",
                )
            ).first()
            if signed is not None and not force:
                raise StoreError(
                    f"key {key_id[:16]} epoch {pending.epoch}",
                    "this node signed a storage confirmation for it: the others may activate "
                    "it; discard only with --force once it can never be confirmed",
                )
            forced = " (forced, after confirming)" if signed is not None else ""
            session.add(_event(key_id, pending.epoch, "discarded", reason.strip() + forced))
            session.delete(pending)
            session.commit()
            return pending

    def key_events(self, key_id: str) -> list[KeyEventRow]:
        with self.session() as session:
            query = select(KeyEventRow).where(KeyEventRow.key_id == key_id)
            return list(session.exec(query.order_by(KeyEventRow.id)))  # type: ignore[arg-type]

    # --- aux-info ------------------------------------------------------------------------------
    def put_aux(self, aux_id: str, parties: tuple[int, ...], public: bytes, sealed: bytes) -> None:
        with self.session() as session:
            if session.get(AuxRow, aux_id) is not None:
                raise StoreError(f"aux-info {aux_id[:16]}", "already stored")
            session.add(
                AuxRow(
                    aux_id=aux_id,
                    parties=join_indices(parties),
                    public=public,
                    sealed_secret=sealed,
                    state="active",
                    created_at=time.time(),
                )
            )
            session.commit()

    def aux(self, aux_id: str) -> AuxRow:
        with self.session() as session:
            row = session.get(AuxRow, aux_id)
            if row is None or row.state != "active":
                raise StoreError(f"aux-info {aux_id[:16]}", "not on this node (or retired)")
            return row

    def retire_aux(self, aux_id: str) -> None:
        with self.session() as session:
            row = session.get(AuxRow, aux_id)
            if row is not None:
                row.state = "retired"
                session.add(row)
                session.commit()

    # --- presignatures -------------------------------------------------------------------------
    def put_presignature(self, row: PresignatureRow) -> None:
        with self.session() as session:
            key = session.get(KeyVersionRow, (row.key_id, row.epoch))
            if key is None or key.state != "active":
                raise StoreError(f"presignature {row.presignature_id[:16]}", "key not active")
            if session.get(PresignatureRow, row.presignature_id) is not None:
                raise StoreError(f"presignature {row.presignature_id[:16]}", "already stored")
            session.add(row)
            session.commit()

    def consume_presignature(
        self, presignature_id: str, record: Callable[[Session], None] | None = None
    ) -> None:
        """Mark the presignature consumed, durably — or raise if it is not available (already
        used, revoked, unknown).  Exactly one caller can ever succeed.
        `record` writes what allowed the signature (request, approvals, audit record) in the
        same transaction, after the presignature is taken: if it raises, nothing is written
        and the presignature stays available."""
        with self.session() as session:
            result = session.execute(
                text(
                    "UPDATE presignatures SET state = 'consumed', consumed_at = :now "
                    "WHERE presignature_id = :id AND state = 'available'"
                ),
                {"now": time.time(), "id": presignature_id},
            )
            if result.rowcount == 1 and record is not None:  # type: ignore[attr-defined]
                try:
                    record(session)
                except BaseException:
                    session.rollback()
                    raise
            session.commit()
            if result.rowcount != 1:  # type: ignore[attr-defined]
                row = session.get(PresignatureRow, presignature_id)
                state = "unknown" if row is None else row.state
                raise StoreError(f"presignature {presignature_id[:16]}", f"is {state}")

    def presignature(self, presignature_id: str) -> PresignatureRow | None:
        with self.session() as session:
            return session.get(PresignatureRow, presignature_id)

    def signing_view(
        self, presignature_id: str, key_id: str
    ) -> tuple[PresignatureView | None, KeyView | None, list[QuarantineRow]]:
        """What a signature request reads before it consumes anything, in one read
        transaction: the presignature, its key's active version and the active quarantine
        (plain queries: this runs on every signature, and the ORM costs several times more)."""
        with self.session() as session:
            found = session.execute(_PRESIGNATURE_VIEW, {"id": presignature_id}).first()
            key = session.execute(_KEY_VIEW, {"key": key_id}).first()
            return (
                None if found is None else PresignatureView(*found),
                None if key is None else KeyView(*key),
                list_exclusions(session, QuarantineRow, False),
            )

    def available_presignatures(
        self, key_id: str, signers: tuple[int, ...], path: tuple[int, ...]
    ) -> list[str]:
        with self.session() as session:
            rows = session.exec(
                select(PresignatureRow.presignature_id)
                .where(
                    PresignatureRow.key_id == key_id,
                    PresignatureRow.signers == join_indices(signers),
                    PresignatureRow.path == join_path(path),
                    PresignatureRow.state == "available",
                )
                .order_by(PresignatureRow.created_at)  # type: ignore[arg-type]
            )
            return list(rows)

    def presignature_counts(self, key_id: str) -> dict[str, int]:
        with self.session() as session:
            rows = session.execute(
                text(
                    "SELECT state, COUNT(*) FROM presignatures WHERE key_id = :key GROUP BY state"
                ),
                {"key": key_id},
            )
            return {str(state): int(count) for state, count in rows}

    # --- sessions ------------------------------------------------------------------------------
    def record_session_start(self, instance: str, protocol: str) -> None:
        """Durably note that this node starts `instance`; StoreError if it ever did before."""
        with self.session() as session:
            if session.get(SessionStartRow, instance) is not None:
                raise StoreError(f"session {instance[:16]}", "already started on this node")
            session.add(
                SessionStartRow(instance=instance, protocol=protocol, started_at=time.time())
            )
            try:
                session.commit()
            except IntegrityError as exc:  # a concurrent start of the same instance won
                raise StoreError(f"session {instance[:16]}", "already started") from exc

    # --- quarantine ------------------------------------------------------------------------------
    def quarantine(self, row: QuarantineRow) -> QuarantineRow:
        with self.session() as session:
            return add_exclusion(session, QuarantineRow, row)

    def quarantines(self, *, include_cleared: bool = False) -> list[QuarantineRow]:
        with self.session() as session:
            return list_exclusions(session, QuarantineRow, include_cleared)

    def blocking(self, parties: tuple[int, ...]) -> QuarantineRow | None:
        """The first active entry that forbids a session among `parties`, if any."""
        return first_blocking(self.quarantines(), parties)

    def clear_quarantine(self, entry: int, reason: str) -> QuarantineRow:
        """The operator's decision that an entry no longer applies (kept, marked cleared)."""
        with self.session() as session:
            try:
                return clear_exclusion(session, QuarantineRow, entry, reason)
            except ExclusionError as exc:
                raise StoreError(exc.what, exc.detail) from exc


def _active_key(session: Session, key_id: str) -> KeyVersionRow | None:
    return session.exec(
        select(KeyVersionRow).where(KeyVersionRow.key_id == key_id, KeyVersionRow.state == "active")
    ).first()
