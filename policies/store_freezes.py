"""Wallet freezes in the store: officers sign the wallet's next freeze or unfreeze order, which
applies once its quorum has signed (freeze quorum to freeze, full quorum to unfreeze).

The freeze state is never stored as such: `freeze_state_of` replays the applied orders, each
re-verified against the policy version it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlmodel import Session, col, select

from policies.errors import PolicyError, QuorumNotReachedError, StoreError
from policies.governance import (
    ActivatedVersion,
    FreezeOrder,
    FreezeState,
    GovernanceSignature,
    active_policy,
    apply_freeze_order,
    freeze_order,
    freeze_quorum_for,
    sign_governance,
    verify_signature,
)
from policies.keys import OfficerSigner
from policies.store_core import StoreCore, signatures_of, stored_model, to_json, us
from policies.tables import FreezeOrderRow


@dataclass(frozen=True)
class FreezeResult:
    order: FreezeOrder
    counted: tuple[str, ...]
    needed: int
    applied: bool


def freeze_state_of(session: Session, chain: Sequence[ActivatedVersion]) -> FreezeState:
    """The freeze state after every applied order, each re-verified (a forged row is reported)."""
    documents = {link.policy_hash: link.document for link in chain}
    rows = session.exec(
        select(FreezeOrderRow)
        .where(col(FreezeOrderRow.applied_at_us).is_not(None))
        .order_by(col(FreezeOrderRow.applied_at_us), col(FreezeOrderRow.counter))
    ).all()
    state = FreezeState()
    for row in rows:
        order = stored_model(FreezeOrder, row.order, f"freeze order {row.order_id}")
        policy = documents.get(order.policy_hash)
        if policy is None:
            raise StoreError(f"freeze order {row.order_id}", "names an unknown policy version")
        signatures = signatures_of(session, order.purpose, row.order_id)
        try:
            state, _ = apply_freeze_order(state, policy, order, signatures)
        except PolicyError as exc:
            raise StoreError(
                f"freeze order {row.order_id}", f"stored order does not verify: {exc}"
            ) from exc
    return state


class FreezeOps(StoreCore):
    """The freeze operations of `PolicyStore`."""

    def freeze_state(self) -> FreezeState:
        with self._tx() as session:
            return freeze_state_of(session, self._chain(session))

    def applied_freeze_orders(self) -> list[tuple[FreezeOrder, tuple[GovernanceSignature, ...]]]:
        """Every applied order, in the order applied, with its signatures: what the nodes
        need to reach the same freeze state (`policies.bundle`)."""
        with self._tx() as session:
            rows = session.exec(
                select(FreezeOrderRow)
                .where(col(FreezeOrderRow.applied_at_us).is_not(None))
                .order_by(col(FreezeOrderRow.applied_at_us), col(FreezeOrderRow.counter))
            ).all()
            out = []
            for row in rows:
                order = stored_model(FreezeOrder, row.order, f"freeze order {row.order_id}")
                out.append((order, self._signatures(session, order.purpose, row.order_id)))
            return out

    def open_freeze_orders(self) -> list[tuple[FreezeOrder, tuple[str, ...]]]:
        """Orders still collecting signatures, with who signed so far."""
        with self._tx() as session:
            rows = session.exec(
                select(FreezeOrderRow)
                .where(col(FreezeOrderRow.applied_at_us).is_(None))
                .order_by(col(FreezeOrderRow.created_at_us))
            ).all()
            out = []
            for row in rows:
                order = stored_model(FreezeOrder, row.order, f"freeze order {row.order_id}")
                officers = tuple(
                    s.officer for s in self._signatures(session, order.purpose, row.order_id)
                )
                out.append((order, officers))
            return out

    def sign_freeze(
        self,
        signer: OfficerSigner,
        action: Literal["freeze", "unfreeze"],
        wallet: str,
        *,
        reason: str | None,
        now: datetime,
    ) -> FreezeResult:
        """``signer``'s signature on the wallet's next freeze/unfreeze order; the order applies
        at once when its quorum is reached (freeze_quorum to freeze, quorum to unfreeze)."""
        with self._tx() as session:
            chain = self._chain(session)
            policy = active_policy(chain, now=now).document
            state = freeze_state_of(session, chain)
            order = freeze_order(state, policy, action, wallet, reason)
            open_row = session.exec(
                select(FreezeOrderRow)
                .where(col(FreezeOrderRow.wallet) == wallet)
                .where(col(FreezeOrderRow.action) == action)
                .where(col(FreezeOrderRow.counter) == order.counter)
                .where(col(FreezeOrderRow.policy_hash) == order.policy_hash)
                .where(col(FreezeOrderRow.applied_at_us).is_(None))
            ).first()
            if open_row is not None:
                order = stored_model(
                    FreezeOrder, open_row.order, f"freeze order {open_row.order_id}"
                )  # join it
            else:
                open_row = FreezeOrderRow(
                    order_id=order.order_id(),
                    wallet=wallet,
                    action=action,
                    counter=order.counter,
                    policy_hash=order.policy_hash,
                    order=to_json(order.statement()),
                    created_at_us=us(now),
                )
                session.add(open_row)
                session.flush()
            signature = sign_governance(signer, order.purpose, order.statement())
            verify_signature(policy, order.purpose, order.statement(), signature)
            self._add_signature(session, signature, open_row.order_id, now)
            signatures = self._signatures(session, order.purpose, open_row.order_id)
            needed = freeze_quorum_for(policy, order)
            try:
                _state, counted = apply_freeze_order(state, policy, order, signatures)
            except QuorumNotReachedError as exc:
                self._append(
                    session,
                    "freeze_signed",
                    {
                        **order.statement(),
                        "officer": signer.officer_id,
                        "counted": list(exc.counted),
                        "needed": needed,
                    },
                    now,
                )
                return FreezeResult(order, exc.counted, needed, applied=False)
            open_row.applied_at_us = us(now)
            open_row.signed_by = to_json(list(counted))
            session.add(open_row)
            session.flush()
            self._append(session, action, {**order.statement(), "signed_by": list(counted)}, now)
            return FreezeResult(order, counted, needed, applied=True)
