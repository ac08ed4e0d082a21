"""Πfac (signer/zk/fac.py): completeness, every range bound (inclusive), units, each equation,
binding and the schema bounds on the wire (the rest of the wire format: test_zk_wire.py).

Bounds: z1, z2 ∈ ±2^(ℓ+ε)·isqrt(N0); σ ∈ ±2^ℓ·N0·N̂; w1, w2 ∈ ±2^(ℓ+ε+1)·N̂;
v ∈ ±2^(ℓ+ε+1)·N0·N̂.  A value exactly at a bound passes the range check (it fails a later
equation, or verifies outright when the test forges the rest with the verifier's trapdoor λ);
one past the bound is a RANGE failure.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from math import isqrt

import gmpy2
import pytest
from conftest import new_context, paillier_key, ring_pedersen
from hypothesis import given, settings
from hypothesis import strategies as st
from wirekit import proof_wire

from signer.errors import Check, ProofRejected
from signer.params import ELL, EPSILON, MAX_PARTY_INDEX
from signer.ring_pedersen import RingPedersenParams, RingPedersenSecret, VerifierAux
from signer.zk import fac
from signer.zk.common import ProofContext
from signer.zk.fac import FacProof

KEY = paillier_key(0)
N0 = KEY.n
VERIFIER = ring_pedersen(1)
AUX = VERIFIER.params
NH = AUX.n
Case = tuple[ProofContext, FacProof]
#: The verifier checks with its own secret (CRT path) or, re-checking a transcript, the params.
AUX_FORMS = [pytest.param(AUX, id="params"), pytest.param(VERIFIER, id="secret")]

Z_BOUND = isqrt(N0) << (ELL + EPSILON)
SIGMA_BOUND = (N0 * NH) << ELL
W_BOUND = NH << (ELL + EPSILON + 1)
V_BOUND = (N0 * NH) << (ELL + EPSILON + 1)

EQ1 = "s^z1·t^w1 = A·P^e"
EQ2 = "s^z2·t^w2 = B·Q^e"
EQ3 = "Q^z1·t^v = T·R^e"

#: field → (bound, the equation that fails when only this field is moved to its bound)
BOUNDS = {
    "z1": (Z_BOUND, EQ1),
    "z2": (Z_BOUND, EQ2),
    "sigma": (SIGMA_BOUND, EQ1),  # σ is hashed: a new challenge breaks the first equation
    "w1": (W_BOUND, EQ1),
    "w2": (W_BOUND, EQ2),
    "v": (V_BOUND, EQ3),
}


@pytest.fixture(scope="module")
def case() -> Case:
    ctx = new_context(4)
    return ctx, fac.prove(ctx, KEY, AUX)


def rejected(
    ctx: ProofContext,
    proof: FacProof,
    check: Check,
    field: str,
    n0: int = N0,
    aux: VerifierAux = AUX,
) -> ProofRejected:
    with pytest.raises(ProofRejected) as info:
        fac.verify(ctx, n0, proof, aux)
    err = info.value
    assert err.proof == "fac"
    assert err.check is check, err
    assert err.field == field, err
    assert err.prover == ctx.prover
    return err


def forge_with_trapdoor(
    ctx: ProofContext,
    n0: int,
    rp: RingPedersenSecret,
    z1: int,
    z2: int,
    sigma: int = 0,
) -> FacProof:
    """A Πfac for *any* N0 and any z1, z2, σ by someone who knows λ = log_t s and φ(N̂): every
    commitment is t^k, and w1, w2, v are solved from the equations after the challenge.  Such a
    proof verifies only under these parameters — which is why the verifier must use its own."""
    aux, phi, lam = rp.params, rp.phi, rp.lam
    nh, t = aux.n, aux.t
    k_p, k_q, k_a, k_b, k_t = (secrets.randbelow(phi) for _ in range(5))
    P, Q, A, B, T = (int(gmpy2.powmod(t, k, nh)) for k in (k_p, k_q, k_a, k_b, k_t))
    e = fac._challenge(ctx, n0, aux, [P, Q, A, B, T, sigma])
    return FacProof(
        P,
        Q,
        A,
        B,
        T,
        sigma,
        z1=z1,
        z2=z2,
        w1=(k_a + e * k_p - lam * z1) % phi,
        w2=(k_b + e * k_q - lam * z2) % phi,
        v=(k_t + e * (lam * n0 + sigma) - k_q * z1) % phi,
    )


# --- completeness ------------------------------------------------------------------------------


@pytest.mark.parametrize("aux", AUX_FORMS)
def test_honest_proof_verifies(case: Case, aux: VerifierAux) -> None:
    ctx, proof = case
    fac.verify(ctx, N0, proof, aux)
    assert abs(proof.z1) <= Z_BOUND and abs(proof.z2) <= Z_BOUND
    assert abs(proof.sigma) <= SIGMA_BOUND and abs(proof.v) <= V_BOUND
    assert abs(proof.w1) <= W_BOUND and abs(proof.w2) <= W_BOUND


@settings(max_examples=4, deadline=None)
@given(
    pair=st.sampled_from([(2, 3), (3, 2), (5, 0), (0, 5), (6, 7)]),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
    sid=st.binary(min_size=16, max_size=64).filter(any),
)
def test_completeness_other_keys_and_contexts(
    pair: tuple[int, int], prover: int, sid: bytes
) -> None:
    key, aux = paillier_key(pair[0]), ring_pedersen(pair[1]).params
    ctx = ProofContext(sid, prover)
    fac.verify(ctx, key.n, fac.prove(ctx, key, aux), aux)


def test_trapdoor_forger_is_sound_against_its_own_equations(case: Case) -> None:
    """Sanity of the helper used below: with honest-sized z1, z2 its proofs verify."""
    ctx = case[0]
    fac.verify(ctx, N0, forge_with_trapdoor(ctx, N0, VERIFIER, 12345, -678), AUX)


# --- modulus -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n0, check",
    [
        pytest.param(N0 >> 1 | 1, Check.MODULUS_SIZE, id="3071-bit"),
        pytest.param(N0 << 1 | 1, Check.MODULUS_SIZE, id="3073-bit"),
        pytest.param(N0 << 1024 | 1, Check.MODULUS_SIZE, id="4096-bit"),
        pytest.param(N0 + 1, Check.MODULUS_FORM, id="even"),
        pytest.param((N0 // 7 | 1) * 7, Check.MODULUS_FORM, id="factor-7"),
        pytest.param(KEY.p**2, Check.MODULUS_FORM, id="square"),
    ],
)
def test_modulus(case: Case, n0: int, check: Check) -> None:
    ctx, proof = case
    rejected(ctx, proof, check, "N0", n0=n0)


# --- range bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1], ids=["+", "-"])
@pytest.mark.parametrize("name", list(BOUNDS))
def test_one_past_the_bound_is_range(case: Case, name: str, sign: int) -> None:
    ctx, proof = case
    bound, _ = BOUNDS[name]
    rejected(ctx, dataclasses.replace(proof, **{name: sign * (bound + 1)}), Check.RANGE, name)


@pytest.mark.parametrize("sign", [1, -1], ids=["+", "-"])
@pytest.mark.parametrize("name", list(BOUNDS))
@pytest.mark.parametrize("aux", AUX_FORMS)
def test_exactly_at_the_bound_is_not_range(
    case: Case, name: str, sign: int, aux: VerifierAux
) -> None:
    ctx, proof = case
    bound, equation = BOUNDS[name]
    bad = dataclasses.replace(proof, **{name: sign * bound})
    rejected(ctx, bad, Check.EQUATION, equation, aux=aux)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(list(BOUNDS)),
    excess=st.integers(min_value=1, max_value=1 << 7000),
    sign=st.sampled_from([1, -1]),
)
def test_anything_beyond_a_bound_is_range(case: Case, name: str, excess: int, sign: int) -> None:
    ctx, proof = case
    bound, _ = BOUNDS[name]
    rejected(ctx, dataclasses.replace(proof, **{name: sign * (bound + excess)}), Check.RANGE, name)


@pytest.mark.parametrize(
    "z1, z2, sigma",
    [
        pytest.param(Z_BOUND, -Z_BOUND, SIGMA_BOUND, id="z1=+B z2=-B sigma=+S"),
        pytest.param(-Z_BOUND, Z_BOUND, -SIGMA_BOUND, id="z1=-B z2=+B sigma=-S"),
    ],
)
@pytest.mark.parametrize("aux", AUX_FORMS)
def test_values_exactly_at_the_bounds_verify(
    case: Case, z1: int, z2: int, sigma: int, aux: VerifierAux
) -> None:
    """With the verifier's trapdoor the test makes the equations hold for boundary values: the
    proof verifies, and the same proof one unit further out is a RANGE failure."""
    ctx = case[0]
    proof = forge_with_trapdoor(ctx, N0, VERIFIER, z1, z2, sigma)
    fac.verify(ctx, N0, proof, aux)
    step = 1 if z1 > 0 else -1
    rejected(ctx, dataclasses.replace(proof, z1=z1 + step), Check.RANGE, "z1", aux=aux)
    rejected(ctx, dataclasses.replace(proof, z2=z2 - step), Check.RANGE, "z2", aux=aux)
    bad = dataclasses.replace(proof, sigma=sigma + step)
    rejected(ctx, bad, Check.RANGE, "sigma", aux=aux)


def test_range_checks_come_before_unit_checks(case: Case) -> None:
    ctx, proof = case
    bad = dataclasses.replace(proof, P=0, v=V_BOUND + 1)
    rejected(ctx, bad, Check.RANGE, "v")


# --- commitments -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["P", "Q", "A", "B", "T"])
@pytest.mark.parametrize(
    "make, check",
    [
        pytest.param(lambda: 0, Check.RANGE, id="zero"),
        pytest.param(lambda: NH, Check.RANGE, id="N-hat"),
        pytest.param(lambda: NH + 1, Check.RANGE, id="N-hat+1"),
        pytest.param(lambda: -1, Check.RANGE, id="negative"),
        pytest.param(lambda: VERIFIER.paillier.p, Check.NOT_UNIT, id="p-hat"),
        pytest.param(lambda: 3 * VERIFIER.paillier.q, Check.NOT_UNIT, id="multiple-of-q-hat"),
    ],
)
@pytest.mark.parametrize("aux", AUX_FORMS)
def test_commitment_not_a_unit(
    case: Case, name: str, make: Callable[[], int], check: Check, aux: VerifierAux
) -> None:
    ctx, proof = case
    rejected(ctx, dataclasses.replace(proof, **{name: make()}), check, name, aux=aux)


def test_commitments_are_reduced_mod_the_verifiers_modulus_not_the_provers(case: Case) -> None:
    """A commitment in [N̂, N0) (or any value ≥ N̂) is out of range even if N0 > N̂."""
    ctx, proof = case
    rejected(ctx, dataclasses.replace(proof, T=proof.T + NH), Check.RANGE, "T")


# --- equations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, equation",
    [
        ("z1", EQ1),
        ("w1", EQ1),
        ("z2", EQ2),
        ("w2", EQ2),
        ("v", EQ3),
        ("P", EQ1),
        ("Q", EQ1),
        ("A", EQ1),
        ("B", EQ1),
        ("T", EQ1),
        ("sigma", EQ1),
    ],
)
@pytest.mark.parametrize("aux", AUX_FORMS)
def test_each_equation(case: Case, name: str, equation: str, aux: VerifierAux) -> None:
    """Responses break exactly the equation they appear in first; commitments and σ change the
    challenge, which breaks the first equation."""
    ctx, proof = case
    value = getattr(proof, name)
    changed = value * AUX.t % NH if name in {"P", "Q", "A", "B", "T"} else value + 1
    bad = dataclasses.replace(proof, **{name: changed})
    rejected(ctx, bad, Check.EQUATION, equation, aux=aux)


@pytest.mark.parametrize("aux", AUX_FORMS)
def test_third_equation_alone(case: Case, aux: VerifierAux) -> None:
    """Forge with the trapdoor so the first two equations hold but v is off by one."""
    ctx = case[0]
    proof = forge_with_trapdoor(ctx, N0, VERIFIER, 99, 100)
    rejected(ctx, dataclasses.replace(proof, v=proof.v + 1), Check.EQUATION, EQ3, aux=aux)
    rejected(ctx, dataclasses.replace(proof, w2=proof.w2 + 1), Check.EQUATION, EQ2, aux=aux)


def test_binding_to_statement_context_and_aux(case: Case) -> None:
    ctx, proof = case
    # a larger N0 keeps every honest value inside the (larger) bounds: only the hash differs
    other_key = next(paillier_key(k).n for k in range(2, 12) if paillier_key(k).n > N0)
    rejected(ctx, proof, Check.EQUATION, EQ1, n0=other_key)
    for other in (ProofContext(ctx.session_id, ctx.prover + 1), new_context(ctx.prover)):
        rejected(other, proof, Check.EQUATION, EQ1)
    swapped = RingPedersenParams(NH, AUX.t, AUX.s)
    rejected(ctx, proof, Check.EQUATION, EQ1, aux=swapped)


def test_challenge_binds_every_input(case: Case) -> None:
    """e changes with the session, the prover, N0, each of the verifier's N̂, s, t and each
    first-message element P, Q, A, B, T, σ (attacks.md A13; taurus PR #98 for the aux)."""
    ctx, proof = case
    first = [proof.P, proof.Q, proof.A, proof.B, proof.T, proof.sigma]
    base = fac._challenge(ctx, N0, AUX, first)
    other = ring_pedersen(2).params
    variants = [
        fac._challenge(ProofContext(ctx.session_id, ctx.prover + 1), N0, AUX, first),
        fac._challenge(new_context(ctx.prover), N0, AUX, first),
        fac._challenge(ctx, paillier_key(2).n, AUX, first),
        fac._challenge(ctx, N0, RingPedersenParams(other.n, AUX.s, AUX.t), first),
        fac._challenge(ctx, N0, RingPedersenParams(NH, other.s, AUX.t), first),
        fac._challenge(ctx, N0, RingPedersenParams(NH, AUX.s, other.t), first),
    ]
    for k in range(len(first)):
        changed = list(first)
        changed[k] += 1
        variants.append(fac._challenge(ctx, N0, AUX, changed))
    for e in variants:
        assert e != base


# --- schema bounds on the wire -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["z1", "z2", "sigma", "w1", "w2", "v"])
def test_schema_is_looser_than_the_verifier(case: Case, name: str) -> None:
    """A value one past the verifier's bound still decodes (the schema only caps the length);
    verify then rejects it (test_one_past_the_bound_is_range)."""
    proof = case[1]
    bound = BOUNDS[name][0]
    assert bound + 1 < 1 << FacProof.SCHEMA[name].max_bits
    for value in (bound + 1, -(bound + 1)):
        loose = FacProof.from_bytes(proof_wire(proof, **{name: value}))
        assert getattr(loose, name) == value
        assert FacProof.from_json({**proof.to_json(), name: hex(value)}) == loose
