"""The coordinator's façade over a cluster of node processes: `Coordinator` combines one module
per job —

  sessions   running a session; blame, presign identification, the quarantine mirror
  wallets    aux-info and DKGs
  pools      presignature pools (fill, keep full with back-off)
  signing    signing with retries across signer sets
  transactions  policy wallets: the transaction, claimed intent, approvals and receipts each
             node decides on; relaying the officers' policy chain
  resharing  refresh and re-share with storage confirmations

— and `specs` builds every session spec.  The names below are re-exported so callers need one
import.
"""

from __future__ import annotations

from coordinator.errors import (
    InconsistentReports,
    ReshareUnconfirmed,
    SetQuarantined,
    SigningFailed,
    SignRequestInvalid,
)
from coordinator.pools import PoolTarget
from coordinator.resharing import ReshareOps
from coordinator.signing import NEVER_USABLE, NOTHING_CONSUMED, SignOutcome
from coordinator.specs import Operation, presign_spec, reshare_spec
from coordinator.transactions import TransactionOps

__all__ = [
    "NEVER_USABLE",
    "NOTHING_CONSUMED",
    "Coordinator",
    "InconsistentReports",
    "Operation",
    "PoolTarget",
    "ReshareUnconfirmed",
    "SetQuarantined",
    "SignOutcome",
    "SignRequestInvalid",
    "SigningFailed",
    "presign_spec",
    "reshare_spec",
]


class Coordinator(TransactionOps, ReshareOps):
    """Aux-info, wallets, pools, signing (raw keys and policy wallets), refresh and re-share
    over the nodes' HTTP APIs."""

    def metrics_text(self) -> str:
        """Every metric in the Prometheus text format; node health and pool gauges are brought
        up to date first (they are otherwise updated only as the coordinator works)."""
        self.metrics.nodes(self.parties, self.health.down())
        for wallet in self.store.wallets():
            self._pool_gauge(wallet)
        return self.metrics.text()
