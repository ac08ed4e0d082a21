"""Key refresh and re-sharing to a new committee (reshare.py): the public key survives, every
share changes, the new committee signs, old and new shares never work together, and a cheating
dealer or member is named (attacks.md A12 T12c, A14, A15, A20)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from conftest import paillier_key
from harness import assert_clean_abort, assert_no_honest_blamed, configs, raw_rewrite, rewrite
from protocol_fixtures import aux_info, aux_info_of, keys
from test_protocol_sign import check_independently

from signer.curve import Point, Q, lagrange_coefficient, sum_points
from signer.errors import Check, CryptoMisuse, InvalidParameter
from signer.protocol import flow
from signer.protocol.aux_info import AuxInfo
from signer.protocol.keygen import KeyPublic, KeyShare
from signer.protocol.presign import PresignParty
from signer.protocol.reshare import (
    RefreshParty,
    ReshareParty,
    ResharePlan,
    ReshareResult,
)
from signer.protocol.sign import HashScheme
from signer.protocol.simulate import Outcome, run

COMMIT, COMMIT_ECHO, OPEN, ACK, ACK_ECHO = 1, 2, 3, 4, 5  # wire rounds


def reshare(
    plan: ResharePlan,
    shares: dict[int, KeyShare],
    *,
    cheaters: dict[int, type[ReshareParty]] | None = None,
    **kwargs: Any,
) -> Outcome[ReshareResult]:
    cheaters = cheaters or {}
    cfgs = configs("reshare/v1", plan.parties, plan.new_threshold, plan.old.key_id)
    parties = [
        cheaters.get(c.me, ReshareParty)(
            c, plan, shares[c.me] if c.me in plan.dealers else None
        )
        for c in cfgs
    ]
    return run(parties, **kwargs)


def new_shares(outcome: Outcome[ReshareResult]) -> dict[int, KeyShare]:
    results = flow.completed(outcome)
    return {i: r.share for i, r in results.items() if r.share is not None}


def sign_once(
    shares: dict[int, KeyShare], aux: dict[int, AuxInfo], signers: tuple[int, ...]
) -> None:
    presignatures = flow.run_presign(shares, aux, signers, (0, 7))
    message = b"withdrawal " + secrets.token_bytes(8)
    key = next(iter(shares.values())).public_data()
    signature = flow.sign(presignatures, message, HashScheme.KECCAK256, key)
    check_independently(signature, message, HashScheme.KECCAK256)


def secret_of(shares: dict[int, KeyShare], subset: tuple[int, ...]) -> int:
    return sum(lagrange_coefficient(i, subset) * shares[i].secret_share for i in subset) % Q


# --- refresh -------------------------------------------------------------------------------


def test_refresh_keeps_the_key_changes_every_share_and_signs() -> None:
    old = keys(2, 3)
    paillier = {i: paillier_key(i + 6) for i in old}  # keys no other 3-party fixture uses
    shares, aux = flow.run_refresh(old, paillier)
    for i, share in shares.items():
        assert share.public_key == old[i].public_key
        assert share.chain_code == old[i].chain_code
        assert share.epoch == old[i].epoch + 1
        assert share.secret_share != old[i].secret_share
        assert share.public_shares != old[i].public_shares
        assert share.fingerprint() != old[i].fingerprint()
        assert aux[i].own.paillier.n != aux_info(3)[i].own.paillier.n  # fresh Paillier keys
    assert Point.base_mul(secret_of(shares, (1, 3))) == old[1].public_key
    sign_once(shares, aux, (1, 3))


def test_refresh_party_refuses_another_committee_or_threshold() -> None:
    share = keys(2, 3)[1]
    cfg = configs("refresh/v1", (1, 2), 2, b"wallet")[0]
    with pytest.raises(CryptoMisuse):
        RefreshParty(cfg, share)  # committee {1, 2} is not the key's {1, 2, 3}


# --- re-sharing to another committee --------------------------------------------------------

RESHARES = [
    # (old t, old n, dealers, new committee, new t, signers after)
    pytest.param(2, 3, (1, 3), (1, 2, 3, 4, 5), 3, (2, 4, 5), id="add-two-raise-t"),
    pytest.param(3, 5, (2, 3, 5), (1, 2, 3), 2, (1, 3), id="remove-two-lower-t"),
    pytest.param(2, 3, (1, 2), (1, 2), 2, (1, 2), id="remove-one"),
    pytest.param(2, 3, (1, 2, 3), (1, 2, 3), 3, (1, 2, 3), id="same-committee-raise-t"),
]


@pytest.mark.parametrize("t, n, dealers, committee, t_new, signers", RESHARES)
def test_reshare_preserves_the_key_and_the_new_committee_signs(
    t: int,
    n: int,
    dealers: tuple[int, ...],
    committee: tuple[int, ...],
    t_new: int,
    signers: tuple[int, ...],
) -> None:
    old = keys(t, n)
    plan = ResharePlan(old[dealers[0]].public_data(), dealers, committee, t_new)
    outcome = reshare(plan, old)
    results = flow.completed(outcome)
    assert sorted(results) == sorted(plan.parties)
    (new_key,) = {r.key for r in results.values()}  # everybody agrees on the new version
    assert new_key.public_key == plan.old.public_key and new_key.epoch == plan.old.epoch + 1
    assert new_key.parties == committee and new_key.threshold == t_new
    shares = new_shares(outcome)
    assert sorted(shares) == list(committee)
    for j in set(plan.parties) - set(committee):
        assert results[j].share is None  # a leaving dealer learns the new version, no share
    sign_once(shares, aux_info(max(committee)), signers)


def test_replace_a_node_new_member_signs_with_its_own_aux_info() -> None:
    """Node 3 is replaced by node 4 (2-of-3 stays 2-of-3); the new committee runs aux-info."""
    old = keys(2, 3)
    plan = ResharePlan(old[1].public_data(), (1, 2), (1, 2, 4), 2)
    shares = new_shares(reshare(plan, old))
    sign_once(shares, aux_info_of((1, 2, 4)), (2, 4))


def test_old_and_new_shares_never_combine_to_the_key() -> None:
    old = keys(2, 3)
    plan = ResharePlan(old[1].public_data(), (1, 2, 3), (1, 2, 3), 2)
    new = new_shares(reshare(plan, old))
    assert Point.base_mul(secret_of(new, (1, 2))) == plan.old.public_key
    mixed = {1: old[1], 2: new[2]}
    assert Point.base_mul(secret_of(mixed, (1, 2))) != plan.old.public_key
    # and in public: the old X_1 with the new X′_2 does not interpolate to Y either
    combination = sum_points(
        s.public_share(i) * lagrange_coefficient(i, (1, 2)) for i, s in mixed.items()
    )
    assert combination != plan.old.public_key


def test_presign_refuses_parties_on_different_key_versions() -> None:
    """An old share and a new share in one presign: every party aborts in round 1 with
    MISMATCH before any MtA work, and nobody is blamed (either side may be the stale one)."""
    old = keys(2, 3)
    plan = ResharePlan(old[1].public_data(), (1, 2, 3), (1, 2, 3), 2)
    new = new_shares(reshare(plan, old))
    aux = aux_info(3)
    cfgs = configs("presign/v1", (1, 2), 2, b"wallet")
    mixed = {1: old[1], 2: new[2]}
    outcome = run([PresignParty(c, mixed[c.me], aux[c.me]) for c in cfgs])
    assert not outcome.results
    for i in (1, 2):
        abort = outcome.aborts[i]
        assert abort.code == Check.MISMATCH and abort.culprits == frozenset(), abort
        assert all(m.round <= 2 for m in outcome.sent[i]), "MtA sent across key versions"


def test_a_second_reshare_chains_epochs() -> None:
    old = keys(2, 3)
    first = new_shares(reshare(ResharePlan(old[1].public_data(), (1, 2), (1, 2, 3), 2), old))
    plan = ResharePlan(first[1].public_data(), (2, 3), (1, 2, 3), 2)
    second = new_shares(reshare(plan, first))
    assert {s.epoch for s in second.values()} == {2}
    assert Point.base_mul(secret_of(second, (1, 3))) == old[1].public_key
    with pytest.raises(CryptoMisuse):  # epoch-0 shares cannot deal for the epoch-1 plan
        cfg = configs("reshare/v1", plan.parties, 2, b"wallet")[1]
        ReshareParty(cfg, plan, old[2])


# --- plans ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dealers, committee, t_new, check",
    [
        ((1,), (1, 2, 3), 2, Check.LENGTH),  # fewer dealers than the old threshold
        ((1, 4), (1, 2, 3), 2, Check.PARTY_INDEX),  # 4 holds no old share
        ((2, 1), (1, 2, 3), 2, Check.PARTY_INDEX),  # unsorted
        ((1, 2), (1, 2, 2), 2, Check.PARTY_INDEX),  # duplicate member (A15)
        ((1, 2), (1, 2, 3), 1, Check.RANGE),  # t′ = 1
        ((1, 2), (1, 2, 3), 4, Check.RANGE),  # t′ > n′
    ],
)
def test_invalid_plans_are_refused(
    dealers: tuple[int, ...], committee: tuple[int, ...], t_new: int, check: Check
) -> None:
    with pytest.raises(InvalidParameter) as caught:
        ResharePlan(keys(2, 3)[1].public_data(), dealers, committee, t_new)
    assert caught.value.check == check


def test_parties_with_different_plans_abort_without_blame() -> None:
    """Party 3 was told it deals too: the plans differ, every party aborts in round 1 with
    MISMATCH, and nobody is blamed (each side may hold the wrong plan)."""
    old = keys(2, 3)
    plan = ResharePlan(old[1].public_data(), (1, 2), (1, 2, 3), 2)
    other = ResharePlan(old[1].public_data(), (1, 2, 3), (1, 2, 3), 2)
    cfgs = configs("reshare/v1", plan.parties, 2, b"wallet")
    parties = [
        ReshareParty(cfgs[0], plan, old[1]),
        ReshareParty(cfgs[1], plan, old[2]),
        ReshareParty(cfgs[2], other, old[3]),
    ]
    outcome = run(parties)
    assert not outcome.results
    for i in (1, 2, 3):
        assert outcome.aborts[i].code == Check.MISMATCH
        assert outcome.aborts[i].culprits == frozenset()
        assert all(m.round <= COMMIT_ECHO for m in outcome.sent[i]), "shares sent anyway"


def test_new_member_needs_no_share_and_dealer_needs_its_own() -> None:
    old = keys(2, 3)
    plan = ResharePlan(old[1].public_data(), (1, 2), (1, 2, 4), 2)
    cfg = {c.me: c for c in configs("reshare/v1", plan.parties, 2, b"wallet")}
    with pytest.raises(CryptoMisuse):
        ReshareParty(cfg[4], plan, old[3])  # a new-only member holds no old share
    with pytest.raises(CryptoMisuse):
        ReshareParty(cfg[1], plan, None)  # a dealer must bring its share
    with pytest.raises(CryptoMisuse):
        ReshareParty(cfg[1], plan, old[2])  # …its own


# --- malicious parties ---------------------------------------------------------------------


class ShiftsTheKey(ReshareParty):
    """A dealer re-shares w_i + 1 (consistently: Feldman points and shares agree)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._coefficients[0] = (self._coefficients[0] + 1) % Q
        self._feldman[0] = Point.base_mul(self._coefficients[0])


class BadShareToOne(ReshareParty):
    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 2:
            out.p2p[2] = (out.p2p[2] + 1) % Q
        return out


class ShortFeldman(ReshareParty):
    """Commits to and opens only t′−1 Feldman points."""

    def _opening(self) -> list[Any]:
        feldman, salt = super()._opening()
        return [feldman[:-1], salt]


class SharesAsNonDealer(ReshareParty):
    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 2:
            out.p2p = {j: 5 for j in out.p2p}
        return out


class ForgedAcknowledgement(ReshareParty):
    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 3:
            out.broadcast[1] = (out.broadcast[1] + 1) % Q
        return out


def _plan_2_of_3_to_3_of_4() -> tuple[ResharePlan, dict[int, KeyShare]]:
    old = keys(2, 3)
    return ResharePlan(old[1].public_data(), (1, 2, 3), (1, 2, 3, 4), 3), old


@pytest.mark.parametrize(
    "cheater, culprit, code, honest",
    [
        (ShiftsTheKey, 3, Check.EQUATION, (1, 2, 4)),
        (ShortFeldman, 3, Check.LENGTH, (1, 2, 4)),
        (SharesAsNonDealer, 4, Check.DECODE, (1, 2, 3)),
        (ForgedAcknowledgement, 4, Check.EQUATION, (1, 2, 3)),
    ],
)
def test_cheating_party_is_named_by_everyone(
    cheater: type[ReshareParty], culprit: int, code: Check, honest: tuple[int, ...]
) -> None:
    plan, old = _plan_2_of_3_to_3_of_4()
    outcome = reshare(plan, old, cheaters={culprit: cheater})
    assert_clean_abort(outcome, culprit, code, honest)


def test_bad_share_is_named_by_its_recipient_and_nobody_finishes() -> None:
    plan, old = _plan_2_of_3_to_3_of_4()
    outcome = reshare(plan, old, cheaters={3: BadShareToOne})
    assert_clean_abort(outcome, 3, Check.SHARE, (2,), everyone=False, last_round=OPEN)
    assert not outcome.results  # the others wait for 2's acknowledgement, none finishes
    assert_no_honest_blamed(outcome, (1, 2, 4))


def test_opening_that_does_not_match_the_commitment() -> None:
    plan, old = _plan_2_of_3_to_3_of_4()

    def change(payload: Any) -> Any:
        return [payload[0], secrets.token_bytes(32)]

    outcome = reshare(plan, old, mutators={2: rewrite(OPEN, change, broadcast=True)})
    assert_clean_abort(outcome, 2, Check.COMMITMENT, (1, 3, 4))


def test_T12c_split_view_acknowledgement_leaves_everyone_on_the_old_version() -> None:
    """Member 4 acknowledges to party 1 with a different (invalid) proof than to the others:
    the echo of the acknowledgement round catches it and no honest party outputs the new
    version, so all stay on the old one (Kudelski ING GG18 re-sharing split view).  Party 1
    verifies the invalid proof it received before the echo and names 4 (the echo rule,
    base.py); the others only see the echo mismatch."""
    plan, old = _plan_2_of_3_to_3_of_4()

    def other_proof(payload: Any) -> Any:
        return [payload[0], (payload[1] + 1) % Q]

    outcome = reshare(plan, old, mutators={4: rewrite(ACK, other_proof, to=1)})
    assert not outcome.results
    assert outcome.aborts[1].code == Check.EQUATION
    assert outcome.aborts[1].culprits == frozenset({4})
    for i in (2, 3):
        assert outcome.aborts[i].code == Check.EQUIVOCATION
        assert outcome.aborts[i].culprits == frozenset()


def test_identity_and_malformed_fields_are_named() -> None:
    plan, old = _plan_2_of_3_to_3_of_4()

    def not_a_point(payload: Any) -> Any:
        feldman, salt = payload
        return [[*feldman[:-1], 7], salt]

    outcome = reshare(plan, old, mutators={1: rewrite(OPEN, not_a_point, broadcast=True)})
    assert_clean_abort(outcome, 1, Check.BAD_POINT, (2, 3, 4))


def test_random_mutations_never_blame_an_honest_party() -> None:
    plan, old = _plan_2_of_3_to_3_of_4()
    for seed in range(12):
        wire_round = 1 + seed % 5
        cheater = 1 + seed % 4

        def flip(payload: bytes, seed: int = seed) -> bytes:
            data = bytearray(payload)
            data[(seed * 7919) % len(data)] ^= 1 << (seed % 8)
            return bytes(data)

        for broadcast in (True, False):
            mutated = reshare(
                plan,
                old,
                mutators={cheater: raw_rewrite(wire_round, flip, broadcast=broadcast)},
                seed=seed,
            )
            honest = tuple(i for i in plan.parties if i != cheater)
            assert_no_honest_blamed(mutated, honest)


def test_key_public_rejects_inconsistent_versions() -> None:
    public = keys(2, 3)[1].public_data()
    fields = {f: getattr(public, f) for f in public.__dataclass_fields__}
    with pytest.raises(InvalidParameter):
        KeyPublic(**{**fields, "epoch": -1})
    with pytest.raises(InvalidParameter):
        KeyPublic(**{**fields, "parties": (1, 3, 2)})
    shifted = (public.public_shares[0] + Point.generator(), *public.public_shares[1:])
    with pytest.raises(InvalidParameter):
        KeyPublic(**{**fields, "public_shares": shifted})
