"""Withdrawals asked for over the signer API, from submission to the chain (docs/api.md).

A withdrawal is persisted (SUBMITTED) before the client hears 202, then moved on by the
service's workers, one status at a time (`coordinator.api.lifecycle`).  Rules:

* Every transition is one conditional UPDATE on the status it leaves plus its event row, in one
  transaction: two workers (or a worker and a client's cancel) never both move a withdrawal,
  and no status is ever entered without its event (the audit record and the webhook source).
  Steps that follow one another with no side effect between them (SCREENING, the dry run's
  QUEUED, SIGNING with its payout) share one transaction, each with its own event row.
* A status is persisted *before* its side effect: SIGNING before the nodes are asked,
  BROADCASTING before the signed bytes leave.  The payout engine under it is idempotent per
  payout id (= withdrawal id), so a crash at any point is repaired by advancing again: the
  same request is signed with the same nonce and bytes, sent again with the same hash.
* `client_request_id` is unique forever per client; a submission refused before it is stored
  (a bad address, an unknown wallet) stores nothing and does not burn the id.
* The coordinator screens and dry-runs the policy only to set the status (SCREENING,
  PENDING_APPROVAL): the nodes still decide every signature on their own copy; a refusal of
  theirs ends the withdrawal REJECTED with the node's code.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from coordinator.api.dry_run import dry_run
from coordinator.api.lifecycle import CANCELLABLE, RANK, TERMINAL, Status, SubStatus, allowed
from coordinator.api.models import Withdrawal, WithdrawalCreate
from coordinator.api.screening import Screener
from coordinator.api.tables import WithdrawalEventRow, WithdrawalRow
from coordinator.fees import FeeLevel
from coordinator.payouts import (
    FINAL_REFUSALS,
    PayoutEngine,
    PayoutError,
    PayoutRequest,
    PayoutState,
)
from coordinator.store import CoordinatorStore, PayoutRow
from policies.approvals import Approval, check_approvals, parse_approval
from policies.document import PolicyDocument
from policies.errors import PolicyError
from policies.intent import TransactionIntent
from policies.sqlite import Sync
from signer.errors import TesseraError
from signer.logs import log_event
from signer.node.faults import failpoint
from signer.problems import ErrorCode

log = logging.getLogger("tessera.api")

#: The codes of a payout failed by the nodes' decision (the withdrawal is then REJECTED, with
#: the code as its reason code): the refusals no retry changes; any other failure is FAILED.
_NODE_DECISIONS: Final = FINAL_REFUSALS
#: A listing's cursor: the last withdrawal's creation time and id.
CURSOR_PATTERN: Final = r"^[0-9]{1,12}(\.[0-9]{1,20})?~wd_[0-9a-f]{32}$"
#: A page of a listing holds at most this many withdrawals.
MAX_PAGE: Final = 200
#: The statuses `advance` takes to SIGNING (or to where they stop) in one transaction.
_BEFORE_SIGNING: Final = frozenset(
    {Status.SUBMITTED, Status.SCREENING, Status.PENDING_APPROVAL, Status.QUEUED}
)
#: The statuses the screen and the policy's dry run decide from.
_SCREENED: Final = frozenset({Status.SCREENING, Status.PENDING_APPROVAL})


class WithdrawalError(TesseraError):
    """A request about a withdrawal the service refuses: `code` says why, `check` which check
    failed when one did."""

    def __init__(self, code: ErrorCode, detail: str, check: str | None = None) -> None:
        self.code = code
        self.detail = detail
        self.check = check
        super().__init__(detail)


@dataclass
class _Together:
    """Transitions of one withdrawal made back to back by one task, written in one
    transaction (`WithdrawalService._together`): each still with its own event row."""

    service: WithdrawalService
    #: the withdrawal as read: the status the one conditional UPDATE leaves
    first: WithdrawalRow
    #: each step's row as it is after the step, with the step's time
    steps: list[tuple[WithdrawalRow, float, dict[str, Any]]] = field(default_factory=list)
    #: rows stored in the same transaction (the payout of a SIGNING)
    rows: list[SQLModel] = field(default_factory=list)
    #: the withdrawal as written; None if it had moved meanwhile (set on leaving)
    result: WithdrawalRow | None = None


#: The transitions being put together by the current task, if any.
_TOGETHER: contextvars.ContextVar[_Together | None] = contextvars.ContextVar(
    "tessera_withdrawal_steps", default=None
)


@dataclass(frozen=True)
class Submitted:
    row: WithdrawalRow
    #: the same request was submitted before: this is the withdrawal it made
    replayed: bool


def request_hash(body: WithdrawalCreate) -> str:
    """SHA-256 of the request's canonical JSON: what a replay under its id must equal."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _approvers(row: WithdrawalRow) -> list[str]:
    return sorted({a["officer"] for a in json.loads(row.approvals)})


def view(row: WithdrawalRow) -> Withdrawal:
    status = Status(row.status)
    return Withdrawal(
        id=row.withdrawal_id,
        client_request_id=row.client_request_id,
        status=status,
        sub_status=row.sub_status,
        terminal=status in TERMINAL,
        wallet=row.wallet,
        chain_id=row.chain_id,
        asset=row.asset,
        destination=row.destination,
        amount=row.amount,
        fee_level=FeeLevel(row.fee_level),
        note=row.note,
        reason_code=row.reason_code,
        reason=row.reason,
        rule_id=row.rule_id,
        policy_hash=row.policy_hash,
        tx_hash=row.tx_hash,
        approvals=_approvers(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _reason_code(reason: str | None) -> str | None:
    """The error code a failed payout's reason starts with ("POLICY_DENIED: …")."""
    head = (reason or "").split(":", 1)[0].strip()
    return head if head in ErrorCode.__members__ else None


class WithdrawalService:
    """Submission, lookups and cancellation for the API's routes, and the workers that move
    withdrawals on (`run`)."""

    def __init__(
        self,
        store: CoordinatorStore,
        engine: PayoutEngine,
        *,
        initiator: str = "withdrawal-service",
        concurrency: int = 64,
        poll: float = 0.2,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        clock: Callable[[], float] = time.time,
        screener: Screener | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        #: the external screen, asked after the sanctions list (`coordinator.api.screening`)
        self.screener = screener
        self.initiator = initiator
        self.concurrency = concurrency
        self.poll = poll
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.clock = clock
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False  # `run`'s workers are up: a new withdrawal is handed to one

    # --- submission --------------------------------------------------------------------------
    def payout_request(self, row: WithdrawalRow | WithdrawalCreate, wid: str) -> PayoutRequest:
        """The payout the withdrawal (or a submission of one, as `wid`) asks the engine for."""
        return PayoutRequest(
            payout_id=wid,
            wallet=row.wallet,
            chain_id=row.chain_id,
            asset=row.asset,
            destination=row.destination,
            amount=row.amount,
            initiator=self.initiator,
            fee_level=FeeLevel(row.fee_level),
        )

    def by_client_request_id(self, client_id: str, client_request_id: str) -> WithdrawalRow | None:
        with self.store.session() as session:
            return session.exec(
                select(WithdrawalRow)
                .where(WithdrawalRow.client_id == client_id)
                .where(WithdrawalRow.client_request_id == client_request_id)
            ).first()

    @staticmethod
    def _replay(existing: WithdrawalRow, digest: str) -> Submitted:
        if existing.request_hash != digest:
            raise WithdrawalError(
                ErrorCode.REQUEST_REUSED,
                f"client_request_id {existing.client_request_id} is already used by withdrawal "
                f"{existing.withdrawal_id} with another request",
            )
        return Submitted(existing, replayed=True)

    async def submit(self, client_id: str, body: WithdrawalCreate) -> Submitted:
        """Store the withdrawal (SUBMITTED) after every check that needs no signature, or give
        back the one this client made under the same `client_request_id`."""
        digest = request_hash(body)
        existing = self.by_client_request_id(client_id, body.client_request_id)
        if existing is not None:
            return self._replay(existing, digest)
        wid = "wd_" + secrets.token_hex(16)
        payout = self.payout_request(body, wid)
        try:
            # wallet, chain, asset, amount and every destination check: refused, nothing stored
            sender = await self.engine.check(payout)
        except PayoutError as exc:
            raise WithdrawalError(exc.code, exc.detail, exc.check) from exc
        now = self.clock()
        row = WithdrawalRow(
            withdrawal_id=wid,
            client_id=client_id,
            client_request_id=body.client_request_id,
            request_hash=digest,
            wallet=body.wallet,
            chain_id=body.chain_id,
            asset=body.asset,
            destination=body.destination,
            amount=body.amount,
            fee_level=body.fee_level.value,
            note=body.note,
            status=Status.SUBMITTED.value,
            sub_status=SubStatus.RECEIVED.value,
            created_at=now,
            updated_at=now,
        )
        try:
            # Without an fsync of its own: the 202 waits for the API's barrier (in a worker
            # thread) while this loop's workers already take the withdrawal on.
            with self.store.session(Sync.DEFERRED) as session:
                session.add(row)
                session.flush()
                session.add(self._event(row, now))
                session.commit()
        except IntegrityError:
            # the same client_request_id stored meanwhile by a concurrent submission
            existing = self.by_client_request_id(client_id, body.client_request_id)
            if existing is None:  # pragma: no cover - an integrity error has a row behind it
                raise
            return self._replay(existing, digest)
        log_event(log, "withdrawal.submitted", withdrawal=wid, client=client_id)
        # the chain's fee quote and gas estimate, on their way while it is screened
        self.engine.quote_ahead(payout, sender)
        # straight to a worker, with the row just stored (no scan of the live withdrawals, no
        # read of it back); without a free worker the next round of `run` picks it up
        if not self._follow_in_task(wid, row):
            self._wake.set()
        return Submitted(row, replayed=False)

    # --- reading -----------------------------------------------------------------------------
    def get(self, client_id: str | None, withdrawal_id: str) -> WithdrawalRow:
        """The withdrawal, if `client_id` made it (None: any client's, for admins)."""
        with self.store.session() as session:
            row = session.get(WithdrawalRow, withdrawal_id)
        if row is None or (client_id is not None and row.client_id != client_id):
            raise WithdrawalError(ErrorCode.NOT_FOUND, f"no withdrawal {withdrawal_id[:40]}")
        return row

    def page(
        self,
        client_id: str | None,
        *,
        statuses: Sequence[Status] = (),
        wallet: str | None = None,
        asset: str | None = None,
        destination: str | None = None,
        client_request_id: str | None = None,
        created_after: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[WithdrawalRow], str | None]:
        """A page of withdrawals, oldest first; the cursor is the last one's (created_at, id),
        so a page never repeats or skips one while new ones arrive."""
        query = select(WithdrawalRow)
        if client_id is not None:
            query = query.where(WithdrawalRow.client_id == client_id)
        if statuses:
            query = query.where(col(WithdrawalRow.status).in_([s.value for s in statuses]))
        for column, value in (
            (WithdrawalRow.wallet, wallet),
            (WithdrawalRow.asset, asset),
            (WithdrawalRow.destination, destination),
            (WithdrawalRow.client_request_id, client_request_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if created_after is not None:
            query = query.where(WithdrawalRow.created_at > created_after)
        if cursor is not None:
            at, last = _decode_cursor(cursor)
            query = query.where(
                (col(WithdrawalRow.created_at) > at)
                | (
                    (col(WithdrawalRow.created_at) == at)
                    & (col(WithdrawalRow.withdrawal_id) > last)
                )
            )
        query = query.order_by(col(WithdrawalRow.created_at), col(WithdrawalRow.withdrawal_id))
        with self.store.session() as session:
            rows = list(session.exec(query.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]) if more and rows else None
        return rows, next_cursor

    def events(self, withdrawal_id: str) -> list[WithdrawalEventRow]:
        with self.store.session() as session:
            return list(
                session.exec(
                    select(WithdrawalEventRow)
                    .where(WithdrawalEventRow.withdrawal_id == withdrawal_id)
                    .order_by(col(WithdrawalEventRow.event_id))
                )
            )

    # --- transitions -------------------------------------------------------------------------
    def _event(self, row: WithdrawalRow, now: float) -> WithdrawalEventRow:
        return WithdrawalEventRow(
            withdrawal_id=row.withdrawal_id,
            status=row.status,
            sub_status=row.sub_status,
            detail=view(row).model_dump_json(),
            created_at=now,
        )

    def _transition(
        self, row: WithdrawalRow, to: Status, sub: SubStatus, **fields: Any
    ) -> WithdrawalRow | None:
        """Move `row` from the status it was read in to `to`, with its event, in one
        transaction; None if it had moved meanwhile (another worker, a cancel).  Inside
        `_together` the step is only put with the others (the row after it is returned)."""
        old = Status(row.status)
        if old != to and not allowed(old, to):
            raise WithdrawalError(
                ErrorCode.CORRUPT, f"withdrawal {row.withdrawal_id}: {old} cannot go to {to}"
            )
        if old == to and row.sub_status == sub.value and not fields:
            return row
        now = self.clock()
        values = {"status": to.value, "sub_status": sub.value, "updated_at": now, **fields}
        together = _TOGETHER.get()
        if (
            together is not None
            and together.service is self
            and together.first.withdrawal_id == row.withdrawal_id
        ):
            after = WithdrawalRow(**{**row.model_dump(), **values})
            together.steps.append((after, now, values))
            return after
        with self.store.session() as session:
            moved = self._moved_in(session, row, values, now)
            if moved is None:
                session.rollback()
                return None
            session.commit()
        log_event(log, "withdrawal.status", withdrawal=row.withdrawal_id, status=to.value)
        if to in (Status.SIGNING, Status.BROADCASTING):
            failpoint(f"withdrawal.{to.value}")  # stored, its side effect not yet done
        return moved

    def _moved_in(
        self, session: Session, row: WithdrawalRow, values: dict[str, Any], now: float
    ) -> WithdrawalRow | None:
        """In `session`, not committed: the conditional UPDATE from the status `row` was read
        in, and the event of the status it moves to; None if it had moved meanwhile."""
        moved = self._updated(session, row, values)
        if moved is None:
            return None
        session.add(self._event(moved, now))
        return moved

    @staticmethod
    def _updated(
        session: Session, row: WithdrawalRow, values: dict[str, Any]
    ) -> WithdrawalRow | None:
        """The conditional UPDATE from the status `row` was read in, and the row it left, in
        one statement (RETURNING: the columns it did not set, such as approvals taken
        meanwhile, as stored); None if the withdrawal had moved on."""
        moved = session.execute(
            update(WithdrawalRow)
            .where(col(WithdrawalRow.withdrawal_id) == row.withdrawal_id)
            .where(col(WithdrawalRow.status) == row.status)
            .where(col(WithdrawalRow.sub_status) == row.sub_status)
            .values(**values)
            .returning(WithdrawalRow)
        ).scalar_one_or_none()
        return cast(WithdrawalRow | None, moved)

    @contextmanager
    def _together(self, row: WithdrawalRow) -> Iterator[_Together]:
        """Put the transitions this task makes of `row` inside the block into one transaction,
        written on leaving it (also when it raises: what was done until then is kept, as
        if each had been written at once).  Only for steps that happen back to back with no
        side effect between them: a status is still stored before its side effect, since
        the block is left — and the transaction committed — before that effect.  Every step
        keeps its event row (the audit record and the webhook source), in order; the one
        conditional UPDATE still leaves the status `row` was read in, so a cancel or another
        worker that moved it meanwhile makes the whole block None."""
        together = _Together(self, row)
        token = _TOGETHER.set(together)
        try:
            yield together
        finally:
            _TOGETHER.reset(token)
            together.result = self._write(together)

    def _write(self, together: _Together) -> WithdrawalRow | None:
        first = together.first
        if not together.steps:
            return None
        values: dict[str, Any] = {}
        for _moved, _now, step in together.steps:
            values.update(step)
        try:
            # Without an fsync of its own (policies/sqlite.py): the payout engine's barrier
            # before the nodes are asked, and the API's before any answer, put it on disk.
            with self.store.session(Sync.DEFERRED) as session:
                stored = self._updated(session, first, values)
                if stored is None:
                    session.rollback()
                    return None
                for moved, now, _step in together.steps:
                    session.add(self._event(moved, now))
                session.add_all(together.rows)
                session.commit()
        except IntegrityError:
            if not together.rows:
                raise
            # a row stored with it exists already (the payout: its `submit` compares them)
            together.rows = []
            return self._write(together)
        for moved, _now, _step in together.steps:
            to = Status(moved.status)
            log_event(log, "withdrawal.status", withdrawal=first.withdrawal_id, status=to.value)
        for moved, _now, _step in together.steps:
            to = Status(moved.status)
            if to in (Status.SIGNING, Status.BROADCASTING):
                failpoint(f"withdrawal.{to.value}")  # stored, its side effect not yet done
        return stored

    def cancel(self, client_id: str | None, withdrawal_id: str) -> WithdrawalRow:
        """Cancel before signing; a withdrawal handed to the nodes is NOT_CANCELLABLE (on
        chain it can still be replaced: `tessera chain` speed-up/cancel)."""
        while True:
            row = self.get(client_id, withdrawal_id)
            status = Status(row.status)
            if status == Status.CANCELLED:
                return row
            if status not in CANCELLABLE:
                raise WithdrawalError(
                    ErrorCode.NOT_CANCELLABLE,
                    f"withdrawal {withdrawal_id} is {status.value}: only a withdrawal not yet "
                    "signing can be cancelled",
                )
            moved = self._transition(row, Status.CANCELLED, SubStatus.CANCELLED_BY_CLIENT)
            if moved is not None:
                return moved
            # it moved meanwhile: look again (it may now be past cancelling)

    # --- approvals -----------------------------------------------------------------------------
    def _intent(self, row: WithdrawalRow, policy_wallet: str) -> TransactionIntent:
        return TransactionIntent.model_validate(
            {
                "request_id": row.withdrawal_id,
                "wallet": policy_wallet,
                "chain_id": row.chain_id,
                "asset": row.asset,
                "destination": row.destination,
                "amount": row.amount,
                "initiator": self.initiator,
            }
        )

    def intent_of(self, row: WithdrawalRow) -> dict[str, Any]:
        """The intent the nodes will evaluate (what an officer approves)."""
        wallet = self.store.wallet(row.wallet)
        return self._intent(row, wallet.policy_wallet or row.wallet).model_dump(mode="json")

    async def add_approval(
        self, client_id: str | None, withdrawal_id: str, document: object
    ) -> WithdrawalRow:
        """Collect an officer's signed approval (or rejection) of the withdrawal's intent; it
        is checked against the policy now so a wrong one is refused at once, and the nodes
        check it again when they sign."""
        row = self.get(client_id, withdrawal_id)
        if Status(row.status) not in (Status.SUBMITTED, Status.SCREENING, Status.PENDING_APPROVAL):
            raise WithdrawalError(
                ErrorCode.VALIDATION,
                f"withdrawal {withdrawal_id} is {row.status}: approvals are taken before it is "
                "queued",
            )
        try:
            approval = parse_approval(document, "approval")
        except PolicyError as exc:
            raise WithdrawalError(ErrorCode.VALIDATION, str(exc)) from exc
        policy = await self.policy()
        wallet = self.store.wallet(row.wallet)
        intent = self._intent(row, wallet.policy_wallet or row.wallet)
        checked = check_approvals(policy, intent, [approval], now=datetime.now(UTC))
        if checked.problems:
            raise WithdrawalError(
                ErrorCode.VALIDATION, f"the approval does not verify: {checked.problems[0]}"
            )
        with self.store.session() as session:
            stored = session.get(WithdrawalRow, withdrawal_id)
            if stored is None:  # deleted under us: never by this service
                raise WithdrawalError(ErrorCode.CORRUPT, "stored vanished during the update")
            approvals = [
                a for a in json.loads(stored.approvals) if a["officer"] != approval.officer
            ]
            approvals.append(approval.model_dump(mode="json"))
            stored.approvals = json.dumps(approvals)
            stored.updated_at = self.clock()
            session.add(stored)
            session.commit()
        self._wake.set()
        return self.get(client_id, withdrawal_id)

    def pending_approvals(self) -> list[WithdrawalRow]:
        rows, _ = self.page(None, statuses=[Status.PENDING_APPROVAL], limit=MAX_PAGE)
        return rows

    @staticmethod
    def _approvals(row: WithdrawalRow) -> list[Approval]:
        return [parse_approval(a, "stored approval") for a in json.loads(row.approvals)]

    async def policy(self) -> PolicyDocument:
        """The policy version the nodes enforce (WITHDRAWAL-level errors when none answers)."""
        try:
            return await self.engine.coordinator.active_policy()
        except TesseraError as exc:
            raise WithdrawalError(
                getattr(exc, "code", ErrorCode.CHAIN_UNAVAILABLE), f"no policy: {exc}"
            ) from exc

    # --- moving on ---------------------------------------------------------------------------
    async def _screen(self, row: WithdrawalRow) -> WithdrawalRow | None:
        """SCREENING (the policy's sanctions list first, then the external screen when one is
        configured) and the policy's dry run: REJECTED by a screen, still SCREENING (the
        external screen asked next, or deferred), waiting for officers, or QUEUED."""
        if self.screener is not None and self.screener.waiting(row):
            return None  # deferred by the external screen, not yet due: nothing changed
        policy = await self.policy()
        wallet = self.store.wallet(row.wallet)
        intent = self._intent(row, wallet.policy_wallet or row.wallet)
        run = dry_run(policy, intent, self._approvals(row), now=datetime.now(UTC))
        if run.hits:
            labels = ", ".join(h.label or "unlabelled" for h in run.hits)
            return self._transition(
                row,
                Status.REJECTED,
                SubStatus.SCREENING_DENIED,
                reason_code="blacklisted",
                reason=f"the destination is on the policy's sanctions list ({labels})",
                policy_hash=run.policy_hash,
            )
        cleared: dict[str, Any] = {}
        if self.screener is not None and Status(row.status) == Status.SCREENING:
            # A sanctions list hit above never reaches the external screen.  The withdrawal
            # leaves the process here: on disk first (it may still be in its 202's barrier).
            await self.store.barrier()
            step = await self.screener.step(row, self.events)
            if not step.proceed:
                if step.status is None or step.sub_status is None:
                    return None  # deferred, not yet due
                extra = {"policy_hash": run.policy_hash} if step.status == Status.REJECTED else {}
                return self._transition(row, step.status, step.sub_status, **step.fields, **extra)
            cleared = step.fields  # approved: a deferral's reason is dropped with the next step
        facts: dict[str, Any] = {
            "policy_hash": run.policy_hash,
            "rule_id": run.decision.rule,
            **cleared,
        }
        if run.screening_status == Status.PENDING_APPROVAL:
            if Status(row.status) == Status.PENDING_APPROVAL:
                return None  # still waiting: nothing changed
            return self._transition(
                row, Status.PENDING_APPROVAL, SubStatus.AWAITING_APPROVALS, **facts
            )
        # QUEUED — also for a DENY or BLOCK: the nodes are the authority, and refuse it
        # themselves (before any presignature is spent), with their own reason; the dry run
        # only decides whether officers must be waited for.
        return self._transition(row, Status.QUEUED, SubStatus.READY, **facts)

    async def _queued_to_signing(self, row: WithdrawalRow, together: _Together) -> None:
        """SIGNING, with the payout the nodes are asked for stored in the same transaction
        (checked as `PayoutEngine.submit` checks it): both persisted before the nodes are
        asked, and a cancel cannot slip in after it.  A payout refused by those checks leaves
        the withdrawal QUEUED (and cancellable) for a retry."""
        payout = await self.engine.admitted(self.payout_request(row, row.withdrawal_id))
        self._transition(row, Status.SIGNING, SubStatus.SIGNING_BY_NODES)
        if payout is not None:
            together.rows.append(payout)

    async def _sign(self, row: WithdrawalRow) -> WithdrawalRow | None:
        request = self.payout_request(row, row.withdrawal_id)
        stored = await self.engine.submit(request)
        broadcasting: list[WithdrawalRow | None] = []

        def signed(session: Session, payout: PayoutRow) -> None:
            # BROADCASTING stored with the signed bytes, in their transaction: both before
            # the bytes leave
            values = {
                "status": Status.BROADCASTING.value,
                "sub_status": SubStatus.SENDING.value,
                "tx_hash": payout.tx_hash,
            }
            now = self.clock()
            broadcasting.append(self._moved_in(session, row, {**values, "updated_at": now}, now))

        payout = await self.engine.drive(
            row.withdrawal_id, self._approvals(row), send=False, signed=signed, stored=stored
        )
        if payout.state == PayoutState.FAILED:
            return self._failed(row, payout)
        if broadcasting and broadcasting[0] is not None:
            log_event(log, "withdrawal.status", withdrawal=row.withdrawal_id, status="BROADCASTING")
            failpoint(f"withdrawal.{Status.BROADCASTING.value}")  # stored, not yet sent
            return broadcasting[0]
        # signed before (a drive that stopped after storing the signature): BROADCASTING now
        return self._transition(row, Status.BROADCASTING, SubStatus.SENDING, tx_hash=payout.tx_hash)

    def _failed(self, row: WithdrawalRow, payout: PayoutRow) -> WithdrawalRow | None:
        code = _reason_code(payout.reason)
        reason = (payout.reason or "failed")[:500]
        if Status(row.status) == Status.SIGNING and code in _NODE_DECISIONS:
            return self._transition(
                row, Status.REJECTED, SubStatus.NODES_REFUSED, reason_code=code, reason=reason
            )
        return self._transition(
            row, Status.FAILED, SubStatus.CHAIN_FAILED, reason_code=code or "failed", reason=reason
        )

    def _from_payout(self, row: WithdrawalRow, payout: PayoutRow) -> WithdrawalRow | None:
        """BROADCASTING/CONFIRMING follow the payout: sent or mined, confirmed, failed or
        cancelled on chain."""
        state = PayoutState(payout.state)
        tx = {"tx_hash": payout.tx_hash} if payout.tx_hash != row.tx_hash else {}
        if state == PayoutState.CONFIRMED:
            return self._transition(row, Status.COMPLETED, SubStatus.CONFIRMED, **tx)
        if state == PayoutState.FAILED:
            return self._failed(row, payout)
        if state == PayoutState.CANCELLED:
            return self._transition(row, Status.CANCELLED, SubStatus.CANCELLED_ON_CHAIN, **tx)
        if state in (PayoutState.SENT, PayoutState.MINED):
            return self._transition(row, Status.CONFIRMING, SubStatus.AWAITING_CONFIRMATIONS, **tx)
        return None

    async def advance(self, withdrawal_id: str, row: WithdrawalRow | None = None) -> WithdrawalRow:
        """One step of the withdrawal (or none, when it waits); returns where it is.  `row`
        is the withdrawal as the caller has just read it (else it is read here)."""
        row = self.get(None, withdrawal_id) if row is None else row
        status = Status(row.status)
        moved: WithdrawalRow | None = None
        if status in _BEFORE_SIGNING:
            # screening, the dry run and the hand-off to the nodes follow one another with
            # nothing sent anywhere between them: one transaction, an event row for each
            with self._together(row) as together:
                step: WithdrawalRow | None = row
                if status == Status.SUBMITTED:
                    step = self._transition(row, Status.SCREENING, SubStatus.SCREENING_POLICY)
                if step is not None and Status(step.status) in _SCREENED:
                    step = await self._screen(step)
                if step is not None and Status(step.status) == Status.QUEUED:
                    await self._queued_to_signing(step, together)
            moved = together.result
        elif status == Status.SIGNING:
            moved = await self._sign(row)
        elif status == Status.BROADCASTING:
            payout = await self.engine.drive(withdrawal_id)  # sends the stored bytes
            moved = self._from_payout(row, payout)
        elif status == Status.CONFIRMING:
            moved = self._from_payout(row, await self.engine.track(withdrawal_id))
        return moved if moved is not None else self.get(None, withdrawal_id)

    async def _retrying(self, row: WithdrawalRow, exc: Exception) -> None:
        log_event(
            log,
            "withdrawal.retry",
            level=logging.WARNING,
            withdrawal=row.withdrawal_id,
            status=row.status,
            reason=type(exc).__name__,
        )
        if row.sub_status != SubStatus.RETRYING.value:
            code = getattr(exc, "code", None)
            self._transition(
                row,
                Status(row.status),
                SubStatus.RETRYING,
                reason_code=None if code is None else str(code),
                reason=str(exc)[:500],
            )

    async def follow(self, withdrawal_id: str, row: WithdrawalRow | None = None) -> WithdrawalRow:
        """Advance until terminal or waiting for officers; transient failures (a node or the
        chain away) are retried with exponential back-off, in the status they happened in.
        `row`: the withdrawal as its caller has just stored it (else it is read first)."""
        delay = self.retry_delay
        fresh = row
        while True:
            row = fresh if fresh is not None else self.get(None, withdrawal_id)
            fresh = None
            status = Status(row.status)
            if status in TERMINAL:
                return row
            try:
                moved = await self.advance(withdrawal_id, row)
            except (WithdrawalError, PayoutError, TesseraError) as exc:
                if getattr(exc, "code", None) == ErrorCode.CORRUPT:
                    raise
                await self._retrying(self.get(None, withdrawal_id), exc)
                await asyncio.sleep(delay)
                delay = min(self.max_retry_delay, delay * 2)
                continue
            delay = self.retry_delay
            if Status(moved.status) == Status.PENDING_APPROVAL:
                return moved  # woken again by an approval
            if moved.sub_status == SubStatus.SCREENING_DEFERRED.value:
                return moved  # asked again by a later round of `run` once due (the slot freed)
            if RANK[Status(moved.status)] == RANK[status] and moved.sub_status == row.sub_status:
                await asyncio.sleep(self.poll)  # waiting on the chain: read it again after
            else:
                # moved on just now: the row its UPDATE … RETURNING left (approvals taken
                # meanwhile included), with no await since; the next step starts from it (a
                # cancel after this makes that step's conditional UPDATE miss, and it reads
                # the withdrawal again)
                fresh = moved

    def live(self) -> list[str]:
        """Withdrawals a worker should be following: not terminal and not waiting for
        officers without a new approval."""
        with self.store.session() as session:
            rows = session.exec(
                select(WithdrawalRow.withdrawal_id, WithdrawalRow.status)
                .where(col(WithdrawalRow.status).not_in([s.value for s in TERMINAL]))
                .order_by(col(WithdrawalRow.created_at))
            ).all()
        return [wid for wid, _status in rows]

    async def _follow_logged(self, withdrawal_id: str, row: WithdrawalRow | None = None) -> None:
        try:
            await self.follow(withdrawal_id, row)
        except Exception as exc:
            log_event(
                log,
                "withdrawal.worker_error",
                level=logging.ERROR,
                withdrawal=withdrawal_id,
                reason=type(exc).__name__,
            )

    def _forget(self, withdrawal_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._tasks.pop(withdrawal_id, None)

        return done

    def _follow_in_task(self, withdrawal_id: str, row: WithdrawalRow | None = None) -> bool:
        """Follow the withdrawal in a task of `run`'s (`row`: as just stored); False when
        `run` is not running, already follows it, or has no worker free."""
        if not self._running or withdrawal_id in self._tasks:
            return False
        if len(self._tasks) >= self.concurrency:
            return False
        task = asyncio.create_task(self._follow_logged(withdrawal_id, row))
        self._tasks[withdrawal_id] = task
        task.add_done_callback(self._forget(withdrawal_id))
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """The workers: every live withdrawal followed by its own task (at most
        `concurrency` at once), picked up again after a restart from the database alone."""
        self._running = True
        try:
            while not stop.is_set():
                self._wake.clear()
                for wid in self.live():
                    if len(self._tasks) >= self.concurrency:
                        break
                    self._follow_in_task(wid)
                waits = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self._wake.wait()),
                ]
                try:
                    await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
        finally:
            self._running = False
            for task in list(self._tasks.values()):
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def settle(
        self, withdrawal_ids: Iterable[str], timeout: float = 120.0
    ) -> list[WithdrawalRow]:
        """Follow these withdrawals in this task until each is terminal or waiting for
        officers (the CLI and tests without a running service)."""
        return list(
            await asyncio.wait_for(
                asyncio.gather(*(self.follow(w) for w in withdrawal_ids)), timeout
            )
        )


def _encode_cursor(row: WithdrawalRow) -> str:
    return f"{row.created_at!r}~{row.withdrawal_id}"  # exact: repr round-trips a float


def _decode_cursor(cursor: str) -> tuple[float, str]:
    at, _, last = cursor.partition("~")
    try:
        value = float(at)
    except ValueError:
        raise WithdrawalError(ErrorCode.VALIDATION, "cursor: not one this service gave") from None
    if not last.startswith("wd_") or len(last) != 35 or math.isnan(value):
        raise WithdrawalError(ErrorCode.VALIDATION, "cursor: not one this service gave")
    return value, last
