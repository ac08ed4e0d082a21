"""A protocol party is never left half-advanced and a cheater cannot hide (issue 9 items 2 and 4,
attacks.md A12, A17, A20):

- an unexpected exception in any round of any protocol makes the party fail for good with
  `Check.INTERNAL`, naming nobody; later messages get the same abort; the simulator reports it;
- the echo rule: a bad proof plus a false echo digest still names its sender;
- an equivocating broadcaster never gets an honest party blamed, in any protocol;
- refresh refuses a reused Paillier modulus; the combiner refuses an old-epoch presignature.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import gmpy2
import pytest
from conftest import paillier_key
from harness import assert_clean_abort, assert_no_honest_blamed, configs, rewrite
from protocol_fixtures import aux_info, keys
from test_protocol_presign_identify import LyingDelta

from signer.curve import Q
from signer.encoding import Encodable
from signer.errors import Check, CryptoMisuse
from signer.params import M_ITERATIONS, MODULUS_BITS
from signer.protocol import flow
from signer.protocol.aux_info import AuxInfoParty
from signer.protocol.base import Inbox, Message, Outgoing, Party, ProtocolAbort
from signer.protocol.keygen import KeygenParty
from signer.protocol.presign import PresignParty
from signer.protocol.presign_identify import PresignIdentifyParty
from signer.protocol.reshare import RefreshParty, ReshareParty, ResharePlan
from signer.protocol.sign import HashScheme, SignParty, StalePresignature, combine, issue_partial
from signer.protocol.simulate import Mutator, run
from signer.zk import mod

MESSAGE = b"robustness: an unsigned transaction"


# --- every protocol, with a class per party --------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """How to run one protocol with some parties replaced by other classes."""

    name: str
    base: type[Party[Any]]
    parties: tuple[int, ...]
    build: Callable[[Mapping[int, type[Party[Any]]]], list[Party[Any]]]


def _keygen(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    return [classes.get(c.me, KeygenParty)(c) for c in configs("keygen/v1", [1, 2, 3], 2)]


def _aux(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    cfgs = configs("aux_info/v1", [1, 2], 2, b"aux")
    return [classes.get(c.me, AuxInfoParty)(c, paillier_key(c.me)) for c in cfgs]


def _presign(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    key, aux = keys(3, 3), aux_info(3)
    cfgs = configs("presign/v1", [1, 2, 3], 3, b"wallet")
    return [classes.get(c.me, PresignParty)(c, key[c.me], aux[c.me]) for c in cfgs]


def _sign(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    key, aux = keys(3, 3), aux_info(3)
    cfgs = configs("interactive_sign/v1", [1, 2, 3], 3, b"wallet")
    return [
        classes.get(c.me, SignParty)(c, key[c.me], aux[c.me], MESSAGE, HashScheme.KECCAK256)
        for c in cfgs
    ]


@cache
def _failed_presign() -> dict[int, ProtocolAbort]:
    """Every signer's IdentificationRequired after party 3 lied about δ_3 (signers 1, 3)."""
    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("presign/v1", [1, 3], 2, b"wallet")
    parties = [(LyingDelta if c.me == 3 else PresignParty)(c, key[c.me], aux[c.me]) for c in cfgs]
    return run(parties).aborts


def _identify(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    states = {i: a.identification for i, a in _failed_presign().items()}
    return [
        classes.get(i, PresignIdentifyParty)(state.session_config(), state)
        for i, state in sorted(states.items())
    ]


def _plan() -> ResharePlan:
    return ResharePlan(keys(2, 3)[1].public_data(), (1, 2, 3), (1, 2, 3, 4), 3)


def _reshare(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    plan, old = _plan(), keys(2, 3)
    cfgs = configs("reshare/v1", plan.parties, plan.new_threshold, plan.old.key_id)
    return [
        classes.get(c.me, ReshareParty)(c, plan, old.get(c.me) if c.me in plan.dealers else None)
        for c in cfgs
    ]


def _refresh(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    old = keys(2, 3)
    cfgs = configs("refresh/v1", [1, 2, 3], 2, b"wallet")
    return [classes.get(c.me, RefreshParty)(c, old[c.me]) for c in cfgs]


PROTOCOLS = [
    Protocol("keygen", KeygenParty, (1, 2, 3), _keygen),
    Protocol("aux_info", AuxInfoParty, (1, 2), _aux),
    Protocol("presign", PresignParty, (1, 2, 3), _presign),
    Protocol("interactive_sign", SignParty, (1, 2, 3), _sign),
    Protocol("presign_identify", PresignIdentifyParty, (1, 3), _identify),
    Protocol("reshare", ReshareParty, (1, 2, 3, 4), _reshare),
    Protocol("refresh", RefreshParty, (1, 2, 3), _refresh),
]


# --- unexpected exceptions: terminal INTERNAL ------------------------------------------------

INJECTED: list[type[Exception]] = [RuntimeError, RecursionError, ZeroDivisionError, MemoryError]


def faulty(base: type[Party[Any]], at: int, error: type[Exception]) -> type[Party[Any]]:
    """`base` whose round `at` raises `error` (at = len(ROUNDS) + 1: its output step)."""

    class Faulty(base):  # type: ignore[valid-type, misc]
        def _round(self, number: int, inbox: Inbox) -> Outgoing:
            if number == at:
                raise error(f"injected in round {at}")
            return super()._round(number, inbox)  # type: ignore[no-any-return]

        def _finish(self, inbox: Inbox) -> Any:
            if at == len(self.ROUNDS) + 1:
                raise error("injected in the output step")
            return super()._finish(inbox)

    return Faulty


CASES = [
    pytest.param(p, at, id=f"{p.name}-{'output' if at > len(p.base.ROUNDS) else f'round{at}'}")
    for p in PROTOCOLS
    for at in range(1, len(p.base.ROUNDS) + 2)
]


@pytest.mark.parametrize(("protocol", "at"), CASES)
def test_unexpected_exception_in_any_round_is_terminal_internal(
    protocol: Protocol, at: int
) -> None:
    error = INJECTED[(at + len(protocol.name)) % len(INJECTED)]
    victim = protocol.parties[0]
    parties = protocol.build({victim: faulty(protocol.base, at, error)})
    outcome = run(parties)  # the simulator reports the failure instead of crashing
    abort = outcome.aborts[victim]
    assert abort.code is Check.INTERNAL and abort.culprits == frozenset(), abort
    assert isinstance(abort.__cause__, error) and error.__name__ in abort.detail
    assert victim not in outcome.results
    assert_no_honest_blamed(outcome, protocol.parties)
    party = next(p for p in parties if p.me == victim)
    assert not party.done and party.aborted is abort
    # terminal: every later message and start() meet the same abort, nothing half-advanced
    later = [m for i, sent in outcome.sent.items() if i != victim for m in sent]
    later.append(
        Message(party.PROTOCOL, party.config.instance(), 1, protocol.parties[1], None, b"", True)
    )
    for message in later:
        if message.recipient in (None, victim):
            with pytest.raises(ProtocolAbort) as err:
                party.receive(message)
            assert err.value is abort
    with pytest.raises(ProtocolAbort) as err:
        party.start()
    assert err.value is abort


class FailsDecoding(KeygenParty):
    """An unexpected error while decoding an inbox (e.g. MemoryError on a huge payload)."""

    def _decoded(self, wire_round: int) -> Inbox:
        if wire_round == 3:
            raise MemoryError("injected while decoding")
        return super()._decoded(wire_round)


class CryptoMisuseInRound(KeygenParty):
    """A project error raised outside `blame` (a bug of ours): INTERNAL too, never a verdict."""

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number == 3:
            raise CryptoMisuse("injected misuse")
        return super()._round(number, inbox)


@pytest.mark.parametrize("cls", [FailsDecoding, CryptoMisuseInRound])
def test_errors_while_decoding_or_of_our_own_are_internal(cls: type[KeygenParty]) -> None:
    outcome = run(_keygen({1: cls}))
    assert outcome.aborts[1].code is Check.INTERNAL and outcome.aborts[1].culprits == frozenset()
    assert_no_honest_blamed(outcome, (1, 2, 3))


def test_refused_sender_leaves_the_run_intact() -> None:
    """A copy of every message of party 3 also arrives claiming a sender outside the session:
    refused by everyone (reported by the simulator), and the run still completes."""

    def also_from_a_stranger(message: Message) -> list[Message]:
        return [message, replace(message, sender=9)]

    outcome = run(_keygen({}), mutators={3: also_from_a_stranger})
    assert sorted(outcome.results) == [1, 2, 3] and not outcome.aborts
    assert outcome.refused and all(r.sender == 9 for _, r in outcome.refused)


# --- the echo rule: a bad payload plus a false echo digest still names its sender --------------

FINAL_ECHO = 5  # keygen, aux-info and re-share: the echo of the last round is wire round 5


def false_echo(wire_round: int = FINAL_ECHO) -> Mutator:
    return rewrite(wire_round, lambda _digest: secrets.token_bytes(32))


class SchnorrZEqualsQ(KeygenParty):
    """Broadcasts z = q (out of range) as its Schnorr response, consistently."""

    def _verify_openings(self, inbox: Inbox) -> int:
        super()._verify_openings(inbox)
        return Q


def test_echo_rule_keygen_schnorr_z_equal_q_with_false_echo_is_named() -> None:
    """Issue 9: `RANGE [3]` became `EQUIVOCATION []` when 3 also sent a false echo digest."""
    outcome = run(_keygen({3: SchnorrZEqualsQ}), mutators={3: false_echo()})
    assert_clean_abort(outcome, 3, Check.RANGE, [1, 2])
    alone = run(_keygen({3: SchnorrZEqualsQ}))  # the same verdict as without the false echo
    assert_clean_abort(alone, 3, Check.RANGE, [1, 2])


def _blum_prime(bits: int) -> int:
    while True:
        p = int(gmpy2.next_prime(secrets.randbits(bits) | (3 << (bits - 2))))
        if p % 4 == 3:
            return p


@cache
def three_factor_modulus() -> int:
    """N = p1·p2·p3, 3072 bits, no small factor: passes every structural check (from_peer),
    so only the proofs can tell it is not a Paillier–Blum modulus."""
    while True:
        n = _blum_prime(1024) * _blum_prime(1024) * _blum_prime(1024)
        if n.bit_length() == MODULUS_BITS:
            return n


class ThreeFactorModulus(AuxInfoParty):
    """Commits to and opens a 3-prime modulus (with s, t over it) and sends a Πmod that it
    cannot make sound: a well-formed proof (Jacobi(w | N) = −1, units) that fails its equation."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        n = three_factor_modulus()
        t = pow(secrets.randbelow(n - 2) + 2, 2, n)
        self._fake = (n, pow(t, secrets.randbelow(n), n), t)

    def _opening(self) -> list[Encodable]:
        return [*self._fake, *super()._opening()[3:]]

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        out = super()._round(number, inbox)
        if number == 3:
            assert isinstance(out.broadcast, list)
            out.broadcast = [self._junk_mod().to_bytes(), out.broadcast[1]]
        return out

    def _junk_mod(self) -> mod.ModProof:
        n = self._fake[0]
        w = next(w for w in range(2, 1000) if gmpy2.jacobi(w, n) == -1)
        units = tuple(secrets.randbelow(n - 2) + 2 for _ in range(M_ITERATIONS))
        bits = (0,) * M_ITERATIONS
        return mod.ModProof(w, units, bits, bits, units)


def _aux3(classes: Mapping[int, type[Party[Any]]]) -> list[Party[Any]]:
    cfgs = configs("aux_info/v1", [1, 2, 3], 2, b"aux")
    return [classes.get(c.me, AuxInfoParty)(c, paillier_key(c.me)) for c in cfgs]


def test_echo_rule_aux_info_three_factor_modulus_with_false_echo_is_named() -> None:
    """Issue 9: `EQUATION [3]` became `EQUIVOCATION []` with a false echo digest."""
    outcome = run(_aux3({3: ThreeFactorModulus}), mutators={3: false_echo()})
    assert_clean_abort(outcome, 3, Check.EQUATION, [1, 2])


class ForgedAcknowledgement(ReshareParty):
    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        out = super()._round(number, inbox)
        if number == 3:
            assert isinstance(out.broadcast, list)
            out.broadcast[1] = (out.broadcast[1] + 1) % Q
        return out


def test_echo_rule_reshare_bad_ack_with_false_echo_is_named() -> None:
    """Issue 9 item 4: a bad ACK gave `EQUATION [4]`; with a false echo, `EQUIVOCATION []`."""
    outcome = run(_reshare({4: ForgedAcknowledgement}), mutators={4: false_echo()})
    assert_clean_abort(outcome, 4, Check.EQUATION, [1, 2, 3])  # no honest party moves on


def test_echo_mismatch_still_wins_over_unattributed_checks() -> None:
    """A presign liar's δ (IdentificationRequired: no culprit yet) with a false echo: the echo
    mismatch takes precedence, so no identification starts from a split view."""
    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("presign/v1", [1, 3], 2, b"wallet")
    parties = [(LyingDelta if c.me == 3 else PresignParty)(c, key[c.me], aux[c.me]) for c in cfgs]
    outcome = run(parties, mutators={3: false_echo(5)})
    abort = outcome.aborts[1]
    assert abort.code is Check.EQUIVOCATION and abort.culprits == frozenset()


# --- an equivocating broadcaster never gets an honest party blamed ----------------------------


def _swap_first_two(value: Any) -> Any:
    return [value[1], value[0], *value[2:]]


def _other(value: Any) -> Any:
    """Another well-formed protocol payload of the same shape."""
    if len(value) == 1:  # a commitment
        return [secrets.token_bytes(32)]
    if isinstance(value[0], int) and isinstance(value[1], int):  # presign K, G
        return _swap_first_two(value)
    return [value[0] * value[0], value[1]]  # identification: H² is another ciphertext


def equivocate_round1(to: int) -> Mutator:
    """The round-1 broadcast to `to` carries another protocol payload (same nonce, context)."""
    return rewrite(1, lambda p: [p[0], p[1], _other(p[2])], to=to, broadcast=True)


@pytest.mark.parametrize("protocol", [pytest.param(p, id=p.name) for p in PROTOCOLS])
def test_equivocating_broadcaster_never_gets_an_honest_party_blamed(protocol: Protocol) -> None:
    cheater, first = protocol.parties[-1], protocol.parties[0]
    honest = [i for i in protocol.parties if i != cheater]
    outcome = run(protocol.build({}), mutators={cheater: equivocate_round1(first)})
    assert not any(i in outcome.results for i in honest)
    assert sorted(i for i in honest if i in outcome.aborts) == honest
    assert_no_honest_blamed(outcome, honest)
    for i in honest:
        assert outcome.aborts[i].culprits <= {cheater}
        if i != first:  # it saw the honest payload: only the echo tells
            assert outcome.aborts[i].code is Check.EQUIVOCATION


ECHOED_LAST: list[tuple[str, int, Callable[[Any], Any]]] = [
    ("keygen", 4, lambda p: [(p[0] + 1) % Q]),
    ("reshare", 4, lambda p: p if not p else [p[0], (p[1] + 1) % Q]),
    ("presign", 4, lambda p: [(p[0] + 1) % Q, *p[1:]]),
]


@pytest.mark.parametrize(("name", "wire_round", "change"), ECHOED_LAST)
def test_equivocation_in_the_last_echoed_round_blames_no_honest_party(
    name: str, wire_round: int, change: Callable[[Any], Any]
) -> None:
    """The cheater sends party 1 another (invalid or inconsistent) last-round broadcast: party
    1 may name the cheater, the others see the echo mismatch; no honest party is named and
    nobody outputs anything."""
    protocol = next(p for p in PROTOCOLS if p.name == name)
    cheater, first = protocol.parties[-1], protocol.parties[0]
    honest = [i for i in protocol.parties if i != cheater]
    mutator = rewrite(wire_round, change, to=first, broadcast=True)
    outcome = run(protocol.build({}), mutators={cheater: mutator})
    assert not any(i in outcome.results for i in honest)
    assert_no_honest_blamed(outcome, honest)
    for i in honest:
        if i != first:
            assert outcome.aborts[i].code is Check.EQUIVOCATION


# --- item 4: refresh refuses a reused modulus; the combiner refuses another epoch -------------


def test_refresh_refuses_a_party_that_keeps_its_paillier_modulus() -> None:
    """Aux-info replacing a set (refresh / re-share): party 3 brings its old Paillier key back;
    both honest parties name it at its opening, before any proof (DUPLICATE)."""
    old = aux_info(3)
    previous = {a.own.paillier.n for a in old.values()}
    fresh = {1: paillier_key(8), 2: paillier_key(9), 3: old[3].own.paillier}  # 3 reuses
    cfgs = configs("aux_info/v1", [1, 2, 3], 2, b"aux")
    parties = [AuxInfoParty(c, fresh[c.me], () if c.me == 3 else previous) for c in cfgs]
    outcome = run(parties)
    assert_clean_abort(outcome, 3, Check.DUPLICATE, [1, 2], last_round=3)
    assert all("replaced" in outcome.aborts[i].detail for i in (1, 2))


def test_refresh_refuses_to_run_with_our_own_old_modulus() -> None:
    old = aux_info(3)
    previous = [a.own.paillier.n for a in old.values()]
    cfg = configs("aux_info/v1", [1, 2, 3], 2, b"aux")[0]
    with pytest.raises(CryptoMisuse):
        AuxInfoParty(cfg, old[1].own.paillier, previous)
    AuxInfoParty(cfg, paillier_key(9), previous)  # a fresh key is fine


def test_combiner_refuses_a_presignature_of_an_older_epoch() -> None:
    """A presignature made before a refresh still combined into a valid signature at protocol
    level (only the node store stopped it); the combiner now refuses it (MISMATCH)."""
    old = keys(2, 3)
    presignatures = flow.run_presign(old, aux_info(3), (1, 2), ())
    refreshed = flow.completed(run(_refresh({})))
    new_key = refreshed[1].key
    assert new_key.epoch == old[1].epoch + 1 and new_key.public_key == old[1].public_key
    partials = {
        i: issue_partial(p, MESSAGE, HashScheme.KECCAK256) for i, p in presignatures.items()
    }
    public = presignatures[1].public
    with pytest.raises(StalePresignature) as err:
        combine(public, MESSAGE, HashScheme.KECCAK256, partials, new_key)
    assert err.value.check is Check.MISMATCH
    # the same partials combine for the version they were made with
    signature = combine(public, MESSAGE, HashScheme.KECCAK256, partials, old[1].public_data())
    assert signature.public_key == old[1].public_key


def test_every_protocol_helper_completes_when_everyone_is_honest() -> None:
    """Sanity for the helpers above (so the failures they show are the injected ones)."""
    for protocol in PROTOCOLS:
        if protocol.name == "presign_identify":
            continue  # it needs a liar to exist
        outcome = run(protocol.build({}))
        assert sorted(outcome.results) == sorted(protocol.parties), protocol.name
