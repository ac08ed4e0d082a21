"""Shared fixtures.  Test-only speed-up: Paillier keys come from pregenerated safe primes in
tests/fixtures (production code always generates its own, see signer/primes.py)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from signer.paillier import PaillierSecretKey
from signer.ring_pedersen import RingPedersenSecret
from signer.zk.common import ProofContext

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_primes() -> list[int]:
    doc = json.loads((FIXTURES / "safe_primes_1536.json").read_text())
    return [int(p, 16) for p in doc["safe_primes"]]


_KEYS: dict[int, PaillierSecretKey] = {}
_RP: dict[int, RingPedersenSecret] = {}


def paillier_key(index: int) -> PaillierSecretKey:
    """The index-th test Paillier key (deterministic factors, cached)."""
    if index not in _KEYS:
        primes = fixture_primes()
        _KEYS[index] = PaillierSecretKey.from_primes(primes[2 * index], primes[2 * index + 1])
    return _KEYS[index]


def ring_pedersen(index: int) -> RingPedersenSecret:
    if index not in _RP:
        _RP[index] = RingPedersenSecret.generate(paillier_key(index))
    return _RP[index]


def new_context(prover: int = 1) -> ProofContext:
    return ProofContext(secrets.token_bytes(32), prover)


@pytest.fixture
def ctx() -> ProofContext:
    return new_context(1)


@pytest.fixture(scope="session")
def prover_key() -> PaillierSecretKey:
    return paillier_key(0)


@pytest.fixture(scope="session")
def verifier_key() -> PaillierSecretKey:
    return paillier_key(1)


@pytest.fixture(scope="session")
def verifier_aux() -> RingPedersenSecret:
    return ring_pedersen(1)


@pytest.fixture(scope="session")
def prover_aux() -> RingPedersenSecret:
    return ring_pedersen(0)


#: Modules whose world takes minutes to set up, longest first.  Collected first, so pytest-xdist
#: (`--dist loadfile --no-loadscope-reorder`, `./run test`; without the last flag xdist hands
#: out the files with the most tests first) starts them at once and the short modules fill the
#: other worker around them, instead of one of these starting last and running alone.
LONG_MODULES = (
    "test_payouts.py",
    "test_api_scale.py",
    "test_node_quarantine.py",
    "test_protocol_sign.py",
    "test_demo_service.py",
    "test_demo_cluster.py",
    "test_api_service.py",
)


def pytest_configure(config: pytest.Config) -> None:
    # an xdist worker's base temporary directory is <the run's>/<worker id>: the protocol
    # fixtures' aux-info is computed once per run in a folder beside them
    # (tests/protocol_fixtures.py `_shared`)
    basetemp = getattr(config.option, "basetemp", None)
    if hasattr(config, "workerinput") and basetemp:
        os.environ["TESSERA_SHARED_FIXTURES"] = str(Path(basetemp).parent / "shared-fixtures")


#: Seconds of setup, call and teardown per worker and per test file, for the summary below.
_BUSY: dict[str, float] = {}
_FILES: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    gateway = getattr(getattr(report, "node", None), "gateway", None)
    worker = str(getattr(gateway, "id", "main"))
    _BUSY[worker] = _BUSY.get(worker, 0.0) + report.duration
    module = report.nodeid.split("::", 1)[0]
    _FILES[module] = _FILES.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # how the two workers were loaded, and where the time went: what to trim or move in
    # LONG_MODULES when the run nears its 30 minutes
    if not _BUSY:
        return
    terminalreporter.write_sep("=", "busy seconds per worker, and the 12 longest test files")
    for worker, seconds in sorted(_BUSY.items()):
        terminalreporter.write_line(f"{worker}: {seconds:.0f} s")
    for module, seconds in sorted(_FILES.items(), key=lambda kv: -kv[1])[:12]:
        terminalreporter.write_line(f"{seconds:8.0f} s  {module}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: the order within a module and among the rest is kept
