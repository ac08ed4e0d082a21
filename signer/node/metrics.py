"""Prometheus metrics of one node process, served at ``GET /metrics`` (text exposition format).

One `CollectorRegistry` per node (never the global default), so that several nodes in one test
process do not collide:

  tessera_node_signatures_total{outcome="issued"|"refused", reason=<ErrorCode> | "ok"}
  tessera_node_sessions_total{protocol, outcome="done"|"aborted"|"refused"|"cancelled"|"expired"}
  tessera_node_session_seconds{protocol, outcome}            histogram, start to outcome
  tessera_node_presignatures{key, state="available"}         gauge, read from the store at
                                                             scrape time (always true)
  tessera_node_decision_seconds{action="sign"|"receipt"}    histogram, the policy decision alone
                                                             (decode, approvals, evaluation)
  tessera_node_policy_info{policy_hash, version}              gauge 1: the policy version in
                                                             force ("none" before the genesis)
  tessera_node_frozen_wallets                                gauge, wallets frozen here
  tessera_hsm_call_seconds{operation}                        histogram (hsm.metrics), the
                                                             node's keystore's own

Labels carry only public, bounded values — protocol names, error codes, key ids (public) —
never a request body, a share, a session's inputs or a culprit's message, so the endpoint needs
no bearer token (like /v1/health) and a scrape tells nothing a log would not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hsm.metrics import HsmMetrics
from signer.node.store import NodeStore
from signer.problems import ErrorCode

#: Content type of `NodeMetrics.exposition` (prometheus_client.CONTENT_TYPE_LATEST).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The policy decision takes well under a millisecond; its buckets resolve that.
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.05)

#: Sessions run from well under a second (signing-side rounds) to minutes (aux-info with fresh
#: primes), so the buckets span both.
SESSION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class PresignatureCollector(Collector):
    """`tessera_node_presignatures`: available presignatures per active key, counted in the
    store when scraped — a gauge kept by increments could drift from the table after a crash
    or a revocation; a count cannot."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "tessera_node_presignatures",
            "Presignatures this node holds, by key and state (counted at scrape time).",
            labels=["key", "state"],
        )
        for key_id in sorted({row.key_id for row in self.store.active_keys()}):
            available = self.store.presignature_counts(key_id).get("available", 0)
            family.add_metric([key_id, "available"], available)
        yield family

    def describe(self) -> Iterable[Metric]:
        # Without `describe`, registering would call `collect` (a database read) at start-up.
        return [
            GaugeMetricFamily(
                "tessera_node_presignatures",
                "Presignatures this node holds, by key and state (counted at scrape time).",
                labels=["key", "state"],
            )
        ]


class _PolicyStatus(Protocol):
    @property
    def policy_hash(self) -> str | None: ...
    @property
    def policy_version(self) -> int | None: ...
    @property
    def frozen(self) -> list[str]: ...


class PolicyCollector(Collector):
    """`tessera_node_policy_info` and `tessera_node_frozen_wallets`, read at scrape time, so a
    node that lags behind the officers' chain shows on a dashboard."""

    def __init__(self, status: Callable[[], _PolicyStatus]) -> None:
        self.status = status

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "tessera_node_policy_info",
                "The policy version this node enforces (value 1).",
                labels=["policy_hash", "version"],
            ),
            GaugeMetricFamily("tessera_node_frozen_wallets", "Wallets frozen on this node."),
        )

    def collect(self) -> Iterable[Metric]:
        status = self.status()
        info, frozen = self._families()
        version = "none" if status.policy_version is None else str(status.policy_version)
        info.add_metric([status.policy_hash or "none", version], 1)
        frozen.add_metric([], len(status.frozen))
        yield info
        yield frozen

    def describe(self) -> Iterable[Metric]:
        return list(self._families())


class NodeMetrics:
    """The counters and histograms of one node, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.signatures = Counter(
            "tessera_node_signatures",
            "Partial signatures asked of this node, by outcome and refusal code.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.sessions = Counter(
            "tessera_node_sessions",
            "Protocol sessions on this node, by protocol and outcome.",
            ["protocol", "outcome"],
            registry=self.registry,
        )
        self.session_seconds = Histogram(
            "tessera_node_session_seconds",
            "Seconds from a session's start to its outcome on this node.",
            ["protocol", "outcome"],
            buckets=SESSION_BUCKETS,
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "tessera_node_decision_seconds",
            "Seconds of this node's policy decision on a request (decode, approvals, evaluation).",
            ["action"],
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self._store: NodeStore | None = None

    def watch_store(self, store: NodeStore) -> None:
        """Serve the presignature gauge from `store` (once)."""
        if self._store is None:
            self._store = store
            self.registry.register(PresignatureCollector(store))

    def watch_policy(self, status: Callable[[], _PolicyStatus]) -> None:
        """Serve the policy gauges from `status` (the node's `NodeGovernance.status`)."""
        self.registry.register(PolicyCollector(status))

    def watch_hsm(self, hsm: HsmMetrics) -> None:
        """Serve the HSM latency histogram of the node's keystore."""
        hsm.register(self.registry)

    def decided(self, action: str, seconds: float) -> None:
        self.decision_seconds.labels(action=action).observe(seconds)

    def signature_issued(self) -> None:
        self.signatures.labels(outcome="issued", reason="ok").inc()

    def signature_refused(self, code: ErrorCode) -> None:
        self.signatures.labels(outcome="refused", reason=code.value).inc()

    def session_outcome(self, protocol: str, outcome: str, seconds: float | None) -> None:
        """A session ended (`done`, `aborted`, `cancelled` by the coordinator, `expired` after
        the TTL) or was refused at its start (`refused`, no duration: nothing ran)."""
        self.sessions.labels(protocol=protocol, outcome=outcome).inc()
        if seconds is not None:
            self.session_seconds.labels(protocol=protocol, outcome=outcome).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
