"""Paillier: correctness, homomorphisms, CRT paths, ciphertext and peer-modulus validation."""

from __future__ import annotations

import pytest
from conftest import fixture_primes, paillier_key
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.arith import powmod_secret
from signer.errors import Check, CryptoMisuse, EncodingError, InvalidParameter
from signer.paillier import PaillierPublicKey, PaillierSecretKey, validate_modulus
from signer.params import MODULUS_BITS

KEY = paillier_key(0)
N = KEY.n
plaintexts = st.integers(min_value=-(N // 2) + 1, max_value=N // 2)


@settings(max_examples=20, deadline=None)
@given(plaintexts, plaintexts)
def test_encrypt_decrypt_and_homomorphisms(m1: int, m2: int) -> None:
    c1, rho1 = KEY.encrypt(m1)
    c2, _ = KEY.public.encrypt(m2)
    assert KEY.decrypt_signed(c1) == m1
    assert KEY.decrypt_signed(c2) == m2
    assert KEY.decrypt(KEY.public.add(c1, c2)) == (m1 + m2) % N
    assert KEY.decrypt(KEY.public.scalar_mul(c1, m2)) == (m1 * m2) % N
    # CRT encryption equals the public-key computation for the same randomiser
    assert KEY.encrypt_with(m1, rho1) == KEY.public.encrypt_with(m1, rho1) == c1
    assert KEY.public.encrypt_public(m1, rho1) == c1
    assert KEY.randomiser_of(c1) == rho1


@settings(max_examples=20, deadline=None)
@given(
    st.integers(min_value=1, max_value=N - 1), st.integers(min_value=-(2**3100), max_value=2**3100)
)
def test_crt_powmod_matches_plain(base: int, exp: int) -> None:
    from math import gcd

    if gcd(base, N) != 1:
        return
    assert KEY.powmod_n(base, exp) == pow(base, exp, N)
    assert KEY.powmod_n2(base, exp) == pow(base, exp, KEY.public.n2)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=N - 1), plaintexts)
def test_teichmuller_encryption_matches_plain_pow(rho: int, m: int) -> None:
    """Own-key encryption computes ρ^N mod N² through the Teichmüller lift; it must equal
    (1+N)^m·ρ^N mod N² computed the textbook way, for every unit ρ (including ρ ≡ ±1 mod p)."""
    from math import gcd

    if gcd(rho, N) != 1:
        return
    n2 = KEY.public.n2
    expected = pow(1 + N, m % N, n2) * pow(rho, N, n2) % n2
    assert KEY.encrypt_with(m, rho) == expected
    assert KEY.encrypt_public(m, rho) == expected


@pytest.mark.parametrize("rho", [1, 2, N - 1, KEY.p - 1, KEY.q + 1, KEY.p * 2 + 1])
def test_teichmuller_encryption_edge_randomisers(rho: int) -> None:
    n2 = KEY.public.n2
    assert KEY.encrypt_with(7, rho) == pow(1 + N, 7, n2) * pow(rho, N, n2) % n2


@given(st.integers(min_value=-(2**300), max_value=2**300))
def test_powmod_secret_signed(exp: int) -> None:
    assert powmod_secret(3, exp, N) == pow(3, exp, N)


def test_keys_are_blum_and_exact_size() -> None:
    assert N.bit_length() == MODULUS_BITS
    assert KEY.p % 4 == 3 and KEY.q % 4 == 3
    assert KEY.phi == (KEY.p - 1) * (KEY.q - 1)


def test_secret_key_rejects_bad_factors() -> None:
    p, q = fixture_primes()[:2]
    with pytest.raises(CryptoMisuse):
        PaillierSecretKey.from_primes(p, p)
    with pytest.raises(CryptoMisuse):
        PaillierSecretKey.from_primes(p, q + 2)  # not a safe prime
    with pytest.raises(CryptoMisuse):
        PaillierSecretKey(p, 7)  # wrong size


@pytest.mark.parametrize(
    "c, check",
    [
        (0, Check.RANGE),
        (-1, Check.RANGE),
        (N * N, Check.RANGE),
        (N * N + 1, Check.RANGE),
        (N, Check.NOT_UNIT),
        (KEY.p * 12345, Check.NOT_UNIT),
    ],
)
def test_T17a_ciphertext_domain(c: int, check: Check) -> None:
    with pytest.raises(EncodingError) as err:
        KEY.public.validate_ciphertext(c, "K")
    assert err.value.check == check
    with pytest.raises(EncodingError):
        KEY.decrypt(c)


def test_ciphertext_of_one_is_valid_encryption_of_zero() -> None:
    assert KEY.decrypt(1) == 0


def _prime_of_bits(bits: int, start: int = 0) -> int:
    import gmpy2

    return int(gmpy2.next_prime((1 << (bits - 1)) + (1 << (bits - 2)) + start))


def _padded(factor: int) -> int:
    """factor · (a prime) with exactly MODULUS_BITS bits."""
    import gmpy2

    return factor * int(gmpy2.next_prime((1 << (MODULUS_BITS - 1)) // factor + 1))


@pytest.mark.parametrize("bits", [270, 1024, 2047, 3071, 3073, 4096])
def test_T01d_small_or_large_modulus_rejected(bits: int) -> None:
    n = _prime_of_bits(bits // 2) * _prime_of_bits(bits - bits // 2, 1000)
    if n.bit_length() != bits:
        n = _prime_of_bits(bits // 2) * _prime_of_bits(bits - bits // 2 + 1, 1000)
    with pytest.raises(InvalidParameter) as err:
        PaillierPublicKey.from_peer(n, culprit=3)
    assert err.value.check == Check.MODULUS_SIZE
    assert err.value.culprit == 3


def test_T02f_modulus_prefilter() -> None:
    good = N
    PaillierPublicKey.from_peer(good)
    big_prime = _prime_of_bits(MODULUS_BITS)
    p = KEY.p
    cases = {
        "even": N + 1,
        "prime": big_prime,
        "square of a prime": p * p,
        "divisible by 3": _padded(3),
        "divisible by 65521": _padded(65521),
        "divisible by 65537": _padded(65537),
        "divisible by a 19-bit prime": _padded(524287),
        "divisible by the largest prime below 2^20": _padded(1048573),
    }
    for reason, n in cases.items():
        assert n.bit_length() == MODULUS_BITS, reason
        with pytest.raises(InvalidParameter) as err:
            validate_modulus(n, "N", culprit=3)
        assert err.value.check == Check.MODULUS_FORM, reason
        assert err.value.culprit == 3


def test_public_key_wire_round_trip() -> None:
    pk = KEY.public
    assert PaillierPublicKey.from_bytes(pk.to_bytes()) == pk
    assert PaillierPublicKey.from_json(pk.to_json()) == pk
    with pytest.raises(EncodingError) as err:
        PaillierPublicKey.from_json({"n": hex(1 << MODULUS_BITS)})
    assert err.value.check == Check.RANGE


def test_secret_key_wire_round_trip_and_validation() -> None:
    restored = PaillierSecretKey.from_bytes(KEY.to_bytes())
    assert restored.n == KEY.n and restored.decrypt(KEY.encrypt(42)[0]) == 42
    assert PaillierSecretKey.from_json(KEY.to_json()).n == KEY.n
    with pytest.raises(EncodingError) as err:
        PaillierSecretKey.from_json({"p": hex(KEY.p), "q": hex(KEY.p)})
    assert err.value.check == Check.MODULUS_FORM
    with pytest.raises(EncodingError):
        PaillierSecretKey.from_json({"p": hex(KEY.p), "q": hex(KEY.q + 2)})  # q ≡ 1 mod 4
