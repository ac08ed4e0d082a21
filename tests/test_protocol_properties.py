"""Property tests (hypothesis) over random committees: any t of n hold the key, fewer than t
do not, refresh and re-share preserve the public key for any plan, and any t-subset of signers
produces a valid signature."""

from __future__ import annotations

import secrets

import pytest
from harness import configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_fixtures import aux_info, keys
from test_protocol_sign import check_independently

from signer.curve import Point, Q, lagrange_coefficient
from signer.errors import Check, InvalidParameter
from signer.protocol import flow
from signer.protocol.keygen import KeyShare
from signer.protocol.presign import PresignParty
from signer.protocol.reshare import ResharePlan
from signer.protocol.sign import HashScheme

SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def interpolate(shares: dict[int, KeyShare], subset: tuple[int, ...]) -> int:
    return sum(lagrange_coefficient(i, subset) * shares[i].secret_share for i in subset) % Q


@st.composite
def committee(draw: st.DrawFn, max_n: int = 7) -> tuple[int, int]:
    n = draw(st.integers(2, max_n))
    return draw(st.integers(2, n)), n


@st.composite
def subset(draw: st.DrawFn, parties: tuple[int, ...], size: int) -> tuple[int, ...]:
    chosen = draw(st.permutations(parties))[:size]
    return tuple(sorted(chosen))


@SLOW
@given(data=st.data(), tn=committee())
def test_any_t_subset_holds_the_key_and_fewer_do_not(
    data: st.DataObject, tn: tuple[int, int]
) -> None:
    t, n = tn
    shares = flow.run_keygen(t, n, b"property")
    parties = tuple(range(1, n + 1))
    Y = shares[1].public_key
    quorum = data.draw(subset(parties, t))
    assert Point.base_mul(interpolate(shares, quorum)) == Y
    too_few = data.draw(subset(parties, t - 1))
    if too_few:  # t − 1 shares interpolate to some other value (negligible chance otherwise)
        assert Point.base_mul(interpolate(shares, too_few)) != Y


@st.composite
def reshare_plan(draw: st.DrawFn) -> tuple[int, int, tuple[int, ...], tuple[int, ...], int]:
    t, n = draw(committee(max_n=5))
    old_parties = tuple(range(1, n + 1))
    dealers = draw(subset(old_parties, draw(st.integers(t, n))))
    pool = tuple(range(1, 9))
    size = draw(st.integers(2, 6))
    new_committee = draw(subset(pool, size))
    return t, n, dealers, new_committee, draw(st.integers(2, size))


@SLOW
@given(data=st.data(), case=reshare_plan())
def test_reshare_preserves_the_key_for_any_plan(
    data: st.DataObject, case: tuple[int, int, tuple[int, ...], tuple[int, ...], int]
) -> None:
    t, n, dealers, new_committee, t_new = case
    old = keys(t, n)
    plan = ResharePlan(old[1].public_data(), dealers, new_committee, t_new)
    results = flow.run_reshare(plan, old)
    new = {i: r.share for i, r in results.items() if r.share is not None}
    assert sorted(new) == list(new_committee)
    Y = old[1].public_key
    assert {r.key.public_key for r in results.values()} == {Y}
    assert Point.base_mul(interpolate(new, data.draw(subset(new_committee, t_new)))) == Y
    too_few = data.draw(subset(new_committee, t_new - 1))
    assert Point.base_mul(interpolate(new, too_few)) != Y
    # a refresh of the result keeps the key again, with yet another epoch
    again = flow.run_reshare(ResharePlan.refresh(new[new_committee[0]].public_data()), new)
    assert {r.key.public_key for r in again.values()} == {Y}
    assert {r.key.epoch for r in again.values()} == {old[1].epoch + 2}


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_three_of_five_sign(data: st.DataObject) -> None:
    signers = data.draw(subset((1, 2, 3, 4, 5), 3))
    path = tuple(data.draw(st.lists(st.integers(0, 2**31 - 1), max_size=2)))
    presignatures = flow.run_presign(keys(3, 5), aux_info(5), signers, path)
    message = secrets.token_bytes(data.draw(st.integers(1, 64)))
    signature = flow.sign(presignatures, message, HashScheme.SHA256D, keys(3, 5)[1].public_data())
    check_independently(signature, message, HashScheme.SHA256D)


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_fewer_than_t_signers_cannot_presign(data: st.DataObject) -> None:
    signers = data.draw(subset((1, 2, 3, 4, 5), 2))
    key, aux = keys(3, 5), aux_info(5)
    config = configs("presign/v1", signers, 2, b"wallet")[0]  # a session of t − 1 signers
    with pytest.raises(InvalidParameter) as refused:
        PresignParty(config, key[config.me], aux[config.me])
    assert refused.value.check == Check.LENGTH
