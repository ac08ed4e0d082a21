"""Aux-info as a sans-IO state machine: completeness and the attacks that target it
(attacks.md A01 T01d, A02, A07 T07a/T07c, A08, A13)."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any, ClassVar

import gmpy2
import pytest
from conftest import paillier_key
from harness import assert_clean_abort, configs, rewrite

from signer.encoding import Encodable
from signer.errors import Check, CryptoMisuse
from signer.protocol.aux_info import AuxInfo, AuxInfoParty
from signer.protocol.base import Inbox, Outgoing, SessionConfig
from signer.protocol.simulate import Outcome, run
from signer.zk import fac, mod, prm
from signer.zk.common import ProofContext
from signer.zk.mod import ModProof

# Wire rounds: 1 commitment, 2 echo, 3 opening, 4 proofs, 5 echo.
OPEN = 3
PARTIES = [1, 2, 3]
HONEST = [1, 2]


def aux_run(cls3: type[AuxInfoParty] = AuxInfoParty, **kwargs: Any) -> Outcome[AuxInfo]:
    parties = [
        (cls3 if c.me == 3 else AuxInfoParty)(c, paillier_key(c.me))
        for c in configs("aux_info/v1", PARTIES, 2)
    ]
    return run(parties, **kwargs)


@pytest.fixture(scope="module")
def honest_outcome() -> Outcome[AuxInfo]:
    return aux_run(seed=5)


def test_completeness_and_agreement(honest_outcome: Outcome[AuxInfo]) -> None:
    results = honest_outcome.results
    assert sorted(results) == PARTIES and not honest_outcome.aborts
    assert len({a.aux_id() for a in results.values()}) == 1
    for i, aux in results.items():
        assert aux.params(i) == aux.own.params
        assert aux.own.paillier.n == paillier_key(i).n
        assert aux.public == results[1].public


class Opening(AuxInfoParty):
    """Party 3 commits to and opens chosen public values (consistently: a real cheater)."""

    values: ClassVar[tuple[Encodable, ...]]

    def _opening(self) -> list[Encodable]:
        honest = super()._opening()
        return [*self.values, *honest[3:]]


def _small_modulus(bits: int) -> int:
    half = bits // 2
    p = int(gmpy2.next_prime(secrets.randbits(half) | 3 << (half - 2)))
    q = int(gmpy2.next_prime(secrets.randbits(half) | 3 << (half - 2)))
    return p * q


@pytest.mark.parametrize("bits", [2048, 3071, 4096])
def test_T01d_wrong_modulus_size(bits: int) -> None:
    n = _small_modulus(bits)

    class Small(Opening):
        values = (n, pow(5, 2, n), pow(7, 2, n))

    outcome = aux_run(Small)
    assert_clean_abort(outcome, 3, Check.MODULUS_SIZE, HONEST, last_round=OPEN)


def test_T07a_degenerate_ring_pedersen() -> None:
    n = paillier_key(3).n
    t = pow(12345, 2, n)

    class Degenerate(Opening):
        values = (n, t, t)

    assert_clean_abort(aux_run(Degenerate), 3, Check.DEGENERATE, HONEST, last_round=OPEN)


def test_T07c_copy_of_an_honest_partys_parameters(honest_outcome: Outcome[AuxInfo]) -> None:
    """Party 3 republishes party 1's (N, s, t) from an earlier run: party 1 recognises its own
    modulus and blames 3; nobody ever blames 1."""
    victim = honest_outcome.results[1].own.params

    class Copy(Opening):
        values = (victim.n, victim.s, victim.t)

    parties = [
        (Copy if c.me == 3 else AuxInfoParty)(c, paillier_key(c.me))
        for c in configs("aux_info/v1", PARTIES, 2)
    ]
    # party 1 runs with the same modulus again (its key is reused in this test)
    outcome = run(parties)
    assert outcome.aborts[1].culprits == frozenset({3})
    assert outcome.aborts[1].code == Check.DUPLICATE
    assert all(a.culprits <= {3} for a in outcome.aborts.values())
    assert not outcome.results


def test_commitment_not_opened() -> None:
    def change(opening: Any) -> Any:
        return [*opening[:3], secrets.token_bytes(32), opening[4]]

    outcome = aux_run(mutators={3: rewrite(OPEN, change)})
    assert_clean_abort(outcome, 3, Check.COMMITMENT, HONEST, last_round=OPEN)


class BadModProof(AuxInfoParty):
    """State-level rule: party 3's Πmod has one wrong fourth root (sent consistently)."""

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        out = super()._round(number, inbox)
        if number == 3:
            proof = ModProof.from_bytes(out.broadcast[0])  # type: ignore[index]
            x = list(proof.x)
            x[17] = x[17] * 2 % self.config_n
            bad = dataclasses.replace(proof, x=tuple(x))
            out.broadcast = [bad.to_bytes(), out.broadcast[1]]  # type: ignore[index]
        return out

    @property
    def config_n(self) -> int:
        return self._secret.params.n


def test_A08_tampered_modulus_proof_blames_the_prover() -> None:
    outcome = aux_run(BadModProof)
    assert_clean_abort(outcome, 3, Check.EQUATION, HONEST)
    assert "x[17]" in outcome.aborts[1].detail


class FacUnderOwnParams(AuxInfoParty):
    """Party 3 proves Πfac under its *own* ring-Pedersen parameters (whose trapdoor it knows)
    instead of each verifier's (taurus PR #98; attacks.md A02 T02a)."""

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        out = super()._round(number, inbox)
        if number == 3:
            ctx = self._proof_context(self.me)
            own = fac.prove(ctx, self._secret.paillier, self._secret.params).to_bytes()
            out.p2p = {j: own for j in out.p2p}
        return out


def test_T02a_fac_under_the_provers_own_parameters() -> None:
    """Rejected by the equations, or earlier when a commitment made modulo the prover's larger
    N̂ does not even lie in the verifier's group."""
    outcome = aux_run(FacUnderOwnParams)
    assert not any(i in outcome.results for i in HONEST)
    for i in HONEST:
        assert outcome.aborts[i].culprits == frozenset({3})
        assert outcome.aborts[i].code in (Check.EQUATION, Check.RANGE, Check.NOT_UNIT)
        assert "Πfac" in outcome.aborts[i].detail


class ReplayedProofs(AuxInfoParty):
    """Party 3 sends proofs made for another session (T13a): valid proofs, wrong binding."""

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        out = super()._round(number, inbox)
        if number == 3:
            stale = ProofContext(secrets.token_bytes(32), self.me)
            out.broadcast = [
                mod.prove(stale, self._secret.paillier).to_bytes(),
                prm.prove(stale, self._secret).to_bytes(),
            ]
        return out


def test_T13a_proofs_from_another_session() -> None:
    outcome = aux_run(ReplayedProofs)
    for i in HONEST:
        assert outcome.aborts[i].culprits == frozenset({3})
        assert outcome.aborts[i].code in (Check.JACOBI, Check.EQUATION)


def test_session_config_is_checked() -> None:
    with pytest.raises(CryptoMisuse):  # a keygen config handed to aux-info
        AuxInfoParty(SessionConfig("keygen/v1", (1, 2), 1, 2, b"k", bytes(16)), paillier_key(1))
