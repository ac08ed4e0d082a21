"""Authentication of the signer API: every request is signed by an API client's Ed25519 key.

A client (`ApiClientRow`) has scopes, a rate and at most two active keys (`ApiKeyRow`, raw
32-byte public keys; the private key is handed out once at creation or rotation and never
stored).  A request carries four headers:

  X-Tessera-Key        the key id (``k_`` + 16 hex)
  X-Tessera-Timestamp  integer Unix seconds, decimal
  X-Tessera-Nonce      16–64 characters of ``A-Z a-z 0-9 _ -``, never reused with the key
  X-Tessera-Signature  unpadded base64url of the 64-byte Ed25519 signature

over `signing_payload`: ``tessera-request-v1``, the method, the path, the canonical query (its
pairs sorted, so parameter order does not matter but every value is bound), the SHA-256 of the
body, the timestamp and the nonce, joined by newlines.  The server refuses (401) a request
whose headers are missing or malformed, whose key or client is unknown or revoked, whose
timestamp is outside ±window of its clock, whose signature does not verify, or whose nonce was
already seen with the key (nonces are kept for 2×window, longer than any timestamp it accepts,
so a replay is always caught).  Scopes (403) and the per-client token-bucket rate (429) come
after authentication.

`sign_request` and `load_private_key` are the client side and touch no database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from coordinator.api.tables import ApiClientRow, ApiKeyRow, ApiNonceRow
from coordinator.store import CoordinatorStore
from policies.sqlite import Sync
from signer.errors import TesseraError
from signer.problems import ErrorCode

SIGNING_VERSION = "tessera-request-v1"
KEY_HEADER = "X-Tessera-Key"
TIMESTAMP_HEADER = "X-Tessera-Timestamp"
NONCE_HEADER = "X-Tessera-Nonce"
SIGNATURE_HEADER = "X-Tessera-Signature"
HEADERS = (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

#: At most this many active keys per client: the old and the new one during a rotation.
MAX_ACTIVE_KEYS = 2
DEFAULT_RATE_PER_MINUTE = 600

_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_KEY_ID = re.compile(r"k_[0-9a-f]{16}")
# at most 12 digits: a timestamp that long is far outside any window anyway, and it keeps
# int() and the arithmetic on it cheap whatever a client sends
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# 64 bytes are 86 unpadded base64url characters
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")

#: Nonce purge cadence: after this many recorded nonces or this many seconds, whichever first.
_PURGE_EVERY_INSERTS = 1000
_PURGE_EVERY_SECONDS = 60.0


class Scope(StrEnum):
    """What an API client may do; `ADMIN` implies every other scope."""

    WITHDRAWALS_CREATE = "withdrawals:create"
    WITHDRAWALS_READ = "withdrawals:read"
    APPROVALS_WRITE = "approvals:write"
    ADMIN = "admin"


class ApiAuthError(TesseraError):
    """A refusal of the API's authentication, authorisation, rate limit or client management:
    `code` is what clients switch on, `detail` says what is wrong (never a large echo of the
    input), `retry_after` the seconds to wait for `RATE_LIMITED`."""

    def __init__(self, code: ErrorCode, detail: str, *, retry_after: int | None = None) -> None:
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(detail)


def _clip(value: str, limit: int = 40) -> str:
    """A header value as it may appear in a detail: repr'd (no control characters reach a log)
    and cut, so a refusal never grows with what the client sent."""
    shown = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(shown)


def _unauthorized(detail: str) -> ApiAuthError:
    return ApiAuthError(ErrorCode.UNAUTHORIZED, detail)


# --- the signed text (client and server) ----------------------------------------------------------
def canonical_query(query: str) -> str:
    """The query's pairs, sorted and re-encoded: order-free, but every name and value bound
    (blank values kept, so ``?a=`` and ``?`` differ)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(sorted(pairs))


def signing_payload(
    method: str, path: str, query: str, body: bytes, timestamp: str, nonce: str
) -> bytes:
    """The exact bytes a request's signature covers."""
    lines = [
        SIGNING_VERSION,
        method.upper(),
        path,
        canonical_query(query),
        hashlib.sha256(body).hexdigest(),
        timestamp,
        nonce,
    ]
    return "\n".join(lines).encode("utf-8")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_request(
    private_key: Ed25519PrivateKey,
    key_id: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four authentication headers of a request (a fresh nonce unless one is given)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_urlsafe(18) if nonce is None else nonce  # 24 characters
    signature = private_key.sign(signing_payload(method, path, query, body, timestamp, nonce))
    return {
        KEY_HEADER: key_id,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: _b64url(signature),
    }


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An API client's private key from its PEM file (PKCS#8, unencrypted); ValueError if it
    is not an Ed25519 key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the file holds no Ed25519 private key")
    return key


# --- the authenticated caller ---------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """The API client a request was authenticated as, and under which key."""

    client_id: str
    name: str
    key_id: str
    scopes: frozenset[Scope]
    rate_per_minute: int

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


def _parse_scopes(text: str) -> frozenset[Scope]:
    """The stored JSON list of scopes; an unknown value (a newer version's scope) is ignored
    rather than failing every request of the client — it grants nothing here."""
    values = json.loads(text)
    known = {s.value for s in Scope}
    return frozenset(Scope(v) for v in values if isinstance(v, str) and v in known)


class Authenticator:
    """Checks a request's signature headers against the keys in the coordinator's database."""

    def __init__(
        self,
        store: CoordinatorStore,
        *,
        window: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._inserts = 0
        self._purged_at = clock()

    def authenticate(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> Principal:
        """The principal of a signed request, or ApiAuthError(UNAUTHORIZED) naming what failed."""
        # HTTP header names are case-insensitive; a plain dict may come with any casing.
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        values: dict[str, str] = {}
        for name in HEADERS:
            value = lowered.get(name.lower())
            if value is None or value == "":
                raise _unauthorized(f"the {name} header is missing (requests must be signed)")
            values[name] = value
        key_id, stamp = values[KEY_HEADER], values[TIMESTAMP_HEADER]
        nonce, signature_text = values[NONCE_HEADER], values[SIGNATURE_HEADER]
        if not _KEY_ID.fullmatch(key_id):
            raise _unauthorized(f"{KEY_HEADER} {_clip(key_id)} is no key id (k_ + 16 hex)")
        if not _TIMESTAMP.fullmatch(stamp):
            raise _unauthorized(
                f"{TIMESTAMP_HEADER} {_clip(stamp)} is not integer Unix seconds"
            )
        if not _NONCE.fullmatch(nonce):
            raise _unauthorized(
                f"{NONCE_HEADER} must be 16–64 characters of A-Z a-z 0-9 _ - "
                f"(got {len(nonce)} characters)"
            )
        if not _SIGNATURE.fullmatch(signature_text):
            raise _unauthorized(
                f"{SIGNATURE_HEADER} is not an unpadded base64url 64-byte signature"
            )
        signature = _unb64url(signature_text)

        with self.store.session() as session:
            # the key and its client in one statement (every request asks this)
            found = session.exec(
                select(ApiKeyRow, ApiClientRow)
                .join(ApiClientRow, col(ApiClientRow.client_id) == col(ApiKeyRow.client_id))
                .where(ApiKeyRow.key_id == key_id)
            ).first()
        if found is None:
            raise _unauthorized(f"key {key_id} is unknown")
        key, client = found
        if key.revoked_at is not None:
            raise _unauthorized(f"key {key_id} is revoked")
        if client.revoked_at is not None:
            raise _unauthorized(f"client {client.name!r} of key {key_id} is revoked")

        now = self.clock()
        skew = int(stamp) - now
        if abs(skew) > self.window:
            raise _unauthorized(
                f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s off the server's clock "
                f"(window ±{self.window:.0f} s)"
            )

        payload = signing_payload(method, path, query, body, stamp, nonce)
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, payload)
        except (InvalidSignature, ValueError):
            raise _unauthorized(
                "the signature does not verify (method, path, query, body, timestamp and "
                "nonce are signed)"
            ) from None

        # Recorded only after the signature verified, so nobody can fill the table (or burn a
        # client's nonces) without the key; the primary key makes the check and the record
        # one atomic INSERT, safe across workers sharing the database.
        self._record_nonce(key_id, nonce, now)
        return Principal(
            client_id=client.client_id,
            name=client.name,
            key_id=key_id,
            scopes=_parse_scopes(client.scopes),
            rate_per_minute=client.rate_per_minute,
        )

    def _record_nonce(self, key_id: str, nonce: str, now: float) -> None:
        # Without an fsync of its own (policies/sqlite.py): the commit of whatever the request
        # then does is synced and takes the nonce to disk with it.  Only a request that changed
        # nothing (a read, a refusal) can lose its nonce to a power loss — and replaying one
        # changes nothing either.
        with self.store.session(Sync.WITH_NEXT) as session:
            # a plain INSERT, without the ORM's unit of work (every request makes one)
            try:
                session.execute(
                    insert(ApiNonceRow).values(key_id=key_id, nonce=nonce, seen_at=now)
                )
                session.commit()
            except IntegrityError:
                session.rollback()
                raise _unauthorized("the nonce was already used with this key") from None
        with self._lock:
            self._inserts += 1
            due = (
                self._inserts >= _PURGE_EVERY_INSERTS
                or now - self._purged_at >= _PURGE_EVERY_SECONDS
            )
            if due:
                self._inserts, self._purged_at = 0, now
        if due:
            self.purge_nonces(now)

    def purge_nonces(self, now: float | None = None) -> int:
        """Drop nonces older than 2×window: no timestamp they could be replayed with is still
        accepted.  Returns how many were dropped."""
        cutoff = (self.clock() if now is None else now) - 2 * self.window
        with self.store.session() as session:
            result = session.execute(
                delete(ApiNonceRow).where(col(ApiNonceRow.seen_at) < cutoff)
            )
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]

    def require(self, principal: Principal, scope: Scope) -> None:
        """FORBIDDEN unless the principal has `scope` (or admin)."""
        if not principal.allows(scope):
            raise ApiAuthError(
                ErrorCode.FORBIDDEN,
                f"client {principal.name!r} lacks the scope {scope.value!r} this route needs",
            )


# --- rate limits ----------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per client, in memory: capacity `rate_per_minute`, refilled at
    rate_per_minute/60 tokens a second.

    Written here rather than taken from the `limits` package, which is not installed in this
    environment; the bucket is a few lines.  Per process: with several workers each keeps its
    own buckets (the rate is then per worker)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # client_id → (tokens, updated at)

    def check(self, principal: Principal) -> None:
        """Take one token of the principal's bucket, or RATE_LIMITED with retry_after."""
        capacity = float(max(principal.rate_per_minute, 0))
        per_second = capacity / 60.0
        with self._lock:
            now = self.clock()
            tokens, updated = self._buckets.get(principal.client_id, (capacity, now))
            # a rate lowered since the bucket filled: never more than the new capacity
            tokens = min(capacity, tokens + max(now - updated, 0.0) * per_second)
            if tokens >= 1.0:
                self._buckets[principal.client_id] = (tokens - 1.0, now)
                return
            self._buckets[principal.client_id] = (tokens, now)
        # seconds until the bucket holds one whole token again
        retry = 60 if per_second <= 0 else max(1, math.ceil((1.0 - tokens) / per_second))
        raise ApiAuthError(
            ErrorCode.RATE_LIMITED,
            f"client {principal.name!r} is over its rate of {principal.rate_per_minute} "
            f"requests per minute; retry in {retry} s",
            retry_after=retry,
        )


# --- client management ----------------------------------------------------------------------------
@dataclass(frozen=True)
class IssuedKey:
    """A key just issued: the private key PEM is here once and stored nowhere."""

    client_id: str
    name: str
    key_id: str
    private_key_pem: bytes


@dataclass(frozen=True)
class KeyView:
    key_id: str
    created_at: float


@dataclass(frozen=True)
class ClientView:
    name: str
    client_id: str
    scopes: tuple[str, ...]
    rate_per_minute: int
    created_at: float
    revoked_at: float | None
    active_keys: tuple[KeyView, ...]


def _new_key(client_id: str, now: float) -> tuple[ApiKeyRow, bytes]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    row = ApiKeyRow(
        key_id="k_" + secrets.token_hex(8), client_id=client_id, public_key=public, created_at=now
    )
    return row, pem


class ApiClients:
    """Creating, rotating, revoking and listing API clients and their keys."""

    def __init__(
        self, store: CoordinatorStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.clock = clock

    @staticmethod
    def _scopes(scopes: Iterable[str]) -> list[str]:
        chosen: list[str] = []
        known = {s.value for s in Scope}
        for scope in scopes:
            if scope not in known:
                raise ApiAuthError(
                    ErrorCode.VALIDATION,
                    f"unknown scope {_clip(str(scope))} (one of {', '.join(sorted(known))})",
                )
            if scope not in chosen:
                chosen.append(scope)
        if not chosen:
            raise ApiAuthError(ErrorCode.VALIDATION, "a client needs at least one scope")
        return chosen

    def create(
        self, name: str, scopes: Iterable[str], rate_per_minute: int = DEFAULT_RATE_PER_MINUTE
    ) -> IssuedKey:
        if not NAME_PATTERN.fullmatch(name):
            raise ApiAuthError(
                ErrorCode.VALIDATION,
                f"client name {_clip(name)} must match ^[a-z0-9][a-z0-9_.-]{{0,63}}$",
            )
        chosen = self._scopes(scopes)
        if rate_per_minute < 1:
            raise ApiAuthError(ErrorCode.VALIDATION, "the rate must be at least 1 per minute")
        now = self.clock()
        client = ApiClientRow(
            client_id="c_" + secrets.token_hex(8),
            name=name,
            scopes=json.dumps(chosen),
            rate_per_minute=rate_per_minute,
            created_at=now,
        )
        key, pem = _new_key(client.client_id, now)
        with self.store.session() as session:
            if session.exec(select(ApiClientRow).where(ApiClientRow.name == name)).first():
                raise ApiAuthError(ErrorCode.VALIDATION, f"a client named {name!r} exists")
            session.add(client)
            session.add(key)
            try:
                session.commit()
            except IntegrityError:  # created concurrently under the same name
                session.rollback()
                raise ApiAuthError(
                    ErrorCode.VALIDATION, f"a client named {name!r} exists"
                ) from None
        return IssuedKey(client.client_id, name, key.key_id, pem)

    def _client(self, name: str) -> ApiClientRow:
        with self.store.session() as session:
            client = session.exec(select(ApiClientRow).where(ApiClientRow.name == name)).first()
        if client is None:
            raise ApiAuthError(ErrorCode.NOT_FOUND, f"no API client named {_clip(name)}")
        return client

    def rotate(self, name: str) -> IssuedKey:
        """A new key for the client; with two active already, the older of them is revoked,
        so at most two are ever active (the old and the new during a switch)."""
        client = self._client(name)
        if client.revoked_at is not None:
            raise ApiAuthError(ErrorCode.VALIDATION, f"client {name!r} is revoked")
        now = self.clock()
        key, pem = _new_key(client.client_id, now)
        with self.store.session() as session:
            active = list(
                session.exec(
                    select(ApiKeyRow)
                    .where(
                        ApiKeyRow.client_id == client.client_id,
                        col(ApiKeyRow.revoked_at).is_(None),
                    )
                    .order_by(col(ApiKeyRow.created_at))
                )
            )
            for old in active[: max(0, len(active) - (MAX_ACTIVE_KEYS - 1))]:
                old.revoked_at = now
                session.add(old)
            session.add(key)
            session.commit()
        return IssuedKey(client.client_id, name, key.key_id, pem)

    def revoke(self, name: str, key_id: str | None = None) -> None:
        """Revoke one key of the client, or (key_id None) the client and all its keys."""
        client = self._client(name)
        now = self.clock()
        with self.store.session() as session:
            if key_id is None:
                row = session.get(ApiClientRow, client.client_id)
                if row is None:  # deleted under us: never by this service
                    raise ApiAuthError(ErrorCode.CORRUPT, f"client {name} vanished")
                if row.revoked_at is None:
                    row.revoked_at = now
                    session.add(row)
                keys = session.exec(
                    select(ApiKeyRow).where(ApiKeyRow.client_id == client.client_id)
                )
                for each in keys:
                    if each.revoked_at is None:
                        each.revoked_at = now
                        session.add(each)
            else:
                key = session.get(ApiKeyRow, key_id)
                if key is None or key.client_id != client.client_id:
                    raise ApiAuthError(
                        ErrorCode.NOT_FOUND, f"client {name!r} has no key {_clip(key_id)}"
                    )
                if key.revoked_at is None:
                    key.revoked_at = now
                    session.add(key)
            session.commit()

    def list(self) -> list[ClientView]:
        with self.store.session() as session:
            clients = list(
                session.exec(select(ApiClientRow).order_by(col(ApiClientRow.created_at)))
            )
            keys = list(
                session.exec(
                    select(ApiKeyRow)
                    .where(col(ApiKeyRow.revoked_at).is_(None))
                    .order_by(col(ApiKeyRow.created_at))
                )
            )
        views = []
        for client in clients:
            views.append(
                ClientView(
                    name=client.name,
                    client_id=client.client_id,
                    scopes=tuple(json.loads(client.scopes)),
                    rate_per_minute=client.rate_per_minute,
                    created_at=client.created_at,
                    revoked_at=client.revoked_at,
                    active_keys=tuple(
                        KeyView(k.key_id, k.created_at)
                        for k in keys
                        if k.client_id == client.client_id
                    ),
                )
            )
        return views
