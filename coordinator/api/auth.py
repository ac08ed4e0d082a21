"""Who may call the signer API: API clients with scopes and Ed25519 keys, signed requests,
the nonce replay store, and per-client rate limits (docs/api.md, "Authentication").

A request carries four headers — the key id, a timestamp, a nonce and the signature — and the
signature covers the method, the path, the query (its pairs sorted), the SHA-256 of the body,
the timestamp and the nonce (custody.md §2.6).  So a request cannot be replayed (the nonce is
stored, and the timestamp must be within ±30 s, so the store only needs a minute of nonces),
nor changed in any part, nor moved to another route.  A client holds at most two active keys
(rotation); a revoked key, or any key of a revoked client, never verifies again.

The private key is made here and shown once (`ApiClients.create`/`rotate`); only the raw
public key is stored.
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
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from coordinator.api.tables import ApiClientRow, ApiKeyRow, ApiNonceRow
from coordinator.store import CoordinatorStore
from signer.errors import TesseraError
from signer.problems import ErrorCode

KEY_HEADER: Final = "x-tessera-key"
TIMESTAMP_HEADER: Final = "x-tessera-timestamp"
NONCE_HEADER: Final = "x-tessera-nonce"
SIGNATURE_HEADER: Final = "x-tessera-signature"
SIGNED_VERSION: Final = "tessera-request-v1"
#: Active keys per client: the old and the new one while a client switches.
MAX_ACTIVE_KEYS: Final = 2

_KEY_ID = re.compile(r"^k_[0-9a-f]{16}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{86}$")  # 64 bytes, unpadded base64url
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class Scope(StrEnum):
    WITHDRAWALS_CREATE = "withdrawals:create"
    WITHDRAWALS_READ = "withdrawals:read"
    APPROVALS_WRITE = "approvals:write"
    #: every other scope, and every client's withdrawals
    ADMIN = "admin"


class ApiAuthError(TesseraError):
    """A request or a management call refused: `code` (UNAUTHORIZED, FORBIDDEN,
    RATE_LIMITED, VALIDATION, NOT_FOUND), what failed in `detail`, and for a rate limit the
    seconds to wait."""

    def __init__(self, code: ErrorCode, detail: str, retry_after: int | None = None) -> None:
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(detail)


def _clip(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_query(query: str) -> str:
    """The query's pairs sorted and re-encoded: parameter order does not matter, every
    value is bound."""
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def signing_payload(
    method: str, path: str, query: str, body: bytes, timestamp: str, nonce: str
) -> bytes:
    """The bytes a request's signature covers (docs/api.md)."""
    lines = [
        SIGNED_VERSION,
        method.upper(),
        path,
        canonical_query(query),
        hashlib.sha256(body).hexdigest(),
        timestamp,
        nonce,
    ]
    return "\n".join(lines).encode()


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
    """The four headers of a signed request (the client's side; no database here)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_urlsafe(18)
    signature = private_key.sign(signing_payload(method, path, query, body, timestamp, nonce))
    return {
        "X-Tessera-Key": key_id,
        "X-Tessera-Timestamp": timestamp,
        "X-Tessera-Nonce": nonce,
        "X-Tessera-Signature": _b64(signature),
    }


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An API client's private key from the PEM `create`/`rotate` wrote."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class Principal:
    """The verified caller of one request."""

    client_id: str
    name: str
    key_id: str
    scopes: frozenset[Scope]
    rate_per_minute: int

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


class Authenticator:
    """Verifies signed requests against the keys in the coordinator's database."""

    #: the nonce table is purged of entries older than twice the window this often
    PURGE_EVERY: Final = 60.0

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
        self._purged = 0.0

    def _refuse(self, detail: str) -> ApiAuthError:
        return ApiAuthError(ErrorCode.UNAUTHORIZED, detail)

    def _header(self, headers: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str:
        value = headers.get(name)
        if value is None:
            # a starlette Headers is case-insensitive; a plain dict may have any casing
            value = next((v for k, v in headers.items() if k.lower() == name), None)
        if value is None:
            raise self._refuse(f"the request is not signed: {name} is missing")
        if not pattern.match(value):
            raise self._refuse(f"{name} is malformed ({_clip(value)!r})")
        return value

    def authenticate(
        self, method: str, path: str, query: str, body: bytes, headers: Mapping[str, str]
    ) -> Principal:
        key_id = self._header(headers, KEY_HEADER, _KEY_ID)
        timestamp = self._header(headers, TIMESTAMP_HEADER, _TIMESTAMP)
        nonce = self._header(headers, NONCE_HEADER, _NONCE)
        signature = self._header(headers, SIGNATURE_HEADER, _SIGNATURE)
        with self.store.session() as session:
            key = session.get(ApiKeyRow, key_id)
            client = None if key is None else session.get(ApiClientRow, key.client_id)
        if key is None or client is None:
            raise self._refuse(f"unknown key {key_id}")
        if key.revoked_at is not None:
            raise self._refuse(f"key {key_id} is revoked")
        if client.revoked_at is not None:
            raise self._refuse(f"client {client.name} is revoked")
        now = self.clock()
        skew = int(timestamp) - now
        if abs(skew) > self.window:
            raise self._refuse(
                f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'}"
                f" the server's clock (window ±{self.window:.0f} s)"
            )
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(
                _unb64(signature), signing_payload(method, path, query, body, timestamp, nonce)
            )
        except (InvalidSignature, ValueError):
            raise self._refuse(
                "the signature does not verify (the method, path, query, body, timestamp and "
                "nonce are signed)"
            ) from None
        self._record_nonce(key_id, nonce, now)
        return Principal(
            client_id=client.client_id,
            name=client.name,
            key_id=key_id,
            scopes=frozenset(Scope(s) for s in json.loads(client.scopes)),
            rate_per_minute=client.rate_per_minute,
        )

    def _record_nonce(self, key_id: str, nonce: str, now: float) -> None:
        """Store the nonce; one seen before under the key is a replay.  Only a verified
        request's nonce is stored, so nobody can fill the table without a key."""
        try:
            with self.store.session() as session:
                if now - self._purged > self.PURGE_EVERY:
                    self._purged = now
                    session.execute(
                        delete(ApiNonceRow).where(col(ApiNonceRow.seen_at) < now - 2 * self.window)
                    )
                session.add(ApiNonceRow(key_id=key_id, nonce=nonce, seen_at=now))
                session.commit()
        except IntegrityError:
            raise self._refuse("the nonce was already used with this key (a replay)") from None

    @staticmethod
    def require(principal: Principal, scope: Scope) -> None:
        if not principal.allows(scope):
            raise ApiAuthError(
                ErrorCode.FORBIDDEN,
                f"client {principal.name} lacks the scope {scope.value} this route needs",
            )


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Requests per minute per client, as a token bucket (capacity: a minute's requests,
    refilled continuously).  In memory: one service process holds it.  Hand-written because
    no rate-limit library is among the dependencies and the bucket is a dozen lines."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, principal: Principal) -> None:
        rate = max(1, principal.rate_per_minute)
        per_second = rate / 60.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault(principal.client_id, _Bucket(float(rate), now))
            bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.at) * per_second)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = math.ceil((1.0 - bucket.tokens) / per_second)
        raise ApiAuthError(
            ErrorCode.RATE_LIMITED,
            f"client {principal.name} is over its {rate} requests per minute",
            retry_after=max(1, wait),
        )


# --- managing clients and keys -------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    """A new key: its private half is here once and never stored."""

    client_id: str
    name: str
    key_id: str
    private_key_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class ClientView:
    name: str
    client_id: str
    scopes: list[str]
    rate_per_minute: int
    created_at: float
    revoked_at: float | None
    keys: list[dict[str, float | str]]


def _scopes(scopes: Iterable[str]) -> list[str]:
    chosen = []
    for scope in scopes:
        try:
            chosen.append(Scope(scope).value)
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ApiAuthError(
                ErrorCode.VALIDATION, f"unknown scope {_clip(str(scope))!r} (known: {known})"
            ) from None
    if not chosen:
        raise ApiAuthError(ErrorCode.VALIDATION, "a client needs at least one scope")
    return sorted(set(chosen))


class ApiClients:
    """`tessera api-client create|rotate|revoke|list` on the coordinator's database."""

    def __init__(self, store: CoordinatorStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def _client(self, name: str) -> ApiClientRow:
        with self.store.session() as session:
            row = session.exec(select(ApiClientRow).where(ApiClientRow.name == name)).first()
        if row is None:
            raise ApiAuthError(ErrorCode.NOT_FOUND, f"no API client {_clip(name)!r}")
        return row

    def _new_key(self, client: ApiClientRow) -> tuple[ApiKeyRow, IssuedKey]:
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key_id = "k_" + secrets.token_hex(8)
        row = ApiKeyRow(
            key_id=key_id, client_id=client.client_id, public_key=public, created_at=self.clock()
        )
        return row, IssuedKey(client.client_id, client.name, key_id, pem)

    def create(self, name: str, scopes: Iterable[str], rate_per_minute: int = 600) -> IssuedKey:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ApiAuthError(
                ErrorCode.VALIDATION,
                "a client name is 1-64 of a-z 0-9 _ . - (a letter or digit first)",
            )
        if not 1 <= rate_per_minute <= 1_000_000:
            raise ApiAuthError(ErrorCode.VALIDATION, "the rate is 1 to 1,000,000 per minute")
        client = ApiClientRow(
            client_id="c_" + secrets.token_hex(8),
            name=name,
            scopes=json.dumps(_scopes(scopes)),
            rate_per_minute=rate_per_minute,
            created_at=self.clock(),
        )
        key, issued = self._new_key(client)
        try:
            with self.store.session() as session:
                session.add(client)
                session.add(key)
                session.commit()
        except IntegrityError:
            raise ApiAuthError(
                ErrorCode.VALIDATION, f"an API client named {name!r} exists"
            ) from None
        return issued

    def _active(self, client_id: str) -> list[ApiKeyRow]:
        with self.store.session() as session:
            return list(
                session.exec(
                    select(ApiKeyRow)
                    .where(ApiKeyRow.client_id == client_id)
                    .where(col(ApiKeyRow.revoked_at).is_(None))
                    .order_by(col(ApiKeyRow.created_at))
                )
            )

    def rotate(self, name: str) -> IssuedKey:
        """A new key beside the current one; with two active already, the older is revoked."""
        client = self._client(name)
        if client.revoked_at is not None:
            raise ApiAuthError(ErrorCode.VALIDATION, f"client {name} is revoked")
        key, issued = self._new_key(client)
        now = self.clock()
        with self.store.session() as session:
            active = self._active(client.client_id)
            for old in active[: max(0, len(active) - (MAX_ACTIVE_KEYS - 1))]:
                stored = session.get(ApiKeyRow, old.key_id)
                if stored is None:  # deleted under us: never by this service
                    raise ApiAuthError(ErrorCode.CORRUPT, "stored vanished during the update")
                stored.revoked_at = now
                session.add(stored)
            session.add(key)
            session.commit()
        return issued

    def revoke(self, name: str, key_id: str | None = None) -> None:
        """Revoke one key of the client, or the whole client."""
        client = self._client(name)
        now = self.clock()
        with self.store.session() as session:
            if key_id is None:
                stored_client = session.get(ApiClientRow, client.client_id)
                if stored_client is None:  # deleted under us: never by this service
                    raise ApiAuthError(ErrorCode.CORRUPT, "the client vanished during the update")
                stored_client.revoked_at = stored_client.revoked_at or now
                session.add(stored_client)
            else:
                key = session.get(ApiKeyRow, key_id)
                if key is None or key.client_id != client.client_id:
                    raise ApiAuthError(
                        ErrorCode.NOT_FOUND, f"client {name} has no key {_clip(key_id)!r}"
                    )
                key.revoked_at = key.revoked_at or now
                session.add(key)
            session.commit()

    def clients(self) -> list[ClientView]:
        with self.store.session() as session:
            clients = list(session.exec(select(ApiClientRow).order_by(col(ApiClientRow.name))))
        return [
            ClientView(
                name=c.name,
                client_id=c.client_id,
                scopes=json.loads(c.scopes),
                rate_per_minute=c.rate_per_minute,
                created_at=c.created_at,
                revoked_at=c.revoked_at,
                keys=[
                    {"key_id": k.key_id, "created_at": k.created_at}
                    for k in self._active(c.client_id)
                ],
            )
            for c in clients
        ]
