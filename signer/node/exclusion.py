"""The exclusion model: the parties a failed session leaves out of new ones.

A node's quarantine (`signer.node.store.QuarantineRow`, enforced by the node) and the
coordinator's quarantine mirror (`coordinator.store`, which only stops the coordinator from
choosing those parties again) are the same model: an entry names a party (a culprit a verdict
named) or freezes a party set (a cryptographic failure that named nobody), and stays active until
an operator clears it with a reason.  Entries are never deleted (attacks.md A03).
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from sqlalchemy import text
from sqlmodel import Field, Session, SQLModel, select

from signer.errors import TesseraError


class ExclusionError(TesseraError):
    """An exclusion entry that is unknown, already cleared, or cleared without a reason."""

    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"{what}: {detail}")


class Exclusion(SQLModel):
    """What a quarantine entry (node) and a quarantine-mirror entry (coordinator) share: a
    party (kind "party", a named culprit) or a party set (kind "signer_set", a failure that
    named nobody), active until cleared with a reason."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    parties: str  # "3" or "1,3"
    key_id: str  # hex key id (or the aux-info marker) of the failed session
    created_at: float
    cleared_at: float | None = None
    cleared_reason: str | None = None

    @property
    def members(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.parties.split(","))

    def blocks(self, parties: frozenset[int]) -> bool:
        """A named party blocks every session it is in; a frozen set every session that
        contains all of its members (the same suspects, together again)."""
        if self.kind == "party":
            return bool(self.members & parties)
        return self.members <= parties

    def to_json(self) -> dict[str, Any]:
        return {**self.model_dump(), "parties": sorted(self.members)}


E = TypeVar("E", bound=Exclusion)


def add_exclusion(session: Session, model: type[E], row: E) -> E:
    """Insert `row` unless an active entry of the same kind and parties exists (returned
    instead): repeated failures of the same suspects add nothing to what is blocked."""
    existing = session.exec(
        select(model).where(
            model.kind == row.kind,
            model.parties == row.parties,
            model.cleared_at == None,  # noqa: E711 (SQL IS NULL)
        )
    ).first()
    if existing is not None:
        return existing
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def list_exclusions(session: Session, model: type[E], include_cleared: bool) -> list[E]:
    if not include_cleared:
        # Read on every signature and signer-set choice, and nearly always empty: one plain
        # probe first, the ORM (~4× the cost of a query) only when an entry is active.
        table = model.__tablename__
        probe = text(f"SELECT 1 FROM {table} WHERE cleared_at IS NULL LIMIT 1")  # noqa: S608
        if session.execute(probe).first() is None:
            return []
    query = select(model).order_by(model.id)  # type: ignore[arg-type]
    if not include_cleared:
        query = query.where(model.cleared_at == None)  # noqa: E711
    return list(session.exec(query))


def first_blocking(rows: list[E], parties: tuple[int, ...]) -> E | None:
    """The first of the active `rows` that forbids a session among `parties`, if any."""
    members = frozenset(parties)
    return next((row for row in rows if row.blocks(members)), None)


def clear_exclusion(session: Session, model: type[E], entry: int, reason: str) -> E:
    """Mark an entry cleared (it is kept); ExclusionError if it is unknown, already cleared, or
    the reason is empty."""
    if not reason.strip():
        raise ExclusionError(f"entry {entry}", "clearing needs a reason")
    row = session.get(model, entry)
    if row is None:
        raise ExclusionError(f"entry {entry}", "no such entry")
    if row.cleared_at is not None:
        raise ExclusionError(f"entry {entry}", "already cleared")
    row.cleared_at = time.time()
    row.cleared_reason = reason.strip()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row
