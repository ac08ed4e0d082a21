"""Ring-Pedersen parameters: generation and the structural checks on peers' parameters."""

from __future__ import annotations

import pytest
from conftest import paillier_key, ring_pedersen

from signer.errors import Check, EncodingError, InvalidParameter
from signer.ring_pedersen import RingPedersenParams

SECRET = ring_pedersen(0)
P = SECRET.params


def test_generated_parameters_are_well_formed() -> None:
    assert P.n == paillier_key(0).n
    assert pow(P.t, SECRET.lam, P.n) == P.s
    RingPedersenParams.from_peer(P.n, P.s, P.t)
    # t is a square, so s and t lie in the subgroup of quadratic residues
    import gmpy2

    assert gmpy2.jacobi(P.t, P.n) == 1


def test_commit_prover_and_verifier_paths_agree() -> None:
    for x, y in [(5, 7), (-5, 7), (5, -7), (0, 0), (2**800, -(2**3300))]:
        assert P.commit(x, y) == P.commit_public(x, y)


@pytest.mark.parametrize(
    "s, t, check",
    [
        (1, P.t, Check.DEGENERATE),
        (P.s, 1, Check.DEGENERATE),
        (P.n - 1, P.t, Check.DEGENERATE),
        (P.s, P.n - 1, Check.DEGENERATE),
        (P.s, P.s, Check.DEGENERATE),
        (0, P.t, Check.NOT_UNIT),
        (P.s, P.n, Check.NOT_UNIT),
        (P.s, paillier_key(0).p * 3, Check.NOT_UNIT),
        (-P.s, P.t, Check.NOT_UNIT),
    ],
    # stable ids: the parameters are fresh per run, and pytest-xdist workers must collect alike
    ids=["s=1", "t=1", "s=N-1", "t=N-1", "s=t", "s=0", "t=N", "t=3p", "s<0"],
)
def test_T07a_degenerate_parameters(s: int, t: int, check: Check) -> None:
    with pytest.raises(InvalidParameter) as err:
        RingPedersenParams.from_peer(P.n, s, t, culprit=3)
    assert err.value.check == check
    assert err.value.culprit == 3


def test_wire_round_trip_and_strictness() -> None:
    assert RingPedersenParams.from_bytes(P.to_bytes()) == P
    assert RingPedersenParams.from_json(P.to_json()) == P
    doc = P.to_json()
    del doc["s"]
    with pytest.raises(EncodingError) as err:
        RingPedersenParams.from_json(doc)
    assert err.value.check == Check.FIELD
    with pytest.raises(EncodingError):
        RingPedersenParams.from_bytes(P.to_bytes()[:-1])


def test_secret_wire_round_trip_for_sealed_storage() -> None:
    restored = type(SECRET).from_bytes(SECRET.to_bytes())
    assert restored.params == P and restored.lam == SECRET.lam
    assert restored.paillier.p == SECRET.paillier.p
    assert type(SECRET).from_json(SECRET.to_json()).params == P


def test_secret_wire_rejects_inconsistent_lambda() -> None:
    doc = SECRET.to_json()
    doc["lam"] = hex(SECRET.lam + 1)
    with pytest.raises(EncodingError) as err:
        type(SECRET).from_json(doc)
    assert err.value.check == Check.EQUATION
