"""Threshold key generation (DKG), t-of-n: CGGMP21 Fig. 5 with Feldman VSS (the threshold
extension of the Lockness spec, "Threshold key generation").

  Round 1 (broadcast, echoed)  V_i = H(tag, run, i, rid_i, c_i, F_i, A_i, u_i)
                               F_i = (a_0·G, …, a_{t−1}·G) commits the polynomial f_i,
                               A_i = τ_i·G is the Schnorr commitment, c_i a chain-code share.
  Round 2 (broadcast + p2p)    open V_i; send f_i(j) to party j (encrypted by the transport)
  Round 3 (broadcast, echoed)  check every opening and share, x_i = Σ_j f_j(i), X_i = x_i·G,
                               Schnorr response z_i for X_i with challenge bound to (sid, rid)
  Output                       X_j = Σ_k Σ_l j^l·F_k[l] for every j (computed, never received),
                               verify every Schnorr proof, Y = Σ_k F_k[0], chain code ⊕ c_j.

Checks (attacks.md §2 "Keygen"): commitment opens (COMMITMENT), exactly t Feldman points, none
the identity (the encoding cannot carry it), share in [0, q) and consistent with F_j (SHARE),
Schnorr proof with the committed A_j (EQUATION), non-zero own share and public key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import ClassVar

from signer.curve import (
    Point,
    Q,
    evaluate_committed,
    evaluate_polynomial,
    lagrange_coefficient,
    sum_points,
)
from signer.encoding import Encodable, encode
from signer.errors import Check, CryptoMisuse, InvalidParameter
from signer.protocol.base import (
    Inbox,
    Outgoing,
    Party,
    RoundSpec,
    SessionConfig,
    as_list,
    expect_bytes,
    expect_point,
    expect_scalar,
    xor_bytes,
)
from signer.zk import sch
from signer.zk.common import ProofContext

PROTOCOL = "keygen/v1"
_COMMIT_TAG = "tessera/keygen/commit/v1"


@dataclass(frozen=True)
class KeyPublic:
    """Everything public about one version (`epoch`) of a threshold key: what a node may hold
    without its share, and what a new committee member is told it is joining."""

    key_id: bytes
    epoch: int  # 0 after keygen, +1 per refresh or re-share
    threshold: int
    parties: tuple[int, ...]
    public_shares: tuple[Point, ...]  # X_j, in the order of `parties`
    public_key: Point
    chain_code: bytes

    def __post_init__(self) -> None:
        """Reject inconsistent or degenerate public data (attacks.md A14 T14b, A15)."""
        n, t = len(self.parties), self.threshold
        if not 2 <= t <= n or len(self.public_shares) != n:
            raise InvalidParameter("key", Check.LENGTH, "inconsistent party set")
        if len(set(self.parties)) != n or tuple(sorted(self.parties)) != self.parties:
            raise InvalidParameter("key", Check.PARTY_INDEX, "parties must be distinct, sorted")
        if self.parties[0] < 1 or self.epoch < 0:
            raise InvalidParameter("key", Check.RANGE, "party index or epoch out of range")
        if len(self.chain_code) != 32:
            raise InvalidParameter("key", Check.LENGTH, "chain code must be 32 bytes")
        if self.public_key.is_identity or any(X.is_identity for X in self.public_shares):
            raise InvalidParameter("key", Check.IDENTITY_POINT, "identity public key/share")
        # every public share lies on one polynomial of degree t−1 whose value at 0 is Y
        base = self.parties[:t]
        for j in (0, *self.parties[t:]):
            expected = self.public_key if j == 0 else self.public_share(j)
            interpolated = sum_points(
                self.public_share(k) * lagrange_coefficient(k, base, j) for k in base
            )
            if interpolated != expected:
                raise InvalidParameter("key", Check.EQUATION, "shares not of degree t−1")

    def public_share(self, party: int) -> Point:
        return self.public_shares[self.parties.index(party)]

    def fingerprint(self) -> bytes:
        """Identifies this key version: equal fingerprints ⇔ the same shares can sign together."""
        listed: list[Encodable] = [
            "tessera/key/v1",
            self.key_id,
            self.epoch,
            self.threshold,
            list(self.parties),
            list(self.public_shares),
            self.public_key,
            self.chain_code,
        ]
        return hashlib.sha256(encode(listed)).digest()


@dataclass(frozen=True)
class KeyShare:
    """One party's output: its share x_i of the key and everything public about the key."""

    key_id: bytes
    threshold: int
    parties: tuple[int, ...]
    index: int
    secret_share: int = field(repr=False)
    public_shares: tuple[Point, ...]  # X_j, in the order of `parties`
    public_key: Point
    chain_code: bytes
    epoch: int = 0

    def __post_init__(self) -> None:
        public = self.public_data()  # validates the public part
        if self.index not in self.parties:
            raise InvalidParameter("key share", Check.PARTY_INDEX, "own index not a party")
        if not 0 < self.secret_share < Q:
            raise InvalidParameter("key share", Check.ZERO_SCALAR, "secret share not in [1, q)")
        if Point.base_mul(self.secret_share) != public.public_share(self.index):
            raise InvalidParameter("key share", Check.EQUATION, "x_i·G ≠ X_i")

    def public_data(self) -> KeyPublic:
        return KeyPublic(
            key_id=self.key_id,
            epoch=self.epoch,
            threshold=self.threshold,
            parties=self.parties,
            public_shares=self.public_shares,
            public_key=self.public_key,
            chain_code=self.chain_code,
        )

    def public_share(self, party: int) -> Point:
        return self.public_shares[self.parties.index(party)]

    def fingerprint(self) -> bytes:
        return self.public_data().fingerprint()


class KeygenParty(Party[KeyShare]):
    PROTOCOL: ClassVar[str] = PROTOCOL
    ROUNDS: ClassVar[tuple[RoundSpec, ...]] = (
        RoundSpec(broadcast=True, p2p=False, echo=True),
        RoundSpec(broadcast=True, p2p=True),
        RoundSpec(broadcast=True, p2p=False, echo=True),
    )

    def __init__(self, config: SessionConfig) -> None:
        if config.threshold < 2:
            raise InvalidParameter("threshold", Check.RANGE, "keygen needs 2 ≤ t ≤ n")
        super().__init__(config)
        t = config.threshold
        self._coefficients = [1 + secrets.randbelow(Q - 1) for _ in range(t)]
        self._feldman = [Point.base_mul(a) for a in self._coefficients]
        self._rid = secrets.token_bytes(32)
        self._chain = secrets.token_bytes(32)
        self._salt = secrets.token_bytes(32)
        self._schnorr = sch.SchCommitment.generate()
        self._openings: dict[int, tuple[bytes, bytes, list[Point], Point]] = {}
        self._secret: int = 0
        self._rid_joint = b""

    def _evaluate(self, x: int) -> int:
        return evaluate_polynomial(self._coefficients, x)

    def _opening(self) -> list[Encodable]:
        return [self._rid, self._chain, self._feldman, self._schnorr.A, self._salt]

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number == 1:
            return self._commit(_COMMIT_TAG, self._opening())
        if number == 2:
            self._collect_commitments(inbox)
            shares = {j: self._evaluate(j) for j in self.config.others}
            return Outgoing(broadcast=self._opening(), p2p=dict(shares))
        if number == 3:
            return Outgoing(broadcast=[self._verify_openings(inbox)])
        raise CryptoMisuse(f"keygen has no round {number}")

    def _verify_openings(self, inbox: Inbox) -> int:
        t, me = self.config.threshold, self.me
        round_number = self._wire_round(2, False)
        shares: dict[int, int] = {}
        for j in self.config.others:
            with self.blame(j, round_number):
                rid, chain, feldman, A, salt = as_list(inbox.broadcast[j], 5, "opening")
                rid = expect_bytes(rid, 32, "rid")
                chain = expect_bytes(chain, 32, "chain code")
                points = [expect_point(P, "F") for P in as_list(feldman, t, "F")]
                A = expect_point(A, "A")
                salt = expect_bytes(salt, 32, "u")
                share = shares[j] = expect_scalar(inbox.p2p[j], "share")
            self._check_opening(_COMMIT_TAG, j, [rid, chain, points, A, salt], round_number)
            expected = evaluate_committed(points, me)
            if Point.base_mul(share) != expected:
                raise self._abort(round_number, Check.SHARE, [j], "f_j(i)·G ≠ Σ_k i^k·F_j[k]")
            self._openings[j] = (rid, chain, points, A)
        self._openings[me] = (self._rid, self._chain, self._feldman, self._schnorr.A)
        self._secret = (self._evaluate(me) + sum(shares.values())) % Q
        if self._secret == 0:
            raise self._abort(round_number, Check.ZERO_SCALAR, [], "own share is zero")
        self._rid_joint = xor_bytes([self._openings[j][0] for j in self.config.parties])
        proof = sch.prove(
            self._proof_context(me), Point.base_mul(self._secret), self._secret, self._schnorr
        )
        return proof.z

    def _proof_context(self, prover: int) -> ProofContext:
        bound = hashlib.sha256(encode(["tessera/keygen/sch/v1", self.session_id, self._rid_joint]))
        return ProofContext(bound.digest(), prover)

    def _finish(self, inbox: Inbox) -> KeyShare:
        parties, t = self.config.parties, self.config.threshold
        round_number = self._wire_round(3, False)
        # Σ_k F_k: the commitments to the joint polynomial, from which every X_j is computed.
        joint = [sum_points(self._openings[j][2][k] for j in parties) for k in range(t)]
        public_shares = tuple(evaluate_committed(joint, j) for j in parties)
        for j in self.config.others:
            with self.blame(j, round_number):
                z = expect_scalar(as_list(inbox.broadcast[j], 1, "Schnorr response")[0], "z")
                X_j = public_shares[parties.index(j)]
                sch.verify(self._proof_context(j), X_j, sch.SchProof(self._openings[j][3], z))
        public_key = joint[0]
        if public_key.is_identity:
            raise self._abort(round_number, Check.IDENTITY_POINT, [], "public key is the identity")
        return KeyShare(
            key_id=self.config.key_id,
            threshold=t,
            parties=parties,
            index=self.me,
            secret_share=self._secret,
            public_shares=public_shares,
            public_key=public_key,
            chain_code=xor_bytes([self._openings[j][1] for j in parties]),
        )
