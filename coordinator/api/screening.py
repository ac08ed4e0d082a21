"""The external screening hook (docs/api.md, "Screening"): one synchronous, signed call per
withdrawal to the operator's screen (a KYT/AML provider's adapter), after the policy's own
sanctions list and before the policy's dry run.

**The request.**  `Screener.screen` POSTs to the configured URL the compact JSON

    {"type": "withdrawal.screening", "request_id": "scr_<32 hex>",
     "withdrawal": {"id", "client_id", "client_request_id", "wallet", "chain_id", "asset",
                    "destination", "amount", "fee_level", "note", "created_at"}}

with `Tessera-Screening-Id` (the request id), `Tessera-Screening-Timestamp` (Unix seconds) and
`Tessera-Screening-Signature`: unpadded base64url Ed25519 over ``timestamp + "." + body`` by the
service's screening key (``screening-signing.pem`` in the cluster directory; `tessera serve
--json` prints its public half) — the webhooks' signed form (`coordinator.api.webhooks`).  The
request id is fresh for every call.

**The answer.**  ``200`` with the JSON object

    {"request_id": "<the request's>", "outcome": "approve" | "deny" | "defer",
     "reason": "…", "reference": "…"?, "retry_after": seconds?}

and `Tessera-Screening-Timestamp` / `Tessera-Screening-Signature` over ``timestamp + "." +
body`` by the screen's key (configured).  The echoed request id binds the answer to this call:
an answer replayed from another withdrawal's screening (or an earlier one of this withdrawal)
does not match.

**Fail closed.**  Anything but a fresh, signed, well-formed answer to this very request is a
deny, with its own reason code (`Verdict.reason_code`):

* ``screening_unavailable`` — a timeout, a refused or broken connection, a 429 or 5xx;
* ``screening_bad_signature`` — a signature or timestamp header missing, a signature that does
  not verify under the screen's key, a timestamp more than `tolerance` seconds off;
* ``screening_mismatch`` — signed, but for another request (the echo differs);
* ``screening_bad_response`` — another status (a redirect too: a signed request is never sent
  to another host), a body over 64 KiB, not JSON, or not the answer's form.

One deadline, `timeout`, bounds a whole screening, retries included: a refused or reset
connection, a 429 or a 5xx is tried again (a fresh request id and signature each time) after
0.25 s, doubling, up to `attempts` times while the deadline allows; a timeout is final.  So a
screen that restarts is ridden over, and a slow one costs at most `timeout`.

**Outcomes** (`WithdrawalService._screen` applies them; each step persisted before the next
call): ``approve`` goes on to the policy's dry run; ``deny`` is REJECTED ``screening_denied``
with the screen's reason and reference; ``defer`` keeps the withdrawal in SCREENING
(``screening_deferred``) and asks again after ``retry_after`` (default `default_defer`, at least
1 s, at most `max_pause`), until `max_defer` seconds after it entered SCREENING: then it is
REJECTED ``screening_defer_expired``.  When a deferred screening is due is kept in memory, so
after a restart a deferred withdrawal is asked again at once; the overall bound is counted from
its stored SCREENING event and survives restarts.  A crash between an answer and its record asks
again: a screen must answer the same withdrawal (by `withdrawal.id`) more than once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coordinator.api.lifecycle import Status, SubStatus
from coordinator.api.tables import WithdrawalEventRow, WithdrawalRow
from coordinator.api.webhooks import (
    WebhookVerificationError,
    parse_public_key,
    sign_stamped,
    stamped_signature_ok,
)
from signer.errors import TesseraError
from signer.logs import log_event
from signer.problems import ErrorCode

log = logging.getLogger("tessera.api.screening")

ID_HEADER: Final = "Tessera-Screening-Id"
TIMESTAMP_HEADER: Final = "Tessera-Screening-Timestamp"
SIGNATURE_HEADER: Final = "Tessera-Screening-Signature"
REQUEST_TYPE: Final = "withdrawal.screening"

#: Reason codes a withdrawal the external screen stopped is REJECTED with.
SCREENING_DENIED: Final = "screening_denied"
SCREENING_UNAVAILABLE: Final = "screening_unavailable"
SCREENING_BAD_SIGNATURE: Final = "screening_bad_signature"
SCREENING_MISMATCH: Final = "screening_mismatch"
SCREENING_BAD_RESPONSE: Final = "screening_bad_response"
SCREENING_DEFER_EXPIRED: Final = "screening_defer_expired"
#: The reason code of a withdrawal waiting on a deferred screening (not terminal).
SCREENING_DEFERRED: Final = "screening_deferred"

#: At most this much of an answer is read: a screen cannot make the service buffer more.
MAX_RESPONSE_BYTES: Final = 64 * 1024
#: The screen's reason and reference are kept (clipped, printable only) in `reason`.
MAX_REASON_CHARS: Final = 200
MAX_REFERENCE_CHARS: Final = 128
_DIGITS = re.compile(r"[0-9]{1,20}")
#: The first pause before a retried attempt (doubling).
_FIRST_PAUSE: Final = 0.25
#: Statuses worth another attempt: the screen was busy or away.
_RETRIED_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


class ScreeningError(TesseraError):
    """A screening configuration refused (`code` VALIDATION): a URL, a key, a bound."""

    def __init__(self, detail: str, code: ErrorCode = ErrorCode.VALIDATION) -> None:
        self.code = code
        self.detail = detail
        super().__init__(detail)


class Outcome(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    DEFER = "defer"


@dataclass(frozen=True)
class Verdict:
    """What one screening decided: the screen's own answer, or a deny of ours (fail closed)
    with the reason code of what went wrong."""

    outcome: Outcome
    #: None for an approve or a defer; a deny's code (`screening_denied` when the screen said it)
    reason_code: str | None
    reason: str
    reference: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Step:
    """What `WithdrawalService._screen` does after the external screen: go on to the policy's
    dry run (`proceed`, with `fields` set on the next transition), move to `status` /
    `sub_status` with `fields`, or nothing yet (neither: a deferred screening not yet due)."""

    status: Status | None = None
    sub_status: SubStatus | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    proceed: bool = False


WAIT: Final = Step()


def _text(value: object, limit: int) -> str:
    """A screen's text as kept: printable characters only, clipped."""
    kept = "".join(c for c in str(value) if c.isprintable())
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def check_url(url: str) -> None:
    """A screen's URL: http(s)://host[:port][/path], at most 2000 characters (else VALIDATION,
    never echoing it)."""
    refused = ScreeningError("a screening URL is http(s)://host[:port][/path], at most 2000 chars")
    if not url or len(url) > 2000 or any(c.isspace() or not c.isprintable() for c in url):
        raise refused
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise refused from None
    if parts.scheme not in ("http", "https") or not host:
        raise refused


def load_screen_key(value: str) -> Ed25519PublicKey:
    """The screen's Ed25519 public key from `value`: a file holding it (a PEM public key, or the
    unpadded base64url of its 32 raw bytes), or that base64url text itself.  ScreeningError
    (VALIDATION) otherwise, naming neither the text nor the file's content."""
    text = value.strip()
    source = "--screening-key"
    path = Path(text)
    try:
        is_file = len(text) < 4096 and path.is_file()
    except OSError:
        is_file = False
    if is_file:
        source = str(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ScreeningError(f"{source}: cannot read it ({exc.strerror})") from None
        if raw.lstrip().startswith(b"-----BEGIN"):
            try:
                key = serialization.load_pem_public_key(raw)
            except (ValueError, UnsupportedAlgorithm):
                raise ScreeningError(f"{source}: not a PEM public key") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ScreeningError(f"{source}: not an Ed25519 public key")
            return key
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ScreeningError(f"{source}: not an Ed25519 public key") from None
    try:
        return parse_public_key(text)
    except WebhookVerificationError:
        raise ScreeningError(
            f"{source}: an Ed25519 public key is a PEM file or 32 bytes of unpadded base64url"
        ) from None


def request_body(row: WithdrawalRow, request_id: str) -> bytes:
    """The body of one screening request: compact JSON with sorted keys."""
    doc = {
        "type": REQUEST_TYPE,
        "request_id": request_id,
        "withdrawal": {
            "id": row.withdrawal_id,
            "client_id": row.client_id,
            "client_request_id": row.client_request_id,
            "wallet": row.wallet,
            "chain_id": row.chain_id,
            "asset": row.asset,
            "destination": row.destination,
            "amount": row.amount,
            "fee_level": row.fee_level,
            "note": row.note,
            "created_at": row.created_at,
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def signed_headers(key: Ed25519PrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    """Timestamp and signature headers over ``timestamp + "." + body`` (requests and, for a
    screen written in Python, answers)."""
    stamp = str(int(timestamp))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign_stamped(key, stamp, body)}


def verify_request(
    public_key: str | Ed25519PublicKey,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """A screen's check of a request of the service (its screening public key); returns the
    parsed body.  Raises `WebhookVerificationError` naming the failed check (header, public_key,
    timestamp, signature, body)."""
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    signature = lowered.get(SIGNATURE_HEADER.lower())
    request_id = lowered.get(ID_HEADER.lower())
    if stamp is None or signature is None or request_id is None:
        raise WebhookVerificationError("header", "a Tessera-Screening header is missing")
    key = parse_public_key(public_key)
    if not _DIGITS.fullmatch(stamp):
        raise WebhookVerificationError("timestamp", "the timestamp is not integer Unix seconds")
    if not stamped_signature_ok(key, stamp, body, signature):
        raise WebhookVerificationError("signature", "the signature does not verify")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise WebhookVerificationError(
            "timestamp", f"the timestamp is more than {tolerance:g} s off"
        )
    try:
        doc = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("body", "the body is not JSON") from None
    if not isinstance(doc, dict) or doc.get("request_id") != request_id:
        raise WebhookVerificationError("body", f"the body's request_id is not {ID_HEADER}'s")
    return doc


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


class Screener:
    """The configured external screen: `screen` asks it about one withdrawal; `step` is what the
    withdrawal service's screening does with the answer (and with a deferral's schedule)."""

    def __init__(
        self,
        url: str,
        screen_key: Ed25519PublicKey,
        signing_key: Ed25519PrivateKey,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        tolerance: float = 300.0,
        default_defer: float = 30.0,
        max_pause: float = 3600.0,
        max_defer: float = 3600.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_url(url)
        bounds = (timeout, tolerance, default_defer, max_pause, max_defer)
        if not all(math.isfinite(b) and b > 0 for b in bounds) or not 1 <= attempts <= 10:
            raise ScreeningError(
                "screening timeout, tolerance and defer bounds are > 0; attempts is 1 to 10"
            )
        self.url = url
        self.screen_key = screen_key
        self.signing_key = signing_key
        self.timeout = timeout
        self.attempts = attempts
        self.tolerance = tolerance
        self.default_defer = default_defer
        self.max_pause = max_pause
        self.max_defer = max_defer
        self.clock = clock
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        #: withdrawal id → when its deferred screening is due again (this process only)
        self._due: dict[str, float] = {}

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    # --- one screening ---------------------------------------------------------------------
    async def screen(self, row: WithdrawalRow) -> Verdict:
        """Ask the screen about `row`; never raises for anything the screen or the network
        does (fail closed: a deny with the code of what went wrong)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        pause = _FIRST_PAUSE
        attempt = 0
        while True:
            attempt += 1
            verdict, retry = await self._attempt(row, deadline - loop.time())
            if not retry or attempt >= self.attempts or loop.time() + pause >= deadline:
                break
            await asyncio.sleep(pause)
            pause *= 2
        log_event(
            log,
            "screening.outcome",
            level=logging.INFO
            if verdict.reason_code in (None, SCREENING_DENIED)
            else logging.WARNING,
            request=row.withdrawal_id,
            outcome=verdict.outcome.value,
            code=verdict.reason_code,
            attempt=attempt,
        )
        return verdict

    async def _attempt(self, row: WithdrawalRow, budget: float) -> tuple[Verdict, bool]:
        """One POST within `budget` seconds: its verdict, and whether another attempt may
        change it."""
        request_id = "scr_" + secrets.token_hex(16)
        body = request_body(row, request_id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tessera-screening",
            ID_HEADER: request_id,
            **signed_headers(self.signing_key, body, int(self.clock())),
        }
        unavailable = Verdict(Outcome.DENY, SCREENING_UNAVAILABLE, "the screen did not answer")
        if budget <= 0:
            return unavailable, False
        try:
            async with asyncio.timeout(budget):
                async with self.client.stream(
                    "POST", self.url, content=body, headers=headers, follow_redirects=False
                ) as reply:
                    status = reply.status_code
                    answer_headers = dict(reply.headers.items())
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in reply.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_RESPONSE_BYTES:
                            return (
                                Verdict(
                                    Outcome.DENY,
                                    SCREENING_BAD_RESPONSE,
                                    "the screen's answer is over 64 KiB",
                                ),
                                False,
                            )
                        chunks.append(chunk)
        except TimeoutError:
            return Verdict(Outcome.DENY, SCREENING_UNAVAILABLE, "the screen timed out"), False
        except (httpx.HTTPError, OSError) as exc:
            # a refused, reset or broken connection, a TLS or protocol error: the screen away
            return (
                Verdict(
                    Outcome.DENY,
                    SCREENING_UNAVAILABLE,
                    f"the screen is unreachable ({type(exc).__name__})",
                ),
                True,
            )
        if status in _RETRIED_STATUSES:
            return Verdict(
                Outcome.DENY, SCREENING_UNAVAILABLE, f"the screen answered {status}"
            ), True
        return self._read(request_id, status, answer_headers, b"".join(chunks)), False

    def _read(
        self, request_id: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> Verdict:
        """The verdict of a complete answer (every check, in the order the module describes)."""

        def bad(code: str, why: str) -> Verdict:
            return Verdict(Outcome.DENY, code, why)

        if status != 200:
            return bad(SCREENING_BAD_RESPONSE, f"the screen answered {status}, not 200")
        lowered = {k.lower(): v.strip() for k, v in headers.items()}
        stamp = lowered.get(TIMESTAMP_HEADER.lower())
        signature = lowered.get(SIGNATURE_HEADER.lower())
        if stamp is None or signature is None:
            return bad(SCREENING_BAD_SIGNATURE, "the screen's answer is not signed")
        if not _DIGITS.fullmatch(stamp):
            return bad(SCREENING_BAD_SIGNATURE, "the answer's timestamp is not Unix seconds")
        if not stamped_signature_ok(self.screen_key, stamp, body, signature):
            return bad(SCREENING_BAD_SIGNATURE, "the answer's signature does not verify")
        if abs(self.clock() - int(stamp)) > self.tolerance:
            return bad(SCREENING_BAD_SIGNATURE, "the answer's timestamp is not fresh")
        try:
            doc = json.loads(body)
        except ValueError:
            return bad(SCREENING_BAD_RESPONSE, "the screen's answer is not JSON")
        if not isinstance(doc, dict):
            return bad(SCREENING_BAD_RESPONSE, "the screen's answer is not a JSON object")
        if doc.get("request_id") != request_id:
            return bad(SCREENING_MISMATCH, "the screen's answer is for another request")
        said = doc.get("outcome")
        if not isinstance(said, str) or said not in {o.value for o in Outcome}:
            return bad(SCREENING_BAD_RESPONSE, "the answer's outcome is not approve/deny/defer")
        outcome = Outcome(said)
        reason = doc.get("reason", "")
        reference = doc.get("reference")
        retry_after = doc.get("retry_after")
        if not isinstance(reason, str) or not (reference is None or isinstance(reference, str)):
            return bad(SCREENING_BAD_RESPONSE, "the answer's reason or reference is not text")
        if retry_after is not None and _number(retry_after) is None:
            return bad(SCREENING_BAD_RESPONSE, "the answer's retry_after is not seconds >= 0")
        return Verdict(
            outcome,
            SCREENING_DENIED if outcome == Outcome.DENY else None,
            _text(reason, MAX_REASON_CHARS),
            None if reference is None else _text(reference, MAX_REFERENCE_CHARS) or None,
            _number(retry_after),
        )

    # --- the withdrawal service's step -----------------------------------------------------
    def waiting(self, row: WithdrawalRow) -> bool:
        """Whether `row` is a deferred screening that is not yet due (in this process)."""
        if row.status != Status.SCREENING.value:
            return False
        if row.sub_status != SubStatus.SCREENING_DEFERRED.value:
            return False
        due = self._due.get(row.withdrawal_id)
        return due is not None and self.clock() < due

    async def step(
        self, row: WithdrawalRow, events: Callable[[str], Sequence[WithdrawalEventRow]]
    ) -> Step:
        """The external screening of `row` (in SCREENING): first SCREENING_EXTERNAL is stored
        (so the status is persisted before the screen is asked), then the screen is asked and
        its verdict turned into the withdrawal's next step.  `events` gives a withdrawal's
        events (the start of its screening, for the overall bound on deferrals)."""
        wid = row.withdrawal_id
        if row.sub_status == SubStatus.SCREENING_POLICY.value:
            return Step(Status.SCREENING, SubStatus.SCREENING_EXTERNAL)
        if self.waiting(row):
            return WAIT
        verdict = await self.screen(row)
        suffix = "" if verdict.reference is None else f" (screen reference {verdict.reference})"
        if verdict.outcome == Outcome.APPROVE:
            self._due.pop(wid, None)
            # a deferral's reason is not the withdrawal's any more
            cleared = {"reason_code": None, "reason": None} if row.reason_code else {}
            return Step(fields=cleared, proceed=True)
        if verdict.outcome == Outcome.DENY:
            self._due.pop(wid, None)
            what = (
                "the screen denied it" if verdict.reason_code == SCREENING_DENIED else "fail closed"
            )
            return Step(
                Status.REJECTED,
                SubStatus.SCREENING_DENIED,
                {
                    "reason_code": verdict.reason_code,
                    "reason": f"{what}: {verdict.reason or 'no reason given'}{suffix}",
                },
            )
        now = self.clock()
        started = min(
            (e.created_at for e in events(wid) if e.status == Status.SCREENING.value),
            default=row.created_at,
        )
        if now - started >= self.max_defer:
            self._due.pop(wid, None)
            return Step(
                Status.REJECTED,
                SubStatus.SCREENING_DENIED,
                {
                    "reason_code": SCREENING_DEFER_EXPIRED,
                    "reason": f"the screen deferred it for over {self.max_defer:g} s: "
                    f"{verdict.reason or 'no reason given'}{suffix}",
                },
            )
        pause = verdict.retry_after if verdict.retry_after is not None else self.default_defer
        pause = min(max(pause, 1.0), self.max_pause, started + self.max_defer - now)
        self._due[wid] = now + max(pause, 0.0)
        reason = f"the screen deferred it: {verdict.reason or 'no reason given'}{suffix}"
        fields: dict[str, Any] = {}
        if row.reason_code != SCREENING_DEFERRED or row.reason != reason:
            fields = {"reason_code": SCREENING_DEFERRED, "reason": reason}
        return Step(Status.SCREENING, SubStatus.SCREENING_DEFERRED, fields)
