"""`Enforcement`: what a node enforces its policy with — its policy chain (`NodeGovernance`),
its audit log (`NodeAudit`), its velocity ledger and whether it may hold raw keys — opened once
per node process and shared by the HTTP app and the node's service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from policies.velocity import VelocityLedger
from signer.node.audit import IdentitySigner, NodeAudit
from signer.node.governance import NodeGovernance
from signer.node.store import NodeStore


@dataclass(frozen=True)
class Enforcement:
    governance: NodeGovernance
    audit: NodeAudit
    ledger: VelocityLedger
    raw_keys: bool = False

    @classmethod
    def open(
        cls,
        store: NodeStore,
        *,
        genesis: str | None,
        raw_keys: bool,
        signer: IdentitySigner | None = None,
        ledger_path: Path | None = None,
    ) -> Enforcement:
        """`signer` None: the audit log writes no checkpoints.  The ledger defaults to
        ``velocity.db`` next to the node database."""
        audit = NodeAudit(store, signer)
        governance = NodeGovernance(store, genesis, audit)
        ledger = VelocityLedger(ledger_path or store.path.with_name("velocity.db"))
        return cls(governance, audit, ledger, raw_keys)

    def close(self) -> None:
        self.ledger.close()
