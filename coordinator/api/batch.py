"""Withdrawals submitted as one unit (`POST /v1/withdrawals/batch`, docs/api.md "Batches").

A batch is what the chain layer calls a batch of payouts (coordinator/batches.py, docs/chains.md
"Batch payouts"): every withdrawal is checked as a single one is (`PayoutEngine.check`: wallet,
chain, asset, amount, every destination check), and if any is wrong the whole batch is refused,
naming each wrong one by its index, with nothing stored and no `client_request_id` used up.  A
batch that passes is stored whole, in one transaction, and each withdrawal then goes through
the lifecycle of its own (screen, officers' approvals, the nodes' decision, its own payout): from
one sending address they get consecutive nonces, and a withdrawal the nodes refuse gives its
nonce to the next one, so the batch leaves no gap.  Paying a batch in one transaction through
the disperse contract (`batches.in_one_transaction`) is not what this does: there one refused
leg refuses every leg, and the withdrawals could not each keep their status, approvals and
cancellation.

Idempotent per withdrawal: one already made under its `client_request_id` with the same body
is given back (`replayed`); with another body the batch is `409 REQUEST_REUSED` naming it, and
nothing of the batch is stored.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from coordinator.api.lifecycle import Status, SubStatus
from coordinator.api.models import MAX_BATCH, WithdrawalCreate
from coordinator.api.tables import WithdrawalRow
from coordinator.api.withdrawals import (
    Submitted,
    WithdrawalError,
    WithdrawalService,
    request_hash,
)
from coordinator.payouts import PayoutError
from signer.logs import log_event
from signer.problems import ErrorCode

log = logging.getLogger("tessera.api")

#: A refused batch's detail names at most this many wrong withdrawals (and a count).
SHOWN_PROBLEMS: Final = 10
#: Attempts when a concurrent submission stores one of the batch's ids meanwhile.
_ATTEMPTS: Final = 3


def _refused(code: ErrorCode, problems: Sequence[str], check: str | None = None) -> WithdrawalError:
    shown = list(problems[:SHOWN_PROBLEMS])
    more = len(problems) - len(shown)
    text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    return WithdrawalError(code, f"batch refused, nothing stored: {text}", check)


async def submit_batch(
    service: WithdrawalService, client_id: str, items: Sequence[WithdrawalCreate]
) -> list[Submitted]:
    """Store every withdrawal of the batch (SUBMITTED) after every check of each, or none;
    the ones this client made before under the same ids and bodies are given back."""
    for _attempt in range(_ATTEMPTS):
        try:
            return await _submit_once(service, client_id, items)
        except IntegrityError:
            # one of its ids stored meanwhile by a concurrent submission: decide again (it is
            # now a replay, or a conflict)
            continue
    raise WithdrawalError(
        ErrorCode.BUSY, "the batch's ids are being submitted concurrently; send it again"
    )


async def _submit_once(
    service: WithdrawalService, client_id: str, items: Sequence[WithdrawalCreate]
) -> list[Submitted]:
    if not 1 <= len(items) <= MAX_BATCH:
        raise _refused(ErrorCode.VALIDATION, [f"a batch has 1 to {MAX_BATCH} withdrawals"])
    seen: dict[str, int] = {}
    twice = []
    for index, item in enumerate(items):
        first = seen.setdefault(item.client_request_id, index)
        if first != index:
            twice.append(f"items[{index}]: the client_request_id of items[{first}] again")
    if twice:
        raise _refused(ErrorCode.VALIDATION, twice)
    with service.store.session() as session:
        stored = {
            row.client_request_id: row
            for row in session.exec(
                select(WithdrawalRow)
                .where(WithdrawalRow.client_id == client_id)
                .where(col(WithdrawalRow.client_request_id).in_(list(seen)))
            )
        }
    digests = [request_hash(item) for item in items]
    reused = [
        f"items[{index}]: client_request_id {item.client_request_id} is already used by "
        f"withdrawal {stored[item.client_request_id].withdrawal_id} with another request"
        for index, item in enumerate(items)
        if item.client_request_id in stored
        and stored[item.client_request_id].request_hash != digests[index]
    ]
    if reused:
        raise _refused(ErrorCode.REQUEST_REUSED, reused)
    # every new withdrawal checked as a single submission is, nothing stored yet
    fresh: dict[int, str] = {}
    wrong: list[tuple[int, PayoutError]] = []
    for index, item in enumerate(items):
        if item.client_request_id in stored:
            continue
        wid = "wd_" + secrets.token_hex(16)
        try:
            await service.engine.check(service.payout_request(item, wid))
        except PayoutError as exc:
            wrong.append((index, exc))
            continue
        fresh[index] = wid
    if wrong:
        # the code (and status) a single submission of the first wrong one gets
        leading = wrong[0][1]
        problems = [
            f"items[{index}]: {e.code.value}"
            + (f" ({e.check})" if e.check else "")
            + f": {e.detail}"
            for index, e in wrong
        ]
        raise _refused(leading.code, problems, leading.check)
    now = service.clock()
    out: list[Submitted] = []
    made: list[WithdrawalRow] = []
    for index, item in enumerate(items):
        if index not in fresh:
            out.append(Submitted(stored[item.client_request_id], replayed=True))
            continue
        row = WithdrawalRow(
            withdrawal_id=fresh[index],
            client_id=client_id,
            client_request_id=item.client_request_id,
            request_hash=digests[index],
            wallet=item.wallet,
            chain_id=item.chain_id,
            asset=item.asset,
            destination=item.destination,
            amount=item.amount,
            fee_level=item.fee_level.value,
            note=item.note,
            status=Status.SUBMITTED.value,
            sub_status=SubStatus.RECEIVED.value,
            created_at=now,
            updated_at=now,
        )
        made.append(row)
        out.append(Submitted(row, replayed=False))
    if made:
        # the whole batch in one transaction: all of it stored, or (an id taken meanwhile)
        # none of it
        with service.store.session() as session:
            for row in made:
                session.add(row)
            session.flush()
            for row in made:
                session.add(service._event(row, now))
            session.commit()
        for row in made:
            log_event(log, "withdrawal.submitted", withdrawal=row.withdrawal_id, client=client_id)
        service._wake.set()
    return out
