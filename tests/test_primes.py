"""Safe-prime generation and the prime pool."""

from __future__ import annotations

import json
from pathlib import Path

import gmpy2
import pytest
from conftest import fixture_primes

from signer.errors import Check, EncodingError, InvalidParameter
from signer.params import PRIME_BITS
from signer.primes import PrimePool, generate_safe_prime, generate_safe_primes, is_safe_prime


@pytest.mark.parametrize("bits", [64, 256, 512])
def test_small_safe_primes(bits: int) -> None:
    for _ in range(3):
        p = generate_safe_prime(bits)
        assert p.bit_length() == bits
        assert p >> (bits - 2) == 3  # top two bits set: products have exactly 2·bits bits
        assert gmpy2.is_prime(p) and gmpy2.is_prime((p - 1) // 2)
        assert p % 4 == 3
        assert is_safe_prime(p, bits)


def test_production_size_safe_prime() -> None:
    p = generate_safe_prime(PRIME_BITS)
    assert is_safe_prime(p)
    q = generate_safe_prime(PRIME_BITS)
    assert (p * q).bit_length() == 2 * PRIME_BITS


def test_parallel_generation_distinct() -> None:
    primes = generate_safe_primes(4, bits=256, workers=2)
    assert len(set(primes)) == 4 and all(is_safe_prime(p, 256) for p in primes)


def test_is_safe_prime_rejects() -> None:
    p = fixture_primes()[0]
    assert is_safe_prime(p)
    assert not is_safe_prime(p + 2)
    assert not is_safe_prime(int(gmpy2.next_prime(p)))  # prime, but (p-1)/2 is not (w.h.p.)
    assert not is_safe_prime(p, PRIME_BITS + 1)
    small = generate_safe_prime(64)
    assert not is_safe_prime(small, PRIME_BITS)


def test_pool_take_is_durable_and_single_use(tmp_path: Path) -> None:
    pool = PrimePool(tmp_path / "pool.json")
    assert len(pool) == 0
    primes = fixture_primes()[:4]
    pool.add(primes)
    pool.add(primes[:1])  # duplicates are not added twice
    assert len(pool) == 4
    first = pool.take(2)
    assert first == primes[:2]
    # a fresh handle on the same file sees the removal: nothing is handed out twice
    again = PrimePool(tmp_path / "pool.json")
    assert again.take(2) == primes[2:]
    with pytest.raises(InvalidParameter) as err:
        again.take(1)
    assert err.value.check == Check.LENGTH
    assert oct((tmp_path / "pool.json").stat().st_mode & 0o777) == "0o600"


def test_pool_rejects_non_safe_primes(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    pool = PrimePool(path)
    with pytest.raises(InvalidParameter):
        pool.add([fixture_primes()[0] + 2])
    # tampered file: a weak "prime" never comes out of take()
    path.write_text(json.dumps({"bits": PRIME_BITS, "safe_primes": [format(15, "x")]}))
    with pytest.raises(InvalidParameter) as err:
        PrimePool(path).take(1)
    assert err.value.check == Check.MODULUS_FORM


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({"bits": 1024, "safe_primes": []}),
        json.dumps({"bits": PRIME_BITS, "safe_primes": [17]}),
        json.dumps({"bits": PRIME_BITS, "safe_primes": ["zz"]}),
        json.dumps({"bits": PRIME_BITS, "safe_primes": [], "extra": 1}),
    ],
)
def test_pool_malformed_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "pool.json"
    path.write_text(content)
    with pytest.raises(EncodingError):
        len(PrimePool(path))
