"""The intended verifier (own RingPedersenSecret, CRT) and a third party (public parameters)
reach the same verdict, with the same check and field, on honest and mutated proofs."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from conftest import new_context, paillier_key, ring_pedersen

from signer.arith import random_unit
from signer.curve import Point, Q
from signer.errors import ProofRejected
from signer.params import ELL_PRIME
from signer.zk import aff_g, dec, enc, fac, log_star, mul

PROVER = paillier_key(0)
VERIFIER = paillier_key(1)
SECRET = ring_pedersen(1)
PUBLIC = SECRET.params


def _cases() -> dict[str, tuple[Any, Callable[[Any, Any], None]]]:
    ctx = new_context(2)
    k = secrets.randbelow(Q)
    K, rho = PROVER.encrypt(k)
    enc_public = enc.EncPublic(PROVER.public, K)
    enc_proof = enc.prove(ctx, enc_public, enc.EncPrivate(k, rho), PUBLIC, PROVER)
    g = Point.base_mul(secrets.randbelow(Q))
    ls_public = log_star.LogStarPublic(PROVER.public, K, g * k, g)
    ls_proof = log_star.prove(ctx, ls_public, log_star.LogStarPrivate(k, rho), PUBLIC, PROVER)
    C, _ = VERIFIER.encrypt(secrets.randbelow(Q))
    x, y = secrets.randbelow(Q), secrets.randbelow(1 << ELL_PRIME)
    masked, rho_d = VERIFIER.public.encrypt(y)
    D = VERIFIER.public.add(VERIFIER.public.scalar_mul(C, x), masked)
    Y, rho_y = PROVER.encrypt(y)
    ag_public = aff_g.AffGPublic(VERIFIER.public, PROVER.public, C, D, Y, Point.base_mul(x))
    ag_proof = aff_g.prove(ctx, ag_public, aff_g.AffGPrivate(x, y, rho_d, rho_y), PUBLIC, PROVER)
    fac_proof = fac.prove(ctx, PROVER, PUBLIC)
    y_own = -secrets.randbelow(1 << dec.PLAINTEXT_BITS)
    D_own, rho_own = PROVER.encrypt(y_own)
    rho_h = random_unit(PROVER.n)
    H = PROVER.powmod_n2(K, x) * PROVER.encrypt_with(0, rho_h) % PROVER.public.n2
    star_public = mul.MulStarPublic(PROVER.public, K, H, Point.base_mul(x))
    star_proof = mul.prove_star(ctx, star_public, mul.MulStarPrivate(x, rho_h), PUBLIC, PROVER)
    dec_public = dec.DecPublic(PROVER.public, D_own, y_own % Q)
    dec_proof = dec.prove(ctx, dec_public, dec.DecPrivate(y_own, rho_own), PUBLIC, PROVER)
    group_public = dec.DecGroupPublic(PROVER.public, D_own, g * y_own, g)
    group_private = dec.DecPrivate(y_own, rho_own)
    group_proof = dec.prove_group(ctx, group_public, group_private, PUBLIC, PROVER)
    return {
        "enc": (enc_proof, lambda p, aux: enc.verify(ctx, enc_public, p, aux)),
        "log_star": (ls_proof, lambda p, aux: log_star.verify(ctx, ls_public, p, aux)),
        "aff_g": (ag_proof, lambda p, aux: aff_g.verify(ctx, ag_public, p, aux)),
        "fac": (fac_proof, lambda p, aux: fac.verify(ctx, PROVER.n, p, aux)),
        "mul_star": (star_proof, lambda p, aux: mul.verify_star(ctx, star_public, p, aux)),
        "dec": (dec_proof, lambda p, aux: dec.verify(ctx, dec_public, p, aux)),
        "dec_group": (group_proof, lambda p, aux: dec.verify_group(ctx, group_public, p, aux)),
    }


CASES = _cases()


def _verdict(verify: Callable[[Any, Any], None], proof: Any, aux: Any) -> tuple[str, str] | None:
    try:
        verify(proof, aux)
    except ProofRejected as exc:
        return exc.check.value, exc.field
    return None


@pytest.mark.parametrize("kind", list(CASES))
def test_both_paths_accept_honest_proofs(kind: str) -> None:
    proof, verify = CASES[kind]
    assert _verdict(verify, proof, SECRET) is None
    assert _verdict(verify, proof, PUBLIC) is None


@pytest.mark.parametrize("kind", list(CASES))
def test_both_paths_reject_every_single_field_mutation_alike(kind: str) -> None:
    proof, verify = CASES[kind]
    for field in dataclasses.fields(proof):
        value = getattr(proof, field.name)
        mutated = value + Point.generator() if isinstance(value, Point) else value + 1
        bad = dataclasses.replace(proof, **{field.name: mutated})
        with_secret = _verdict(verify, bad, SECRET)
        assert with_secret is not None, f"{kind}.{field.name} mutation accepted"
        assert with_secret == _verdict(verify, bad, PUBLIC), f"{kind}.{field.name}"


def test_secret_of_another_party_does_not_verify() -> None:
    proof, verify = CASES["enc"]
    assert _verdict(verify, proof, ring_pedersen(2)) is not None
