"""t-of-n DKG as a sans-IO state machine: correctness matrix, engine behaviour, and the
malicious-party harness (attacks.md A12, A13, A14, A15, A16, A20)."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import replace
from typing import Any

import pytest
from harness import assert_clean_abort, assert_no_honest_blamed, configs, raw_rewrite, rewrite
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.curve import Point, Q, lagrange_coefficient
from signer.encoding import decode, encode
from signer.errors import Check, CryptoMisuse, InvalidParameter
from signer.protocol.base import MessageRefused, ProtocolAbort, SessionConfig
from signer.protocol.keygen import KeygenParty, KeyShare
from signer.protocol.simulate import Outcome, Stalled, run

# Wire rounds: 1 commitment, 2 its echo, 3 opening + shares, 4 Schnorr z, 5 its echo.
COMMIT, COMMIT_ECHO, OPEN, PROVE, PROVE_ECHO = 1, 2, 3, 4, 5


def keygen(t: int, n: int, seed: int = 0, **kwargs: Any) -> Outcome[KeyShare]:
    parties = list(range(1, n + 1))
    return run([KeygenParty(c) for c in configs("keygen/v1", parties, t)], seed=seed, **kwargs)


def reconstruct(shares: dict[int, KeyShare], subset: tuple[int, ...]) -> int:
    return sum(lagrange_coefficient(i, subset) * shares[i].secret_share for i in subset) % Q


@pytest.mark.parametrize("t, n", [(2, 2), (2, 3), (3, 3), (3, 5), (4, 7)])
def test_matrix_every_t_subset_reconstructs_the_key(t: int, n: int) -> None:
    outcome = keygen(t, n, seed=t * 10 + n)
    shares = outcome.results
    assert sorted(shares) == list(range(1, n + 1)) and not outcome.aborts
    first = shares[1]
    for share in shares.values():
        assert share.public_key == first.public_key
        assert share.public_shares == first.public_shares
        assert share.chain_code == first.chain_code
    for subset in itertools.combinations(range(1, n + 1), t):
        assert Point.base_mul(reconstruct(shares, subset)) == first.public_key
    # fewer than t shares interpolate to something unrelated
    for subset in itertools.combinations(range(1, n + 1), t - 1):
        if len(subset) >= 1:
            assert Point.base_mul(reconstruct(shares, subset)) != first.public_key


@settings(max_examples=8, deadline=None)
@given(
    st.integers(2, 5).flatmap(lambda n: st.tuples(st.integers(2, n), st.just(n))),
    st.integers(0, 2**32),
)
def test_any_order_of_delivery(tn: tuple[int, int], seed: int) -> None:
    t, n = tn
    outcome = keygen(t, n, seed=seed, duplicate=seed % 2 == 0)
    assert len({s.public_key for s in outcome.results.values()}) == 1
    assert len(outcome.results) == n


def test_T13g_session_ids_unique_and_never_constant() -> None:
    cfgs = configs("keygen/v1", [1, 2, 3], 2)
    a = [KeygenParty(c) for c in cfgs]
    b = [KeygenParty(c) for c in cfgs]  # same caller request id, same parties and key id
    run(a)
    run(b)
    assert len({p.session_id for p in a}) == 1
    assert a[0].session_id != b[0].session_id


def test_dropped_message_surfaces_as_stall() -> None:
    with pytest.raises(Stalled) as err:
        keygen(2, 3, drop=lambda m: m.sender == 3 and m.round == OPEN and m.recipient == 1)
    assert err.value.waiting == (1, 2, 3)  # 1 waits for 3; the others then wait for 1


def test_engine_rejects_misuse() -> None:
    first, second = (KeygenParty(c) for c in configs("keygen/v1", [1, 2], 2))
    message = second.start()[0]
    with pytest.raises(CryptoMisuse):
        first.receive(message)  # not started
    with pytest.raises(CryptoMisuse):
        _ = first.result
    own = first.start()[0]
    with pytest.raises(MessageRefused) as refused:
        first.receive(own)  # a message claiming to come from ourselves: refused, not fatal
    assert refused.value.check == Check.PARTY_INDEX
    with pytest.raises(CryptoMisuse):
        first.start()
    with pytest.raises(ProtocolAbort) as err:
        first.receive(replace(message, round=99))
    assert err.value.code == Check.DECODE and err.value.culprits == frozenset({2})
    with pytest.raises(ProtocolAbort) as again:  # an aborted session stays aborted
        first.receive(message)
    assert again.value is err.value
    with pytest.raises(ProtocolAbort):
        first.start()


@pytest.mark.parametrize(
    "parties, me, t",
    [
        ((0, 1, 2), 1, 2),  # T15a index 0
        ((1, 1, 2), 1, 2),  # duplicate
        ((2, 1, 3), 1, 2),  # unsorted
        ((1, 2, 3), 4, 2),  # not a member
        ((1, 2, 3), 1, 1),  # keygen needs t ≥ 2
        ((1, 2, 3), 1, 4),  # t > n
        ((1,), 1, 1),  # one party
        ((1, 2, 1 << 16), 1, 2),  # index too large
    ],
)
def test_T15c_bad_party_sets_rejected_before_round_1(
    parties: tuple[int, ...], me: int, t: int
) -> None:
    with pytest.raises(InvalidParameter):
        KeygenParty(SessionConfig("keygen/v1", parties, me, t, b"k", secrets.token_bytes(16)))


# --- malicious party 3 of 3-of-5 (or 2-of-3) -------------------------------------------------

HONEST_5 = [1, 2, 4, 5]


def _opening_field(index: int, value: Any) -> Any:
    def change(payload: Any) -> Any:
        payload = list(payload)
        payload[index] = value(payload[index]) if callable(value) else value
        return payload

    return change


def test_T13d_commitment_not_opened() -> None:
    outcome = keygen(
        3,
        5,
        mutators={3: rewrite(OPEN, _opening_field(0, secrets.token_bytes(32)), broadcast=True)},
    )
    assert_clean_abort(outcome, 3, Check.COMMITMENT, HONEST_5, last_round=OPEN)


@pytest.mark.parametrize("length", [2, 4, 0])
def test_T15b_feldman_vector_length(length: int) -> None:
    def change(payload: Any) -> Any:
        points = list(payload[2])
        payload = list(payload)
        payload[2] = (points * 2)[:length]
        return payload

    outcome = keygen(3, 5, mutators={3: rewrite(OPEN, change, broadcast=True)})
    assert_clean_abort(outcome, 3, Check.LENGTH, HONEST_5, last_round=OPEN)


def test_T14a_identity_in_feldman_commitment() -> None:
    def change(payload: bytes) -> bytes:
        opening = decode(payload)
        constant = opening[2][0].to_bytes()  # type: ignore[index]
        return payload.replace(constant, bytes(33))

    outcome = keygen(3, 5, mutators={3: raw_rewrite(OPEN, change)})
    assert_clean_abort(outcome, 3, Check.BAD_POINT, HONEST_5, last_round=OPEN)


@pytest.mark.parametrize("bad", ["plus_one", "zero", "q", "negative"])
def test_wrong_share_to_one_party_blames_the_dealer(bad: str) -> None:
    change = {
        "plus_one": lambda s: (s + 1) % Q,
        "zero": lambda s: 0,
        "q": lambda s: s + Q,
        "negative": lambda s: s - Q,
    }[bad]
    outcome = keygen(3, 5, mutators={3: rewrite(OPEN, change, to=1, broadcast=False)})
    expected = Check.SHARE if bad in ("plus_one", "zero") else Check.RANGE
    assert_clean_abort(outcome, 3, expected, [1], last_round=OPEN)
    assert_no_honest_blamed(outcome, HONEST_5)
    assert not outcome.results  # nobody outputs a key: party 1 never sends round 4


class WrongSchnorr(KeygenParty):
    """State-level rule: party 3 answers its Schnorr challenge wrongly (consistently to all)."""

    def _verify_openings(self, inbox: Any) -> int:
        return (super()._verify_openings(inbox) + 1) % Q


def test_wrong_schnorr_response() -> None:
    cfgs = configs("keygen/v1", [1, 2, 3, 4, 5], 3)
    parties = [WrongSchnorr(c) if c.me == 3 else KeygenParty(c) for c in cfgs]
    assert_clean_abort(run(parties), 3, Check.EQUATION, HONEST_5)


def test_wire_rewrite_of_an_echoed_broadcast_is_blamed_on_its_sender() -> None:
    """Party 3 sends everyone a wrong z while its own echo covers the original: the echoes
    disagree, but the authenticated z is verified first and names 3 (the echo rule, base.py;
    before it, this was an unattributed EQUIVOCATION)."""
    outcome = keygen(3, 5, mutators={3: rewrite(PROVE, lambda p: [(p[0] + 1) % Q])})
    assert_clean_abort(outcome, 3, Check.EQUATION, HONEST_5)


def test_T12a_equivocated_commitment_caught_by_echo() -> None:
    # round 1 carries [session nonce, session context, payload]; only the payload changes
    other = rewrite(COMMIT, lambda p: [p[0], p[1], [secrets.token_bytes(32)]], to=1)
    outcome = keygen(3, 5, mutators={3: other})
    for i in HONEST_5:
        abort = outcome.aborts[i]
        assert abort.code == Check.EQUIVOCATION
        assert abort.culprits == frozenset()  # unattributable without signatures: never blame 1
    for i in HONEST_5:
        assert all(m.round <= COMMIT_ECHO for m in outcome.sent[i]), "shares sent after split view"


def test_conflicting_duplicate_is_equivocation_by_the_sender() -> None:
    def twice(message: Any) -> Any:
        if message.round != PROVE:
            return message
        other = encode([(decode(message.payload)[0] + 1) % Q])  # type: ignore[index]
        from dataclasses import replace

        return [message, replace(message, payload=other)]

    outcome = keygen(2, 3, seed=1, mutators={3: twice})
    for i in (1, 2):
        if i in outcome.aborts:
            assert outcome.aborts[i].culprits == frozenset({3})
    assert outcome.aborts, "conflicting payloads went unnoticed"


def test_T14b_key_share_validation() -> None:
    share = keygen(2, 3).results[1]
    fields = share.__dict__.copy()
    with pytest.raises(InvalidParameter):
        KeyShare(**{**fields, "secret_share": 0})
    with pytest.raises(InvalidParameter):
        KeyShare(**{**fields, "secret_share": (share.secret_share + 1) % Q})
    with pytest.raises(InvalidParameter):
        KeyShare(**{**fields, "public_key": share.public_key + Point.generator()})
    shifted = (
        share.public_shares[0],
        share.public_shares[1],
        share.public_shares[2] + Point.generator(),
    )
    with pytest.raises(InvalidParameter):
        KeyShare(**{**fields, "public_shares": shifted})
    with pytest.raises(InvalidParameter):
        KeyShare(**{**fields, "threshold": 1})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(0, 2**16), st.integers(0, 2**32))
def test_T20b_no_honest_blame_under_random_mutation(
    wire_round: int, position: int, seed: int
) -> None:
    """Flip one byte of one of party 3's messages: success, or an abort that never names an
    honest party (the echo rounds may abort with no culprit), never an uncaught exception."""

    def flip(payload: bytes) -> bytes:
        k = position % len(payload)
        return payload[:k] + bytes([payload[k] ^ 0x01]) + payload[k + 1 :]

    mutate_broadcast = raw_rewrite(wire_round, flip, broadcast=True)
    mutate_p2p = raw_rewrite(wire_round, flip, broadcast=False)
    try:
        outcome = keygen(2, 3, seed=seed, mutators={3: lambda m: mutate_p2p(mutate_broadcast(m))})
    except Stalled:
        return
    assert_no_honest_blamed(outcome, [1, 2])
