"""A local cluster: n node processes on this machine, each with its own directory, SoftHSM2
token and database, plus the coordinator's database — what `tessera cluster up` and
`tessera demo` run.

  <root>/cluster.json       cluster id, threshold, nodes (index, node id, URL, directory)
  <root>/coordinator.db     the coordinator's database (public data only)
  <root>/nodes/node-<i>/    each node's directory (signer/node/runtime.py)
  <root>/logs/node-<i>.log  each node process's output
  <root>/run/node-<i>.pid   the running process

`up` is idempotent: it initialises what does not exist yet, starts nodes that are not
running, and pins the roster on nodes that have none.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
)

from coordinator.client import NodeClient, NodeRefused, NodeUnavailable
from coordinator.engine import Coordinator
from coordinator.health import NodeHealth
from coordinator.store import CoordinatorStore
from signer.errors import TesseraError
from signer.node.api import Health
from signer.node.envelope import NodeCard
from signer.node.runtime import NodeConfig, grow_roster, roster_from_json

CLUSTER_FILE = "cluster.json"


class ClusterError(TesseraError):
    pass


def _init_nodes(
    nodes: list[tuple[int, Path, int, Path | None]],
    *,
    genesis_policy: str | None = None,
    raw_keys: bool = False,
) -> None:
    """`tessera node init` for each (index, directory, port, prime pool), in parallel.  Each node
    is initialised in its own process: PKCS#11 module state (which SoftHSM2 configuration is
    loaded, which tokens are open) is per process, as in production."""
    pending = []
    extra = [*(["--genesis-policy", genesis_policy] if genesis_policy else [])]
    extra += ["--raw-keys"] if raw_keys else []
    for index, directory, port, pool in nodes:
        command = [
            sys.executable,
            "-m",
            "signer.node",
            "init",
            "--dir",
            str(directory),
            "--node-id",
            f"node-{index}",
            "--index",
            str(index),
            "--port",
            str(port),
            *([] if pool is None else ["--prime-pool", str(pool)]),
            *extra,
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603
        pending.append((index, process))
    for index, process in pending:
        _, err = process.communicate(timeout=120)
        if process.returncode != 0:
            raise ClusterError(f"node-{index} init failed: {err.decode(errors='replace')}")


@dataclass(frozen=True)
class NodeEntry:
    index: int
    node_id: str
    url: str
    directory: Path

    @property
    def api_token(self) -> str:
        return (self.directory / "api-token").read_text().strip()


@dataclass(frozen=True)
class LocalCluster:
    root: Path
    cluster_id: bytes
    threshold: int
    nodes: tuple[NodeEntry, ...]

    # --- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path) -> LocalCluster:
        path = root / CLUSTER_FILE
        try:
            doc = json.loads(path.read_text())
            nodes = tuple(
                NodeEntry(int(n["index"]), str(n["node_id"]), str(n["url"]), root / n["directory"])
                for n in doc["nodes"]
            )
            return cls(root, bytes.fromhex(doc["cluster_id"]), int(doc["threshold"]), nodes)
        except FileNotFoundError as exc:
            raise ClusterError(f"{root} has no {CLUSTER_FILE}: run `tessera cluster up`") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterError(f"{path} is malformed: {exc}") from exc

    def save(self) -> None:
        doc = {
            "cluster_id": self.cluster_id.hex(),
            "threshold": self.threshold,
            "nodes": [
                {
                    "index": n.index,
                    "node_id": n.node_id,
                    "url": n.url,
                    "directory": str(n.directory.relative_to(self.root)),
                }
                for n in self.nodes
            ],
        }
        (self.root / CLUSTER_FILE).write_text(json.dumps(doc, indent=2) + "\n")

    @classmethod
    def create(
        cls,
        root: Path,
        n: int,
        threshold: int,
        base_port: int = 18100,
        prime_pools: dict[int, Path] | None = None,
        *,
        genesis_policy: str | None = None,
        raw_keys: bool = False,
    ) -> LocalCluster:
        """Initialise n node directories (tokens, keys) and the cluster file.  `prime_pools`
        gives a node its own safe-prime pool (`tessera primes generate`); never share one pool
        between nodes — they would draw the same primes and aux-info would abort.
        `genesis_policy` is pinned on every node; `raw_keys` lets the nodes hold keys of no
        wallet that sign raw bytes (benchmarks and protocol tests, never production)."""
        if (root / CLUSTER_FILE).exists():
            raise ClusterError(f"{root} already holds a cluster")
        if not 2 <= threshold <= n <= 255:
            raise ClusterError(f"need 2 ≤ t ≤ n ≤ 255, got t = {threshold}, n = {n}")
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _init_nodes(
            [
                (
                    index,
                    root / "nodes" / f"node-{index}",
                    base_port + index,
                    (prime_pools or {}).get(index),
                )
                for index in range(1, n + 1)
                if not (root / "nodes" / f"node-{index}" / "node.json").exists()
            ],
            genesis_policy=genesis_policy,
            raw_keys=raw_keys,
        )
        nodes = []
        for index in range(1, n + 1):
            directory = root / "nodes" / f"node-{index}"
            config = NodeConfig.load(directory)
            nodes.append(NodeEntry(index, f"node-{index}", config.url, directory))
        cluster = cls(root, secrets.token_bytes(32), threshold, tuple(nodes))
        cluster.save()
        return cluster

    def add_node(self, base_port: int, prime_pool: Path | None = None) -> LocalCluster:
        """Initialise node n+1, add it to cluster.json and pin the grown roster on every node
        as the operator (locally; existing cards unchanged).  Start it with `up()`; give it a
        key with `Coordinator.reshare`."""
        index = max(n.index for n in self.nodes) + 1
        directory = self.root / "nodes" / f"node-{index}"
        first = NodeConfig.load(self.nodes[0].directory)  # the new node is set up like the rest
        _init_nodes(
            [(index, directory, base_port + index, prime_pool)],
            genesis_policy=first.genesis_policy,
            raw_keys=first.raw_keys,
        )
        config = NodeConfig.load(directory)
        grown = LocalCluster(
            self.root,
            self.cluster_id,
            self.threshold,
            (*self.nodes, NodeEntry(index, f"node-{index}", config.url, directory)),
        )
        grown.save()
        roster = roster_from_json(grown.roster())
        for node in grown.nodes:
            grow_roster(node.directory, roster)
        return grown

    def roster(self) -> dict[str, Any]:
        cards = [
            NodeCard.from_dict(json.loads((n.directory / "card.json").read_text())).to_dict()
            for n in self.nodes
        ]
        return {"cluster_id": self.cluster_id.hex(), "cards": cards}

    # --- processes -----------------------------------------------------------------------------
    def _pid_file(self, node: NodeEntry) -> Path:
        return self.root / "run" / f"{node.node_id}.pid"

    def pid(self, node: NodeEntry) -> int | None:
        try:
            pid = int(self._pid_file(node).read_text())
        except (FileNotFoundError, ValueError):
            return None
        # Our own child that died is a zombie until reaped; another process's child (started by
        # an earlier `tessera cluster up`) is not ours to reap.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self, node: NodeEntry, env: dict[str, str] | None = None) -> int:
        running = self.pid(node)
        if running is not None:
            return running
        (self.root / "run").mkdir(exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        log = (self.root / "logs" / f"{node.node_id}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "signer.node", "run", "--dir", str(node.directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self._pid_file(node).write_text(str(process.pid))
        return process.pid

    def stop(self, node: NodeEntry, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        pid = self.pid(node)
        if pid is None:
            return
        os.kill(pid, sig)

        def exited() -> bool:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                waited = 0
            return waited == pid or self.pid(node) is None

        # A node shuts down in tens of milliseconds; the first checks come quickly, later ones
        # back off so a slow shutdown is not polled twenty times a second.
        waiting = Retrying(
            retry=retry_if_result(lambda gone: not gone),
            wait=wait_exponential(multiplier=0.02, max=0.5),
            stop=stop_after_delay(timeout),
        )
        try:
            waiting(exited)
        except RetryError:
            os.kill(pid, signal.SIGKILL)
        self._pid_file(node).unlink(missing_ok=True)

    def client(self, node: NodeEntry) -> NodeClient:
        return NodeClient(node.index, node.url, node.api_token)

    def clients(self) -> dict[int, NodeClient]:
        return {n.index: self.client(n) for n in self.nodes}

    async def wait_healthy(self, node: NodeEntry, timeout: float = 60.0) -> Health:
        """The node's health once it answers, polled with exponential back-off (50 ms doubling
        to 0.5 s: a fresh process answers within a second, one unsealing its token can take many)
        for at most `timeout` seconds."""
        client = self.client(node)
        started = self._pid_file(node).exists()

        async def health() -> Health:
            # a node that exited (its port taken, its token refused) is not waited for
            if started and self.pid(node) is None:
                raise ClusterError(f"{node.node_id} exited: {self.last_words(node)}")
            return await client.health()

        waiting = AsyncRetrying(
            retry=retry_if_exception_type((NodeUnavailable, NodeRefused)),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            stop=stop_after_delay(timeout),
        )
        try:
            return await waiting(health)
        except RetryError as exc:
            raise ClusterError(
                f"{node.node_id} did not come up in {timeout:.0f} s: {self.last_words(node)}"
            ) from exc
        finally:
            await client.aclose()

    def last_words(self, node: NodeEntry, limit: int = 300) -> str:
        """What the node's log last said at error level (the exception a failed start ends
        with; else its last line), clipped, and where the whole log is."""
        path = self.root / "logs" / f"{node.node_id}.log"
        try:
            with path.open("rb") as log:
                log.seek(max(0, path.stat().st_size - 16384))
                lines = log.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            lines = []
        said = lines[-1] if lines else "no output"
        for line in reversed(lines):
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(line)
                if record.get("level") in ("error", "critical"):
                    said = str(record.get("message", line))
                    break
        return f"{said[:limit]!r} (log: {path})"

    async def up(self, env: dict[str, str] | None = None) -> None:
        """Start every node that is not running and pin the roster where it is missing."""
        for node in self.nodes:
            self.start(node, env)
        roster = self.roster()
        for node in self.nodes:
            health = await self.wait_healthy(node)
            if not health.pinned:
                client = self.client(node)
                try:
                    await client.pin(roster)
                finally:
                    await client.aclose()

    def down(self) -> None:
        for node in self.nodes:
            self.stop(node)

    def coordinator(
        self,
        traffic: list[dict[str, Any]] | None = None,
        health: Callable[[Mapping[int, NodeClient]], NodeHealth] | None = None,
    ) -> Coordinator:
        """A coordinator over this cluster; `health` builds its node health tracker from the
        clients (tests inject one with their own clock)."""
        store = CoordinatorStore(self.root / "coordinator.db")
        clients = self.clients()
        tracker = None if health is None else health(clients)
        return Coordinator(clients, self.threshold, store, traffic, tracker)
