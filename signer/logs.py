"""Structured JSON logs (standard library `logging`), one object per line, for nodes and the
coordinator.

Every record carries the component (``node-2``, ``coordinator``), the event name and the fields
an operator correlates on: ``session`` (hex instance id), ``request`` (request id), ``party``,
``protocol``, ``outcome``, ``code``.  Fields are passed by name (`log_event`), never formatted
into the message, and only scalars are written: no payload, share, nonce, PIN or token has a
field to land in (tests/test_logs.py scans a whole signing run's logs for them).

`bind` sets context (the request id of the HTTP request being served, say) that every record
of the current task then carries.

`configure` also routes Python warnings and uncaught exceptions (main thread and others) into
the same JSON stream, as their type only, so that a process's whole stderr stays one JSON
object per line and no traceback (with the values it may quote) is ever written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import IO, Any

# Fields every record may carry; anything else passed to `log_event` is dropped, so a new call
# site cannot start logging a structure by accident.
FIELDS = frozenset(
    {
        "session",
        "request",
        "party",
        "parties",
        "protocol",
        "outcome",
        "code",
        "check",
        "culprit",
        "key",
        "epoch",
        "presignature",
        "node",
        "method",
        "route",
        "status",
        "seconds",
        "count",
        "attempt",
        "reason",
        "detail",
        "path",
        "port",
        "version",
    }
)
MAX_FIELD_CHARS = 300

_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "tessera_log_context", default=None
)


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        return value.hex()[:MAX_FIELD_CHARS]
    if isinstance(value, tuple | list | frozenset | set):
        return ",".join(str(v) for v in sorted(value, key=str))[:MAX_FIELD_CHARS]
    return str(value)[:MAX_FIELD_CHARS]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, component, logger, event, message, fields."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage()[:MAX_FIELD_CHARS],
        }
        context = _context.get()
        if context:
            doc.update(context)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: a traceback's locals and messages may quote input.
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc, separators=(",", ":"), sort_keys=False)


def configure(component: str, *, level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route the root logger (and uvicorn's) to one JSON-lines handler on `stream` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    logging.captureWarnings(True)  # "py.warnings" records instead of raw lines on stderr
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


_uncaught = logging.getLogger("tessera.uncaught")
_thread_hook = threading.excepthook


def reset() -> None:
    """Undo `configure` (its handler and hooks): for a command that configured logs and then
    returns to a caller in the same process (tests driving the CLI in-process)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = _thread_hook


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    # The type only: the default hook would print a traceback, whose frames quote values.
    log_event(_uncaught, "uncaught", level=logging.CRITICAL, reason=exc_type.__name__)


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    log_event(_uncaught, "uncaught", level=logging.CRITICAL, reason=args.exc_type.__name__)


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log `event` with `fields` (names from `FIELDS`; values reduced to short scalars)."""
    if not logger.isEnabledFor(level):
        return
    kept = {name: _scalar(value) for name, value in fields.items() if name in FIELDS}
    logger.log(level, event, extra={"event": event, "fields": kept})


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Within the block, every record of this task also carries `fields`."""
    current = dict(_context.get() or {})
    current.update({name: _scalar(v) for name, v in fields.items() if name in FIELDS})
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


class Timer:
    """Seconds since creation, for the ``seconds`` field of an outcome record."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 6)
