"""The signer API's request signing, scopes, rate limits and client management
(coordinator/api/auth.py, coordinator/api/clients_cli.py), on real SQLite files."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from coordinator.api.auth import (
    ApiAuthError,
    ApiClients,
    Authenticator,
    IssuedKey,
    Principal,
    RateLimiter,
    Scope,
    canonical_query,
    load_private_key,
    sign_request,
    signing_payload,
)
from coordinator.api.clients_cli import clients_app
from coordinator.store import CoordinatorStore
from signer.problems import ErrorCode

NOW = 1_800_000_000.0
BODY = b'{"amount":"1.5"}'
PATH = "/v1/withdrawals"
QUERY = "status=queued&limit=10"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CoordinatorStore]:
    s = CoordinatorStore(tmp_path / "c.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(store: CoordinatorStore, clock: Clock) -> Authenticator:
    return Authenticator(store, clock=clock)


@pytest.fixture
def issued(store: CoordinatorStore) -> IssuedKey:
    return ApiClients(store).create("exchange", ["withdrawals:create", "withdrawals:read"])


def signed(
    issued: IssuedKey,
    method: str = "POST",
    path: str = PATH,
    query: str = QUERY,
    body: bytes = BODY,
    *,
    now: float = NOW,
    nonce: str | None = None,
    key: Ed25519PrivateKey | None = None,
) -> dict[str, str]:
    private = key or load_private_key(issued.private_key_pem)
    return sign_request(private, issued.key_id, method, path, query, body, now=now, nonce=nonce)


def refused(auth: Authenticator, headers: dict[str, str], **changes: object) -> ApiAuthError:
    request: dict[str, object] = {
        "method": "POST", "path": PATH, "query": QUERY, "body": BODY, "headers": headers
    }
    request.update(changes)
    with pytest.raises(ApiAuthError) as caught:
        auth.authenticate(**request)  # type: ignore[arg-type]
    return caught.value


# --- signing -------------------------------------------------------------------------------------
def test_signed_request_authenticates(auth: Authenticator, issued: IssuedKey) -> None:
    principal = auth.authenticate("POST", PATH, QUERY, BODY, signed(issued))
    assert principal.client_id == issued.client_id
    assert principal.name == "exchange"
    assert principal.key_id == issued.key_id
    assert principal.scopes == {Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ}
    assert principal.rate_per_minute == 600


def test_header_names_are_case_insensitive(auth: Authenticator, issued: IssuedKey) -> None:
    headers = {k.lower(): v for k, v in signed(issued).items()}
    headers = {k.upper() if "nonce" in k else k: v for k, v in headers.items()}
    assert auth.authenticate("post", PATH, QUERY, BODY, headers).key_id == issued.key_id


def test_payload_layout() -> None:
    payload = signing_payload("get", "/v1/x", "b=2&a=1&a=", b"", "17", "n" * 16)
    lines = payload.decode().split("\n")
    assert lines[0] == "tessera-request-v1"
    assert lines[1] == "GET"
    assert lines[3] == "a=&a=1&b=2"
    assert lines[4] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert lines[5:] == ["17", "n" * 16]


def test_query_order_does_not_matter(auth: Authenticator, issued: IssuedKey) -> None:
    headers = signed(issued, query="a=1&b=2&b=3")
    assert canonical_query("b=2&a=1&b=3") == canonical_query("a=1&b=2&b=3")
    auth.authenticate("POST", PATH, "b=2&a=1&b=3", BODY, headers)


def test_missing_header(auth: Authenticator, issued: IssuedKey) -> None:
    headers = signed(issued)
    del headers["X-Tessera-Signature"]
    error = refused(auth, headers)
    assert error.code is ErrorCode.UNAUTHORIZED
    assert "X-Tessera-Signature header is missing" in error.detail


@pytest.mark.parametrize("nonce", ["short", "x" * 65, "has space in it!!", "ü" * 20])
def test_malformed_nonce(auth: Authenticator, issued: IssuedKey, nonce: str) -> None:
    headers = signed(issued)
    headers["X-Tessera-Nonce"] = nonce
    error = refused(auth, headers)
    assert error.code is ErrorCode.UNAUTHORIZED
    assert "X-Tessera-Nonce must be 16–64 characters" in error.detail
    assert nonce not in error.detail or len(nonce) < 16


def test_unknown_key(auth: Authenticator, issued: IssuedKey) -> None:
    headers = signed(issued)
    headers["X-Tessera-Key"] = "k_0000000000000000"
    error = refused(auth, headers)
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.detail == "key k_0000000000000000 is unknown"


def test_revoked_key(store: CoordinatorStore, auth: Authenticator, issued: IssuedKey) -> None:
    ApiClients(store).revoke("exchange", issued.key_id)
    error = refused(auth, signed(issued))
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.detail == f"key {issued.key_id} is revoked"


def test_revoked_client(store: CoordinatorStore, auth: Authenticator, issued: IssuedKey) -> None:
    second = ApiClients(store).rotate("exchange")
    ApiClients(store).revoke("exchange")
    for key in (issued, second):
        error = refused(auth, signed(key))
        assert error.code is ErrorCode.UNAUTHORIZED
        assert "revoked" in error.detail


def test_revoked_client_with_active_key_row(
    store: CoordinatorStore, auth: Authenticator, issued: IssuedKey
) -> None:
    """The client's own revocation is checked even if a key row were left active."""
    from coordinator.api.tables import ApiClientRow

    with store.session() as session:
        row = session.get(ApiClientRow, issued.client_id)
        assert row is not None
        row.revoked_at = NOW
        session.add(row)
        session.commit()
    error = refused(auth, signed(issued))
    assert error.detail == f"client 'exchange' of key {issued.key_id} is revoked"


@pytest.mark.parametrize("offset", [-45, 45])
def test_timestamp_outside_window(auth: Authenticator, issued: IssuedKey, offset: int) -> None:
    error = refused(auth, signed(issued, now=NOW + offset))
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.detail == (
        "X-Tessera-Timestamp is 45 s off the server's clock (window ±30 s)"
    )


def test_timestamp_inside_window(auth: Authenticator, issued: IssuedKey) -> None:
    auth.authenticate("POST", PATH, QUERY, BODY, signed(issued, now=NOW - 29))
    auth.authenticate("POST", PATH, QUERY, BODY, signed(issued, now=NOW + 29))


def test_replayed_nonce(auth: Authenticator, issued: IssuedKey) -> None:
    headers = signed(issued)
    auth.authenticate("POST", PATH, QUERY, BODY, headers)
    error = refused(auth, headers)
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.detail == "the nonce was already used with this key"
    # the same nonce under a fresh signature (another timestamp) is a replay too
    error = refused(auth, signed(issued, now=NOW + 1, nonce=headers["X-Tessera-Nonce"]))
    assert error.detail == "the nonce was already used with this key"


def test_nonces_are_purged_after_twice_the_window(
    auth: Authenticator, issued: IssuedKey, clock: Clock
) -> None:
    auth.authenticate("POST", PATH, QUERY, BODY, signed(issued))
    assert auth.purge_nonces(NOW + 59) == 0
    assert auth.purge_nonces(NOW + 61) == 1


SIGNATURE_FAILS = "the signature does not verify"


def test_wrong_key(auth: Authenticator, issued: IssuedKey) -> None:
    error = refused(auth, signed(issued, key=Ed25519PrivateKey.generate()))
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.detail.startswith(SIGNATURE_FAILS)


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"amount":"150"}'},
        {"path": "/v1/withdrawals/w_1/cancel"},
        {"query": "status=queued&limit=11"},
        {"query": "status=queued"},
        {"method": "GET"},
    ],
    ids=["body", "path", "query", "query-dropped", "method"],
)
def test_changed_after_signing(
    auth: Authenticator, issued: IssuedKey, change: dict[str, object]
) -> None:
    error = refused(auth, signed(issued), **change)
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.detail == (
        "the signature does not verify (method, path, query, body, timestamp and nonce are "
        "signed)"
    )


def test_failed_signature_records_no_nonce(auth: Authenticator, issued: IssuedKey) -> None:
    headers = signed(issued)
    refused(auth, headers, body=b"other")
    auth.authenticate("POST", PATH, QUERY, BODY, headers)  # the nonce is still unused


_HEADER_TEXT = st.text(max_size=200)
_NAMES = st.sampled_from(
    ["X-Tessera-Key", "X-Tessera-Timestamp", "X-Tessera-Nonce", "X-Tessera-Signature", "x"]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    replaced=st.dictionaries(_NAMES, _HEADER_TEXT, max_size=5),
    dropped=st.sets(_NAMES, max_size=2),
)
def test_random_headers_raise_only_auth_errors(
    auth: Authenticator, issued: IssuedKey, replaced: dict[str, str], dropped: set[str]
) -> None:
    headers = signed(issued)
    headers.update(replaced)
    for name in dropped:
        headers.pop(name, None)
    try:
        auth.authenticate("POST", PATH, QUERY, BODY, headers)
    except ApiAuthError as exc:
        assert exc.code is ErrorCode.UNAUTHORIZED
        assert len(exc.detail) < 200


# --- scopes --------------------------------------------------------------------------------------
def _principal(*scopes: Scope, rate: int = 600) -> Principal:
    return Principal("c_1", "svc", "k_0000000000000001", frozenset(scopes), rate)


def test_wrong_scope_is_forbidden(auth: Authenticator) -> None:
    principal = _principal(Scope.WITHDRAWALS_READ)
    auth.require(principal, Scope.WITHDRAWALS_READ)
    with pytest.raises(ApiAuthError) as caught:
        auth.require(principal, Scope.APPROVALS_WRITE)
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert "'approvals:write'" in caught.value.detail


def test_admin_implies_every_scope(auth: Authenticator) -> None:
    admin = _principal(Scope.ADMIN)
    for scope in Scope:
        assert admin.allows(scope)
        auth.require(admin, scope)


# --- rotation ------------------------------------------------------------------------------------
def test_rotation_keeps_two_keys_and_revokes_the_oldest(
    store: CoordinatorStore, auth: Authenticator, issued: IssuedKey, clock: Clock
) -> None:
    clients = ApiClients(store, clock=clock)
    clock.now += 1
    second = clients.rotate("exchange")
    for key in (issued, second):
        auth.authenticate("POST", PATH, QUERY, BODY, signed(key))
    clock.now += 1
    third = clients.rotate("exchange")
    assert refused(auth, signed(issued, now=clock.now)).detail == f"key {issued.key_id} is revoked"
    for key in (second, third):
        auth.authenticate("POST", PATH, QUERY, BODY, signed(key, now=clock.now))
    (view,) = clients.list()
    assert [k.key_id for k in view.active_keys] == [second.key_id, third.key_id]


def test_management_errors(store: CoordinatorStore, issued: IssuedKey) -> None:
    clients = ApiClients(store)
    cases: list[tuple[Callable[[], object], ErrorCode, str]] = [
        (lambda: clients.create("exchange", ["admin"]), ErrorCode.VALIDATION, "exists"),
        (lambda: clients.create("Bad Name", ["admin"]), ErrorCode.VALIDATION, "must match"),
        (lambda: clients.create("ok", ["root"]), ErrorCode.VALIDATION, "unknown scope"),
        (lambda: clients.rotate("nobody"), ErrorCode.NOT_FOUND, "no API client"),
        (lambda: clients.revoke("exchange", "k_ffffffffffffffff"), ErrorCode.NOT_FOUND, "no key"),
    ]
    for call, code, text in cases:
        with pytest.raises(ApiAuthError) as caught:
            call()
        assert caught.value.code is code
        assert text in caught.value.detail


def test_only_the_public_key_is_stored(store: CoordinatorStore, issued: IssuedKey) -> None:
    from coordinator.api.tables import ApiKeyRow

    with store.session() as session:
        row = session.get(ApiKeyRow, issued.key_id)
    assert row is not None and len(row.public_key) == 32
    assert issued.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


# --- rate limits ---------------------------------------------------------------------------------
def test_rate_limit_and_recovery() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    principal = _principal(Scope.ADMIN, rate=6)  # one token every 10 s
    for _ in range(6):
        limiter.check(principal)
    with pytest.raises(ApiAuthError) as caught:
        limiter.check(principal)
    assert caught.value.code is ErrorCode.RATE_LIMITED
    assert caught.value.retry_after == 10
    clock.now = 4.0
    with pytest.raises(ApiAuthError) as caught:
        limiter.check(principal)
    assert caught.value.retry_after == 6
    clock.now = 10.0
    limiter.check(principal)
    other = Principal("c_2", "other", "k_0000000000000002", frozenset({Scope.ADMIN}), 6)
    limiter.check(other)  # buckets are per client


# --- the CLI -------------------------------------------------------------------------------------
runner = CliRunner()


def _run(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(clients_app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    key1 = tmp_path / "k1.pem"
    code, doc = _run(
        "create", "exchange", "--scope", "withdrawals:create", "--scope", "withdrawals:read",
        "--rate", "120", "--db", db, "--out", str(key1),
    )
    assert code == 0, doc
    assert str(doc["key_id"]).startswith("k_") and str(doc["client_id"]).startswith("c_")
    assert stat.S_IMODE(os.stat(key1).st_mode) == 0o600
    load_private_key(key1.read_bytes())

    # a duplicate name is refused (exit 1), and the refused command writes no key
    code, doc = _run(
        "create", "exchange", "--scope", "admin", "--db", db, "--out", str(tmp_path / "dup.pem")
    )
    assert code == 1
    assert doc == {"error": {"code": "VALIDATION", "detail": "a client named 'exchange' exists"}}
    assert not (tmp_path / "dup.pem").exists()

    code, doc = _run("create", "x", "--scope", "root", "--db", db, "--out", str(tmp_path / "x"))
    assert code == 1 and doc["error"]["code"] == "VALIDATION"

    # never over an existing file
    code, doc = _run("rotate", "exchange", "--db", db, "--out", str(key1))
    assert code == 1 and "exists" in doc["error"]["detail"]

    key2 = tmp_path / "k2.pem"
    code, rotated = _run("rotate", "exchange", "--db", db, "--out", str(key2))
    assert code == 0 and key2.exists()

    code, listed = _run("list", "--db", db)
    assert code == 0
    (client,) = listed["clients"]
    assert client["name"] == "exchange" and client["rate_per_minute"] == 120
    assert client["scopes"] == ["withdrawals:create", "withdrawals:read"]
    assert len(client["active_keys"]) == 2

    code, doc = _run("revoke", "exchange", "--key", str(rotated["key_id"]), "--db", db)
    assert code == 0
    code, doc = _run("revoke", "nobody", "--db", db)
    assert code == 1 and doc["error"]["code"] == "NOT_FOUND"
    code, doc = _run("revoke", "exchange", "--db", db)
    assert code == 0
    code, listed = _run("list", "--db", db)
    (client,) = listed["clients"]
    assert client["revoked_at"] is not None and client["active_keys"] == []


def test_cli_usage_error_is_json(tmp_path: Path) -> None:
    code, doc = _run("create", "exchange", "--db", str(tmp_path / "c.db"))
    assert code == 2
    assert doc["error"]["code"] == "USAGE"
