"""Πsch — Schnorr proof of knowledge of a discrete logarithm (CGGMP21 Fig. 22).

Statement: X = x·G.  The commitment A = α·G can be sent (hash-committed) before the challenge is
fixed, as keygen does, hence the split `commit` / `prove`.

  Prover:   α ← Z_q, A = α·G
  Challenge e ← Z_q (Fiat–Shamir over sid, prover, X, A)
  Response  z = α + e·x mod q
  Verifier: X ≠ O, A ≠ O, 0 ≤ z < q, z·G = A + e·X.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar

from signer.curve import Point, Q
from signer.encoding import FieldKind, Nat, PointField, Wire
from signer.errors import Check
from signer.zk.common import Checker, ProofContext

NAME = "sch"


@dataclass(frozen=True)
class SchCommitment:
    """The prover's secret nonce α and public A = α·G (use once)."""

    alpha: int
    A: Point

    @classmethod
    def generate(cls) -> SchCommitment:
        alpha = 1 + secrets.randbelow(Q - 1)
        return cls(alpha, Point.base_mul(alpha))


@dataclass(frozen=True)
class SchProof(Wire):
    A: Point
    z: int

    WIRE_NAME: ClassVar[str] = "zk_sch"
    SCHEMA: ClassVar[dict[str, FieldKind]] = {"A": PointField(), "z": Nat(256)}


def _challenge(ctx: ProofContext, X: Point, A: Point) -> int:
    transcript = ctx.transcript(NAME)
    transcript.append("statement", X)
    transcript.append("commitment", A)
    return transcript.challenge_scalar("e")


def prove(ctx: ProofContext, X: Point, x: int, commitment: SchCommitment | None = None) -> SchProof:
    commitment = commitment or SchCommitment.generate()
    e = _challenge(ctx, X, commitment.A)
    return SchProof(commitment.A, (commitment.alpha + e * x) % Q)


def verify(ctx: ProofContext, X: Point, proof: SchProof) -> None:
    check = Checker(NAME, ctx.prover)
    check.point(X, "X")
    check.point(proof.A, "A")
    if not 0 <= proof.z < Q:
        check.fail(Check.RANGE, "z", "not in [0, q)")
    e = _challenge(ctx, X, proof.A)
    check.equation(Point.base_mul(proof.z) == proof.A + X * e, "z·G = A + e·X")
