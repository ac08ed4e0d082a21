"""secp256k1 layer: strict decoding (attacks.md A14, A16), group law, Lagrange (A15)."""

from __future__ import annotations

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.curve import Point, Q, lagrange_coefficient, sum_points
from signer.errors import Check, CryptoMisuse, InvalidPoint
from signer.params import FIELD_PRIME

scalars = st.integers(min_value=1, max_value=Q - 1)


@given(scalars, scalars)
def test_group_law_matches_scalar_arithmetic(a: int, b: int) -> None:
    A, B = Point.base_mul(a), Point.base_mul(b)
    assert A + B == Point.base_mul(a + b)
    assert A - B == Point.base_mul(a - b)
    assert A * b == Point.base_mul(a * b)
    assert -A == Point.base_mul(Q - a)
    assert Point.from_bytes(A.to_bytes()) == A


@given(scalars)
def test_point_matches_libsecp256k1(k: int) -> None:
    expected = coincurve.PrivateKey(k.to_bytes(32, "big")).public_key.format(compressed=True)
    assert Point.base_mul(k).to_bytes() == expected


def test_identity_arithmetic() -> None:
    P = Point.base_mul(7)
    identity = Point.identity()
    assert (P - P).is_identity
    assert P + identity == P and identity + P == P
    assert (P * 0).is_identity and (P * Q).is_identity
    assert Point.base_mul(0).is_identity and Point.base_mul(Q).is_identity
    assert (P + P) == P * 2
    assert sum_points([P, -P]).is_identity
    assert sum_points([]).is_identity
    assert sum_points([P, identity, P]) == P * 2
    with pytest.raises(CryptoMisuse):
        identity.to_bytes()


def _x_without_square_root() -> int:
    x = 5
    while pow((x**3 + 7) % FIELD_PRIME, (FIELD_PRIME - 1) // 2, FIELD_PRIME) == 1:
        x += 1
    return x


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty"),
        (b"\x00", "T14e single zero byte"),
        (bytes(33), "T14e 33 zero bytes"),
        (b"\x02" + bytes(31), "32 bytes"),
        (b"\x02" + bytes(33), "34 bytes"),
        (b"\x05" + (1).to_bytes(32, "big"), "prefix 05"),
        (b"\x04" + bytes(64), "uncompressed/65 bytes"),
        (b"\x06" + Point.base_mul(3).to_bytes()[1:] + bytes(32), "hybrid 06"),
        (b"\x02" + FIELD_PRIME.to_bytes(32, "big"), "x = p"),
        (b"\x02" + (FIELD_PRIME + 1).to_bytes(32, "big"), "T16c x + p"),
        (b"\x02" + _x_without_square_root().to_bytes(32, "big"), "T16a not on curve"),
    ],
)
def test_T16_strict_point_decoding(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidPoint) as err:
        Point.from_bytes(raw, "X")
    assert err.value.check == Check.BAD_POINT, reason
    assert err.value.where == "X"


def test_T16c_noncanonical_x_plus_p_for_valid_point() -> None:
    # x + p would alias a real point if reduced; 2^256 - p < 2^33 so only tiny x qualify.
    small_x = next(
        x
        for x in range(1, 1000)
        if pow((x**3 + 7) % FIELD_PRIME, (FIELD_PRIME - 1) // 2, FIELD_PRIME) == 1
    )
    valid = Point.from_bytes(b"\x02" + small_x.to_bytes(32, "big"))
    assert not valid.is_identity
    with pytest.raises(InvalidPoint):
        Point.from_bytes(b"\x02" + (small_x + FIELD_PRIME).to_bytes(32, "big"))


def test_T16b_point_on_other_curve_rejected() -> None:
    # A point on y^2 = x^3 + 5 whose x is not on secp256k1 (invalid-curve attack input).
    for x in range(1, 500):
        on_other = pow((x**3 + 5) % FIELD_PRIME, (FIELD_PRIME - 1) // 2, FIELD_PRIME) == 1
        on_ours = pow((x**3 + 7) % FIELD_PRIME, (FIELD_PRIME - 1) // 2, FIELD_PRIME) == 1
        if on_other and not on_ours:
            with pytest.raises(InvalidPoint):
                Point.from_bytes(b"\x02" + x.to_bytes(32, "big"))
            return
    raise AssertionError("no test point found")


@settings(max_examples=25)
@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=2, max_size=6, unique=True), st.data()
)
def test_T15d_lagrange_reconstructs_secret(indices: list[int], data: st.DataObject) -> None:
    coefficients = data.draw(st.lists(scalars, min_size=len(indices), max_size=len(indices)))

    def f(x: int) -> int:
        return sum(c * pow(x, k, Q) for k, c in enumerate(coefficients)) % Q

    secret = sum(lagrange_coefficient(i, indices) * f(i) for i in indices) % Q
    assert secret == coefficients[0]
    # Public-key form: Σ λ_i·(f(i)·G) = f(0)·G
    public = sum_points(Point.base_mul(f(i)) * lagrange_coefficient(i, indices) for i in indices)
    assert public == Point.base_mul(coefficients[0])


@pytest.mark.parametrize(
    "i, indices",
    [
        (1, [1, 0, 2]),  # T15a index 0
        (1, [1, Q, 2]),  # T15a index q ≡ 0
        (1, [1, Q + 1]),  # T15a index q+1 ≡ 1 (duplicate mod q)
        (1, [1, 2, 2]),  # duplicate
        (3, [1, 2]),  # not in the set
    ],
)
def test_T15a_lagrange_rejects_bad_indices(i: int, indices: list[int]) -> None:
    with pytest.raises(CryptoMisuse):
        lagrange_coefficient(i, indices)
