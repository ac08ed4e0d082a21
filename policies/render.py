"""Output of the officer command line (`policies.cli`): JSON for scripts, text for people, and
the one error form of both.

Every command builds one JSON-ready document (`policies.operations`); with ``--json`` that
document is printed as is, otherwise the functions here turn the same document into text, so the
two never disagree.  Errors: with ``--json`` a single object on stdout,
``{"error": {"code": "...", "detail": "...", ...}}`` and nothing else; without it ``error: …``
on stderr — one line, or one line per problem for a document with several schema problems.

Exit codes (`EXIT_OK`, `EXIT_REFUSED`, `EXIT_USAGE`): 0 done; 1 refused or denied (a Tessera
error, a simulated withdrawal that would not be signed); 2 usage error (typer's own, and
`UsageError` for option values only the command can check).

Only typer and rich are imported at module level: the command line must start fast, and the
heavy modules (pydantic models, SQLAlchemy, cryptography) are loaded by the commands that use
them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from hsm.errors import TesseraError
from hsm.output import EXIT_DONE, EXIT_REFUSED, EXIT_USAGE, error_code
from policies.errors import PolicySchemaError, UsageError

EXIT_OK = EXIT_DONE
__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "error_code"]

# Longer values are clipped in error documents: an error names the value, it does not echo a
# whole document back.
_MAX_VALUE_CHARS = 80


def _clip(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _field(name: str, value: object) -> object:
    if isinstance(value, tuple | list | frozenset | set):
        return [_field(name, item) for item in value]
    if isinstance(value, BaseException):
        return str(value)
    if isinstance(value, str) and name != "value":
        return value  # our own text (reason, subject, path): never an echo of the input
    return _clip(value)


def error_doc(exc: BaseException) -> dict[str, Any]:
    """``{"error": {"code", "detail", <the error's own fields>}}`` for ``--json``."""
    body: dict[str, Any] = {"code": error_code(exc), "detail": str(exc)}
    if isinstance(exc, PolicySchemaError):
        body["source"] = exc.source
        body["problems"] = [
            {"path": path, "reason": reason, "value": _clip(value)}
            for path, value, reason in exc.problems
        ]
        return {"error": body}
    for name, value in vars(exc).items():
        if not name.startswith("_") and name not in body:
            body[name] = _field(name, value)
    return {"error": body}


def error_lines(exc: BaseException) -> list[str]:
    """The human form: one line, or a heading and one line per problem of a schema error."""
    if isinstance(exc, PolicySchemaError) and len(exc.problems) > 1:
        where = f"{exc.source}: " if exc.source else ""
        return [f"error: {where}{len(exc.problems)} problems"] + [
            f"  - {path}: {reason} (got {_clip(value)!r})" for path, value, reason in exc.problems
        ]
    return [f"error: {exc}"]


class Output:
    """Where one command writes: stdout for results, stderr for errors, progress and notes."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(soft_wrap=True, highlight=False, emoji=False)
        self.errors = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)

    # --- results ---

    def json(self, value: Any) -> None:
        typer.echo(json.dumps(value, indent=2, ensure_ascii=False))

    def say(self, text: str) -> None:
        # markup=False: policy text (labels, diff tags like "[loosening]") is data, not markup.
        self.console.print(text, markup=False)

    def lines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.say(line)

    def note(self, text: str) -> None:
        """A remark for people (stderr), never mixed into a result a script reads."""
        if not self.as_json:
            self.errors.print(text, markup=False)

    def warn(self, text: str) -> None:
        self.errors.print(f"warning: {text}", markup=False, style="bold yellow")

    # --- failures ---

    def fail(self, exc: BaseException, code: int = EXIT_REFUSED) -> NoReturn:
        if self.as_json:
            self.json(error_doc(exc))
        else:
            for line in error_lines(exc):
                self.errors.print(line, markup=False)
        raise typer.Exit(code)

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """Every Tessera error becomes the error form and exit 1 (a `UsageError`: exit 2)."""
        try:
            yield
        except UsageError as exc:
            self.fail(exc, EXIT_USAGE)
        except TesseraError as exc:
            self.fail(exc)

    def exit_denied(self) -> NoReturn:
        """The result was printed and is a refusal (a decision that would not be signed)."""
        raise typer.Exit(EXIT_REFUSED)

    # --- progress ---

    def progress(self, what: str) -> Any:
        """A spinner on stderr while ``what`` runs (key derivation, log verification); nothing
        with ``--json`` or when stderr is not a terminal."""
        if self.as_json or not self.errors.is_terminal:
            return nullcontext()
        return self.errors.status(what, spinner="dots")


# --- documents as text -------------------------------------------------------------------------


def policy_summary(obj: Mapping[str, Any], policy_hash: str) -> list[str]:
    """A policy document (its canonical object) for people."""
    gov = obj["governance"]
    lines = [
        f"version {obj['version']}  hash {policy_hash}",
        f"previous {obj['previous'] or '(genesis)'}",
    ]
    if obj.get("description"):
        lines.append(f"description: {obj['description']}")
    lines.append(
        f"governance: quorum {gov['quorum']} of {len(obj['officers'])}, freeze quorum "
        f"{gov['freeze_quorum']}, loosening time lock {gov['loosening_timelock_seconds']} s"
    )
    lines.append("officers:")
    lines += [f"  {o['id']} ({o['algorithm']}) {o['public_key']}" for o in obj["officers"]]
    if obj["groups"]:
        lines.append("approver groups:")
        lines += [f"  {name}: {', '.join(m)}" for name, m in obj["groups"].items()]
    lines.append("wallets:")
    for wallet in obj["wallets"]:
        chains = "any chain" if wallet["chains"] is None else f"chains {wallet['chains']}"
        lines.append(f"  {wallet['id']} ({wallet['tier']}, {chains})")
    for name, entries in obj["whitelists"].items():
        lines.append(f"whitelist {name}: {len(entries)} entries")
        for entry in entries:
            delay = entry.get("activation_delay_seconds") or 0
            extra = f", active {delay} s after {entry['added_at']}" if delay else ""
            lines.append(
                f"  {entry['address']} chain {entry['chain_id']} ({entry['label']}{extra})"
            )
    lines.append(f"blacklist: {len(obj['blacklist'])} entries")
    lines.append("rules (first match wins, then default deny):")
    for index, rule in enumerate(obj["rules"], start=1):
        match = {k: v for k, v in rule["match"].items() if v not in (None, "any")}
        criteria = ", ".join(f"{k}={json.dumps(v)}" for k, v in match.items()) or "anything"
        action = rule["action"]
        if rule.get("approvals"):
            action += f" ({rule['approvals']['k']} of {rule['approvals']['group']})"
        lines.append(f"  {index}. {rule['id']}: {criteria} → {action}")
    if obj["velocity_limits"]:
        lines.append("velocity limits:")
        for limit in obj["velocity_limits"]:
            scope = f"wallet {limit['wallet']}" if limit.get("wallet") else f"tier {limit['tier']}"
            lines.append(
                f"  {limit['id']}: {scope}, at most {limit['max_amount']} {limit['asset']} per "
                f"{limit['window_seconds']} s"
            )
    return lines


def decision_lines(request_id: str, evaluation: Mapping[str, Any]) -> list[str]:
    """An evaluation (`operations.decision_doc`) for people: outcome, rule, the explanation."""
    lines = [
        f"{evaluation['outcome']}: request {request_id} under policy version "
        f"{evaluation['policy_version']} ({evaluation['policy_hash'][:16]}…)"
    ]
    if evaluation["rule"] is not None:
        lines.append(f"rule: {evaluation['rule']}")
    lines += [f"  - {line}" for line in evaluation["explanation"]]
    return lines


def withdrawal_lines(doc: Mapping[str, Any], out_file: str | None) -> list[str]:
    approval = doc["approval"]
    verb = "approved" if doc["decision"] == "approve" else "rejected"
    lines = [
        f"{doc['officer']} {verb} request {doc['request_id']} "
        f"(valid until {approval['expires_at']}); request is {doc['status']}"
    ]
    if out_file is not None:
        kind = "approval" if doc["decision"] == "approve" else "rejection"
        lines.append(f"signed {kind} written to {out_file}")
    return lines + decision_lines(doc["request_id"], doc["evaluation"])


def status_print(out: Output, doc: Mapping[str, Any]) -> None:
    in_force = doc["in_force"]
    if in_force is None:
        out.say("no policy version in force (propose and activate a version 1)")
    else:
        out.say(f"in force: version {in_force['version']} ({in_force['policy_hash']})")
    if doc["time_locked"]:
        locked = doc["time_locked"]
        out.say(f"time-locked: version {locked['version']} until {locked['effective_at']}")
    for proposal in doc["proposals"]:
        out.say(
            f"proposed: version {proposal['version']} ({proposal['policy_hash'][:16]}…) "
            f"signed {len(proposal['signed_by'])} of {proposal['needed']}: "
            f"{', '.join(proposal['signed_by']) or 'nobody yet'}"
        )
    out.say(f"frozen wallets: {', '.join(doc['frozen_wallets']) or 'none'}")
    for order in doc["open_freeze_orders"]:
        out.say(f"open {order['action']} of {order['wallet']}: {', '.join(order['signed_by'])}")
    if doc["pending_requests"]:
        table = Table(title="pending withdrawals")
        for column in ("request", "wallet", "amount", "approvals"):
            table.add_column(column)
        for request in doc["pending_requests"]:
            table.add_row(
                request["request_id"],
                request["wallet"],
                f"{request['amount']} {request['asset']}",
                ", ".join(request["approvals"]),
            )
        out.console.print(table)
    audit = doc["audit"]
    out.say(f"audit log: {audit['records']} records, head {audit['head'] or '-'}")
