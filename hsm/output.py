"""Command-line output shared by `tessera hsm`, `tessera node` and `tessera primes` (here, in
the bottom layer, so that every layer's commands can use it without an upward import).

With ``--json`` a command prints exactly one JSON document on stdout — its result, or its error
as ``{"error": {"code": "...", "detail": "..."}}`` — and nothing else; without it, results go
to stdout and errors to stderr as ``error: …``.  Exit codes: 0 done, 1 refused, 2 usage.
Usage errors found by the parser (a missing or malformed option) are JSON too when ``--json``
is among the arguments (`JsonUsageGroup`).

An error's code is the `code` it carries (a node's `ErrorCode`), else its class name in upper
snake case without ``Error`` (``HsmLoginError`` → ``HSM_LOGIN``): stable, never derived from
input.  Every command group (hsm, node, primes, cluster, policy, officer, the migrate commands)
reports errors through this module, so the form and the codes are the same everywhere.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

import typer
from rich.console import Console

# typer (>= 0.25) vendors its own click; parser errors are that copy's `UsageError`.
from typer._click.core import Context
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

EXIT_DONE, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
USAGE = "USAGE"

errors = Console(stderr=True, soft_wrap=True)


def error_code(exc: BaseException) -> str:
    """The stable code of an error: the code it carries (a node's `ErrorCode`), else its class
    name in upper snake case without the ``Error`` suffix (``StoreNotFoundError`` →
    ``STORE_NOT_FOUND``) — derived, so no typed error lacks one, and never from input."""
    code = getattr(exc, "code", None)
    value = getattr(code, "value", code)
    if isinstance(value, str) and value:
        return value
    name = type(exc).__name__.removesuffix("Error")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def emit(doc: Any) -> None:
    """A command's result as one JSON document on stdout."""
    typer.echo(json.dumps(doc, indent=2))


def fail(
    as_json: bool,
    code: str,
    detail: str,
    *,
    what: str = "error",
    exit_code: int = EXIT_REFUSED,
) -> NoReturn:
    """Report an error and exit: JSON on stdout with --json, else a line on stderr."""
    if as_json:
        typer.echo(json.dumps({"error": {"code": code, "detail": detail}}))
    else:
        errors.print(f"[red]{what}:[/red] {detail}", markup=True, highlight=False)
    raise typer.Exit(exit_code)


def refuse(exc: BaseException, as_json: bool, *, what: str = "error") -> NoReturn:
    """Report a refusal (exit 1) with the error's code."""
    fail(as_json, error_code(exc), str(exc), what=what, exit_code=EXIT_REFUSED)


def usage(detail: str, as_json: bool) -> NoReturn:
    """Report a usage error found after parsing (exit 2)."""
    fail(as_json, USAGE, detail, what="usage", exit_code=EXIT_USAGE)


class JsonUsageGroup(TyperGroup):
    """A command group whose parser errors are a JSON error object (exit 2) when ``--json`` is
    among the arguments, like every other error of its commands."""

    def invoke(self, ctx: Context) -> Any:
        args = [*ctx._protected_args, *ctx.args]
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if "--json" not in args:
                raise
            typer.echo(json.dumps({"error": {"code": USAGE, "detail": exc.format_message()}}))
            raise typer.Exit(EXIT_USAGE) from None
