"""Governance: quorum activation over the policy chain, time-locked loosening, cancellation,
freezes and unfreezes — every rejection case on its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_approvals import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ERIN,
    EXCHANGE,
    OTHER,
    make_intent,
    officer_entry,
    policy_obj,
)

from policies.document import PolicyDocument, parse_policy
from policies.errors import (
    FreezeError,
    GovernanceError,
    GovernanceSignatureError,
    NoActivePolicyError,
    PendingVersionError,
    PolicyChainError,
    QuorumNotReachedError,
)
from policies.evaluator import evaluate
from policies.governance import (
    ActivatedVersion,
    FreezeState,
    GovernanceSignature,
    PolicyProposal,
    activate,
    active_policy,
    apply_freeze_order,
    cancel_pending,
    cancel_statement,
    freeze_order,
    pending_version,
    sign_activation,
    sign_governance,
    verify_chain,
    verify_signature,
)
from policies.keys import LocalOfficerSigner, Purpose, generate_officer_key
from policies.velocity import LedgerView

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
V1_OFFICERS = (ALICE, BOB, CAROL)


def doc(**kwargs: Any) -> PolicyDocument:
    return parse_policy(policy_obj(**kwargs))


def signed(
    proposal: PolicyProposal, signers: Sequence[LocalOfficerSigner]
) -> list[GovernanceSignature]:
    return [sign_activation(s, proposal) for s in signers]


def genesis(timelock: int = 0, **kwargs: Any) -> list[ActivatedVersion]:
    proposal = PolicyProposal.of(doc(officers=V1_OFFICERS, timelock=timelock, **kwargs))
    return [activate([], proposal, signed(proposal, [ALICE, BOB]), now=T0)]


def successor(chain: Sequence[ActivatedVersion], **kwargs: Any) -> PolicyProposal:
    head = [link for link in chain if not link.cancelled][-1]
    kwargs.setdefault("officers", V1_OFFICERS)
    return PolicyProposal.of(doc(version=head.version + 1, previous=head.policy_hash, **kwargs))


def quorum_error(
    chain: Sequence[ActivatedVersion],
    proposal: PolicyProposal,
    signers: Sequence[LocalOfficerSigner],
    now: datetime = T0,
) -> QuorumNotReachedError:
    with pytest.raises(QuorumNotReachedError) as info:
        activate(chain, proposal, signed(proposal, signers), now=now)
    return info.value


# --- activation ---------------------------------------------------------------------------------


def test_genesis_activates_with_m_of_its_own_officers() -> None:
    chain = genesis()
    link = chain[0]
    assert link.signed_by == ("alice", "bob") and link.effective_at == T0
    assert active_policy(chain, now=T0) is link
    verify_chain(chain, genesis_hash=link.policy_hash)


def test_nothing_is_active_before_genesis() -> None:
    with pytest.raises(NoActivePolicyError):
        active_policy([], now=T0)


def test_m_minus_1_signatures_do_not_activate() -> None:
    chain = genesis()
    proposal = successor(chain, daily_limit="50")
    err = quorum_error(chain, proposal, [ALICE])
    assert (err.needed, err.counted, err.problems) == (2, ("alice",), ())
    assert active_policy(chain, now=T0).version == 1


def test_m_minus_1_signatures_do_not_activate_genesis() -> None:
    proposal = PolicyProposal.of(doc(officers=V1_OFFICERS))
    err = quorum_error([], proposal, [CAROL])
    assert err.counted == ("carol",) and err.needed == 2


def test_signature_by_a_non_officer_is_not_counted() -> None:
    chain = genesis()
    proposal = successor(chain, daily_limit="50")
    mallory = generate_officer_key("mallory", "ed25519")
    err = quorum_error(chain, proposal, [ALICE, mallory])
    assert err.counted == ("alice",)
    [problem] = err.problems
    assert (problem.officer, problem.check) == ("mallory", "officer")


def test_officer_removed_in_n_plus_1_cannot_approve_n_plus_2() -> None:
    chain = genesis()
    v2 = successor(chain, officers=(ALICE, BOB, DAVE))  # carol removed
    chain.append(activate(chain, v2, signed(v2, [ALICE, CAROL]), now=T0))  # carol still counts
    v3 = successor(chain, officers=(ALICE, BOB, DAVE), daily_limit="50")
    err = quorum_error(chain, v3, [ALICE, CAROL])
    assert err.counted == ("alice",)
    assert err.problems[0].officer == "carol" and "version 2" in err.problems[0].reason
    chain.append(activate(chain, v3, signed(v3, [ALICE, DAVE]), now=T0))
    verify_chain(chain)


def test_new_officer_cannot_help_activate_the_version_adding_them() -> None:
    chain = genesis()
    v2 = successor(chain, officers=(ALICE, BOB, CAROL, DAVE))
    err = quorum_error(chain, v2, [ALICE, DAVE])
    assert err.counted == ("alice",) and err.problems[0].check == "officer"


def test_signature_over_another_hash_is_not_counted() -> None:
    chain = genesis()
    v2 = successor(chain, daily_limit="50")
    other = successor(chain, daily_limit="60")
    sigs = [sign_activation(ALICE, v2), sign_activation(BOB, other)]
    with pytest.raises(QuorumNotReachedError) as info:
        activate(chain, v2, sigs, now=T0)
    [problem] = info.value.problems
    assert problem.check == "binding" and "policy_hash" in problem.reason


def test_signature_claiming_the_right_statement_but_made_over_another_fails() -> None:
    chain = genesis()
    v2 = successor(chain, daily_limit="50")
    other = successor(chain, daily_limit="60")
    forged = sign_activation(BOB, other).model_copy(update={"statement": v2.statement()})
    with pytest.raises(GovernanceSignatureError) as info:
        verify_signature(chain[0].document, Purpose.POLICY_ACTIVATION, v2.statement(), forged)
    assert info.value.check == "signature" and info.value.officer == "bob"


def test_signature_for_another_purpose_is_not_counted() -> None:
    chain = genesis()
    v2 = successor(chain, daily_limit="50")
    wrong = sign_governance(BOB, Purpose.FREEZE, v2.statement())
    with pytest.raises(QuorumNotReachedError) as info:
        activate(chain, v2, [sign_activation(ALICE, v2), wrong], now=T0)
    assert info.value.problems[0].check == "binding"


def test_duplicate_signatures_of_one_officer_count_once() -> None:
    chain = genesis()
    v2 = successor(chain, daily_limit="50")
    err = quorum_error(chain, v2, [ALICE, ALICE, ALICE])
    assert err.counted == ("alice",)


def test_broken_chain_wrong_previous_hash() -> None:
    chain = genesis()
    v2 = PolicyProposal.of(doc(officers=V1_OFFICERS, version=2, previous="ab" * 32))
    with pytest.raises(PolicyChainError, match="previous"):
        activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0)


@pytest.mark.parametrize("version", [1, 3, 7])
def test_wrong_version_number(version: int) -> None:
    chain = genesis()
    previous = None if version == 1 else chain[0].policy_hash
    v = PolicyProposal.of(
        doc(officers=V1_OFFICERS, version=version, previous=previous, daily_limit="5")
    )
    with pytest.raises(PolicyChainError, match="must be version 2"):
        activate(chain, v, signed(v, [ALICE, BOB]), now=T0)


def test_genesis_must_be_version_1() -> None:
    v = PolicyProposal.of(doc(officers=V1_OFFICERS, version=2, previous="cd" * 32))
    with pytest.raises(PolicyChainError, match="version 1"):
        activate([], v, signed(v, [ALICE, BOB]), now=T0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(range(5)), max_size=7), st.integers(1, 3))
def test_active_iff_quorum_of_current_officers(picks: list[int], quorum: int) -> None:
    """Officers 0-2 decide (version 1); 3-4 are only in the proposed version 2."""
    everyone = (ALICE, BOB, CAROL, DAVE, ERIN)
    v1 = PolicyProposal.of(doc(officers=V1_OFFICERS, quorum=quorum))
    chain = [activate([], v1, signed(v1, V1_OFFICERS), now=T0)]
    v2 = successor(chain, officers=everyone, quorum=quorum)
    signers = [everyone[i] for i in picks]
    valid = {everyone[i].officer_id for i in picks if i < 3}
    if len(valid) >= quorum:
        assert activate(chain, v2, signed(v2, signers), now=T0).signed_by == tuple(sorted(valid))
    else:
        assert quorum_error(chain, v2, signers).counted == tuple(sorted(valid))


# --- time lock ---------------------------------------------------------------------------------


def test_loosening_takes_effect_after_the_time_lock() -> None:
    chain = genesis(timelock=3600)
    v2 = successor(chain, timelock=3600, whitelist=(EXCHANGE, OTHER))  # new whitelist entry
    link = activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0)
    assert link.effective_at == T0 + HOUR and any("whitelist" in line for line in link.loosening)
    chain.append(link)
    assert active_policy(chain, now=T0 + HOUR - timedelta(seconds=1)).version == 1
    assert pending_version(chain, now=T0) is link
    assert active_policy(chain, now=T0 + HOUR).version == 2
    assert pending_version(chain, now=T0 + HOUR) is None


def test_higher_limit_is_loosening() -> None:
    chain = genesis(timelock=3600)
    v2 = successor(chain, timelock=3600, daily_limit="1000")
    link = activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0)
    assert link.effective_at == T0 + HOUR


def test_tightening_takes_effect_at_once() -> None:
    chain = genesis(timelock=3600)
    v2 = successor(chain, timelock=3600, daily_limit="50")
    link = activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0)
    assert link.loosening == () and link.effective_at == T0


def test_the_time_lock_of_the_version_in_force_applies() -> None:
    """A loosening version cannot skip the lock by setting its own time lock to zero."""
    chain = genesis(timelock=3600)
    v2 = successor(chain, timelock=0, whitelist=(EXCHANGE, OTHER))
    assert activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0).effective_at == T0 + HOUR


def test_no_activation_while_a_version_is_time_locked() -> None:
    chain = genesis(timelock=3600)
    v2 = successor(chain, timelock=3600, daily_limit="1000")
    chain.append(activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0))
    v3 = successor(chain, timelock=3600, daily_limit="10")
    with pytest.raises(PendingVersionError) as info:
        activate(chain, v3, signed(v3, [ALICE, BOB]), now=T0 + timedelta(minutes=5))
    assert info.value.version == 2
    chain.append(activate(chain, v3, signed(v3, [ALICE, BOB]), now=T0 + HOUR))
    verify_chain(chain)


def test_time_locked_version_can_be_cancelled_by_the_freeze_quorum() -> None:
    chain = genesis(timelock=3600)
    v2 = successor(chain, timelock=3600, daily_limit="1000")
    chain.append(activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0))
    statement = cancel_statement(chain[-1])
    cancelled = cancel_pending(
        chain, [sign_governance(CAROL, Purpose.POLICY_CANCEL, statement)], now=T0 + HOUR / 2
    )
    assert cancelled.cancelled_by == ("carol",)
    chain[-1] = cancelled
    assert active_policy(chain, now=T0 + 2 * HOUR).version == 1
    # The chain continues from version 1 again.
    v2b = successor(chain, timelock=3600, daily_limit="20")
    chain.append(activate(chain, v2b, signed(v2b, [ALICE, BOB]), now=T0 + HOUR))
    assert active_policy(chain, now=T0 + HOUR).policy_hash == v2b.policy_hash
    verify_chain(chain)


def test_cancel_needs_a_pending_version_and_valid_signatures() -> None:
    chain = genesis(timelock=3600)
    with pytest.raises(GovernanceError, match="nothing to cancel"):
        cancel_pending(chain, [], now=T0)
    v2 = successor(chain, timelock=3600, daily_limit="1000")
    chain.append(activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0))
    activation_sig = sign_activation(CAROL, v2)  # an activation vote is no cancel vote
    with pytest.raises(QuorumNotReachedError):
        cancel_pending(chain, [activation_sig], now=T0)
    mallory = generate_officer_key("mallory", "ed25519")
    statement = cancel_statement(chain[-1])
    with pytest.raises(QuorumNotReachedError):
        cancel_pending(chain, [sign_governance(mallory, Purpose.POLICY_CANCEL, statement)], now=T0)


def test_verify_chain_catches_a_skipped_time_lock() -> None:
    chain = genesis(timelock=3600)
    v2 = successor(chain, timelock=3600, daily_limit="1000")
    chain.append(activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0))
    chain[-1] = replace(chain[-1], effective_at=T0)
    with pytest.raises(PolicyChainError, match="time lock"):
        verify_chain(chain)


def test_verify_chain_catches_swapped_signatures_and_genesis() -> None:
    chain = genesis()
    v2 = successor(chain, daily_limit="50")
    chain.append(activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0))
    with pytest.raises(PolicyChainError, match="pinned"):
        verify_chain(chain, genesis_hash="00" * 32)
    forged = replace(chain[1], signatures=(sign_activation(ALICE, v2),))
    with pytest.raises(QuorumNotReachedError):
        verify_chain([chain[0], forged])
    wrong_hash = replace(chain[1], policy_hash="11" * 32)
    with pytest.raises(PolicyChainError, match="recorded hash"):
        verify_chain([chain[0], wrong_hash])


# --- freezes -----------------------------------------------------------------------------------


def frozen_state(policy: PolicyDocument) -> FreezeState:
    order = freeze_order(FreezeState(), policy, "freeze", "hot-1", "suspicious activity")
    state, signed_by = apply_freeze_order(
        FreezeState(), policy, order, [sign_governance(CAROL, Purpose.FREEZE, order.statement())]
    )
    assert signed_by == ("carol",)
    return state


def test_freeze_takes_effect_at_once_with_the_freeze_quorum() -> None:
    policy = genesis()[0].document
    state = frozen_state(policy)
    assert state.frozen_wallets() == {"hot-1"} and state.of("hot-1").counter == 1
    decision = evaluate(
        policy,
        make_intent(amount="1"),
        approvals=frozenset(),
        ledger=LedgerView.empty(T0),
        now=T0,
        frozen_wallets=state.frozen_wallets(),
    )
    assert decision.outcome == "DENY" and decision.reason == "frozen"


def test_unfreeze_needs_the_full_quorum() -> None:
    policy = genesis()[0].document
    state = frozen_state(policy)
    order = freeze_order(state, policy, "unfreeze", "hot-1")
    one = [sign_governance(ALICE, Purpose.UNFREEZE, order.statement())]
    with pytest.raises(QuorumNotReachedError) as info:
        apply_freeze_order(state, policy, order, one)
    assert info.value.needed == 2
    two = [*one, sign_governance(BOB, Purpose.UNFREEZE, order.statement())]
    after, signed_by = apply_freeze_order(state, policy, order, two)
    assert after.frozen_wallets() == frozenset() and signed_by == ("alice", "bob")


def test_freeze_signature_cannot_unfreeze() -> None:
    policy = genesis()[0].document
    state = frozen_state(policy)
    order = freeze_order(state, policy, "unfreeze", "hot-1")
    as_freeze = [sign_governance(s, Purpose.FREEZE, order.statement()) for s in (ALICE, BOB)]
    with pytest.raises(QuorumNotReachedError) as info:
        apply_freeze_order(state, policy, order, as_freeze)
    assert {p.check for p in info.value.problems} == {"binding"}


def test_old_unfreeze_cannot_be_replayed_after_a_new_freeze() -> None:
    policy = genesis()[0].document
    state = frozen_state(policy)
    unfreeze = freeze_order(state, policy, "unfreeze", "hot-1")
    sigs = [sign_governance(s, Purpose.UNFREEZE, unfreeze.statement()) for s in (ALICE, BOB)]
    state, _ = apply_freeze_order(state, policy, unfreeze, sigs)
    refreeze = freeze_order(state, policy, "freeze", "hot-1")
    state, _ = apply_freeze_order(
        state, policy, refreeze, [sign_governance(CAROL, Purpose.FREEZE, refreeze.statement())]
    )
    with pytest.raises(FreezeError, match="stale"):
        apply_freeze_order(state, policy, unfreeze, sigs)
    assert state.frozen_wallets() == {"hot-1"}


def test_freeze_errors_name_the_wallet() -> None:
    policy = genesis()[0].document
    with pytest.raises(FreezeError, match=r"'nope'.*not a wallet"):
        freeze_order(FreezeState(), policy, "freeze", "nope")
    with pytest.raises(FreezeError, match="not frozen"):
        freeze_order(FreezeState(), policy, "unfreeze", "hot-1")
    state = frozen_state(policy)
    with pytest.raises(FreezeError, match="already frozen"):
        freeze_order(state, policy, "freeze", "hot-1")


def test_freeze_order_bound_to_another_policy_version() -> None:
    chain = genesis()
    v2 = successor(chain, daily_limit="50")
    order = freeze_order(FreezeState(), chain[0].document, "freeze", "cold-1")
    sig = sign_governance(ALICE, Purpose.FREEZE, order.statement())
    with pytest.raises(FreezeError, match="another policy version"):
        apply_freeze_order(FreezeState(), v2.document, order, [sig])


def test_freeze_by_a_removed_officer_is_not_counted() -> None:
    chain = genesis()
    v2 = successor(chain, officers=(ALICE, BOB, DAVE))
    chain.append(activate(chain, v2, signed(v2, [ALICE, BOB]), now=T0))
    policy = active_policy(chain, now=T0).document
    order = freeze_order(FreezeState(), policy, "freeze", "cold-1")
    with pytest.raises(QuorumNotReachedError):
        apply_freeze_order(
            FreezeState(),
            policy,
            order,
            [sign_governance(CAROL, Purpose.FREEZE, order.statement())],
        )


def test_p256_and_ed25519_officers_mix() -> None:
    officers = (ALICE, BOB, DAVE)  # bob and dave are P-256
    v1 = PolicyProposal.of(
        parse_policy(
            {
                **policy_obj(),
                "officers": [officer_entry(o) for o in officers],
                "groups": {"treasury": ["alice", "bob", "dave"]},
            }
        )
    )
    link = activate([], v1, signed(v1, [BOB, DAVE]), now=T0)
    assert link.signed_by == ("bob", "dave")
