"""Who may call the signer API (coordinator/api/auth.py, docs/api.md "Authentication"): every
refusal of a signed request with what failed, scopes, rotation and revocation, the rate limit,
and `tessera api-client` — on a real coordinator database."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
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
    load_private_key,
    sign_request,
)
from coordinator.api.clients_cli import clients_app
from coordinator.store import CoordinatorStore
from signer.problems import ErrorCode

NOW = 1_800_000_000.0
BODY = b'{"amount":"1.5"}'
PATH = "/v1/withdrawals"


class Clock:
    def __init__(self, at: float = NOW) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CoordinatorStore]:
    s = CoordinatorStore(tmp_path / "coordinator.db")
    yield s
    s.close()


@pytest.fixture
def clients(store: CoordinatorStore) -> ApiClients:
    return ApiClients(store)


@pytest.fixture
def issued(clients: ApiClients) -> IssuedKey:
    return clients.create("exchange", [Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ])


@pytest.fixture
def auth(store: CoordinatorStore) -> Authenticator:
    return Authenticator(store, clock=Clock())


def signed(
    issued: IssuedKey,
    *,
    method: str = "POST",
    path: str = PATH,
    query: str = "",
    body: bytes = BODY,
    now: float = NOW,
    key: Ed25519PrivateKey | None = None,
) -> dict[str, str]:
    private = key or load_private_key(issued.private_key_pem)
    return sign_request(private, issued.key_id, method, path, query, body, now=now)


def refused(auth: Authenticator, headers: dict[str, str], **request: object) -> ApiAuthError:
    args = {"method": "POST", "path": PATH, "query": "", "body": BODY, **request}
    with pytest.raises(ApiAuthError) as err:
        auth.authenticate(
            str(args["method"]),
            str(args["path"]),
            str(args["query"]),
            args["body"],
            headers,  # type: ignore[arg-type]
        )
    return err.value


def test_a_signed_request_authenticates_as_its_client(
    auth: Authenticator, issued: IssuedKey
) -> None:
    principal = auth.authenticate("POST", PATH, "", BODY, signed(issued))
    assert principal.name == "exchange" and principal.key_id == issued.key_id
    assert principal.scopes == {Scope.WITHDRAWALS_CREATE, Scope.WITHDRAWALS_READ}
    # header names are case-insensitive
    lowered = {k.lower(): v for k, v in signed(issued).items()}
    assert auth.authenticate("POST", PATH, "", BODY, lowered).client_id == issued.client_id


@pytest.mark.parametrize(
    "change, words",
    [
        ({"method": "PUT"}, "does not verify"),
        ({"path": "/v1/withdrawals/x/cancel"}, "does not verify"),
        ({"query": "limit=5"}, "does not verify"),
        ({"body": b'{"amount":"15"}'}, "does not verify"),
    ],
    ids=["method", "path", "query", "body changed after signing"],
)
def test_anything_changed_after_signing_is_refused(
    auth: Authenticator, issued: IssuedKey, change: dict[str, object], words: str
) -> None:
    problem = refused(auth, signed(issued), **change)
    assert problem.code == ErrorCode.UNAUTHORIZED and words in problem.detail


def test_the_order_of_query_parameters_does_not_matter(
    auth: Authenticator, issued: IssuedKey
) -> None:
    headers = signed(issued, method="GET", query="b=2&a=1&a=0", body=b"")
    principal = auth.authenticate("GET", PATH, "a=1&a=0&b=2", b"", headers)
    assert principal.name == "exchange"


def test_unsigned_malformed_and_unknown(auth: Authenticator, issued: IssuedKey) -> None:
    assert "missing" in refused(auth, {}).detail
    good = signed(issued)
    for header in good:
        partial = {k: v for k, v in good.items() if k != header}
        assert header.lower() in refused(auth, partial).detail
    assert "malformed" in refused(auth, {**good, "X-Tessera-Nonce": "short"}).detail
    long = "x" * 5000
    problem = refused(auth, {**good, "X-Tessera-Nonce": long})
    assert len(problem.detail) < 200  # never the whole input
    unknown = refused(auth, {**good, "X-Tessera-Key": "k_" + "0" * 16})
    assert "unknown key" in unknown.detail


def test_a_stranger_signing_under_a_known_key_id_is_refused(
    auth: Authenticator, issued: IssuedKey
) -> None:
    forged = signed(issued, key=Ed25519PrivateKey.generate())
    assert "does not verify" in refused(auth, forged).detail


@pytest.mark.parametrize("offset", [-31, 31, -3600, 10**6])
def test_a_timestamp_outside_the_window_is_refused(
    auth: Authenticator, issued: IssuedKey, offset: int
) -> None:
    problem = refused(auth, signed(issued, now=NOW + offset))
    assert "server's clock" in problem.detail and "±30" in problem.detail
    assert auth.authenticate("POST", PATH, "", BODY, signed(issued, now=NOW + 29))


def test_a_replayed_nonce_is_refused(auth: Authenticator, issued: IssuedKey) -> None:
    headers = signed(issued)
    auth.authenticate("POST", PATH, "", BODY, headers)
    assert "already used" in refused(auth, headers).detail


def test_revoked_keys_and_clients_never_verify_again(
    auth: Authenticator, clients: ApiClients, issued: IssuedKey
) -> None:
    second = clients.rotate("exchange")
    clients.revoke("exchange", issued.key_id)
    assert "revoked" in refused(auth, signed(issued)).detail
    assert auth.authenticate("POST", PATH, "", BODY, signed(second)).key_id == second.key_id
    clients.revoke("exchange")
    assert "client exchange is revoked" in refused(auth, signed(second)).detail
    with pytest.raises(ApiAuthError) as err:
        clients.revoke("exchange", "k_" + "1" * 16)
    assert err.value.code == ErrorCode.NOT_FOUND


def test_rotation_keeps_two_keys_and_a_third_revokes_the_oldest(
    auth: Authenticator, clients: ApiClients, issued: IssuedKey
) -> None:
    second = clients.rotate("exchange")
    for key in (issued, second):
        assert auth.authenticate("POST", PATH, "", BODY, signed(key)).key_id == key.key_id
    third = clients.rotate("exchange")
    assert "revoked" in refused(auth, signed(issued)).detail
    for key in (second, third):
        assert auth.authenticate("POST", PATH, "", BODY, signed(key)).key_id == key.key_id
    (view,) = clients.clients()
    assert [k["key_id"] for k in view.keys] == [second.key_id, third.key_id]


def test_scopes(auth: Authenticator, clients: ApiClients, issued: IssuedKey) -> None:
    principal = auth.authenticate("POST", PATH, "", BODY, signed(issued))
    auth.require(principal, Scope.WITHDRAWALS_CREATE)
    with pytest.raises(ApiAuthError) as err:
        auth.require(principal, Scope.APPROVALS_WRITE)
    assert err.value.code == ErrorCode.FORBIDDEN and "approvals:write" in err.value.detail
    admin = clients.create("ops", [Scope.ADMIN])
    boss = auth.authenticate("POST", PATH, "", BODY, signed(admin))
    for scope in Scope:
        auth.require(boss, scope)


def test_bad_management_requests_are_typed(clients: ApiClients, issued: IssuedKey) -> None:
    cases = [
        (lambda: clients.create("exchange", [Scope.ADMIN]), ErrorCode.VALIDATION, "exists"),
        (lambda: clients.create("Bad Name", [Scope.ADMIN]), ErrorCode.VALIDATION, "name"),
        (lambda: clients.create("x", ["withdrawals:all"]), ErrorCode.VALIDATION, "scope"),
        (lambda: clients.create("y", []), ErrorCode.VALIDATION, "scope"),
        (lambda: clients.create("z", [Scope.ADMIN], 0), ErrorCode.VALIDATION, "rate"),
        (lambda: clients.rotate("nobody"), ErrorCode.NOT_FOUND, "nobody"),
    ]
    for call, code, words in cases:
        with pytest.raises(ApiAuthError) as err:
            call()
        assert err.value.code == code and words in err.value.detail


def test_the_rate_limit_refuses_with_retry_after_and_recovers() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(clock)
    who = Principal("c_1", "exchange", "k_1", frozenset({Scope.ADMIN}), rate_per_minute=6)
    for _ in range(6):
        limiter.check(who)
    with pytest.raises(ApiAuthError) as err:
        limiter.check(who)
    assert err.value.code == ErrorCode.RATE_LIMITED and err.value.retry_after == 10
    clock.at = 10.0  # one request's worth refilled (6 per minute)
    limiter.check(who)
    with pytest.raises(ApiAuthError):
        limiter.check(who)
    other = Principal("c_2", "desk", "k_2", frozenset({Scope.ADMIN}), rate_per_minute=6)
    limiter.check(other)  # each client has its own bucket


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["X-Tessera-Key", "X-Tessera-Timestamp", "X-Tessera-Nonce", "X-Tessera-Signature"]
        ),
        st.text(max_size=120),
    )
)
def test_random_headers_only_ever_give_a_typed_refusal(headers: dict[str, str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        s = CoordinatorStore(Path(scratch) / "c.db")
        try:
            with pytest.raises(ApiAuthError):
                Authenticator(s).authenticate("GET", PATH, "", b"", headers)
        finally:
            s.close()


# --- tessera api-client ---------------------------------------------------------------------

runner = CliRunner()


def cli(*args: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(clients_app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def test_the_api_client_commands(tmp_path: Path, store: CoordinatorStore) -> None:
    db = str(tmp_path / "coordinator.db")
    key = tmp_path / "exchange.pem"
    code, doc = cli("create", "exchange", "--db", db, "--out", str(key), "--scope", "admin")
    assert code == 0 and doc["name"] == "exchange"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    load_private_key(key.read_bytes())
    code, doc = cli("create", "exchange", "--db", db, "--out", str(tmp_path / "b.pem"),
                    "--scope", "admin")  # fmt: skip
    assert code == 1 and "exists" in json.dumps(doc)
    code, doc = cli("create", "desk", "--db", db, "--out", str(key), "--scope", "admin")
    assert code == 2  # never overwrites a key file
    code, doc = cli("create", "desk", "--db", db, "--out", str(tmp_path / "d.pem"),
                    "--scope", "nonsense")  # fmt: skip
    assert code == 2 and "scope" in json.dumps(doc)
    code, doc = cli("rotate", "exchange", "--db", db, "--out", str(tmp_path / "e2.pem"))
    assert code == 0
    rotated = str(doc["key_id"])
    code, doc = cli("list", "--db", db)
    (listed,) = doc["clients"]  # type: ignore[misc]
    assert code == 0 and len(listed["keys"]) == 2
    code, doc = cli("revoke", "exchange", "--db", db, "--key", rotated)
    assert code == 0
    code, doc = cli("revoke", "nobody", "--db", db)
    assert code == 1 and "NOT_FOUND" in json.dumps(doc)
    code, doc = cli("list", "--db", str(tmp_path / "absent.db"))
    assert code == 1
