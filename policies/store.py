"""The local policy store the officer CLI works on until the coordinator API exists.

One SQLite file (WAL) holds proposals, officers' governance signatures, the activated policy
chain, freeze orders, withdrawal requests with their approvals, consumed approval nonces and the
audit log.  Every operation is one ``BEGIN IMMEDIATE`` transaction that re-reads the state,
checks everything (the same `governance`, `approvals` and `evaluator` code a node runs), writes
its rows and its audit records, and commits; any error rolls the whole operation back, so bad
input stores nothing.

Reading the chain re-verifies it (`governance.verify_chain`) and every stored document must
re-hash to its recorded hash, so an edited database is reported, not trusted.  The store keeps
no velocity ledger: limits are enforced by each node's own ledger; `simulate` and withdrawal
decisions take an optional `LedgerView` (e.g. a node's) and otherwise assume an empty one.

`PolicyStore` is the façade; each job lives in its own module: `policies.tables` (the rows),
`policies.store_core` (transaction, audit append, reading the chain back, row codecs),
`policies.store_audit` (audit log and checkpoints), `policies.store_governance` (proposals,
votes, activation, cancel), `policies.store_freezes` (freeze orders),
`policies.store_withdrawals` (approvals, rejections, simulate).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from policies.errors import StoreError
from policies.locations import DEFAULT_STORE, STORE_ENV
from policies.sqlite import sqlite_engine
from policies.store_audit import AuditOps
from policies.store_core import VersionRef
from policies.store_freezes import FreezeOps, FreezeResult
from policies.store_governance import (
    CancelResult,
    GovernanceOps,
    ProposalState,
    SignResult,
    StoredProposal,
)
from policies.store_withdrawals import StoredRequest, WithdrawalOps, WithdrawalResult
from policies.tables import (
    ActivationRow,
    ApprovalRow,
    AuditRow,
    FreezeOrderRow,
    ProposalRow,
    RequestRow,
    SeenNonceRow,
    SignatureRow,
)

__all__ = [
    "DEFAULT_STORE",
    "STORE_ENV",
    "ActivationRow",
    "ApprovalRow",
    "AuditRow",
    "CancelResult",
    "FreezeOrderRow",
    "FreezeResult",
    "PolicyStore",
    "ProposalRow",
    "ProposalState",
    "RequestRow",
    "SeenNonceRow",
    "SignResult",
    "SignatureRow",
    "StoredProposal",
    "StoredRequest",
    "VersionRef",
    "WithdrawalResult",
]


class PolicyStore(AuditOps, GovernanceOps, FreezeOps, WithdrawalOps):
    """Operations of the officer CLI on one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = path
        if path.is_dir():
            raise StoreError(str(path), "is a directory, not a store file")
        if not path.parent.is_dir():
            raise StoreError(str(path), f"directory {path.parent} does not exist")
        try:
            self._engine: Engine = sqlite_engine(
                path, immediate=True, busy_timeout_seconds=busy_timeout_seconds
            )
            # Imported on first use: alembic and the scripts load only once a database opens.
            from policies.migrations.store import SCHEMA  # noqa: PLC0415
            from policies.schema import ensure  # noqa: PLC0415

            # Tables at head on a new file; an older or unknown revision is refused (a
            # SchemaError, a PolicyError) until `tessera policy migrate --store` is run.
            ensure(self._engine, SCHEMA, path)
        except SQLAlchemyError as exc:
            raise StoreError(
                str(path), f"cannot open the store ({exc.__class__.__name__})"
            ) from exc

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
