"""Structured logs: `signer.logs` unit behaviour, and a secret scan of a whole signing run.

The scan starts a real 2-of-3 cluster (node processes, SoftHSM2 tokens, SQLite; tests/
node_cluster.py), drives keygen, aux-info, presign and signing through the coordinator (with a
refused signature and a request carrying its own request id), stops the nodes and then reads
every node's log file.  Every line must be one JSON object.  Then the secrets are recovered
after the fact — each node's database unsealed with its own token: key shares, presignature
nonces (k, χ), Paillier/ring-Pedersen factors, the X25519 key; the token PINs and the
coordinator's bearer tokens from the node directories; the plaintext point-to-point payloads
decrypted from the recorded traffic with each recipient's key; the signed message itself
(only its digest may appear) — and none may appear in any log, in decimal, hex (bare and
64-digit) or raw-bytes hex form.  The scan refuses to pass on empty logs.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from node_cluster import make_cluster, run

from coordinator.client import NodeRefused
from coordinator.cluster import LocalCluster
from signer.encoding import decode
from signer.errors import EncodingError
from signer.logs import MAX_FIELD_CHARS, JsonFormatter, bind, configure, log_event, reset
from signer.node.app import request_id
from signer.node.envelope import Envelope
from signer.node.runtime import NodeRuntime
from signer.problems import ErrorCode
from signer.protocol.sign import HashScheme, message_digest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: Fields whose values are public identifiers by design (hex ids, the request id).  Payload
#: windows are matched against the logs without them: a payload may embed its session id.
PUBLIC_ID_FIELDS = ("session", "key", "presignature", "request", "parties")


# --- unit: log_event, bind, the formatter ----------------------------------------------------
def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger("tessera.test.logs")
    logger.handlers.clear()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("node-9"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_log_event_drops_unknown_fields_and_clips_values() -> None:
    logger, stream = _capture()
    share = secrets.randbits(256)
    log_event(
        logger,
        "signature.refused",
        code="PRESIGNATURE_USED",
        culprit=3,
        detail="x" * 5000,
        key=b"\x01" * 400,
        parties=(2, 1),
        share=share,  # not a known field: dropped
        body={"message": "00" * 32},  # not a known field, and a structure: dropped
        payload=b"secret payload",
    )
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["event"] == "signature.refused" and doc["component"] == "node-9"
    assert doc["code"] == "PRESIGNATURE_USED" and doc["culprit"] == 3
    assert "share" not in doc and "body" not in doc and "payload" not in doc
    assert str(share) not in line and f"{share:x}" not in line
    assert len(doc["detail"]) == MAX_FIELD_CHARS and len(doc["key"]) == MAX_FIELD_CHARS
    assert doc["parties"] == "1,2"
    assert doc["message"] == "signature.refused"  # the message is the event name, not input


def test_bind_adds_context_and_exceptions_log_their_type_only() -> None:
    logger, stream = _capture()
    with bind(request="req-1", party=2, secret="dropped"):
        try:
            raise ValueError("input 1234567890abcdef quoted")
        except ValueError:
            logger.exception("failed")
    log_event(logger, "after")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request"] == "req-1" and first["party"] == 2 and "secret" not in first
    assert first["exception"] == "ValueError" and "1234567890abcdef" not in json.dumps(first)
    assert "request" not in second  # the context ended with the block


def test_configure_routes_warnings_and_reset_undoes_it() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    configure("node-7", stream=stream)
    try:
        logging.getLogger("tessera.test").warning("plain %s", "record")
        logging.getLogger("py.warnings").warning("a warning")
    finally:
        reset()
        for handler in before:
            if handler not in root.handlers:
                root.addHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines and all(json.loads(line)["component"] == "node-7" for line in lines)


def test_request_ids_are_kept_only_when_sane() -> None:
    assert request_id([(b"X-Request-Id", b"abc.DEF_1-2")]) == "abc.DEF_1-2"
    for odd in (b"", b"two words", b'quote"', b"x" * 65, b"line\nbreak", "caf\u00e9".encode()):
        made = request_id([(b"x-request-id", odd)])
        assert made != odd.decode("utf-8", "replace") and len(made) == 16
        int(made, 16)  # a fresh random id
    assert request_id([]) != request_id([])


# --- the secret scan over real node processes -------------------------------------------------
@pytest.fixture(scope="module")
def scanned_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cluster = make_cluster(tmp_path_factory.mktemp("logscan"))
    traffic: list[dict[str, Any]] = []
    marker = b"log-scan message " + secrets.token_bytes(24)
    run(cluster.up())
    try:
        run(_drive(cluster, traffic, marker))
    finally:
        cluster.down()
    yield {"cluster": cluster, "traffic": traffic, "message": marker}


async def _drive(cluster: LocalCluster, traffic: list[dict[str, Any]], message: bytes) -> None:
    coordinator = cluster.coordinator(traffic=traffic)
    try:
        wallet = await coordinator.create_wallet("scan")
        assert await coordinator.fill_pool(wallet, (1, 2), (), 2) == 2
        outcome = await coordinator.sign("scan", message, HashScheme.KECCAK256, preferred=(1, 2))
        # the same presignature again: a refusal, logged with its code only
        with pytest.raises(NodeRefused) as refused:
            await coordinator.clients[1].sign(
                wallet.key_id, outcome.presignature_id, message, HashScheme.KECCAK256.value
            )
        assert refused.value.code is ErrorCode.PRESIGNATURE_USED
    finally:
        await coordinator.aclose()
    node = cluster.nodes[0]
    async with httpx.AsyncClient(base_url=node.url) as client:
        mine = await client.get("/v1/health", headers={"X-Request-Id": "scan-req-42"})
        assert mine.headers["x-request-id"] == "scan-req-42"
        odd = await client.get("/v1/health", headers={"X-Request-Id": "two words"})
        assert odd.headers["x-request-id"] != "two words"
        assert len(odd.headers["x-request-id"]) == 16
        bad = await client.get(
            "/v1/keys", headers={"Authorization": "Bearer wrong-token-marker-" + "9" * 20}
        )
        assert bad.status_code == 401 and bad.headers["x-request-id"]


def _records(cluster: LocalCluster) -> dict[int, tuple[str, list[dict[str, Any]]]]:
    out = {}
    for node in cluster.nodes:
        text = (cluster.root / "logs" / f"{node.node_id}.log").read_text()
        lines = text.splitlines()
        docs = []
        for number, line in enumerate(lines, 1):
            try:
                doc = json.loads(line)
            except ValueError:
                pytest.fail(f"{node.node_id}.log line {number} is not JSON: {line[:200]!r}")
            assert isinstance(doc, dict), f"{node.node_id}.log line {number} is not an object"
            docs.append(doc)
        out[node.index] = (text, docs)
    return out


def _forms_of_int(value: int) -> set[str]:
    return {str(value), f"{value:x}", f"{value:064x}", f"{value:X}"}


def _walk(value: Any) -> Iterator[Any]:
    if isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def _secret_forms(plaintext: bytes) -> set[str]:
    """The raw-bytes hex of a sealed secret and every large integer inside it (decimal and
    hex).  Small integers (party indices) are not secrets and would match anything."""
    forms = {plaintext.hex()}
    try:
        decoded = decode(plaintext, "sealed secret")
    except EncodingError:
        return forms
    for item in _walk(decoded):
        if isinstance(item, int) and item.bit_length() > 64:
            forms |= _forms_of_int(item)
        elif isinstance(item, bytes) and len(item) >= 16:
            forms.add(item.hex())
    return forms


def _node_secrets(cluster: LocalCluster) -> tuple[set[str], dict[str, Any]]:
    """Unseal everything every node stored, with its own token (nodes stopped: one login per
    token), and decrypt the recorded point-to-point payloads with each recipient's key."""
    forms: set[str] = set()
    counts = {"key_share": 0, "presignature": 0, "aux_info": 0}
    endpoints = {}
    for node in cluster.nodes:
        runtime = NodeRuntime.open(node.directory)
        try:
            unseal = runtime.keystore.unseal
            nid = runtime.config.node_id
            db = sqlite3.connect(runtime.config.db_path)
            try:
                for key_id, epoch, blob in db.execute(
                    "SELECT key_id, epoch, sealed_share FROM key_versions "
                    "WHERE sealed_share IS NOT NULL"
                ):
                    plain = unseal(
                        blob, node_id=nid, key_id=key_id, share_version=epoch, purpose="key_share"
                    )
                    forms |= _secret_forms(plain)
                    counts["key_share"] += 1
                for pid, epoch, blob in db.execute(
                    "SELECT presignature_id, epoch, sealed_secret FROM presignatures"
                ):
                    plain = unseal(
                        blob, node_id=nid, key_id=pid, share_version=epoch, purpose="presignature"
                    )
                    forms |= _secret_forms(plain)
                    counts["presignature"] += 1
                for aux_id, blob in db.execute("SELECT aux_id, sealed_secret FROM aux_info"):
                    plain = unseal(
                        blob, node_id=nid, key_id=aux_id, share_version=0, purpose="aux_info"
                    )
                    forms |= _secret_forms(plain)
                    counts["aux_info"] += 1
            finally:
                db.close()
            kex = runtime._kex  # the node's X25519 private key, unsealed at open
            raw = kex.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            forms.add(raw.hex())
            assert runtime.service is not None
            # Decrypting needs only the X25519 key and the pinned cards, which the endpoint
            # holds in memory after the token is closed.
            endpoints[node.index] = runtime.service.endpoint
        finally:
            runtime.close()
    return forms, {"counts": counts, "endpoints": endpoints}


def _payload_forms(traffic: list[dict[str, Any]], endpoints: dict[int, Any]) -> set[str]:
    """Windows of every relayed payload's plaintext (p2p decrypted by its recipient), and the
    large integers in it: a log holding any part of a body would match one."""
    forms: set[str] = set()
    opened = 0
    for doc in traffic:
        envelope = Envelope.from_dict(doc)
        recipients = [envelope.recipient] if envelope.recipient is not None else []
        recipients = recipients or [i for i in endpoints if i != envelope.sender]
        message = endpoints[recipients[0]].open(envelope)
        opened += 1
        payload = message.payload.hex()
        for start in range(0, max(len(payload) - 32, 1), 64):
            forms.add(payload[start : start + 32])
        try:
            decoded = decode(message.payload, "payload")
        except EncodingError:
            continue
        for item in _walk(decoded):
            if isinstance(item, int) and item.bit_length() > 64:
                forms |= _forms_of_int(item)
    assert opened > 0, "no traffic recorded: the scan would be vacuous"
    return forms


def _without_public_ids(docs: list[dict[str, Any]]) -> str:
    return "\n".join(
        json.dumps({k: v for k, v in doc.items() if k not in PUBLIC_ID_FIELDS}) for doc in docs
    )


def test_every_node_log_line_is_json_and_carries_the_events(scanned_run: dict[str, Any]) -> None:
    cluster: LocalCluster = scanned_run["cluster"]
    records = _records(cluster)
    for index, (text, docs) in records.items():
        assert docs, f"node {index} logged nothing: the scan would pass vacuously"
        assert all(doc["component"] == f"node-{index}" for doc in docs)
        assert "Traceback" not in text
        events = {doc["event"] for doc in docs}
        assert {"node.start", "http.request", "session.start", "session.done"} <= events
        access = [d for d in docs if d["event"] == "http.request"]
        assert all({"method", "route", "status", "seconds", "request"} <= set(d) for d in access)
        assert all("{" in d["route"] or d["route"].startswith("/") for d in access)
        done = [d for d in docs if d["event"] == "session.done"]
        assert {d["protocol"] for d in done} >= {"keygen/v1", "aux_info/v1"}
        assert all(d["party"] == index and len(d["session"]) == 64 for d in done)
        assert all(d.get("request") for d in done), "session events carry the request id"
    one = records[1][1]
    issued = [d for d in one if d["event"] == "signature.issued"]
    refused = [d for d in one if d["event"] == "signature.refused"]
    assert len(issued) == 1 and issued[0]["code"] == "ok"
    assert len(refused) == 1 and refused[0]["code"] == "PRESIGNATURE_USED"
    assert any(d.get("request") == "scan-req-42" for d in one if d["event"] == "http.request")
    assert not any(d.get("request", "").startswith("two") for d in one)
    refusals = [d for d in one if d["event"] == "request.refused"]
    assert any(d["code"] == "UNAUTHORIZED" for d in refusals)


def test_no_secret_reaches_any_node_log(scanned_run: dict[str, Any]) -> None:
    cluster: LocalCluster = scanned_run["cluster"]
    records = _records(cluster)
    logs = "\n".join(text for text, _ in records.values())
    logs_lower = logs.lower()
    scrubbed = "\n".join(_without_public_ids(docs) for _, docs in records.values()).lower()
    assert len(logs) > 1000, "the logs are (nearly) empty: the scan would be vacuous"

    stored, found = _node_secrets(cluster)
    counts = found["counts"]
    assert counts["key_share"] >= 3 and counts["presignature"] >= 4 and counts["aux_info"] >= 3
    credentials = set()
    for node in cluster.nodes:
        credentials.add((node.directory / "hsm-pin").read_text().strip())
        credentials.add(node.api_token)
    payloads = _payload_forms(scanned_run["traffic"], found["endpoints"])
    message: bytes = scanned_run["message"]

    leaked = sorted(form[:24] for form in stored if form.lower() in logs_lower)
    assert not leaked, f"sealed secrets in the logs: {leaked}"
    leaked = sorted(c[:4] + "…" for c in credentials if c in logs)
    assert not leaked, f"PINs or bearer tokens in the logs: {leaked}"
    assert "wrong-token-marker" not in logs  # nor a presented Authorization header
    leaked = sorted(form[:24] for form in payloads if form.lower() in scrubbed)
    assert not leaked, f"relayed payloads in the logs: {leaked}"
    # the request body (the message) never; its digest would be allowed
    assert message.hex() not in logs_lower and message.hex()[:32] not in logs_lower
    assert b"log-scan message".hex() not in logs_lower and "log-scan message" not in logs
    digest = message_digest(message, HashScheme.KECCAK256).hex()
    assert len(digest) == 64  # (allowed to appear; computed only to document the rule)
