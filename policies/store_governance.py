"""Policy versions in the store: proposals, officers' activation votes, activation (with the
loosening time lock) and cancelling a time-locked version.

Each operation re-reads the chain and checks the vote with `governance` (the code a node runs)
inside one transaction, so a refused vote stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session, col, select

from policies.diff import diff_policies
from policies.document import PolicyDocument, parse_policy, timestamp_str
from policies.errors import StoreError
from policies.governance import (
    ActivatedVersion,
    GovernanceSignature,
    PolicyProposal,
    activate,
    active_policy,
    cancel_pending,
    cancel_statement,
    count_signatures,
    deciding_version,
    pending_version,
    sign_activation,
    sign_governance,
    verify_signature,
)
from policies.keys import OfficerSigner, Purpose
from policies.store_core import StoreCore, from_us, proposal_of, to_json, us
from policies.tables import ActivationRow, ProposalRow

ProposalState = Literal["proposed", "stale", "active", "time-locked", "superseded", "cancelled"]


@dataclass(frozen=True)
class StoredProposal:
    proposal: PolicyProposal
    source: str
    proposed_at: datetime
    state: ProposalState
    signatures: tuple[GovernanceSignature, ...]

    @property
    def signed_by(self) -> tuple[str, ...]:
        return tuple(sorted({s.officer for s in self.signatures}))


@dataclass(frozen=True)
class SignResult:
    """An officer's signature recorded, and where its quorum stands."""

    signature: GovernanceSignature
    counted: tuple[str, ...]
    needed: int


@dataclass(frozen=True)
class CancelResult:
    pending: ActivatedVersion
    counted: tuple[str, ...]
    needed: int
    cancelled: bool


class GovernanceOps(StoreCore):
    """The policy-version operations of `PolicyStore`."""

    def proposals(self, *, now: datetime) -> list[StoredProposal]:
        with self._tx() as session:
            chain = self._chain(session)
            rows = session.exec(
                select(ProposalRow).order_by(
                    col(ProposalRow.version), col(ProposalRow.proposed_at_us)
                )
            ).all()
            return [self._stored(session, row, chain, now) for row in rows]

    def _stored(
        self, session: Session, row: ProposalRow, chain: list[ActivatedVersion], now: datetime
    ) -> StoredProposal:
        proposal = proposal_of(row)
        links = {link.policy_hash: link for link in chain}
        state: ProposalState
        link = links.get(row.policy_hash)
        if link is not None:
            if link.cancelled:
                state = "cancelled"
            elif link.effective_at > now:
                state = "time-locked"
            elif active_policy(chain, now=now).policy_hash == row.policy_hash:
                state = "active"
            else:
                state = "superseded"
        else:
            live = [c for c in chain if not c.cancelled]
            head_version = live[-1].version if live else 0
            state = "proposed" if proposal.version > head_version else "stale"
        return StoredProposal(
            proposal=proposal,
            source=row.source,
            proposed_at=from_us(row.proposed_at_us),
            state=state,
            signatures=self._signatures(session, Purpose.POLICY_ACTIVATION, row.policy_hash),
        )

    def find_proposal(
        self, *, now: datetime, version: int | None = None, policy_hash: str | None = None
    ) -> StoredProposal:
        """A proposal by hash (or unique hash prefix), by version, or the only open one."""
        candidates = self.proposals(now=now)
        if policy_hash is not None:
            found = [c for c in candidates if c.proposal.policy_hash.startswith(policy_hash)]
            what = f"proposal {policy_hash}"
        elif version is not None:
            found = [
                c
                for c in candidates
                if c.proposal.version == version and c.state not in ("stale", "cancelled")
            ]
            what = f"proposal for version {version}"
        else:
            found = [c for c in candidates if c.state == "proposed"]
            what = "open proposal"
        if not found:
            raise StoreError(what, "not found in the store")
        if len(found) > 1:
            hashes = ", ".join(c.proposal.policy_hash[:16] for c in found)
            raise StoreError(what, f"ambiguous ({hashes}); give --hash")
        return found[0]

    def propose(self, document: PolicyDocument, *, source: str, now: datetime) -> StoredProposal:
        """Record ``document`` as a proposal extending the chain."""
        proposal = PolicyProposal.of(document)
        # The stored form must read back as the same document, or nobody could verify it.
        again = parse_policy(document.canonical_object(), source=source)
        if again.policy_hash() != proposal.policy_hash:
            raise StoreError(source, "the canonical form does not re-read to the same hash")
        with self._tx() as session:
            if session.get(ProposalRow, proposal.policy_hash) is not None:
                raise StoreError(f"proposal {proposal.policy_hash}", "already proposed")
            chain = self._chain(session)
            deciding = deciding_version(chain, proposal, now=now)
            changes: dict[str, Any] = {"lines": [], "loosening": []}
            if deciding is not None:
                diff = diff_policies(deciding, document)
                changes = {"lines": list(diff.lines), "loosening": list(diff.loosening)}
            row = ProposalRow(
                policy_hash=proposal.policy_hash,
                version=document.version,
                previous=document.previous,
                document=to_json(document.canonical_object()),
                source=source,
                proposed_at_us=us(now),
            )
            session.add(row)
            session.flush()
            self._append(
                session,
                "policy_proposed",
                {
                    "policy_hash": proposal.policy_hash,
                    "version": document.version,
                    "previous": document.previous,
                    "source": source,
                    **changes,
                },
                now,
            )
            return self._stored(session, row, chain, now)

    def sign_policy(self, signer: OfficerSigner, *, policy_hash: str, now: datetime) -> SignResult:
        """``signer``'s activation vote for a proposal, checked against the officers who decide."""
        with self._tx() as session:
            proposal = self._proposal(session, policy_hash)
            chain = self._chain(session)
            if any(link.policy_hash == policy_hash for link in chain):
                raise StoreError(f"proposal {policy_hash}", "already activated")
            deciding = deciding_version(chain, proposal, now=now)
            signers = proposal.document if deciding is None else deciding
            signature = sign_activation(signer, proposal)
            statement = proposal.statement()
            verify_signature(signers, Purpose.POLICY_ACTIVATION, statement, signature)
            self._add_signature(session, signature, policy_hash, now)
            counted, _ = count_signatures(
                signers,
                Purpose.POLICY_ACTIVATION,
                statement,
                self._signatures(session, Purpose.POLICY_ACTIVATION, policy_hash),
            )
            self._append(
                session,
                "policy_signed",
                {
                    "purpose": Purpose.POLICY_ACTIVATION.value,
                    "policy_hash": policy_hash,
                    "version": proposal.version,
                    "officer": signer.officer_id,
                    "signature": signature.signature,
                },
                now,
            )
            return SignResult(signature, counted, signers.governance.quorum)

    def activate(self, *, policy_hash: str, now: datetime) -> ActivatedVersion:
        """Activate a proposal once the deciding quorum signed it."""
        with self._tx() as session:
            proposal = self._proposal(session, policy_hash)
            chain = self._chain(session)
            if any(link.policy_hash == policy_hash for link in chain):
                raise StoreError(f"proposal {policy_hash}", "already activated")
            signatures = self._signatures(session, Purpose.POLICY_ACTIVATION, policy_hash)
            link = activate(chain, proposal, signatures, now=now)
            session.add(
                ActivationRow(
                    position=len(chain) + 1,
                    policy_hash=policy_hash,
                    activated_at_us=us(now),
                    effective_at_us=us(link.effective_at),
                    loosening=to_json(list(link.loosening)),
                    signed_by=to_json(list(link.signed_by)),
                )
            )
            session.flush()
            self._append(
                session,
                "policy_activated",
                {
                    "policy_hash": policy_hash,
                    "version": link.version,
                    "previous": link.document.previous,
                    "signed_by": list(link.signed_by),
                    "effective_at": timestamp_str(link.effective_at),
                    "loosening": list(link.loosening),
                },
                now,
            )
            return link

    def sign_cancel(self, signer: OfficerSigner, *, now: datetime) -> CancelResult:
        """``signer``'s vote to cancel the time-locked version; cancels it at freeze quorum."""
        with self._tx() as session:
            chain = self._chain(session)
            pending = pending_version(chain, now=now)
            if pending is None:
                raise StoreError("policy chain", "no time-locked version is pending")
            in_force = active_policy(chain, now=now).document
            statement = cancel_statement(pending)
            signature = sign_governance(signer, Purpose.POLICY_CANCEL, statement)
            verify_signature(in_force, Purpose.POLICY_CANCEL, statement, signature)
            self._add_signature(session, signature, pending.policy_hash, now)
            signatures = self._signatures(session, Purpose.POLICY_CANCEL, pending.policy_hash)
            needed = in_force.governance.freeze_quorum
            counted, _ = count_signatures(in_force, Purpose.POLICY_CANCEL, statement, signatures)
            payload = {
                "purpose": Purpose.POLICY_CANCEL.value,
                "policy_hash": pending.policy_hash,
                "version": pending.version,
                "officer": signer.officer_id,
                "signature": signature.signature,
            }
            self._append(session, "policy_signed", payload, now)
            if len(counted) < needed:
                return CancelResult(pending, counted, needed, cancelled=False)
            cancelled = cancel_pending(chain, signatures, now=now)
            row = session.exec(
                select(ActivationRow).where(col(ActivationRow.policy_hash) == pending.policy_hash)
            ).one()
            row.cancelled_at_us = us(now)
            row.cancelled_by = to_json(list(cancelled.cancelled_by))
            session.add(row)
            session.flush()
            self._append(
                session,
                "policy_cancelled",
                {
                    "policy_hash": pending.policy_hash,
                    "version": pending.version,
                    "cancelled_by": list(cancelled.cancelled_by),
                },
                now,
            )
            return CancelResult(cancelled, counted, needed, cancelled=True)
