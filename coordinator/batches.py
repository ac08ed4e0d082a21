"""Batch payouts from an uploaded list (docs/chains.md, "Batch payouts").

A batch is up to `MAX_PAYOUTS` payouts in a CSV file (a header row naming the columns) or a JSON
array of objects, with the columns

    payout_id, chain_id, asset, destination, amount[, fee_level]

(`fee_level` low | medium | high, default medium; the wallet and the initiator are the caller's,
one per batch).  `parse_batch` reads and checks the shape of every row; `PayoutEngine.pay_batch`
then checks every payout as a single one is checked (chain, asset, amount, the destination's
address checks) and refuses the whole batch — storing nothing — if any row is wrong, naming every
wrong row (up to `SHOWN_PROBLEMS`) by its number, payout id and field, never its values.  A batch
that passes is stored whole, then paid in its order: from one sending address the payouts get
consecutive nonces, each decided by the policy on every node; a payout the nodes refuse gives its
nonce to the next one, so the batch leaves no gap.  Submitting the same file again is idempotent
(the payout ids).

`in_one_transaction` turns the checked rows into one payout per chain and asset instead, each
paying its rows as the legs of one transaction through the chain's disperse contract (one nonce,
one fee; the nodes decide every leg and the total, and one refused leg refuses that
transaction whole).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from coordinator.fees import FeeLevel
from coordinator.payouts import PayoutEngine, PayoutError, PayoutRequest, batch_request
from coordinator.registry import ChainRegistry
from coordinator.store import PayoutRow
from signer.errors import TesseraError
from signer.problems import ErrorCode

MAX_PAYOUTS: Final = 1000
MAX_BYTES: Final = 2 * 1024 * 1024
SHOWN_PROBLEMS: Final = 20
REQUIRED: Final = ("payout_id", "chain_id", "asset", "destination", "amount")
OPTIONAL: Final = ("fee_level",)
_FIELD_CHARS: Final = 200  # no field of a valid row is longer


class BatchRefused(TesseraError):
    """A batch that is not paid at all: `problems` names each wrong row and field."""

    code = ErrorCode.VALIDATION

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:SHOWN_PROBLEMS]
        more = len(self.problems) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        super().__init__(f"batch refused, nothing stored: {text}")


def _rows_of_csv(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = reader.fieldnames
        if not columns:
            raise BatchRefused(["the CSV has no header row"])
        _check_columns(list(columns))
        rows: list[dict[str, Any]] = []
        for row in reader:
            if len(rows) >= MAX_PAYOUTS:
                raise BatchRefused([f"more than {MAX_PAYOUTS} payouts"])
            if None in row or any(value is None for value in row.values()):
                raise BatchRefused([f"row {len(rows) + 1}: not as many fields as the header"])
            rows.append(dict(row))
        return rows
    except csv.Error as exc:
        raise BatchRefused([f"not CSV (line {reader.line_num}: {str(exc)[:80]})"]) from None


def _check_columns(columns: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(
            f"{len(unknown)} unknown column(s) (known: {', '.join(REQUIRED + OPTIONAL)})"
        )
    if len(set(columns)) != len(columns):
        problems.append("a column appears twice")
    if problems:
        raise BatchRefused(problems)


def _rows_of_json(text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BatchRefused([f"not JSON ({str(exc)[:80]})"]) from None
    if not isinstance(data, list):
        raise BatchRefused(["a JSON batch is an array of payout objects"])
    if len(data) > MAX_PAYOUTS:
        raise BatchRefused([f"more than {MAX_PAYOUTS} payouts"])
    problems = []
    for number, row in enumerate(data, 1):
        if not isinstance(row, dict):
            problems.append(f"row {number}: not an object")
            continue
        unknown = [k for k in row if k not in REQUIRED + OPTIONAL]
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            problems.append(f"row {number}: missing {', '.join(missing)}")
        if unknown:
            problems.append(f"row {number}: {len(unknown)} unknown field(s)")
    if problems:
        raise BatchRefused(problems)
    return data


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_batch(data: bytes, fmt: str, *, wallet: str, initiator: str) -> list[PayoutRequest]:
    """The payouts of a batch file's bytes (`fmt` "csv" or "json"), in file order."""
    if len(data) > MAX_BYTES:
        raise BatchRefused([f"the file is over {MAX_BYTES // (1024 * 1024)} MiB"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BatchRefused(["the file is not UTF-8 text"]) from None
    if fmt == "csv":
        rows = _rows_of_csv(text)
    elif fmt == "json":
        rows = _rows_of_json(text)
    else:
        raise BatchRefused([f"unknown format {fmt[:10]!r}: csv or json"])
    if not rows:
        raise BatchRefused(["the batch has no payouts"])
    problems: list[str] = []
    out: list[PayoutRequest] = []
    for number, row in enumerate(rows, 1):
        request = _request(number, row, wallet, initiator, problems)
        if request is not None:
            out.append(request)
    if problems:
        raise BatchRefused(problems)
    return out


def _request(
    number: int, row: dict[str, Any], wallet: str, initiator: str, problems: list[str]
) -> PayoutRequest | None:
    fields: dict[str, str] = {}
    bad = False
    for name in REQUIRED + OPTIONAL:
        value = row.get(name)
        if name in OPTIONAL and (value is None or value == ""):
            continue  # the default
        if name == "chain_id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip() or len(value) > _FIELD_CHARS:
            problems.append(f"row {number}: {name} must be non-empty text")
            bad = True
            continue
        fields[name] = value.strip()
    if bad:
        return None
    if not fields["chain_id"].isdigit() or len(fields["chain_id"]) > 18:
        problems.append(f"row {number}: chain_id must be a decimal chain id")
        return None
    level = fields.get("fee_level", FeeLevel.MEDIUM.value)
    if level not in {lv.value for lv in FeeLevel}:
        problems.append(f"row {number}: fee_level must be low, medium or high")
        return None
    return PayoutRequest(
        payout_id=fields["payout_id"],
        wallet=wallet,
        chain_id=int(fields["chain_id"]),
        asset=fields["asset"],
        destination=fields["destination"],
        amount=fields["amount"],
        initiator=initiator,
        fee_level=FeeLevel(level),
    )


async def check_batch(engine: PayoutEngine, requests: Sequence[PayoutRequest]) -> None:
    """Check every payout of the batch as a single one is checked; BatchRefused naming every
    wrong row (by its number) if one is wrong.  Stores nothing."""
    if not 1 <= len(requests) <= MAX_PAYOUTS:
        raise BatchRefused([f"a batch has 1 to {MAX_PAYOUTS} payouts"])
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, request in enumerate(requests, 1):
        first = seen.setdefault(request.payout_id, number)
        if first != number:
            problems.append(f"row {number}: the payout id of row {first} again")
            continue
        try:
            await engine.check(request)
        except PayoutError as exc:
            problems.append(f"row {number}: {exc.code}: {exc.detail}")
    if problems:
        raise BatchRefused(problems)


async def pay_batch(
    engine: PayoutEngine,
    requests: Sequence[PayoutRequest],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[PayoutRow]:
    """Check every payout of the batch (refusing all, storing nothing, if one is wrong), store
    them all, then drive each in order until the chain holds it or it failed.  Returns the
    payouts in batch order (`sent`, or `failed` with the nodes' reason)."""
    await check_batch(engine, requests)
    for request in requests:
        await engine.submit(request)
    out = []
    for number, request in enumerate(requests, 1):
        out.append(await engine.drive(request.payout_id, request.approvals))
        progress(number, len(requests))
    return out


def in_one_transaction(
    registry: ChainRegistry, requests: Sequence[PayoutRequest]
) -> list[PayoutRequest]:
    """The batch's rows as payouts in one transaction each: one per (wallet, path, chain, asset,
    fee level, initiator), in the order of their first rows, each paying its rows as legs
    through the chain's disperse contract (`batch_request`).  A batch's id is a digest of its
    rows' payout ids, so paying the same file again pays nothing twice."""
    groups: dict[tuple[object, ...], list[PayoutRequest]] = {}
    for request in requests:
        key = (
            request.wallet,
            request.path,
            request.chain_id,
            request.asset,
            request.fee_level,
            request.initiator,
        )
        groups.setdefault(key, []).append(request)
    out = []
    for rows in groups.values():
        first = rows[0]
        if first.chain_id not in registry.chain_ids():
            raise BatchRefused([f"chain {first.chain_id} is not configured"])
        digest = hashlib.sha256("\n".join(r.payout_id for r in rows).encode()).hexdigest()
        out.append(
            batch_request(
                registry.chain(first.chain_id),
                f"batch-{digest[:40]}",
                first.wallet,
                first.asset,
                [(r.destination, r.amount) for r in rows],
                first.initiator,
                fee_level=first.fee_level,
                path=first.path,
            )
        )
    return out
