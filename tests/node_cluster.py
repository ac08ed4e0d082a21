"""A real local cluster for integration tests: node processes with their own SoftHSM2 tokens
and SQLite files on loopback, prime pools cut from the test fixture primes (distinct per node:
test-only speed-up, passed the way an operator passes `--prime-pool`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from coordinator.cluster import LocalCluster
from coordinator.ports import free_port_block

FIXTURE_PRIMES = Path(__file__).parent / "fixtures" / "safe_primes_1536.json"
T = TypeVar("T")


def prime_pools(root: Path, n: int, per_node: int = 4) -> dict[int, Path]:
    primes = json.loads(FIXTURE_PRIMES.read_text())["safe_primes"]
    root.mkdir(parents=True, exist_ok=True)
    pools = {}
    for index in range(1, n + 1):
        # fixture keys 0..5 are used by the in-process protocol tests; take from the end
        start = len(primes) - per_node * index
        path = root / f"pool-{index}.json"
        path.write_text(json.dumps({"bits": 1536, "safe_primes": primes[start : start + per_node]}))
        path.chmod(0o600)
        pools[index] = path
    return pools


def make_cluster(
    root: Path,
    n: int = 3,
    t: int = 2,
    per_node: int = 6,
    *,
    genesis_policy: str | None = None,
    raw_keys: bool = True,
) -> LocalCluster:
    """Protocol tests sign raw bytes, so their nodes hold raw keys unless told otherwise."""
    pools = prime_pools(root / "pools", n, per_node)
    # one spare port: a test may add node n + 1 (LocalCluster.add_node uses base + n + 1)
    return LocalCluster.create(
        root / "cluster",
        n,
        t,
        base_port=free_port_block(n + 1),
        prime_pools=pools,
        genesis_policy=genesis_policy,
        raw_keys=raw_keys,
    )


def extra_pool(root: Path, index: int, per_node: int = 6) -> Path:
    """The pool `prime_pools` would give node `index` (for a node added later)."""
    return prime_pools(root / f"extra-{index}", index, per_node)[index]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
