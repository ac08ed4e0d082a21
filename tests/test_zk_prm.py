"""Πprm (signer/zk/prm.py): completeness, one test per verifier check, binding and the
ring-Pedersen parameters' own wire form (the proof's: test_zk_wire.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gmpy2
import pytest
from conftest import new_context, paillier_key, ring_pedersen
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import Check, ProofRejected
from signer.params import M_ITERATIONS, MAX_PARTY_INDEX, MODULUS_BITS
from signer.ring_pedersen import RingPedersenParams
from signer.zk import prm
from signer.zk.common import ProofContext
from signer.zk.prm import PrmProof

M = M_ITERATIONS
LAST = M - 1
SECRET = ring_pedersen(0)
PARAMS = SECRET.params
N, S, T = PARAMS.n, PARAMS.s, PARAMS.t
P, Q = SECRET.paillier.p, SECRET.paillier.q
Case = tuple[ProofContext, PrmProof]


@pytest.fixture(scope="module")
def case() -> Case:
    ctx = new_context(9)
    return ctx, prm.prove(ctx, SECRET)


def rejected(
    ctx: ProofContext, params: RingPedersenParams, proof: PrmProof, check: Check, field: str
) -> ProofRejected:
    with pytest.raises(ProofRejected) as info:
        prm.verify(ctx, params, proof)
    err = info.value
    assert err.proof == "prm"
    assert err.check is check, err
    assert err.field == field, err
    assert err.prover == ctx.prover
    return err


def with_item(values: tuple[int, ...], i: int, value: int) -> tuple[int, ...]:
    items = list(values)
    items[i] = value
    return tuple(items)


def equation(i: int) -> str:
    return f"t^z[{i}] = A[{i}]·s^e[{i}]"


# --- completeness ------------------------------------------------------------------------------


def test_honest_proof_verifies(case: Case) -> None:
    ctx, proof = case
    prm.verify(ctx, PARAMS, proof)
    assert len(proof.A) == len(proof.z) == M
    assert all(0 <= z < N for z in proof.z)


@settings(max_examples=2, deadline=None)
@given(
    index=st.sampled_from([2, 4, 6]),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
    sid=st.binary(min_size=16, max_size=64).filter(any),
)
def test_completeness_other_keys_and_contexts(index: int, prover: int, sid: bytes) -> None:
    secret = ring_pedersen(index)
    ctx = ProofContext(sid, prover)
    prm.verify(ctx, secret.params, prm.prove(ctx, secret))


# --- the statement (N, s, t) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "s, t, check",
    [
        pytest.param(1, T, Check.DEGENERATE, id="s=1"),
        pytest.param(S, 1, Check.DEGENERATE, id="t=1"),
        pytest.param(N - 1, T, Check.DEGENERATE, id="s=N-1"),
        pytest.param(S, N - 1, Check.DEGENERATE, id="t=N-1"),
        pytest.param(T, T, Check.DEGENERATE, id="s=t"),
        pytest.param(0, T, Check.NOT_UNIT, id="s=0"),
        pytest.param(S, 0, Check.NOT_UNIT, id="t=0"),
        pytest.param(N, T, Check.NOT_UNIT, id="s=N"),
        pytest.param(S, N + T, Check.NOT_UNIT, id="t>N"),
        pytest.param(-S, T, Check.NOT_UNIT, id="s<0"),
        pytest.param(P, T, Check.NOT_UNIT, id="s=p"),
        pytest.param(S, T * Q % N, Check.NOT_UNIT, id="t-multiple-of-q"),
    ],
)
def test_degenerate_parameters(case: Case, s: int, t: int, check: Check) -> None:
    ctx, proof = case
    rejected(ctx, RingPedersenParams(N, s, t), proof, check, "(N, s, t)")


@pytest.mark.parametrize(
    "n, check",
    [
        pytest.param(N << 1 | 1, Check.MODULUS_SIZE, id="3073-bit"),
        pytest.param(N >> 1 | 1, Check.MODULUS_SIZE, id="3071-bit"),
        pytest.param(N + 1, Check.MODULUS_FORM, id="even"),
        pytest.param((N // 3 | 1) * 3, Check.MODULUS_FORM, id="factor-3"),
        pytest.param(P * P, Check.MODULUS_FORM, id="square"),
    ],
)
def test_modulus_of_parameters(case: Case, n: int, check: Check) -> None:
    ctx, proof = case
    rejected(ctx, RingPedersenParams(n, S % n, T % n), proof, check, "(N, s, t)")


# --- A_i, z_i ----------------------------------------------------------------------------------


@pytest.mark.parametrize("i", [0, LAST])
@pytest.mark.parametrize(
    "make, check",
    [
        pytest.param(lambda: 0, Check.RANGE, id="zero"),
        pytest.param(lambda: N, Check.RANGE, id="N"),
        pytest.param(lambda: -T, Check.RANGE, id="negative"),
        pytest.param(lambda: N + T, Check.RANGE, id="N+t"),
        pytest.param(lambda: P, Check.NOT_UNIT, id="p"),
        pytest.param(lambda: T * Q % N, Check.NOT_UNIT, id="multiple-of-q"),
    ],
)
def test_commitment_not_a_unit(case: Case, i: int, make: Callable[[], int], check: Check) -> None:
    ctx, proof = case
    rejected(
        ctx, PARAMS, dataclasses.replace(proof, A=with_item(proof.A, i, make())), check, f"A[{i}]"
    )


@pytest.mark.parametrize("i", [0, LAST])
@pytest.mark.parametrize("value", [N, N + 1, 2 * N, 1 << MODULUS_BITS, -1, -N])
def test_response_out_of_range(case: Case, i: int, value: int) -> None:
    ctx, proof = case
    bad = dataclasses.replace(proof, z=with_item(proof.z, i, value))
    rejected(ctx, PARAMS, bad, Check.RANGE, f"z[{i}]")


@pytest.mark.parametrize("value", [0, N - 1])
def test_response_range_is_zero_to_n_minus_one(case: Case, value: int) -> None:
    """0 and N−1 are inside [0, N): they fail the equation, not the range check."""
    ctx, proof = case
    i = 5
    bad = dataclasses.replace(proof, z=with_item(proof.z, i, value))
    rejected(ctx, PARAMS, bad, Check.EQUATION, equation(i))


# --- lengths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["A", "z"])
@pytest.mark.parametrize("length", [M - 1, M + 1, 0, 1])
def test_lengths(case: Case, name: str, length: int) -> None:
    ctx, proof = case
    resized = (getattr(proof, name) * 2)[:length]
    rejected(ctx, PARAMS, dataclasses.replace(proof, **{name: resized}), Check.LENGTH, name)


# --- equations and binding ---------------------------------------------------------------------


@pytest.mark.parametrize("i", [0, 63, LAST])
def test_flipped_response(case: Case, i: int) -> None:
    ctx, proof = case
    bad = dataclasses.replace(proof, z=with_item(proof.z, i, proof.z[i] ^ 1))
    rejected(ctx, PARAMS, bad, Check.EQUATION, equation(i))


def test_response_shifted_by_order_multiple_still_checked(case: Case) -> None:
    """z_i + φ(N) is the same exponent but outside [0, N) whenever it exceeds N − 1."""
    ctx, proof = case
    i = max(range(M), key=lambda k: proof.z[k])
    shifted = proof.z[i] + SECRET.phi
    assert shifted >= N  # z_i is large with overwhelming probability
    bad = dataclasses.replace(proof, z=with_item(proof.z, i, shifted))
    rejected(ctx, PARAMS, bad, Check.RANGE, f"z[{i}]")


@pytest.mark.parametrize("j", [0, 40, LAST])
def test_changed_commitment_changes_challenges(case: Case, j: int) -> None:
    """Replacing A_j by another unit re-derives every e_i: the failure index is exactly the first
    index whose challenge bit changed, or j itself."""
    ctx, proof = case
    A = with_item(proof.A, j, proof.A[j] * T % N)
    old, new = prm._challenges(ctx, PARAMS, proof.A), prm._challenges(ctx, PARAMS, A)
    first = min([j] + [i for i in range(M) if old[i] != new[i]])
    rejected(ctx, PARAMS, dataclasses.replace(proof, A=A), Check.EQUATION, equation(first))


def test_statement_swap(case: Case) -> None:
    """The proof is for s ∈ ⟨t⟩ over this N; it does not verify for (N, t, s), for (N, s², t)
    (also in ⟨t⟩) or for another party's parameters."""
    ctx, proof = case
    rejected(ctx, RingPedersenParams(N, T, S), proof, Check.EQUATION, equation(0))
    # (N, s², t): where the re-derived bit e'_i = 1 the check needs A_i·s² = A_i·s^e_i (false);
    # where e'_i = 0 it needs e_i = 0.  So the first failure is the first i with e_i or e'_i set.
    squared = RingPedersenParams(N, S * S % N, T)
    old = prm._challenges(ctx, PARAMS, proof.A)
    new = prm._challenges(ctx, squared, proof.A)
    first = min(i for i in range(M) if old[i] or new[i])
    rejected(ctx, squared, proof, Check.EQUATION, equation(first))
    larger = next(ring_pedersen(k).params for k in range(1, 12) if ring_pedersen(k).params.n > N)
    rejected(ctx, larger, proof, Check.EQUATION, equation(0))


def test_challenges_bind_statement_commitments_session_and_prover(case: Case) -> None:
    """e_1..e_m change with each of N, s, t, every A_i, the session and the prover."""
    ctx, proof = case
    base = prm._challenges(ctx, PARAMS, proof.A)
    other = ring_pedersen(1).params
    variants = [
        prm._challenges(ctx, RingPedersenParams(other.n, S, T), proof.A),
        prm._challenges(ctx, RingPedersenParams(N, S * S % N, T), proof.A),
        prm._challenges(ctx, RingPedersenParams(N, S, T * T % N), proof.A),
        prm._challenges(ProofContext(ctx.session_id, ctx.prover + 1), PARAMS, proof.A),
        prm._challenges(new_context(ctx.prover), PARAMS, proof.A),
    ]
    for j in (0, 64, LAST):
        variants.append(prm._challenges(ctx, PARAMS, with_item(proof.A, j, proof.A[j] * T % N)))
    for bits in variants:
        assert len(bits) == M and set(bits) <= {0, 1}
        assert bits != base


def test_other_party_and_session(case: Case) -> None:
    ctx, proof = case
    for other in (ProofContext(ctx.session_id, ctx.prover + 1), new_context(ctx.prover)):
        with pytest.raises(ProofRejected) as info:
            prm.verify(other, PARAMS, proof)
        assert info.value.check is Check.EQUATION
        assert info.value.prover == other.prover


# --- the statement's own wire form -------------------------------------------------------------


def test_params_wire_round_trip() -> None:
    params = ring_pedersen(0).params
    assert RingPedersenParams.from_bytes(params.to_bytes()) == params
    assert RingPedersenParams.from_json(params.to_json()) == params
    assert paillier_key(0).n == params.n
    assert gmpy2.jacobi(params.t, params.n) == 1  # t is a square, as Fig. 6 prescribes
