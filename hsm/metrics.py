"""Prometheus metrics of the HSM layer: how long each call into the token takes.

Defined here, in the bottom layer, so that `hsm` never imports `signer`; each `KeyStore` owns an
`HsmMetrics` whose collectors are *not* registered anywhere (no global default registry), and a
node process registers them into its own registry (`signer.node.metrics`).  That keeps several
keystores of one test process — three in-process nodes, say — from colliding on metric names.

Only operation names and durations are recorded: never a label, key id, context or byte of
data, so a scrape cannot leak what was sealed or signed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Histogram

#: `tessera_hsm_call_seconds{operation}` label values, by the `KeyStore` operation that runs.
#: A small fixed set: an unknown operation is "other", so a label cannot grow without bound.
OPERATIONS: dict[str, str] = {
    "login": "login",
    "seal": "seal",
    "unseal": "unseal",
    "identity signature": "sign",
    "officer signature": "sign_officer",
    "officer key": "officer_key",
    "ensure node keys": "node_keys",
    "load node keys": "node_keys",
    "read KEK attributes": "inspect",
    "read token info": "inspect",
    "list token objects": "inspect",
}
OTHER = "other"

#: Token calls take ~0.1 ms (SoftHSM2) to tens of ms (a network HSM); login can take seconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


def operation_label(operation: str) -> str:
    return OPERATIONS.get(operation, OTHER)


class HsmMetrics:
    """The HSM layer's collectors, unregistered until `register` puts them in a registry."""

    def __init__(self) -> None:
        self.call_seconds = Histogram(
            "tessera_hsm_call_seconds",
            "Seconds per PKCS#11 operation of the node's key store (lock wait included).",
            ["operation"],
            buckets=BUCKETS,
            registry=None,
        )
        self._registered: set[int] = set()

    def register(self, registry: CollectorRegistry) -> None:
        """Add the collectors to `registry` (once per registry; a second call is a no-op)."""
        if id(registry) in self._registered:
            return
        registry.register(self.call_seconds)
        self._registered.add(id(registry))

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        """Observe the block's duration under `operation`'s label, whether it raised or not
        (a failing call is a call the node waited for)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.call_seconds.labels(operation=operation_label(operation)).observe(
                time.perf_counter() - start
            )
