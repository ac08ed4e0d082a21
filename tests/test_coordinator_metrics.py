"""The coordinator's Prometheus metrics (coordinator/metrics.py) and JSON logs: signatures issued
and refused by reason, presignatures in the pool by wallet, session durations by protocol, node
health — each coordinator in its own registry — and one log record per session and per
signature with its session id, request id, parties and outcome.  In process (node_local.py)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from node_cluster import run
from node_local import LocalClient, ScriptedNode, make_nodes

from coordinator.engine import Coordinator, SignRequestInvalid
from coordinator.metrics import CoordinatorMetrics
from coordinator.store import CoordinatorStore, CoordinatorStoreError, WalletRow
from signer.logs import JsonFormatter
from signer.node.api import SessionProtocol
from signer.problems import ErrorCode
from signer.protocol.sign import HashScheme


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` in a text exposition (0 if absent)."""
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{shown}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    for line in text.splitlines():
        found = re.match(pattern, line)
        if found:
            return float(found.group(1))
    return 0.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ScriptedNode]:
    return make_nodes(tmp_path_factory.mktemp("metrics-nodes"), 3)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics-coordinator") / "coordinator.db"


def engine(nodes: dict[int, ScriptedNode], store_path: Path) -> Coordinator:
    clients: Any = {i: LocalClient(i, node) for i, node in nodes.items()}
    return Coordinator(clients, 2, CoordinatorStore(store_path))


@pytest.fixture(scope="module")
def wallet(nodes: dict[int, ScriptedNode], store_path: Path) -> WalletRow:
    return run(engine(nodes, store_path).create_wallet("m"))


def test_each_coordinator_has_its_own_registry(
    nodes: dict[int, ScriptedNode], store_path: Path
) -> None:
    first, second = engine(nodes, store_path), engine(nodes, store_path)
    assert first.metrics.registry is not second.metrics.registry
    first.metrics.issued()
    assert value(first.metrics_text(), "tessera_coordinator_signatures_issued_total") == 1
    assert value(second.metrics_text(), "tessera_coordinator_signatures_issued_total") == 0
    CoordinatorMetrics()  # a third set of the same names: no clash with the default registry


def test_pool_sign_refusals_sessions_and_health_are_counted(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    coordinator = engine(nodes, store_path)
    made = run(coordinator.fill_pool(wallet, (1, 2), (), 2))
    text = coordinator.metrics_text()
    available = value(text, "tessera_coordinator_presignatures_available", wallet="m")
    assert made == 2 and available >= 2
    presigns = value(
        text, "tessera_coordinator_session_seconds_count", protocol=SessionProtocol.PRESIGN,
        outcome="done",
    )  # fmt: skip
    assert presigns == 2
    assert (
        value(
            text, "tessera_coordinator_session_seconds_sum", protocol="presign/v1", outcome="done"
        )
        > 0
    )

    outcome = run(coordinator.sign("m", b"metrics", HashScheme.KECCAK256, preferred=(1, 2)))
    assert outcome.signers == (1, 2)
    with pytest.raises(SignRequestInvalid):
        run(coordinator.sign("m", b"", HashScheme.KECCAK256))
    with pytest.raises(CoordinatorStoreError):
        run(coordinator.sign("no such wallet", b"x", HashScheme.KECCAK256))
    coordinator.health.mark_down(3, "test: stopped")

    text = coordinator.metrics_text()
    assert value(text, "tessera_coordinator_signatures_issued_total") == 1
    refused = "tessera_coordinator_signatures_refused_total"
    assert value(text, refused, reason=ErrorCode.VALIDATION.value) == 1
    assert value(text, refused, reason=ErrorCode.NOT_FOUND.value) == 1
    assert value(text, "tessera_coordinator_presignatures_available", wallet="m") == available - 1
    assert value(text, "tessera_coordinator_node_up", node="1") == 1
    assert value(text, "tessera_coordinator_node_up", node="3") == 0


def test_sessions_and_signatures_are_logged_as_json(
    nodes: dict[int, ScriptedNode], store_path: Path, wallet: WalletRow
) -> None:
    coordinator = engine(nodes, store_path)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("coordinator"))  # what signer.logs.configure installs
    logger = logging.getLogger("tessera.coordinator")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run(coordinator.presign(wallet, (1, 3), ()))
        run(coordinator.sign("m", b"logged", HashScheme.KECCAK256, preferred=(1, 3)))
        with pytest.raises(SignRequestInvalid):
            run(coordinator.sign("m", b"", HashScheme.KECCAK256))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    sessions = [d for d in docs if d["event"] == "session.done"]
    assert sessions, stream.getvalue()
    presign = sessions[0]
    assert presign["protocol"] == "presign/v1" and presign["outcome"] == "done"
    assert presign["parties"] == "1,3" and len(presign["session"]) > 0
    assert len(presign["request"]) == 32 and presign["component"] == "coordinator"
    (issued,) = [d for d in docs if d["event"] == "signature.issued"]
    assert issued["outcome"] == "issued" and issued["parties"] == "1,3"
    assert len(issued["request"]) == 32 and issued["presignature"]
    (refused,) = [d for d in docs if d["event"] == "signature.refused"]
    assert refused["code"] == "VALIDATION" and refused["request"] != issued["request"]
