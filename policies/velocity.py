"""Rolling-window velocity limits: the pure usage computation and the durable ledger.

Each withdrawal that the policy lets through (ALLOW, or REQUIRE_APPROVAL while it waits for
officers) *reserves* its amount under its request id; the reservation is *committed* when the
node signs, *released* when the request is rejected, and lapses at its expiry.  A limit counts
committed entries and live (unexpired) reservations alike, so two concurrent requests can never
together exceed it: `VelocityLedger.reserve` checks and inserts in one SQLite ``BEGIN IMMEDIATE``
transaction, which serialises writers across threads and processes.  A reservation that any
operation found lapsed is closed durably ("expired"), so a commit acting on an older clock reading
can never bring back budget that another request has since been given.

Windows are half-open, ``(t − window, t]``, and an entry sits at its reservation time.  A new entry
at time ``a`` is checked against every window that contains it — those ending at ``a`` and at each
later entry inside ``[a, a + window)`` — so the limit holds for every window even if callers' clocks
are not monotonic.  Amounts are exact `Decimal`s (`AMOUNT_CONTEXT` traps any rounding); request ids
are never reused, so released and expired entries stay as tombstones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

from policies.document import (
    AMOUNT_CONTEXT,
    PolicyDocument,
    VelocityLimit,
    amount_str,
    timestamp_str,
)
from policies.errors import (
    EvaluationInputError,
    ReservationError,
    VelocityLimitExceededError,
)
from policies.intent import TransactionIntent
from policies.sqlite import sqlite_engine

EntryState = Literal["reserved", "committed", "released", "expired"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def require_aware(argument: str, moment: object) -> datetime:
    """`moment` if it is a timezone-aware datetime, else `EvaluationInputError`."""
    if not isinstance(moment, datetime):
        raise EvaluationInputError(argument, moment, "must be a datetime")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EvaluationInputError(argument, moment, "naive datetime; pass an aware (UTC) one")
    return moment


@dataclass(frozen=True)
class LedgerEntry:
    """One request's amount in the ledger, at its reservation time."""

    request_id: str
    wallet: str
    asset: str
    amount: Decimal
    at: datetime
    state: EntryState
    expires_at: datetime | None = None  # the reservation's expiry (kept once committed)

    def counts_at(self, now: datetime) -> bool:
        """Whether the entry consumes budget at `now`: committed, or reserved and unexpired."""
        if self.state == "committed":
            return True
        return self.state == "reserved" and self.expires_at is not None and self.expires_at > now


@dataclass(frozen=True)
class LedgerView:
    """An immutable snapshot of a ledger, what the pure evaluator reads."""

    as_of: datetime
    entries: tuple[LedgerEntry, ...] = ()

    @classmethod
    def empty(cls, as_of: datetime) -> LedgerView:
        return cls(as_of=as_of)


@dataclass(frozen=True)
class LimitCheck:
    """How a request stands against one velocity limit."""

    limit_id: str
    wallet: str
    asset: str
    window_seconds: int
    used: Decimal  # largest total already in a window that would also hold the request
    requested: Decimal
    max_amount: Decimal

    @property
    def fits(self) -> bool:
        return AMOUNT_CONTEXT.add(self.used, self.requested) <= self.max_amount

    @property
    def remaining_after(self) -> Decimal:
        """Budget left once the request counts (negative when it does not fit)."""
        return AMOUNT_CONTEXT.subtract(
            self.max_amount, AMOUNT_CONTEXT.add(self.used, self.requested)
        )

    def describe(self) -> str:
        state = "fits" if self.fits else "EXCEEDED"
        return (
            f"limit {self.limit_id}: {amount_str(self.used)} used + {amount_str(self.requested)}"
            f" requested of {amount_str(self.max_amount)} {self.asset} per rolling"
            f" {self.window_seconds} s for wallet {self.wallet} — {state}"
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "limit": self.limit_id,
            "wallet": self.wallet,
            "asset": self.asset,
            "window_seconds": self.window_seconds,
            "used": amount_str(self.used),
            "requested": amount_str(self.requested),
            "max_amount": amount_str(self.max_amount),
            "fits": self.fits,
        }


def window_usage(
    entries: Iterable[LedgerEntry],
    *,
    wallet: str,
    asset: str,
    window_seconds: int,
    at: datetime,
    exclude_request: str | None = None,
) -> Decimal:
    """The largest total of counting entries in any window ``(t − w, t]`` that would also hold a
    new entry at `at` (t ranges over `at` and later entry times within ``[at, at + w)``)."""
    window = timedelta(seconds=window_seconds)
    relevant = [
        entry
        for entry in entries
        if entry.wallet == wallet
        and entry.asset == asset
        and entry.request_id != exclude_request
        and entry.counts_at(at)
        and at - window < entry.at < at + window
    ]
    ends = {at} | {entry.at for entry in relevant if entry.at > at}
    worst = Decimal(0)
    for end in ends:
        total = Decimal(0)
        for entry in relevant:
            if end - window < entry.at <= end:
                total = AMOUNT_CONTEXT.add(total, entry.amount)
        worst = max(worst, total)
    return worst


def check_limits(
    limits: Sequence[VelocityLimit],
    entries: Sequence[LedgerEntry],
    *,
    wallet: str,
    asset: str,
    amount: Decimal,
    at: datetime,
    exclude_request: str | None = None,
) -> tuple[LimitCheck, ...]:
    """Each limit's standing if `amount` were added at `at` (limits of other assets ignored)."""
    return tuple(
        LimitCheck(
            limit_id=limit.id,
            wallet=wallet,
            asset=asset,
            window_seconds=limit.window_seconds,
            used=window_usage(
                entries,
                wallet=wallet,
                asset=asset,
                window_seconds=limit.window_seconds,
                at=at,
                exclude_request=exclude_request,
            ),
            requested=amount,
            max_amount=limit.max_amount,
        )
        for limit in limits
        if limit.asset == asset
    )


# --- durable ledger ----------------------------------------------------------------------------


class VelocityRow(SQLModel, table=True):
    """One request's entry; times are integer microseconds since the Unix epoch (UTC)."""

    __tablename__ = "velocity_ledger"

    request_id: str = Field(primary_key=True)
    wallet: str = Field(index=True)
    asset: str = Field(index=True)
    amount: str  # canonical decimal text: exact, never a float column
    at_us: int = Field(index=True)
    state: str
    expires_at_us: int | None = None
    closed_at_us: int | None = None  # when committed, released or expired


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _entry(row: VelocityRow) -> LedgerEntry:
    return LedgerEntry(
        request_id=row.request_id,
        wallet=row.wallet,
        asset=row.asset,
        amount=Decimal(row.amount),
        at=_from_us(row.at_us),
        state=cast(EntryState, row.state),
        expires_at=None if row.expires_at_us is None else _from_us(row.expires_at_us),
    )


class VelocityLedger:
    """A node's durable record of what it reserved and signed, on SQLite (WAL mode).

    Every operation is one ``BEGIN IMMEDIATE`` transaction: threads and processes sharing the file
    are serialised, and a failed operation leaves the ledger untouched."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = path
        self._engine: Engine = sqlite_engine(
            path, immediate=True, busy_timeout_seconds=busy_timeout_seconds
        )
        # Imported on first use: alembic and the scripts load only once a database opens.
        from policies.migrations.velocity import SCHEMA  # noqa: PLC0415
        from policies.schema import ensure  # noqa: PLC0415

        # Tables at head on a new file; an older or unknown revision is refused until
        # `tessera policy migrate --ledger` is run.
        try:
            ensure(self._engine, SCHEMA, path)
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with Session(self._engine) as session, session.begin():
            yield session

    def reserve(
        self,
        request_id: str,
        wallet: str,
        asset: str,
        amount: Decimal,
        *,
        limits: Sequence[VelocityLimit],
        now: datetime,
        expires_at: datetime,
    ) -> LedgerEntry:
        """Reserve `amount` for `request_id` if every limit still fits, atomically.

        Idempotent: the same request with the same wallet, asset and amount returns its existing
        entry.  Raises `VelocityLimitExceededError` (naming the limit) or `ReservationError`."""
        require_aware("now", now)
        require_aware("expires_at", expires_at)
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
            raise ReservationError(request_id, f"amount must be a positive Decimal, got {amount!r}")
        if expires_at <= now:
            raise ReservationError(
                request_id, f"expires_at {timestamp_str(expires_at)} is not after now"
            )
        with self._transaction() as session:
            existing = session.get(VelocityRow, request_id)
            if existing is not None:
                return self._same_request(existing, wallet, asset, amount, now)
            # Reservations this check treats as lapsed are closed durably in the same
            # transaction, so a commit with a stale clock can never bring one back.
            self._close_expired(session, now, wallet=wallet, asset=asset)
            horizon = max((limit.window_seconds for limit in limits), default=0)
            entries = self._entries_near(session, wallet, asset, now, horizon)
            for check in check_limits(
                limits, entries, wallet=wallet, asset=asset, amount=amount, at=now
            ):
                if not check.fits:
                    raise VelocityLimitExceededError(
                        check.limit_id,
                        wallet,
                        asset,
                        amount_str(check.used),
                        amount_str(amount),
                        amount_str(check.max_amount),
                    )
            row = VelocityRow(
                request_id=request_id,
                wallet=wallet,
                asset=asset,
                amount=amount_str(amount),
                at_us=_us(now),
                state="reserved",
                expires_at_us=_us(expires_at),
            )
            session.add(row)
            session.flush()
            return _entry(row)

    def reserve_intent(
        self,
        policy: PolicyDocument,
        intent: TransactionIntent,
        *,
        now: datetime,
        expires_at: datetime,
    ) -> LedgerEntry:
        """`reserve` for an intent under the limits `policy` sets for its wallet and asset."""
        return self.reserve(
            intent.request_id,
            intent.wallet,
            intent.asset,
            intent.amount,
            limits=policy.limits_for(intent.wallet, intent.asset),
            now=now,
            expires_at=expires_at,
        )

    def commit(self, request_id: str, *, now: datetime) -> LedgerEntry:
        """Mark a live reservation as spent (the node signed).  Idempotent once committed; an
        expired, released or unknown reservation raises `ReservationError`."""
        require_aware("now", now)
        with self._transaction() as session:
            row = self._row(session, request_id)
            if row.state == "committed":
                return _entry(row)
            if row.state != "reserved":
                raise ReservationError(
                    request_id, f"cannot commit: the reservation was {row.state}"
                )
            expires = row.expires_at_us
            lapsed = expires is not None and expires <= _us(now)
            # A lapsed reservation is closed (and that is committed) before refusing.
            row.state = "expired" if lapsed else "committed"
            row.closed_at_us = _us(now)
            session.add(row)
            session.flush()
            entry = _entry(row)
        if lapsed and expires is not None:
            raise ReservationError(
                request_id, f"cannot commit: the reservation expired at {_ts(expires)}"
            )
        return entry

    def release(self, request_id: str, *, now: datetime | None = None) -> LedgerEntry:
        """Give a reservation's budget back (request rejected or abandoned).  Idempotent for
        released or expired entries; a committed entry cannot be released."""
        with self._transaction() as session:
            row = self._row(session, request_id)
            if row.state == "committed":
                raise ReservationError(request_id, "cannot release: already committed (signed)")
            if row.state == "reserved":
                row.state = "released"
                row.closed_at_us = None if now is None else _us(require_aware("now", now))
                session.add(row)
                session.flush()
            return _entry(row)

    def expire(self, now: datetime) -> tuple[str, ...]:
        """Close every reservation whose expiry is at or before `now`; returns their ids."""
        require_aware("now", now)
        with self._transaction() as session:
            return self._close_expired(session, now)

    def entry(self, request_id: str) -> LedgerEntry | None:
        """The entry of `request_id` in any state, or None."""
        with self._transaction() as session:
            row = session.get(VelocityRow, request_id)
            return None if row is None else _entry(row)

    def view(self, now: datetime, *, horizon_seconds: int | None = None) -> LedgerView:
        """Snapshot of the entries that count at `now` (committed, or reserved and unexpired),
        optionally only those newer than `horizon_seconds` (the longest window of the policy)."""
        require_aware("now", now)
        with self._transaction() as session:
            query = select(VelocityRow).where(
                (col(VelocityRow.state) == "committed")
                | (
                    (col(VelocityRow.state) == "reserved")
                    & (col(VelocityRow.expires_at_us) > _us(now))
                )
            )
            if horizon_seconds is not None:
                query = query.where(
                    col(VelocityRow.at_us) > _us(now - timedelta(seconds=horizon_seconds))
                )
            rows = session.exec(query.order_by(col(VelocityRow.request_id))).all()
            return LedgerView(as_of=now, entries=tuple(_entry(row) for row in rows))

    # --- helpers ---

    @staticmethod
    def _close_expired(
        session: Session, now: datetime, *, wallet: str | None = None, asset: str | None = None
    ) -> tuple[str, ...]:
        query = (
            select(VelocityRow)
            .where(col(VelocityRow.state) == "reserved")
            .where(col(VelocityRow.expires_at_us) <= _us(now))
        )
        if wallet is not None:
            query = query.where(col(VelocityRow.wallet) == wallet)
        if asset is not None:
            query = query.where(col(VelocityRow.asset) == asset)
        rows = session.exec(query.order_by(col(VelocityRow.request_id))).all()
        for row in rows:
            row.state = "expired"
            row.closed_at_us = _us(now)
            session.add(row)
        session.flush()
        return tuple(row.request_id for row in rows)

    @staticmethod
    def _row(session: Session, request_id: str) -> VelocityRow:
        row = session.get(VelocityRow, request_id)
        if row is None:
            raise ReservationError(request_id, "no such request in the velocity ledger")
        return row

    @staticmethod
    def _same_request(
        row: VelocityRow, wallet: str, asset: str, amount: Decimal, now: datetime
    ) -> LedgerEntry:
        if (row.wallet, row.asset, Decimal(row.amount)) != (wallet, asset, amount):
            raise ReservationError(
                row.request_id,
                f"already reserved as {row.amount} {row.asset} from {row.wallet};"
                f" not {amount_str(amount)} {asset} from {wallet}",
            )
        if row.state in ("released", "expired"):
            raise ReservationError(row.request_id, f"was {row.state}; request ids are never reused")
        expires = row.expires_at_us
        if row.state == "reserved" and expires is not None and expires <= _us(now):
            raise ReservationError(row.request_id, f"the reservation expired at {_ts(expires)}")
        return _entry(row)

    @staticmethod
    def _entries_near(
        session: Session, wallet: str, asset: str, now: datetime, horizon_seconds: int
    ) -> list[LedgerEntry]:
        low = _us(now - timedelta(seconds=horizon_seconds))
        high = _us(now + timedelta(seconds=horizon_seconds))
        # Plain columns, not ORM rows: every reservation reads the whole window of its wallet,
        # and building an ORM instance per row was most of a reservation's time.
        rows = session.execute(
            sa_select(
                col(VelocityRow.request_id),
                col(VelocityRow.amount),
                col(VelocityRow.at_us),
                col(VelocityRow.state),
                col(VelocityRow.expires_at_us),
            )
            .where(col(VelocityRow.wallet) == wallet)
            .where(col(VelocityRow.asset) == asset)
            .where(col(VelocityRow.state).in_(("reserved", "committed")))
            .where(col(VelocityRow.at_us) > low)
            .where(col(VelocityRow.at_us) < high)
        ).all()
        return [
            LedgerEntry(
                request_id=request_id,
                wallet=wallet,
                asset=asset,
                amount=Decimal(amount),
                at=_from_us(at_us),
                state=cast(EntryState, state),
                expires_at=None if expires_at_us is None else _from_us(expires_at_us),
            )
            for request_id, amount, at_us, state, expires_at_us in rows
        ]


def _ts(value: int) -> str:
    return timestamp_str(_from_us(value))
