"""The audit log of the policy store: reading it, verifying it against the officer keys of every
activated version, and officers' signed checkpoints (kept outside the store, they reveal a cut
tail)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select

from policies.audit import (
    AuditRecord,
    AuditReport,
    Checkpoint,
    TrustedHead,
    TrustedKey,
    sign_checkpoint,
    verify_log,
)
from policies.errors import StoreError
from policies.keys import OfficerSigner
from policies.store_core import StoreCore, record_of
from policies.tables import AuditRow


class AuditOps(StoreCore):
    """The audit-log operations of `PolicyStore`."""

    def audit_records(self) -> list[AuditRecord]:
        with self._tx() as session:
            rows = session.exec(select(AuditRow).order_by(col(AuditRow.seq))).all()
            return [record_of(row) for row in rows]

    def trusted_keys(self) -> frozenset[TrustedKey]:
        """Officer keys of every activated version: the keys whose checkpoints count."""
        with self._tx() as session:
            chain = self._chain(session)
        return frozenset(
            TrustedKey(officer.id, officer.algorithm, officer.public_key)
            for link in chain
            for officer in link.document.officers
        )

    def verify_audit(self, *, head: Checkpoint | TrustedHead | None = None) -> AuditReport:
        return verify_log(self.audit_records(), trusted_keys=self.trusted_keys(), head=head)

    def checkpoint(self, signer: OfficerSigner, *, now: datetime) -> Checkpoint:
        """Sign the newest record and append the checkpoint; keep the returned checkpoint outside
        the store to detect truncation later."""
        with self._tx() as session:
            chain = self._chain(session)
            known = {
                (o.id, o.algorithm, o.public_key) for link in chain for o in link.document.officers
            }
            if (signer.officer_id, signer.algorithm, signer.public_key_hex) not in known:
                raise StoreError(
                    f"officer {signer.officer_id!r}",
                    "this key is not an officer key of any activated policy version",
                )
            last_row = session.exec(select(AuditRow).order_by(col(AuditRow.seq).desc())).first()
            if last_row is None:
                raise StoreError("audit log", "is empty: nothing to checkpoint")
            checkpoint = sign_checkpoint(signer, record_of(last_row))
            self._append(session, "checkpoint", checkpoint.model_dump(), now)
            return checkpoint
