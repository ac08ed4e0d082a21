"""The node's HTTP surface as an attacker holding the coordinator's token would try it
(issue 9, items 1 and 3): every refusal is a `Problem` (application/problem+json) naming the
node, bad input is a 4xx and never echoed, and the request limits hold against a real uvicorn
server on loopback, configured as `tessera node run` configures it (`server_config`).

The node behind the app is the real `NodeService` with a real SQLite store and software
identity/sealing keys (node_local.py); the HSM-backed node runs in the cluster tests.  The
limits a test needs to reach (body size, body timeout) are set small by the test itself."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from node_cluster import run
from node_local import ScriptedNode, make_nodes

from coordinator.client import NodeClient, NodeRefused
from coordinator.ports import free_port_block
from signer.node.api import AUX_KEY_ID, KEY_ID_MAX_BYTES, MAX_ENVELOPE_BATCH_BYTES
from signer.node.app import create_app
from signer.node.cli import server_config
from signer.node.errors import NodeError
from signer.node.limits import SERVER_HEAD_BYTES
from signer.problems import MAX_DETAIL_CHARS, PROBLEM_MEDIA_TYPE, ErrorCode, Problem

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class StubRuntime:
    """What `create_app` uses of a `NodeRuntime`, around an in-process node."""

    def __init__(self, node: ScriptedNode) -> None:
        self.config = SimpleNamespace(node_id=node.node_id, index=node.index)
        self.api_token = TOKEN
        self.service = node
        self.store = node.store
        self.card = node.card
        self.governance = node.governance
        self.audit = node.audit

    def reload_roster(self) -> None:
        return None

    def pin(self, roster: Any) -> None:
        raise NodeError(ErrorCode.ROSTER_PINNED, "pinned at set-up")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ScriptedNode]:
    return make_nodes(tmp_path_factory.mktemp("http-nodes"), 2)


def app_for(node: ScriptedNode, **limits: Any) -> Any:
    return create_app(StubRuntime(node), **limits)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def served(nodes: dict[int, ScriptedNode]) -> Iterator[Served]:
    with Served(app_for(nodes[1])) as server:
        yield server


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url) as http:
        yield http


def problem(response: httpx.Response, code: ErrorCode, node: int = 1) -> Problem:
    """The reply is a problem of `code` from `node`, in the problem media type."""
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE), response.text
    parsed = Problem.model_validate_json(response.content)
    assert (parsed.code, parsed.status, parsed.node) == (code, response.status_code, node)
    return parsed


def session_starts(node: ScriptedNode) -> int:
    with sqlite3.connect(node.store.path) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM session_starts").fetchone()[0])


def keygen_spec(**changes: Any) -> dict[str, Any]:
    return {
        "protocol": "keygen/v1",
        "request": "ab" * 16,
        "parties": [1, 2],
        "threshold": 2,
        "key_id": "11" * 16,
        **changes,
    }


# --- item 1: one problem form for every refusal ---------------------------------------------------


def test_every_refusal_is_a_problem_naming_the_node(client: httpx.Client) -> None:
    problem(client.get("/v1/nope", headers=AUTH), ErrorCode.NOT_FOUND)
    problem(client.put("/v1/sign", headers=AUTH), ErrorCode.METHOD_NOT_ALLOWED)
    problem(client.get("/v1/keys"), ErrorCode.UNAUTHORIZED)
    bad_session = problem(
        client.post("/v1/sessions/zz/envelopes", headers=AUTH, json={"envelopes": []}),
        ErrorCode.VALIDATION,
    )
    assert "session" in bad_session.detail
    bad_signers = problem(
        client.get("/v1/keys/11/presignatures", headers=AUTH, params={"signers": "1;2"}),
        ErrorCode.VALIDATION,
    )
    assert "signers" in bad_signers.detail
    listing = client.get(
        "/v1/keys/11/presignatures", headers=AUTH, params={"signers": "1,2", "path": "0/5"}
    )
    assert listing.status_code == 200 and listing.json()["available"] == []
    problem(
        client.post(f"/v1/sessions/{'00' * 32}/envelopes", headers=AUTH, json={"envelopes": []}),
        ErrorCode.UNKNOWN_SESSION,
    )
    unsigned = {"sender": 2, "recipient": 1, "round": 1, "broadcast": False}
    rejected = problem(
        client.post(
            f"/v1/sessions/{'00' * 32}/envelopes", headers=AUTH, json={"envelopes": [unsigned]}
        ),
        ErrorCode.ENVELOPE_REJECTED,
    )
    assert (rejected.culprit, rejected.check) == (2, "FORMAT")  # the claimed sender
    unknown = problem(
        client.post(
            "/v1/sign/raw",
            headers=AUTH,
            json={
                "key_id": "11" * 16,
                "presignature_id": "22" * 32,
                "message": "00",
                "scheme": "keccak256",
            },
        ),
        ErrorCode.UNKNOWN_PRESIGNATURE,
    )
    assert unknown.type == "urn:tessera:problem:unknown-presignature"


def test_an_unexpected_exception_is_an_internal_problem_without_traceback_or_input(
    nodes: dict[int, ScriptedNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("secret state in the message")

    monkeypatch.setattr(nodes[1], "sign", broken)
    with Served(app_for(nodes[1])) as server, httpx.Client(base_url=server.url) as http:
        reply = http.post(
            "/v1/sign/raw",
            headers=AUTH,
            json={
                "key_id": "11" * 16,
                "presignature_id": "22" * 32,
                "message": "c0ffee",
                "scheme": "keccak256",
            },
        )
    problem(reply, ErrorCode.INTERNAL)
    assert reply.status_code == 500
    for leaked in ("secret", "Traceback", "c0ffee"):
        assert leaked not in reply.text


def test_client_turns_problems_and_non_problem_bodies_into_typed_refusals() -> None:
    bodies = {
        "/v1/health": httpx.Response(
            409,
            content=Problem.of(ErrorCode.QUARANTINED, "set 1,3", node=3).model_dump_json(),
            headers={"content-type": PROBLEM_MEDIA_TYPE},
        ),
        "/v1/card": httpx.Response(502, text="<html>" + "x" * 10_000 + "</html>"),
        "/v1/keys/00/presignatures": httpx.Response(404, text=""),
    }
    node = NodeClient(3, "http://node-3", TOKEN)
    node._client = httpx.AsyncClient(
        base_url="http://node-3", transport=httpx.MockTransport(lambda r: bodies[r.url.path])
    )

    async def calls() -> list[NodeRefused]:
        refusals = []
        for call in (node.health(), node.card(), node.presignatures("00", "1,2", "")):
            with pytest.raises(NodeRefused) as refused:
                await call
            refusals.append(refused.value)
        await node.aclose()
        return refusals

    quarantined, proxy, empty = run(calls())
    assert quarantined.code is ErrorCode.QUARANTINED and quarantined.problem.node == 3
    assert proxy.code is ErrorCode.INTERNAL and proxy.status == 500
    assert len(proxy.detail) <= MAX_DETAIL_CHARS
    assert empty.code is ErrorCode.NOT_FOUND


# --- item 3: bad input at the door --------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_bodies_get_a_4xx_problem_never_an_echo(
    client: httpx.Client, literal: str
) -> None:
    json_headers = {**AUTH, "content-type": "application/json"}
    pid = "22" * 32
    sign = f'{{"key_id": {literal}, "presignature_id": "{pid}", "message": "00", "scheme": "x"}}'
    reply = client.post("/v1/sign", headers=json_headers, content=sign)
    found = problem(reply, ErrorCode.VALIDATION)
    assert "key_id" in found.detail and literal not in reply.text
    batch = f'{{"envelopes": {literal}}}'
    reply = client.post(
        f"/v1/sessions/{'00' * 32}/envelopes",
        headers=json_headers,
        content=batch,
    )
    found = problem(reply, ErrorCode.VALIDATION)
    assert "envelopes" in found.detail and literal not in reply.text
    inside = f'{{"envelopes": [{{"sender": 2, "round": {literal}}}]}}'
    reply = client.post(
        f"/v1/sessions/{'00' * 32}/envelopes",
        headers=json_headers,
        content=inside,
    )
    problem(reply, ErrorCode.ENVELOPE_REJECTED)
    assert literal not in reply.text


def test_the_key_version_routes_refuse_bad_input_with_problems(client: httpx.Client) -> None:
    """`GET …/versions`, `POST …/confirmation` and `POST …/activate`: no token, a bad key id or
    epoch, wrong types, NaN, an oversized set, an unknown version — each a 4xx problem, never a
    500 and never an echo of the input."""
    key, json_headers = "11" * 16, {**AUTH, "content-type": "application/json"}
    base = f"/v1/keys/{key}/versions"
    problem(client.get(base), ErrorCode.UNAUTHORIZED)
    problem(client.post(f"{base}/1/confirmation"), ErrorCode.UNAUTHORIZED)
    problem(client.post(f"{base}/1/activate", json={"statements": []}), ErrorCode.UNAUTHORIZED)
    assert client.get(base, headers=AUTH).json() == []  # an unknown key has no versions
    problem(client.get("/v1/keys/zz/versions", headers=AUTH), ErrorCode.VALIDATION)
    problem(client.post(f"{base}/-1/confirmation", headers=AUTH), ErrorCode.VALIDATION)
    problem(client.post(f"{base}/one/confirmation", headers=AUTH), ErrorCode.VALIDATION)
    problem(client.post(f"{base}/1/confirmation", headers=AUTH), ErrorCode.NO_PENDING_VERSION)
    statement = {
        "cluster": "00" * 32,
        "key_id": key,
        "epoch": 1,
        "fingerprint": "00" * 32,
        "signer": 1,
        "signature": "00" * 64,
    }
    for body in (
        {"statements": "all of them"},
        {"statements": []},
        {"statements": [{**statement, "epoch": "1"}]},
        {"statements": [{**statement, "signer": 0}]},
        {"statements": [statement], "extra": 1},
        {"statements": [statement] * 300},
    ):
        reply = client.post(f"{base}/1/activate", headers=AUTH, json=body)
        problem(reply, ErrorCode.VALIDATION)
        assert "all of them" not in reply.text and len(reply.content) < 2048
    nan = '{"statements": [{"cluster": NaN}]}'
    reply = client.post(f"{base}/1/activate", headers=json_headers, content=nan)
    problem(reply, ErrorCode.VALIDATION)
    assert "NaN" not in reply.text
    unknown = client.post(f"{base}/1/activate", headers=AUTH, json={"statements": [statement]})
    problem(unknown, ErrorCode.NO_PENDING_VERSION)
    oversized = client.post(
        f"{base}/1/activate", headers=json_headers, content=b'{"statements": ["' + b"0" * (5 << 20)
    )
    problem(oversized, ErrorCode.PAYLOAD_TOO_LARGE)


def test_validation_replies_never_grow_with_the_input(client: httpx.Client) -> None:
    huge = "zz" * (1 << 18)  # 4 × 512 KB of invalid hex: under the body limit
    reply = client.post(
        "/v1/sign",
        headers=AUTH,
        json={"key_id": huge, "presignature_id": huge, "message": huge, "scheme": huge},
    )
    found = problem(reply, ErrorCode.VALIDATION)
    assert len(reply.content) < 2 * MAX_DETAIL_CHARS + 500
    assert "key_id" in found.detail and "zzzz" not in reply.text


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"key_id": ""}, "key_id"),
        ({"key_id": "ab" * 1000}, "key_id"),
        ({"key_id": "ab" * (KEY_ID_MAX_BYTES + 1)}, "key_id"),  # once stored, never usable
        ({"key_id": "AB" * 16}, "key_id"),
        ({"key_id": AUX_KEY_ID.hex()}, "key_id"),  # the aux-info marker is aux-info's alone
        ({"protocol": "keygen/v2"}, "protocol"),
        ({"request": "ab" * 15}, "request"),
        ({"request": "ab" * 65}, "request"),
        ({"parties": [2, 1]}, "parties"),
        ({"parties": [1]}, "parties"),
        ({"parties": [1, True]}, "parties"),
        ({"parties": list(range(1, 18))}, "parties"),
        ({"threshold": 3}, "threshold"),
        ({"threshold": "2"}, "threshold"),
        ({"path": [0]}, "path"),
        ({"protocol": "presign/v1"}, "aux_id"),
        ({"protocol": "aux_info/v1"}, "key_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_session_spec_is_validated_at_the_door_before_anything_is_recorded(
    client: httpx.Client, nodes: dict[int, ScriptedNode], changes: dict[str, Any], field: str
) -> None:
    before = session_starts(nodes[1])
    reply = client.post("/v1/sessions", headers=AUTH, json=keygen_spec(**changes))
    found = problem(reply, ErrorCode.VALIDATION)
    assert field in found.detail
    assert session_starts(nodes[1]) == before  # no session_starts row burnt


def test_a_valid_session_spec_still_starts(
    client: httpx.Client, nodes: dict[int, ScriptedNode]
) -> None:
    before = session_starts(nodes[1])
    reply = client.post("/v1/sessions", headers=AUTH, json=keygen_spec(request="cd" * 16))
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "running" and session_starts(nodes[1]) == before + 1
    client.delete(f"/v1/sessions/{reply.json()['session']}", headers=AUTH)


# --- item 3: limits on a real server ------------------------------------------------------------


class Served:
    """The app on a real uvicorn server on loopback, in a thread, with `server_config`."""

    def __init__(self, app: Any) -> None:
        self.port = free_port_block(1) + 1
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server did not start")
            self.thread.join(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def raw(self, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes, bool]:
        """Send a request head (and part of a body), then read until the server closes:
        status, headers, body, and whether the server closed the connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as connection:
            connection.sendall(head + body)
            data = b""
            closed = False
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
                head_end = data.find(b"\r\n\r\n")
                if head_end >= 0 and b"content-length:" in data[:head_end].lower():
                    length = int(
                        data[:head_end].lower().split(b"content-length:")[1].split(b"\r\n")[0]
                    )
                    if len(data) - head_end - 4 >= length:
                        closed = connection.recv(1) == b""
                        break
        if not data:
            raise ConnectionError("closed without a reply")
        status_line, _, rest = data.partition(b"\r\n")
        header_block, _, content = rest.partition(b"\r\n\r\n")
        headers = {}
        for line in header_block.split(b"\r\n"):
            key, _, value = line.partition(b":")
            headers[key.decode().strip().lower()] = value.decode().strip()
        return int(status_line.split()[1]), headers, content, closed


def test_an_oversize_body_is_413_before_it_is_read(nodes: dict[int, ScriptedNode]) -> None:
    with Served(app_for(nodes[1])) as served:
        declared = 64 << 20  # as in the report: 64 MiB
        head = (
            f"POST /v1/sessions/{'00' * 32}/envelopes HTTP/1.1\r\nhost: x\r\n"
            f"authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n"
            f"content-length: {declared}\r\n\r\n"
        ).encode()
        status, headers, content, closed = served.raw(head, b'{"envelopes": [')
        assert status == 413 and closed and headers["connection"] == "close"
        found = Problem.model_validate_json(content)
        assert found.code is ErrorCode.PAYLOAD_TOO_LARGE
        assert str(MAX_ENVELOPE_BATCH_BYTES) in found.detail
        with httpx.Client(base_url=served.url) as http:  # still serving
            assert http.get("/v1/health").status_code == 200


def test_a_streamed_body_over_the_limit_is_413(nodes: dict[int, ScriptedNode]) -> None:
    """No Content-Length (chunked): the bytes are counted as they arrive."""
    with Served(app_for(nodes[1], limit=lambda path: 4096)) as served:
        head = (
            f"POST /v1/sign HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n"
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        ).encode()
        chunk = b"a" * 3000
        chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2  # 6000 bytes, never finished
        status, _, content, closed = served.raw(head, chunks)
    assert status == 413 and closed
    assert Problem.model_validate_json(content).code is ErrorCode.PAYLOAD_TOO_LARGE


def test_a_body_shorter_than_its_content_length_is_timed_out(
    nodes: dict[int, ScriptedNode],
) -> None:
    with Served(app_for(nodes[1], body_timeout=0.3)) as served:
        head = (
            f"POST /v1/sign HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n"
            "content-type: application/json\r\ncontent-length: 100\r\n\r\n"
        ).encode()
        status, headers, content, closed = served.raw(head, b'{"key_id": ')  # then nothing
    assert status == 408 and closed and headers["connection"] == "close"
    assert Problem.model_validate_json(content).code is ErrorCode.REQUEST_TIMEOUT


def test_long_targets_and_headers_get_414_and_431_problems(
    nodes: dict[int, ScriptedNode],
) -> None:
    """Raw requests: httpx itself refuses to send a URL over 64 KiB."""

    def get(target: bytes, extra: bytes = b"") -> tuple[int, bytes]:
        head = b"GET " + target + b" HTTP/1.1\r\nhost: x\r\n" + extra + b"\r\n"
        status, _, content, _ = served.raw(head)
        return status, content

    with Served(app_for(nodes[1])) as served:
        status, content = get(b"/v1/health?x=" + b"a" * 200_000)  # as in the report
        assert status == 414
        assert Problem.model_validate_json(content).code is ErrorCode.URI_TOO_LONG
        headers = b"".join(b"x-%d: %s\r\n" % (i, b"b" * 1000) for i in range(100))
        status, content = get(b"/v1/health", headers)
        assert status == 431
        assert Problem.model_validate_json(content).code is ErrorCode.HEADERS_TOO_LARGE
        # Beyond what the server buffers for a request head, uvicorn drops the request itself
        # (a bare 400, or a reset while the client is still sending; docs/nodes.md), and the
        # node goes on serving.
        try:
            status, _ = get(b"/v1/health?x=" + b"a" * (2 * SERVER_HEAD_BYTES))
            assert status == 400
        except ConnectionError:
            pass
        with httpx.Client(base_url=served.url) as http:
            assert http.get("/v1/health").status_code == 200


def test_the_limits_are_what_the_docs_say() -> None:
    """docs/nodes.md states the limits; a changed constant must change the page."""
    page = (Path(__file__).parent.parent / "docs" / "nodes.md").read_text()
    from signer.node import api

    for name in (
        "MAX_ENVELOPE_BATCH_BYTES",
        "MAX_BODY_BYTES",
        "MAX_TARGET_BYTES",
        "MAX_HEADER_BYTES",
        "BODY_TIMEOUT_SECONDS",
        "KEY_ID_MAX_BYTES",
        "MAX_SESSION_PARTIES",
    ):
        assert f"`{name}` = {_human(getattr(api, name))}" in page, name
    assert f"`SERVER_HEAD_BYTES` = {_human(SERVER_HEAD_BYTES)}" in page


def _human(value: float) -> str:
    if isinstance(value, float):
        return f"{value:g} s"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return str(value)


# --- the policy routes (signer/node/governance.py, decision.py, receipts.py, audit.py) -------


def _transaction_body(**changes: Any) -> dict[str, Any]:
    return {
        "key_id": "11" * 16,
        "transaction": "02c0",
        "request_id": "wd-1",
        "initiator": "withdrawal-service",
        "intent": {},
        "approvals": [],
        **changes,
    }


def test_the_policy_routes_refuse_bad_input_with_problems_and_change_nothing(
    client: httpx.Client, nodes: dict[int, ScriptedNode]
) -> None:
    node = nodes[1]
    audit_before = node.audit.head()
    # governance needs no token, but its body is checked like any other
    problem(client.post("/v1/governance", json={"versions": "x"}), ErrorCode.VALIDATION)
    document = {"version": "zz" * 40000}
    junk = client.post(
        "/v1/governance", json={"versions": [{"document": document, "signatures": []}]}
    )
    refused = problem(junk, ErrorCode.GOVERNANCE_REFUSED)
    assert refused.check == "document" and "zzzz" not in junk.text
    extra = client.post("/v1/governance", json={"versions": [], "freezes": [], "more": 1})
    assert "more" in problem(extra, ErrorCode.VALIDATION).detail
    assert node.governance.status().policy_hash is None  # nothing was accepted
    # the signing and receipt routes: bad fields at the door, no echo
    for route in ("/v1/sign", "/v1/receipts"):
        bad = client.post(route, headers=AUTH, json=_transaction_body(transaction="zz" * 500))
        assert "transaction" in problem(bad, ErrorCode.VALIDATION).detail and "zzzz" not in bad.text
        problem(client.post(route, json=_transaction_body()), ErrorCode.UNAUTHORIZED)
    sign = {**_transaction_body(), "presignature_id": "22" * 32, "sender": "0x" + "00" * 20}
    unknown = client.post("/v1/sign", headers=AUTH, json=sign)
    problem(unknown, ErrorCode.UNKNOWN_KEY)  # a key bound to no wallet: no decision at all
    receipt = client.post("/v1/receipts", headers=AUTH, json=_transaction_body())
    problem(receipt, ErrorCode.UNKNOWN_KEY)
    problem(client.get("/v1/audit/head"), ErrorCode.UNAUTHORIZED)
    problem(client.post("/v1/audit/head", headers=AUTH), ErrorCode.METHOD_NOT_ALLOWED)
    problem(client.get("/v1/governance/chain"), ErrorCode.UNAUTHORIZED)
    # every refusal above was audited on the node (two signing refusals), nothing else changed
    head = node.audit.head()
    since = 0 if audit_before is None else audit_before.seq
    kinds = [r.kind for r in node.audit.records(after_seq=since)]
    assert head is not None and kinds.count("node_refused") == 2
    assert kinds.count("node_governance") == 1  # the refused document


def test_every_reply_names_the_policy_the_node_enforces(client: httpx.Client) -> None:
    for reply in (
        client.get("/v1/health"),
        client.get("/v1/nope", headers=AUTH),
        client.get("/v1/governance"),
        client.get("/v1/audit/head", headers=AUTH),
    ):
        assert reply.headers["tessera-policy-hash"] == "none"  # no genesis on this node
    status = client.get("/v1/governance").json()
    assert status == {
        "genesis": None,
        "policy_hash": None,
        "policy_version": None,
        "pending": None,
        "frozen": [],
    }
    assert client.get("/v1/health").json()["policy_hash"] is None
    head = client.get("/v1/audit/head", headers=AUTH).json()
    assert set(head) == {"seq", "hash", "checkpoint"}


def test_a_raw_key_never_signs_a_transaction(
    client: httpx.Client, nodes: dict[int, ScriptedNode]
) -> None:
    """A key bound to no wallet (a raw key, as a --raw-keys node's DKG leaves it) asked for a
    transaction: POLICY_DENIED naming the wallet check, audited, before anything else."""
    from signer.node.policy_tables import KeyBindingRow

    key = "33" * 16
    with nodes[1].store.session() as session:
        session.add(KeyBindingRow(key_id=key, wallet=None, policy_hash=None, bound_at=0.0))
        session.commit()
    sign = {
        **_transaction_body(key_id=key),
        "presignature_id": "22" * 32,
        "sender": "0x" + "00" * 20,
    }
    refused = problem(client.post("/v1/sign", headers=AUTH, json=sign), ErrorCode.POLICY_DENIED)
    assert refused.check == "wallet" and "raw key" in refused.detail
    last = nodes[1].audit.head()
    assert last is not None and last.kind == "node_refused"
    assert last.payload["code"] == "POLICY_DENIED"


@pytest.mark.parametrize("route", ["/v1/governance", "/v1/receipts", "/v1/sign"])
def test_the_policy_routes_refuse_nan_and_oversized_bodies(
    client: httpx.Client, route: str
) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    nan = client.post(route, headers=headers, content=b'{"versions": NaN, "key_id": NaN}')
    found = problem(nan, ErrorCode.VALIDATION)
    assert "NaN" not in nan.text and found.status == 422
    huge = client.post(route, headers=headers, content=b'{"x": "' + b"0" * (5 << 20) + b'"}')
    problem(huge, ErrorCode.PAYLOAD_TOO_LARGE)
    wrong = client.post(route, headers=headers, json=[1, 2, 3])
    problem(wrong, ErrorCode.VALIDATION)


@pytest.mark.parametrize("route", ["/v1/sign/cancel", "/v1/sign/allowance", "/v1/sign/internal"])
def test_the_routes_moving_nothing_refuse_bad_input_with_problems(
    client: httpx.Client, route: str
) -> None:
    problem(client.post(route, json={}), ErrorCode.UNAUTHORIZED)
    huge = "zz" * (1 << 18)
    bad = client.post(
        route,
        headers=AUTH,
        json={
            "key_id": huge,
            "presignature_id": 7,
            "transaction": "NaN",
            "sender": None,
            "request_id": huge,
        },
    )
    found = problem(bad, ErrorCode.VALIDATION)
    assert "zzzz" not in bad.text and len(bad.content) < 2 * MAX_DETAIL_CHARS + 500
    assert "key_id" in found.detail
    oversized = client.post(
        route,
        headers={**AUTH, "content-type": "application/json"},
        content=b'{"k": "' + b"0" * (5 << 20),
    )
    problem(oversized, ErrorCode.PAYLOAD_TOO_LARGE)
