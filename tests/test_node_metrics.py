"""Prometheus metrics on real node processes (`GET /metrics`, signer/node/metrics.py): after a
signature and a refused one, the counters, the presignature gauge (counted in the store at
scrape time), the session histogram and the HSM latency histogram show the right values and
labels; the endpoint needs no token and each node's registry is its own.  Plus in-process
checks that two nodes' registries never collide."""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from node_cluster import make_cluster, run
from node_local import make_nodes
from prometheus_client.parser import text_string_to_metric_families

from coordinator.client import NodeRefused
from coordinator.cluster import LocalCluster
from hsm.metrics import HsmMetrics
from signer.node.api import SessionProtocol
from signer.node.errors import NodeError
from signer.node.metrics import NodeMetrics
from signer.node.spec import SessionSpec
from signer.problems import ErrorCode
from signer.protocol.sign import HashScheme

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= set(ls))


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cluster = make_cluster(tmp_path_factory.mktemp("metrics"))
    run(cluster.up())
    try:
        yield run(_drive(cluster))
    finally:
        cluster.down()


async def _drive(cluster: LocalCluster) -> dict[str, Any]:
    coordinator = cluster.coordinator()
    try:
        wallet = await coordinator.create_wallet("metrics")
        assert await coordinator.fill_pool(wallet, (1, 2), (), 3) == 3
        message = b"counted"
        outcome = await coordinator.sign("metrics", message, HashScheme.KECCAK256, (1, 2))
        with pytest.raises(NodeRefused) as refused:  # the same presignature again
            await coordinator.clients[1].sign(
                wallet.key_id, outcome.presignature_id, message, HashScheme.KECCAK256.value
            )
        assert refused.value.code is ErrorCode.PRESIGNATURE_USED
    finally:
        await coordinator.aclose()
    texts = {}
    for node in cluster.nodes:
        async with httpx.AsyncClient(base_url=node.url) as client:
            reply = await client.get("/metrics")  # no bearer token
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"].startswith("text/plain")
            assert reply.headers["x-request-id"]
            texts[node.index] = reply.text
    # Bad input on the metrics route: answered with 4xx problems, never a 500 or an echo.
    bad: dict[str, tuple[int, str, str]] = {}
    async with httpx.AsyncClient(base_url=cluster.nodes[0].url) as client:
        cases = {
            "post": client.post("/metrics", content=b"x"),
            "long_target": client.get("/metrics?q=" + "A" * (12 << 10)),  # limit: 8 KiB
        }
        for name, call in cases.items():
            reply = await call
            bad[name] = (reply.status_code, reply.headers.get("content-type", ""), reply.text)
        junk = await client.get("/metrics?x=NaN", headers={"Authorization": "Bearer nonsense"})
        bad["junk_query_and_token"] = (junk.status_code, "", "")
    # What the stores hold now (the coordinator may top pools up on its own): the gauge must
    # equal this, and every stored presignature came from one finished presign session.
    stored = {}
    for node in cluster.nodes:
        db = sqlite3.connect(node.directory / "node.db")
        try:
            rows = db.execute(
                "SELECT state, COUNT(*) FROM presignatures WHERE key_id = ? GROUP BY state",
                (wallet.key_id,),
            )
            stored[node.index] = {str(state): int(count) for state, count in rows}
        finally:
            db.close()
    return {"texts": texts, "key_id": wallet.key_id, "stored": stored, "bad": bad}


def test_signature_counters_by_outcome_and_reason(scraped: dict[str, Any]) -> None:
    one, two, three = (samples(scraped["texts"][i]) for i in (1, 2, 3))
    name = "tessera_node_signatures_total"
    assert value(one, name, outcome="issued", reason="ok") == 1
    assert value(one, name, outcome="refused", reason="PRESIGNATURE_USED") == 1
    assert value(two, name, outcome="issued", reason="ok") == 1
    assert total(two, name, outcome="refused") == 0
    assert total(three, name) == 0  # node 3 was no signer


def test_presignature_gauge_is_counted_from_the_store(scraped: dict[str, Any]) -> None:
    key = scraped["key_id"]
    for index in (1, 2, 3):
        found = samples(scraped["texts"][index])
        expected = scraped["stored"][index].get("available", 0)
        assert value(found, "tessera_node_presignatures", key=key, state="available") == expected
        # the pool was filled with 3 and one was used: at least 2 left on the signers
        assert expected >= 2 if index in (1, 2) else expected == 0
        consumed = scraped["stored"][index].get("consumed", 0)
        assert consumed == (1 if index in (1, 2) else 0)


def test_session_metrics_by_protocol_and_outcome(scraped: dict[str, Any]) -> None:
    for index in (1, 2, 3):
        found = samples(scraped["texts"][index])
        for protocol in ("keygen/v1", "aux_info/v1"):
            assert value(found, "tessera_node_sessions_total", protocol=protocol, outcome="done")
            assert value(
                found, "tessera_node_session_seconds_count", protocol=protocol, outcome="done"
            ) == value(found, "tessera_node_sessions_total", protocol=protocol, outcome="done")
        presigns = value(
            found, "tessera_node_sessions_total", protocol="presign/v1", outcome="done"
        )
        made = sum(scraped["stored"][index].values())
        assert presigns == made and (presigns >= 3 if index in (1, 2) else presigns == 0)
        assert total(found, "tessera_node_sessions_total", outcome="aborted") == 0


def test_hsm_latency_histogram_is_served_per_node(scraped: dict[str, Any]) -> None:
    for index in (1, 2, 3):
        found = samples(scraped["texts"][index])
        for operation in ("seal", "unseal", "sign"):
            count = value(found, "tessera_hsm_call_seconds_count", operation=operation)
            assert count > 0, (index, operation)
            assert value(found, "tessera_hsm_call_seconds_sum", operation=operation) > 0
    # node 1 signed once and refused once: it unsealed at least its presignature, its share
    # for presigning, and its X25519 key at start-up
    one = samples(scraped["texts"][1])
    assert value(one, "tessera_hsm_call_seconds_count", operation="unseal") >= 3


def test_registries_are_per_node_and_never_collide() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    hsm_a, hsm_b = HsmMetrics(), HsmMetrics()
    first.watch_hsm(hsm_a)
    first.watch_hsm(hsm_a)  # a second registration is a no-op, not a duplicate error
    second.watch_hsm(hsm_b)
    first.signature_issued()
    second.signature_refused(ErrorCode.QUARANTINED)
    with hsm_a.timed("seal"):
        pass
    with hsm_b.timed("an operation nobody named"):
        pass
    a = samples(first.exposition().decode())
    b = samples(second.exposition().decode())
    assert value(a, "tessera_node_signatures_total", outcome="issued", reason="ok") == 1
    assert total(a, "tessera_node_signatures_total", outcome="refused") == 0
    assert value(b, "tessera_node_signatures_total", outcome="refused", reason="QUARANTINED") == 1
    assert value(a, "tessera_hsm_call_seconds_count", operation="seal") == 1
    assert value(b, "tessera_hsm_call_seconds_count", operation="seal") == 0
    assert value(b, "tessera_hsm_call_seconds_count", operation="other") == 1


def test_in_process_refusals_are_counted_and_logged_by_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session refused at its start and a signature refused: each counted under its code
    and logged with the code only — never the spec's inputs or the message."""
    nodes = make_nodes(tmp_path, 2)
    node = nodes[1]
    request = secrets.token_bytes(16)
    spec = SessionSpec(
        protocol=SessionProtocol.KEYGEN,
        request=request,
        parties=(2, 3),  # without node 1
        threshold=2,
        key_id=secrets.token_bytes(16),
    )
    message = b"never logged " + secrets.token_bytes(8)
    with caplog.at_level(logging.INFO, logger="tessera.node"):
        with pytest.raises(NodeError) as start:
            node.start(spec)
        assert start.value.code is ErrorCode.NOT_A_PARTY
        with pytest.raises(NodeError) as sign:
            node.sign(b"\x01" * 16, b"\x02" * 32, message, HashScheme.KECCAK256)
        assert sign.value.code is ErrorCode.UNKNOWN_PRESIGNATURE
    found = samples(node.metrics.exposition().decode())
    assert value(found, "tessera_node_sessions_total", protocol="keygen/v1", outcome="refused") == 1
    assert total(found, "tessera_node_session_seconds_count") == 0  # nothing ran
    assert (
        value(
            found, "tessera_node_signatures_total", outcome="refused", reason="UNKNOWN_PRESIGNATURE"
        )
        == 1
    )
    assert samples(nodes[2].metrics.exposition().decode()) == {}  # another node, untouched
    events = {r.getMessage(): r for r in caplog.records}
    refused = events["session.refused"].fields  # type: ignore[attr-defined]
    assert refused["code"] == "NOT_A_PARTY" and refused["protocol"] == "keygen/v1"
    signed = events["signature.refused"].fields  # type: ignore[attr-defined]
    assert signed["code"] == "UNKNOWN_PRESIGNATURE" and signed["outcome"] == "refused"
    text = repr([(r.getMessage(), getattr(r, "fields", None)) for r in caplog.records])
    assert request.hex() not in text and message.hex() not in text and "never logged" not in text


def test_metrics_route_refuses_bad_input_with_problems(scraped: dict[str, Any]) -> None:
    """POST or an oversized target: a 4xx problem, never a 500 or an echo of the input; a junk
    query or a wrong token changes nothing (the route needs no token).  Body limits are the
    shared middleware's, tested on every route in tests/test_node_http.py."""
    bad = scraped["bad"]
    for name in ("post", "long_target"):
        status, media, text = bad[name]
        assert 400 <= status < 500, (name, status)
        assert media.startswith("application/problem+json"), (name, media)
        assert "AAAA" not in text
    assert bad["junk_query_and_token"][0] == 200
