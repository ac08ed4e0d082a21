"""The coordinator's Prometheus metrics (prometheus-client), one registry per `Coordinator`.

A registry of its own rather than the process-wide default: a process may hold several
coordinators (the tests do, a service could hold one per cluster), and each must report only
what it did — the default registry would also refuse the second set of metric names.

  tessera_coordinator_signatures_issued_total            verified signatures returned
  tessera_coordinator_signatures_refused_total{reason}   sign requests that ended without one
                                                         (reason: an `ErrorCode` value)
  tessera_coordinator_presignatures_available{wallet}    presignatures in the pool, all sets
  tessera_coordinator_session_seconds{protocol,outcome}  histogram of session durations
  tessera_coordinator_node_up{node}                      1 when the node may be chosen, 0 while
                                                         it is down (`coordinator.health`)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from signer.problems import ErrorCode

#: Protocol sessions last from milliseconds (a presign over loopback) to minutes (aux-info on
#: fresh 1536-bit safe primes): buckets up to ten minutes.
SESSION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0)

PREFIX = "tessera_coordinator"


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.signatures_issued = Counter(
            f"{PREFIX}_signatures_issued",
            "Verified signatures the coordinator returned.",
            registry=self.registry,
        )
        self.signatures_refused = Counter(
            f"{PREFIX}_signatures_refused",
            "Sign requests that ended without a signature, by reason (an ErrorCode).",
            ["reason"],
            registry=self.registry,
        )
        self.presignatures = Gauge(
            f"{PREFIX}_presignatures_available",
            "Presignatures available in the coordinator's pools, by wallet.",
            ["wallet"],
            registry=self.registry,
        )
        self.session_seconds = Histogram(
            f"{PREFIX}_session_seconds",
            "Duration of the protocol sessions the coordinator drove.",
            ["protocol", "outcome"],
            buckets=SESSION_BUCKETS,
            registry=self.registry,
        )
        self.node_up = Gauge(
            f"{PREFIX}_node_up",
            "1 if the node may be chosen for a session, 0 while a health check has not seen it "
            "back after an operational failure.",
            ["node"],
            registry=self.registry,
        )

    def issued(self) -> None:
        self.signatures_issued.inc()

    def refused(self, reason: ErrorCode) -> None:
        self.signatures_refused.labels(reason=reason.value).inc()

    def session(self, protocol: str, outcome: str, seconds: float) -> None:
        self.session_seconds.labels(protocol=protocol, outcome=outcome).observe(seconds)

    def pool(self, wallet: str, available: int) -> None:
        self.presignatures.labels(wallet=wallet).set(available)

    def pool_taken(self, wallet: str) -> None:
        """One presignature left the pool (set again from the store whenever it is filled)."""
        self.presignatures.labels(wallet=wallet).dec()

    def nodes(self, parties: tuple[int, ...], down: frozenset[int]) -> None:
        for index in parties:
            self.node_up.labels(node=str(index)).set(0 if index in down else 1)

    def text(self) -> str:
        """The Prometheus text exposition format of every metric."""
        return generate_latest(self.registry).decode()
