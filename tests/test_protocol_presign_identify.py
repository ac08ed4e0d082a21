"""Presign identification (signer/protocol/presign_identify.py): a signer that lies about δ_j or
S_j with every proof of presign intact is named by every honest signer (attacks.md A03 T03b);
honest runs never reach identification; a party that lies during identification itself is named;
and no honest party is ever blamed (A20 T20a/T20b), at (2, 3) and (3, 5) signer sets.

Liars lie consistently (they broadcast the value their own state holds), so they too fail the
output check and take part in identification like everybody else — with the wrong value.  Lies
told during identification come from a lying party class (the round-1 broadcast, which must be
the same for all or the echo trips) or from the harness's transport `rewrite` (round-2 p2p).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest
from harness import assert_clean_abort, assert_no_honest_blamed, configs, parties_for, rewrite
from protocol_fixtures import aux_info, keys

from signer.curve import Q
from signer.errors import Check, CryptoMisuse
from signer.paillier import PaillierPublicKey
from signer.protocol import flow
from signer.protocol.base import ProtocolAbort
from signer.protocol.presign import Presignature, PresignParty
from signer.protocol.presign_identify import (
    Equation,
    Identification,
    IdentificationRequired,
    PresignIdentifyParty,
)
from signer.protocol.sign import HashScheme, SignParty
from signer.protocol.simulate import Mutator, Outcome, run
from signer.zk import aff_g, dec, mul

LIAR = 3
PRESIGN_LAST = 5  # presign wire rounds: 1, echo 2, 3, 4, echo 5
OUTPUT_ROUND = 4  # the round of δ_j, Δ_j, S_j, whose check fails
ROUND1, ECHO1, ROUND2 = 1, 2, 3  # identification wire rounds


class LyingDelta(PresignParty):
    """T03b: broadcasts δ_3 + 1 and keeps it as its own δ_3 (all its proofs are honest)."""

    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 3:
            self._delta = (self._delta + 1) % Q
            out.broadcast[0] = self._delta
        return out


class LyingS(PresignParty):
    """Broadcasts S_3 = (χ_3 + 1)·Γ and keeps χ_3 + 1 (its Πlog* for Δ_3 is unaffected)."""

    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 3:
            self._chi = (self._chi + 1) % Q
            out.broadcast[2] = self._Gamma * self._chi
        return out


class Forced(PresignParty):
    """Honest throughout, but treats its (passing) output check as failed: identification among
    honest parties, the ground on which lies during identification are tested."""

    EQUATION: ClassVar[Equation] = Equation.DELTA

    def _build_presignature(self, inbox: Any) -> Presignature:
        presignature = super()._build_presignature(inbox)
        deltas = {self.me: self._delta} | {j: inbox.broadcast[j][0] for j in self.config.others}
        S = dict(zip(presignature.public.signers, presignature.public.S, strict=True))
        wire = self._wire_round(3, False)
        raise self._identification_required(wire, self.EQUATION, deltas, S, "forced")


class ForcedChi(Forced):
    EQUATION: ClassVar[Equation] = Equation.CHI


def presign(
    t: int, n: int, signers: Sequence[int], classes: dict[int, type[PresignParty]]
) -> Outcome[Presignature]:
    key, aux = keys(t, n), aux_info(n)
    cfgs = configs("presign/v1", signers, t, b"wallet")
    return run([classes.get(c.me, PresignParty)(c, key[c.me], aux[c.me]) for c in cfgs])


def assert_identification_required(
    outcome: Outcome[Presignature], signers: Sequence[int], equation: Equation
) -> None:
    """Every signer (the liar included) aborted at the output check with no culprit, carrying
    an identification state for `equation`; nothing was sent after presign's last round."""
    assert not outcome.results
    assert sorted(outcome.aborts) == sorted(signers)
    for i, abort in outcome.aborts.items():
        assert isinstance(abort, IdentificationRequired), abort
        assert abort.code == Check.EQUATION and abort.culprits == frozenset()
        assert abort.round == OUTPUT_ROUND
        assert abort.identification.equation is equation and abort.identification.me == i
    for messages in outcome.sent.values():
        assert all(m.round <= PRESIGN_LAST for m in messages)


def proofs_of(verdict: Identification) -> set[str]:
    """The proofs named in the findings ("Πdec from party 3 rejected: …" → "dec")."""
    return {m.group(1) for f in verdict.findings if (m := re.match(r"Π(\w+) from", f.detail))}


def honest_of(signers: Sequence[int]) -> list[int]:
    return [i for i in signers if i != LIAR]


# --- the output check fails: the liar is named ----------------------------------------------------

SETS = [
    pytest.param(2, 3, (1, 3), id="2-of-3"),
    pytest.param(3, 5, (2, 3, 5), id="3-of-5"),
]


@pytest.mark.parametrize(("t", "n", "signers"), SETS)
@pytest.mark.parametrize(
    ("liar", "equation", "proof"),
    [
        pytest.param(LyingDelta, Equation.DELTA, dec.NAME, id="delta"),
        pytest.param(LyingS, Equation.CHI, dec.GROUP_NAME, id="S"),
    ],
)
def test_liar_is_named_by_every_honest_party(
    t: int,
    n: int,
    signers: tuple[int, ...],
    liar: type[PresignParty],
    equation: Equation,
    proof: str,
) -> None:
    outcome = presign(t, n, signers, {LIAR: liar})
    assert_identification_required(outcome, signers, equation)
    identified = flow.run_identification(outcome.aborts)
    honest = honest_of(signers)
    for i in honest:
        verdict = identified.results[i]
        assert verdict.culprits == frozenset({LIAR}), verdict
        assert verdict.equation is equation
        assert verdict.session_id == outcome.aborts[i].identification.session_id
        # the liar's Πdec is what fails: its other proofs (Πmul/Πmul*, Πaff-g) are honest
        assert [f.check for f in verdict.findings] == [Check.EQUATION]
        assert proofs_of(verdict) == {proof}
    assert_no_honest_blamed(identified, honest)


def test_honest_presign_never_reaches_identification(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    original = PresignParty._identification_required

    def spy(self: PresignParty, *args: Any) -> Any:
        built.append(args)
        return original(self, *args)

    monkeypatch.setattr(PresignParty, "_identification_required", spy)
    outcome = presign(3, 5, (1, 2, 4), {})
    assert not outcome.aborts and sorted(outcome.results) == [1, 2, 4]
    assert built == []


def test_interactive_signing_identifies_too() -> None:
    """Full interactive signing runs the same output check: a δ liar there is named as well."""

    class LyingDeltaSign(SignParty):
        def _round(self, number: int, inbox: Any) -> Any:
            out = super()._round(number, inbox)
            if number == 3:
                self._delta = (self._delta + 1) % Q
                out.broadcast[0] = self._delta
            return out

    key, aux = keys(2, 3), aux_info(3)
    cfgs = configs("interactive_sign/v1", (1, 3), 2, b"wallet")
    outcome = run(
        [
            (LyingDeltaSign if c.me == LIAR else SignParty)(
                c, key[c.me], aux[c.me], b"m", HashScheme.SHA256D
            )
            for c in cfgs
        ]
    )
    assert all(isinstance(a, IdentificationRequired) for a in outcome.aborts.values())
    assert outcome.aborts[1].identification.protocol == "interactive_sign/v1"
    assert flow.identify_presign_failure(outcome.aborts)[1] == frozenset({LIAR})


# --- identification among honest parties, and lies told during it ---------------------------------

FORCED_SIGNERS = (1, 3, 5)


@pytest.fixture(scope="module")
def forced() -> dict[int, ProtocolAbort]:
    """Every signer's IdentificationRequired from a presign in which nobody lied (3 of 5)."""
    outcome = presign(3, 5, FORCED_SIGNERS, dict.fromkeys(FORCED_SIGNERS, Forced))
    assert_identification_required(outcome, FORCED_SIGNERS, Equation.DELTA)
    parties_for(FORCED_SIGNERS)
    return outcome.aborts


def test_A20_honest_identification_names_nobody(forced: dict[int, ProtocolAbort]) -> None:
    """Completeness of every identification proof: all honest, nobody is named, by anybody."""
    identified = flow.run_identification(forced)
    assert not identified.aborts
    assert {i: r.culprits for i, r in identified.results.items()} == dict.fromkeys(
        FORCED_SIGNERS, frozenset()
    )


def test_A20_honest_chi_identification_names_nobody() -> None:
    outcome = presign(2, 3, (2, 3), {2: ForcedChi, 3: ForcedChi})
    assert_identification_required(outcome, (2, 3), Equation.CHI)
    assert flow.identify_presign_failure(outcome.aborts) == {2: frozenset(), 3: frozenset()}


def _key(party: int) -> PaillierPublicKey:
    return PaillierPublicKey(aux_info(5)[1].params(party).n)


class Lying(PresignIdentifyParty):
    """Tells its round-1 lie itself (to everybody alike: a transport rewrite of a broadcast
    would only trip the echo)."""

    LIE: ClassVar[Callable[[list[Any]], None]]

    def _round(self, number: int, inbox: Any) -> Any:
        out = super()._round(number, inbox)
        if number == 1:
            type(self).LIE(out.broadcast)
        return out


def lying(change: Callable[[list[Any]], None]) -> dict[int, type[PresignIdentifyParty]]:
    """Party 3's class whose round-1 broadcast [H, forwards] is edited in place by `change`."""
    return {LIAR: type("Lying", (Lying,), {"LIE": staticmethod(change)})}


def _forwards(change: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
    return lambda broadcast: change(broadcast[1])


def _tamper_D(forwards: list[Any]) -> None:
    """Claim that party 1 sent D·enc(1) (a pair it never made), with its genuine proof."""
    entry = next(e for e in forwards if e[0] == 1)
    entry[1] = _key(LIAR).add(entry[1], _key(LIAR).encrypt(1)[0])


def _tamper_F(forwards: list[Any]) -> None:
    entry = next(e for e in forwards if e[0] == 5)
    entry[2] = _key(5).add(entry[2], _key(5).encrypt(1)[0])


def _swap_proofs(forwards: list[Any]) -> None:
    """Party 5's proof presented as party 1's (and back). Which check trips first depends on the
    proof's random values: a ciphertext made under party 5's modulus is out of range for party 1's
    about as often as not (RANGE), otherwise the proof's equations fail (EQUATION)."""
    first, second = forwards
    first[3], second[3] = second[3], first[3]


def _truncated_proof(forwards: list[Any]) -> None:
    forwards[0][3] = forwards[0][3][:-1]


@pytest.mark.parametrize(
    ("lie", "code"),
    [
        pytest.param(_tamper_D, Check.EQUATION, id="D_claimed_from_party_1"),
        pytest.param(_tamper_F, Check.EQUATION, id="F_claimed_from_party_5"),
        pytest.param(
            _swap_proofs, frozenset({Check.EQUATION, Check.RANGE}), id="proofs_swapped"
        ),
        pytest.param(_truncated_proof, Check.DECODE, id="truncated_proof"),
    ],
)
def test_T20a_false_forward_names_the_forwarder(
    forced: dict[int, ProtocolAbort],
    lie: Callable[[list[Any]], None],
    code: Check | frozenset[Check],
) -> None:
    """Party 3 misreports what it received in presign round 2 (trying to frame the sender): the
    sender's proof no longer fits, and every honest party names 3 before any proof is made."""
    identified = flow.run_identification(forced, classes=lying(_forwards(lie)))
    assert_clean_abort(identified, LIAR, code, [1, 5], last_round=ECHO1)


def _h_plus_one(broadcast: list[Any]) -> None:
    broadcast[0] = _key(LIAR).add(broadcast[0], _key(LIAR).encrypt(1)[0])


def _h_plus_one_to_1(payload: Any) -> Any:
    """Transport rewrite of the round-1 broadcast [nonce, context, [H, forwards]]."""
    payload[2][0] = _key(LIAR).add(payload[2][0], _key(LIAR).encrypt(1)[0])
    return payload


def _mul_z_plus_one(payload: Any) -> Any:
    proof = mul.MulProof.from_bytes(payload[0])
    payload[0] = dataclasses.replace(proof, z=proof.z + 1).to_bytes()
    return payload


def _dec_z1_plus_one(payload: Any) -> Any:
    proof = dec.DecProof.from_bytes(payload[1])
    payload[1] = dataclasses.replace(proof, z1=proof.z1 + 1).to_bytes()
    return payload


def _aff_g_z1_plus_one(payload: Any) -> Any:
    receiver, blob = payload[2][0]
    proof = aff_g.AffGProof.from_bytes(blob)
    payload[2][0] = [receiver, dataclasses.replace(proof, z1=proof.z1 + 1).to_bytes()]
    return payload


def _garbage(payload: Any) -> Any:
    return [payload[0], b"\x00", payload[2]]


@pytest.mark.parametrize(
    ("mutator", "named_by", "check", "proofs"),
    [
        # a false H_3 (to all): its Πmul fails, and so does its Πdec (over the true C_3)
        pytest.param(None, [1, 5], Check.EQUATION, {"mul", "dec"}, id="H"),
        pytest.param(rewrite(ROUND2, _mul_z_plus_one), [1, 5], Check.EQUATION, {"mul"}, id="mul"),
        pytest.param(
            rewrite(ROUND2, _dec_z1_plus_one, to=1), [1], Check.EQUATION, {"dec"}, id="dec_to_1"
        ),
        pytest.param(
            rewrite(ROUND2, _aff_g_z1_plus_one, to=5),
            [5],
            Check.EQUATION,
            {"aff_g"},
            id="aff_g_to_5",
        ),
        pytest.param(rewrite(ROUND2, _garbage, to=1), [1], Check.DECODE, set(), id="garbage_to_1"),
    ],
)
def test_T20b_lie_in_identification_is_named_never_the_honest(
    forced: dict[int, ProtocolAbort],
    mutator: Mutator | None,
    named_by: list[int],
    check: Check,
    proofs: set[str],
) -> None:
    """Party 3 (honest in presign) lies in identification: every verifier it lied to names it,
    the others name nobody; no honest party is named by an honest party."""
    if mutator is None:
        identified = flow.run_identification(forced, classes=lying(_h_plus_one))
    else:
        identified = flow.run_identification(forced, mutators={LIAR: mutator})
    assert not identified.aborts
    for i in (1, 5):
        verdict: Identification = identified.results[i]
        if i in named_by:
            assert verdict.culprits == frozenset({LIAR}), verdict
            assert {f.check for f in verdict.findings} == {check}
            assert proofs_of(verdict) == proofs
        else:
            assert verdict.culprits == frozenset(), verdict


def test_A20_equivocated_round_one_blames_nobody(forced: dict[int, ProtocolAbort]) -> None:
    """Different H_3 to different parties: the echo disagrees, which no one can attribute
    without signed messages — abort with no culprit, before any proof is sent."""
    parties_for(FORCED_SIGNERS)  # who receives party 3's per-recipient copies
    identified = flow.run_identification(
        forced, mutators={LIAR: rewrite(ROUND1, _h_plus_one_to_1, to=1)}
    )
    for i in (1, 5):
        abort = identified.aborts[i]
        assert abort.code == Check.EQUIVOCATION and abort.culprits == frozenset()
        assert all(m.round <= ECHO1 for m in identified.sent[i])


# --- the session, the state and the helper ------------------------------------------------------


def test_session_is_fresh_and_bound_to_the_failed_presign(
    forced: dict[int, ProtocolAbort],
) -> None:
    states = {i: a.identification for i, a in forced.items()}  # type: ignore[attr-defined]
    session_ids = []
    for _ in range(2):
        parties = [
            (lying(_forwards(_truncated_proof)).get(i, PresignIdentifyParty))(s.session_config(), s)
            for i, s in states.items()
        ]
        run(parties)  # stops after round 1
        assert len({p.session_id for p in parties}) == 1
        session_ids.append(parties[0].session_id)
    assert session_ids[0] != session_ids[1]
    assert states[1].session_id not in session_ids
    # the request binds the failed session's id and the equation
    other = dataclasses.replace(states[1], session_id=bytes(reversed(states[1].session_id)))
    assert other.request() != states[1].request()
    chi = dataclasses.replace(states[1], equation=Equation.CHI)
    assert chi.request() != states[1].request()
    with pytest.raises(CryptoMisuse):
        PresignIdentifyParty(other.session_config(), states[1])


def test_state_keeps_its_secrets_out_of_repr_and_rejects_inconsistency(
    forced: dict[int, ProtocolAbort],
) -> None:
    abort = forced[1]
    assert isinstance(abort, IdentificationRequired)
    state = abort.identification
    text = repr(state) + str(abort)
    assert hex(state.x)[2:] not in text and str(state.x) not in text
    for sent in state.sent.values():
        assert str(sent.y) not in text and str(sent.rho) not in text
    assert not hasattr(state, "to_bytes")
    with pytest.raises(CryptoMisuse):
        dataclasses.replace(state, signers=(1, 3))
    with pytest.raises(CryptoMisuse):
        dataclasses.replace(state, me=2)
    with pytest.raises(CryptoMisuse):
        dataclasses.replace(state, deltas={1: 0, 3: 0})


def test_helper_needs_every_signers_identification(forced: dict[int, ProtocolAbort]) -> None:
    with pytest.raises(CryptoMisuse):
        flow.run_identification({i: forced[i] for i in (1, 3)})
    plain = ProtocolAbort("presign/v1", 5, Check.EQUATION, frozenset(), "no state")
    with pytest.raises(CryptoMisuse):
        flow.run_identification({**forced, 5: plain})
