"""Πmod (signer/zk/mod.py): completeness, one test per verifier check (wire formats:
test_zk_wire.py).

Every rejection asserts the exact `Check`, the offending field and that the culprit is the
context's prover.  Mutations are made with dataclasses.replace on one valid proof per module;
most of them fail before the 128 exponentiations, a few deliberately at the last iteration to
show that every iteration is checked.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
from collections.abc import Callable

import gmpy2
import pytest
from conftest import fixture_primes, new_context, paillier_key
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import Check, ProofRejected
from signer.params import M_ITERATIONS, MAX_PARTY_INDEX, MODULUS_BITS
from signer.zk import mod
from signer.zk.common import ProofContext
from signer.zk.mod import ModProof

M = M_ITERATIONS
KEY = paillier_key(0)
N = KEY.n
LAST = M - 1


@pytest.fixture(scope="module")
def case() -> tuple[ProofContext, ModProof]:
    ctx = new_context(7)
    return ctx, mod.prove(ctx, KEY)


@pytest.fixture(scope="module")
def prime_3072() -> int:
    rng = random.Random(0x3071)
    while True:
        p = int(gmpy2.next_prime(rng.getrandbits(MODULUS_BITS) | (3 << (MODULUS_BITS - 2))))
        if p.bit_length() == MODULUS_BITS:
            return p


def rejected(ctx: ProofContext, n: int, proof: ModProof, check: Check, field: str) -> ProofRejected:
    with pytest.raises(ProofRejected) as info:
        mod.verify(ctx, n, proof)
    err = info.value
    assert err.proof == "mod"
    assert err.check is check, err
    assert err.field == field, err
    assert err.prover == ctx.prover
    return err


def with_item(values: tuple[int, ...], i: int, value: int) -> tuple[int, ...]:
    items = list(values)
    items[i] = value
    return tuple(items)


def jacobi_plus_one_non_square() -> int:
    """A unit with Legendre symbol −1 modulo both p and q: Jacobi +1, yet not a square."""
    while True:
        w = secrets.randbelow(N)
        if gmpy2.legendre(w, KEY.p) == -1 and gmpy2.legendre(w, KEY.q) == -1:
            return w


# --- completeness ------------------------------------------------------------------------------


def test_honest_proof_verifies(case: tuple[ProofContext, ModProof]) -> None:
    ctx, proof = case
    mod.verify(ctx, N, proof)
    assert len(proof.x) == len(proof.a) == len(proof.b) == len(proof.z) == M
    assert gmpy2.jacobi(proof.w, N) == -1
    assert set(proof.a) <= {0, 1} and set(proof.b) <= {0, 1}


session_ids = st.binary(min_size=16, max_size=64).filter(any)


@settings(max_examples=2, deadline=None)
@given(
    index=st.sampled_from([3, 5, 8]),
    prover=st.integers(min_value=1, max_value=MAX_PARTY_INDEX),
    sid=session_ids,
)
def test_completeness_other_keys_and_contexts(index: int, prover: int, sid: bytes) -> None:
    key = paillier_key(index)
    ctx = ProofContext(sid, prover)
    mod.verify(ctx, key.n, mod.prove(ctx, key))


# --- modulus checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(N >> 1 | 1, id="3071-bit"),
        pytest.param(N << 1 | 1, id="3073-bit"),
        pytest.param(N << 1024 | 1, id="4096-bit"),
        pytest.param(fixture_primes()[0] * fixture_primes()[1] >> 1024 | 1, id="2048-bit"),
        pytest.param(1, id="one"),
        pytest.param(0, id="zero"),
    ],
)
def test_modulus_size(case: tuple[ProofContext, ModProof], n: int) -> None:
    ctx, proof = case
    assert n.bit_length() != MODULUS_BITS
    rejected(ctx, n, proof, Check.MODULUS_SIZE, "N")


def _padded_multiple(factor: int) -> int:
    """An odd 3072-bit multiple of `factor` with no other small factor forced."""
    n = (N // factor | 1) * factor
    assert n.bit_length() == MODULUS_BITS and n % factor == 0 and n % 2 == 1
    return n


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: N + 1, id="even"),
        pytest.param(lambda: 1 << (MODULUS_BITS - 1), id="power-of-two"),
        pytest.param(lambda: _padded_multiple(3), id="factor-3"),
        pytest.param(lambda: _padded_multiple(65521), id="factor-65521"),
        pytest.param(lambda: fixture_primes()[4] ** 2, id="perfect-square"),
    ],
)
def test_modulus_form(case: tuple[ProofContext, ModProof], make: Callable[[], int]) -> None:
    ctx, proof = case
    n = make()
    assert n.bit_length() == MODULUS_BITS
    rejected(ctx, n, proof, Check.MODULUS_FORM, "N")


def test_modulus_prime(case: tuple[ProofContext, ModProof], prime_3072: int) -> None:
    ctx, proof = case
    rejected(ctx, prime_3072, proof, Check.MODULUS_FORM, "N")


# --- w -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, check",
    [
        pytest.param(lambda: 0, Check.RANGE, id="zero"),
        pytest.param(lambda: N, Check.RANGE, id="N"),
        pytest.param(lambda: N + 2, Check.RANGE, id="N+2"),
        pytest.param(lambda: -1, Check.RANGE, id="negative"),
        pytest.param(lambda: KEY.p, Check.NOT_UNIT, id="p"),
        pytest.param(lambda: 5 * KEY.q, Check.NOT_UNIT, id="multiple-of-q"),
        pytest.param(lambda: 1, Check.JACOBI, id="one"),
        pytest.param(lambda: N - 1, Check.JACOBI, id="minus-one"),
        pytest.param(jacobi_plus_one_non_square, Check.JACOBI, id="jacobi+1-non-square"),
    ],
)
def test_w_checks(
    case: tuple[ProofContext, ModProof], make: Callable[[], int], check: Check
) -> None:
    ctx, proof = case
    rejected(ctx, N, dataclasses.replace(proof, w=make()), check, "w")


def test_w_square_is_jacobi(case: tuple[ProofContext, ModProof]) -> None:
    ctx, proof = case
    rejected(ctx, N, dataclasses.replace(proof, w=proof.w * proof.w % N), Check.JACOBI, "w")


def test_w_other_valid_unit_changes_challenges(case: tuple[ProofContext, ModProof]) -> None:
    """A different w with Jacobi −1 passes the w checks but no longer matches the responses."""
    ctx, proof = case
    w = proof.w * 4 % N
    assert gmpy2.jacobi(w, N) == -1
    rejected(ctx, N, dataclasses.replace(proof, w=w), Check.EQUATION, "z[0]^N = y[0]")


# --- a_i, b_i, x_i, z_i ranges -----------------------------------------------------------------


@pytest.mark.parametrize("i", [0, 17, LAST])
@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize("value", [2, -1, 3])
def test_answer_bits_range(
    case: tuple[ProofContext, ModProof], i: int, name: str, value: int
) -> None:
    ctx, proof = case
    bad = dataclasses.replace(proof, **{name: with_item(getattr(proof, name), i, value)})
    rejected(ctx, N, bad, Check.RANGE, f"a[{i}]/b[{i}]")


@pytest.mark.parametrize("i", [0, LAST])
@pytest.mark.parametrize("name", ["x", "z"])
@pytest.mark.parametrize(
    "make, check",
    [
        pytest.param(lambda: 0, Check.RANGE, id="zero"),
        pytest.param(lambda: N, Check.RANGE, id="N"),
        pytest.param(lambda: N + 1, Check.RANGE, id="N+1"),
        pytest.param(lambda: -3, Check.RANGE, id="negative"),
        pytest.param(lambda: KEY.p, Check.NOT_UNIT, id="p"),
        pytest.param(lambda: 3 * KEY.q, Check.NOT_UNIT, id="multiple-of-q"),
    ],
)
def test_response_unit_checks(
    case: tuple[ProofContext, ModProof],
    i: int,
    name: str,
    make: Callable[[], int],
    check: Check,
) -> None:
    ctx, proof = case
    bad = dataclasses.replace(proof, **{name: with_item(getattr(proof, name), i, make())})
    rejected(ctx, N, bad, check, f"{name}[{i}]")


# --- equations ---------------------------------------------------------------------------------


def test_z_equation(case: tuple[ProofContext, ModProof]) -> None:
    ctx, proof = case
    i = 0
    bad = dataclasses.replace(proof, z=with_item(proof.z, i, proof.z[i] * 2 % N))
    rejected(ctx, N, bad, Check.EQUATION, f"z[{i}]^N = y[{i}]")


@pytest.mark.parametrize("i", [0, LAST])
def test_x_equation(case: tuple[ProofContext, ModProof], i: int) -> None:
    ctx, proof = case
    bad = dataclasses.replace(proof, x=with_item(proof.x, i, proof.x[i] * 2 % N))
    rejected(ctx, N, bad, Check.EQUATION, f"x[{i}]^4 = ±w^b·y[{i}]")


@pytest.mark.parametrize("name", ["a", "b"])
def test_flipped_answer_bit_breaks_x_equation(
    case: tuple[ProofContext, ModProof], name: str
) -> None:
    ctx, proof = case
    i = 3
    bits = getattr(proof, name)
    bad = dataclasses.replace(proof, **{name: with_item(bits, i, 1 - bits[i])})
    rejected(ctx, N, bad, Check.EQUATION, f"x[{i}]^4 = ±w^b·y[{i}]")


def test_last_z_equation_is_checked(case: tuple[ProofContext, ModProof]) -> None:
    ctx, proof = case
    bad = dataclasses.replace(proof, z=with_item(proof.z, LAST, proof.z[LAST] * 3 % N))
    rejected(ctx, N, bad, Check.EQUATION, f"z[{LAST}]^N = y[{LAST}]")


def test_repeated_challenges_are_rejected(
    case: tuple[ProofContext, ModProof], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CHALLENGE guard: a transcript that yields repeated y_i (taurus Test_hashFix) fails."""
    ctx, proof = case
    y = mod._challenges(ctx, N, proof.w)[0]
    monkeypatch.setattr(mod, "_challenges", lambda *_: (y,) * M)
    rejected(ctx, N, proof, Check.CHALLENGE, "y")


def test_challenges_bind_modulus_commitment_session_and_prover(
    case: tuple[ProofContext, ModProof],
) -> None:
    """y_1..y_m depend on every input of the Fiat–Shamir hash: no value is shared with the
    challenges of a different N, w, session or prover (attacks.md A13)."""
    ctx, proof = case
    base = set(mod._challenges(ctx, N, proof.w))
    assert len(base) == M and all(0 < y < N for y in base)
    variants = [
        mod._challenges(ctx, paillier_key(3).n, proof.w),
        mod._challenges(ctx, N, proof.w * 4 % N),
        mod._challenges(ProofContext(ctx.session_id, ctx.prover + 1), N, proof.w),
        mod._challenges(new_context(ctx.prover), N, proof.w),
    ]
    for ys in variants:
        assert len(set(ys)) == M
        assert not base & set(ys)


# --- lengths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x", "a", "b", "z"])
@pytest.mark.parametrize("length", [M - 1, M + 1, 0, 1])
def test_lengths(case: tuple[ProofContext, ModProof], name: str, length: int) -> None:
    ctx, proof = case
    values = getattr(proof, name)
    resized = (values * 2)[:length]
    assert len(resized) == length
    rejected(ctx, N, dataclasses.replace(proof, **{name: resized}), Check.LENGTH, name)
