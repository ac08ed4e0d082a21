"""The policy this node enforces: its own copy of the officers' policy chain and freeze state.

The node accepts governance documents (`policies.bundle.GovernanceBundle`) from anyone — the
coordinator relays them, an officer can push them straight to the node — because it checks them
itself with the one verifier `policies.governance` has:

* the first version must have the genesis hash the operator pinned at `tessera node init`
  (out of band, like the roster), and is activated by the quorum of its own officers;
* every later version by the quorum of the officers of the version before it, chained by number
  and predecessor hash; the node never goes back: a version number it already holds with
  another hash, or an older version, is refused (docs/attacks.md A21, downgrade);
* a loosening version takes effect `loosening_timelock_seconds` after *this node* accepted it,
  by this node's own clock, and can be cancelled meanwhile by the freeze quorum;
* a freeze applies the moment it arrives, signed by the freeze quorum of any version of the
  chain (a freeze only tightens); an unfreeze needs the full quorum of the version in force,
  so officers removed since cannot lift a freeze.

Each accepted or refused document is one audit record, written in the same transaction as the
row it accepts (`signer.node.audit`).  The chain is re-verified from the genesis when the node
opens its database, so a row edited behind the node's back stops it rather than loosening it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from policies.bundle import FreezeDoc, GovernanceBundle, PolicyVersionDoc, bundle_of
from policies.canonical import canonical_json
from policies.document import PolicyDocument, parse_policy, timestamp_str
from policies.errors import PolicyError, PolicySchemaError, QuorumNotReachedError
from policies.governance import (
    ActivatedVersion,
    FreezeOrder,
    FreezeState,
    GovernanceSignature,
    PolicyProposal,
    activate,
    apply_freeze_order,
    cancel_pending,
    pending_version,
    verify_chain,
)
from policies.store_core import from_us, us
from signer.node.api import GovernanceOutcome, GovernanceReply, PendingPolicy, PolicyStatus
from signer.node.audit import AuditKind, NodeAudit
from signer.node.errors import NodeError
from signer.node.policy_tables import FreezeOrderRow, PolicyVersionRow
from signer.node.store import NodeStore
from signer.problems import ErrorCode


def utc_now() -> datetime:
    return datetime.now(UTC)


class GovernanceCorrupt(NodeError):
    """The stored chain or freeze orders do not verify: the node must not run on them."""


def _text(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


def _signatures(text: str) -> tuple[GovernanceSignature, ...]:
    return tuple(GovernanceSignature.model_validate(s) for s in json.loads(text))


def _short(policy_hash: str) -> str:
    return policy_hash[:12]


class NodeGovernance:
    """The node's policy chain and freeze state, kept in memory (the signing path reads them on
    every request) and in the node database (the rows of `signer.node.policy_tables`)."""

    def __init__(
        self,
        store: NodeStore,
        genesis: str | None,
        audit: NodeAudit,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.audit = audit
        self.clock = clock
        self._lock = threading.Lock()
        self._chain, self._freezes = self._load()

    # --- reading -------------------------------------------------------------------------------
    @property
    def freezes(self) -> FreezeState:
        return self._freezes

    def in_force(self, now: datetime | None = None) -> ActivatedVersion | None:
        chain = self._chain
        moment = self.clock() if now is None else now
        for link in reversed(chain):
            if link.in_force_at(moment):
                return link
        return None

    def require_policy(self, now: datetime | None = None) -> ActivatedVersion:
        """The version in force, or NO_GENESIS / NO_POLICY: a node without a policy signs no
        wallet transaction."""
        link = self.in_force(now)
        if link is not None:
            return link
        if self.genesis is None:
            raise NodeError(
                ErrorCode.NO_GENESIS,
                "no genesis policy is pinned on this node (tessera node init --genesis-policy)",
                check="genesis",
            )
        raise NodeError(
            ErrorCode.NO_POLICY,
            f"no policy version is in force here yet (genesis {_short(self.genesis)} not "
            "received: relay or push it)",
            check="policy",
        )

    def policy_hash(self) -> str | None:
        link = self.in_force()
        return None if link is None else link.policy_hash

    def status(self) -> PolicyStatus:
        now = self.clock()
        link = self.in_force(now)
        pending = pending_version(self._chain, now=now) if self._chain else None
        return PolicyStatus(
            genesis=self.genesis,
            policy_hash=None if link is None else link.policy_hash,
            policy_version=None if link is None else link.version,
            pending=None
            if pending is None
            else PendingPolicy(
                policy_hash=pending.policy_hash,
                version=pending.version,
                effective_at=timestamp_str(pending.effective_at),
            ),
            frozen=sorted(self._freezes.frozen_wallets()),
        )

    def bundle(self) -> GovernanceBundle:
        """Everything this node accepted, in the form it accepts it (for lagging peers)."""
        with self.store.session() as session:
            rows = session.exec(
                select(FreezeOrderRow).order_by(col(FreezeOrderRow.applied_at))
            ).all()
            freezes = [
                (FreezeOrder.model_validate_json(row.order_json), _signatures(row.signatures))
                for row in rows
            ]
        return bundle_of(self._chain, freezes)

    # --- accepting -----------------------------------------------------------------------------
    def accept(self, bundle: GovernanceBundle) -> GovernanceReply:
        """Apply every new item of `bundle` in order; each is durable (with its audit record)
        once accepted.  The first refused item stops the bundle: it is audited and refused as
        GOVERNANCE_REFUSED naming the item and the failed check; the items before it stay."""
        results: list[GovernanceOutcome] = []
        with self._lock:
            self._refuse_stale(bundle)
            for doc in bundle.versions:
                results.append(self._version(doc, len(results)))
            for order in bundle.freezes:
                results.append(self._freeze(order, len(results)))
        return GovernanceReply(status=self.status(), results=results)

    def _refuse_stale(self, bundle: GovernanceBundle) -> None:
        """A bundle whose newest version is older than the version this node holds would take
        it back: refused whole (downgrade), before anything in it applies."""
        live = [link for link in self._chain if not link.cancelled]
        numbers = [d.document.get("version") for d in bundle.versions]
        offered = [n for n in numbers if isinstance(n, int) and not isinstance(n, bool)]
        if live and offered and max(offered) < live[-1].version:
            raise self._refuse(
                f"bundle up to version {max(offered)}",
                "downgrade",
                f"this node enforces version {live[-1].version} "
                f"({_short(live[-1].policy_hash)}); a node never goes back to an older version",
                0,
            )

    def _refuse(self, item: str, check: str, reason: str, done: int) -> NodeError:
        self.audit.record(
            AuditKind.NODE_GOVERNANCE,
            {"item": item, "outcome": "refused", "check": check, "reason": reason[:2000]},
        )
        before = f" ({done} item(s) before it were applied)" if done else ""
        return NodeError(
            ErrorCode.GOVERNANCE_REFUSED,
            f"{item}: {reason}{before}",
            check=check,
            policy_hash=self.policy_hash(),
        )

    def _version(self, doc: PolicyVersionDoc, done: int) -> GovernanceOutcome:
        claimed = doc.document.get("version")
        item = f"version {claimed if isinstance(claimed, int) else '?'}"
        try:
            document = parse_policy(doc.document, source="governance bundle")
        except PolicySchemaError as exc:
            # Paths and reasons only: the error's message quotes the offending values.
            shown = "; ".join(f"{path}: {reason[:160]}" for path, _, reason in exc.problems[:5])
            raise self._refuse(item, "document", f"not a valid policy: {shown}", done) from exc
        proposal = PolicyProposal.of(document)
        item = f"version {document.version} ({_short(proposal.policy_hash)})"
        held = next(
            (link for link in self._chain if link.policy_hash == proposal.policy_hash), None
        )
        if held is not None:
            if doc.cancel_signatures and not held.cancelled:
                return self._cancel(held, doc, item, done)
            return GovernanceOutcome(item=item, outcome="known")
        live = [link for link in self._chain if not link.cancelled]
        if live and document.version <= live[-1].version:
            raise self._refuse(
                item,
                "downgrade",
                f"this node holds version {live[-1].version} ({_short(live[-1].policy_hash)}); "
                "a node never goes back to an older or competing version",
                done,
            )
        if not self._chain:
            if self.genesis is None:
                raise self._refuse(item, "genesis", "no genesis policy hash is pinned here", done)
            if proposal.policy_hash != self.genesis:
                raise self._refuse(
                    item,
                    "genesis",
                    f"the pinned genesis is {_short(self.genesis)}, not this document",
                    done,
                )
        now = self.clock()
        try:
            link = activate(self._chain, proposal, doc.signatures, now=now)
        except PolicyError as exc:
            raise self._refuse(item, "quorum", _reason(exc), done) from exc
        chain = [*self._chain, link]
        if doc.cancel_signatures:
            try:
                link = cancel_pending(chain, doc.cancel_signatures, now=now)
            except PolicyError as exc:
                raise self._refuse(item, "cancel", _reason(exc), done) from exc
            chain[-1] = link
        with self.store.session() as session:
            session.add(self._row(link, len(self._chain)))
            self.audit.append(session, AuditKind.NODE_GOVERNANCE, self._accepted(item, link))
            session.commit()
        self._chain = chain
        return GovernanceOutcome(item=item, outcome="accepted")

    def _cancel(
        self, held: ActivatedVersion, doc: PolicyVersionDoc, item: str, done: int
    ) -> GovernanceOutcome:
        try:
            cancelled = cancel_pending(self._chain, doc.cancel_signatures, now=self.clock())
        except PolicyError as exc:
            raise self._refuse(item, "cancel", _reason(exc), done) from exc
        if cancelled.policy_hash != held.policy_hash:  # only the pending head can be cancelled
            raise self._refuse(item, "cancel", "is not the pending version", done)
        position = self._chain.index(held)
        with self.store.session() as session:
            row = session.exec(
                select(PolicyVersionRow).where(col(PolicyVersionRow.position) == position)
            ).one()
            row.cancel_signatures = _text(
                [s.model_dump(mode="json") for s in cancelled.cancel_signatures]
            )
            row.cancelled_by = _text(list(cancelled.cancelled_by))
            session.add(row)
            self.audit.append(
                session,
                AuditKind.NODE_GOVERNANCE,
                {
                    "item": item,
                    "outcome": "cancelled",
                    "cancelled_by": list(cancelled.cancelled_by),
                },
            )
            session.commit()
        chain = list(self._chain)
        chain[position] = cancelled
        self._chain = chain
        return GovernanceOutcome(item=item, outcome="accepted")

    def _freeze(self, doc: FreezeDoc, done: int) -> GovernanceOutcome:
        order = doc.order
        item = item_of(order)
        with self.store.session() as session:
            row = session.get(FreezeOrderRow, (order.wallet, order.counter))
        if row is not None:
            if row.order_json == _text(order.statement()):
                return GovernanceOutcome(item=item, outcome="known")
            raise self._refuse(
                item, "freeze", "this node applied another order with that number", done
            )
        now = self.clock()
        in_force = self.in_force(now)
        named = next((link for link in self._chain if link.policy_hash == order.policy_hash), None)
        if named is None or named.cancelled:
            raise self._refuse(
                item, "freeze", "signed under a policy version this node does not hold", done
            )
        if order.action == "unfreeze" and (in_force is None or in_force is not named):
            raise self._refuse(
                item,
                "freeze",
                "an unfreeze must be signed under the policy version in force",
                done,
            )
        try:
            state, signed_by = apply_freeze_order(
                self._freezes, named.document, order, doc.signatures
            )
        except PolicyError as exc:
            raise self._refuse(item, "quorum", _reason(exc), done) from exc
        with self.store.session() as session:
            session.add(
                FreezeOrderRow(
                    wallet=order.wallet,
                    counter=order.counter,
                    action=order.action,
                    policy_hash=order.policy_hash,
                    order_json=_text(order.statement()),
                    signatures=_text([s.model_dump(mode="json") for s in doc.signatures]),
                    signed_by=_text(list(signed_by)),
                    applied_at=now.timestamp(),
                )
            )
            self.audit.append(
                session,
                AuditKind.NODE_GOVERNANCE,
                {
                    "item": item,
                    "outcome": "applied",
                    "wallet": order.wallet,
                    "action": order.action,
                    "policy_hash": order.policy_hash,
                    "signed_by": list(signed_by),
                },
            )
            session.commit()
        self._freezes = state
        return GovernanceOutcome(item=item, outcome="accepted")

    @staticmethod
    def _accepted(item: str, link: ActivatedVersion) -> dict[str, Any]:
        return {
            "item": item,
            "outcome": "cancelled" if link.cancelled else "accepted",
            "version": link.version,
            "policy_hash": link.policy_hash,
            "signed_by": list(link.signed_by),
            "effective_at": timestamp_str(link.effective_at),
            "loosening": list(link.loosening),
        }

    @staticmethod
    def _row(link: ActivatedVersion, position: int) -> PolicyVersionRow:
        return PolicyVersionRow(
            position=position,
            version=link.version,
            policy_hash=link.policy_hash,
            document=_text(link.document.model_dump(mode="json")),
            signatures=_text([s.model_dump(mode="json") for s in link.signatures]),
            signed_by=_text(list(link.signed_by)),
            activated_at_us=us(link.activated_at),
            effective_at_us=us(link.effective_at),
            loosening=_text(list(link.loosening)),
            cancel_signatures=_text([s.model_dump(mode="json") for s in link.cancel_signatures]),
            cancelled_by=_text(list(link.cancelled_by)),
        )

    # --- loading -------------------------------------------------------------------------------
    def _load(self) -> tuple[list[ActivatedVersion], FreezeState]:
        """Read and re-verify what this node accepted (from the genesis, every quorum)."""
        where = str(self.store.path)
        try:
            with self.store.session() as session:
                chain = [self._link(row) for row in self._rows(session)]
                orders = session.exec(
                    select(FreezeOrderRow).order_by(col(FreezeOrderRow.applied_at))
                ).all()
            verify_chain(chain, genesis_hash=self.genesis)
            documents = {link.policy_hash: link.document for link in chain}
            state = FreezeState()
            for row in orders:
                order = FreezeOrder.model_validate_json(row.order_json)
                policy = documents.get(order.policy_hash)
                if policy is None:
                    raise PolicyError(f"freeze order {item_of(order)} names an unknown version")
                state, _ = apply_freeze_order(state, policy, order, _signatures(row.signatures))
        except (PolicyError, ValidationError, ValueError, KeyError) as exc:
            raise GovernanceCorrupt(
                ErrorCode.INTERNAL,
                f"{where}: the stored policy chain does not verify ({exc})",
                check="governance",
            ) from exc
        return chain, state

    @staticmethod
    def _rows(session: Session) -> list[PolicyVersionRow]:
        return list(
            session.exec(select(PolicyVersionRow).order_by(col(PolicyVersionRow.position))).all()
        )

    @staticmethod
    def _link(row: PolicyVersionRow) -> ActivatedVersion:
        document: PolicyDocument = parse_policy(json.loads(row.document), source="node database")
        return ActivatedVersion(
            document=document,
            policy_hash=row.policy_hash,
            signatures=_signatures(row.signatures),
            signed_by=tuple(json.loads(row.signed_by)),
            activated_at=from_us(row.activated_at_us),
            effective_at=from_us(row.effective_at_us),
            loosening=tuple(json.loads(row.loosening)),
            cancel_signatures=_signatures(row.cancel_signatures),
            cancelled_by=tuple(json.loads(row.cancelled_by)),
        )


def _reason(exc: PolicyError) -> str:
    """Why a document was refused, in the verifier's words — but for a missed quorum only who
    counted and, for each signature that did not, its officer and the failed check: the
    verifier's own detail quotes the statement a signature claimed, which the sender wrote."""
    if isinstance(exc, QuorumNotReachedError):
        others = "; ".join(f"{p.officer} [{p.check}]" for p in exc.problems)
        counted = ", ".join(exc.counted) or "none"
        return (
            f"{exc.action}: {len(exc.counted)} of the {exc.needed} required officer signatures "
            f"(counted: {counted})" + (f"; not counted: {others}" if others else "")
        )
    return str(exc)


def item_of(order: FreezeOrder) -> str:
    return f"{order.action} {order.wallet} #{order.counter}"
