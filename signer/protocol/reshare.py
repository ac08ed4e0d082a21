"""Re-sharing a threshold key to a new committee, and key refresh as its special case.

The old holders that take part (the *dealers*, any ≥ t of the old parties) each re-share their
Lagrange-weighted share w_i = λ_i·x_i (so Σ w_i = x) with a fresh polynomial f_i of degree
t′−1, f_i(0) = w_i, to the *new* committee (t′-of-n′; old and new parties may overlap in any
way: add, remove or replace nodes, change t).  New party j's share is x′_j = Σ_i f_i(j).  The
public key is unchanged, every share changes, and the key's epoch goes up by one, so old and
new shares never combine: Σ λ_i·x_i over a mixed set is not x, and presign refuses parties of
different epochs before doing any work (presign.py, Check.MISMATCH).

  Round 1 (broadcast, echoed)  V_i = H(tag, run, i, F_i, u_i) (dealers commit to
                               F_i = (f_i's coefficients)·G; others commit to nothing); the
                               plan's digest travels as the session context (base.py)
  Round 2 (broadcast + p2p)    open V_i; dealer i sends f_i(j) to each new party j
  Round 3 (broadcast, echoed)  new party j: check every opening and share, x′_j = Σ_i f_i(j),
                               Schnorr proof of x′_j for X′_j — its acknowledgement
  Output                       X′_j = Σ_i Σ_k j^k·F_i[k] for every new j; every Schnorr proof
                               verified; the new key version (and, for new parties, the share).

Checks: every party runs with the same plan (old key version, dealers, new committee, t′):
MISMATCH, unattributed since either side may hold the wrong input; commitment opens
(COMMITMENT); exactly t′ Feldman points (LENGTH); F_i[0] = λ_i·X_i, so a dealer cannot change
the key (EQUATION; a dealer sending the identity there is attacks.md A14); share consistent
with F_i (SHARE); Schnorr proof of every new share (EQUATION).  Hash-committing F_i before
anything is opened matters: a dealer that saw the others' polynomials could cancel their higher
coefficients and make every new share equal x.

Because round 3 is echoed, no party finishes unless every party received the same
acknowledgements (attacks.md A12 T12c, the GG18 re-sharing split view): no two honest parties
output different versions.  A relay that withholds the final echo from some parties can still
make only the others finish, so the protocol only outputs and never deletes anything: a node
stores the output as a pending version and erases the old share only once every member of the
new committee has confirmed storing its share (signer/node/confirmation.py).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
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
)
from signer.protocol.keygen import KeyPublic, KeyShare
from signer.zk import sch
from signer.zk.common import ProofContext

PROTOCOL = "reshare/v1"
REFRESH_PROTOCOL = "refresh/v1"
_COMMIT_TAG = "tessera/reshare/commit/v1"


@dataclass(frozen=True)
class ResharePlan:
    """What every party of a re-sharing must agree on before round 1."""

    old: KeyPublic
    dealers: tuple[int, ...]  # old parties that re-share their share (≥ old threshold of them)
    new_parties: tuple[int, ...]
    new_threshold: int

    def __post_init__(self) -> None:
        dealers, new = self.dealers, self.new_parties
        for name, group in (("dealers", dealers), ("new committee", new)):
            if len(set(group)) != len(group) or tuple(sorted(group)) != group:
                raise InvalidParameter(name, Check.PARTY_INDEX, "must be distinct and sorted")
        if not set(dealers) <= set(self.old.parties):
            raise InvalidParameter("dealers", Check.PARTY_INDEX, "a dealer holds no old share")
        if len(dealers) < self.old.threshold:
            raise InvalidParameter(
                "dealers", Check.LENGTH, f"need ≥ t = {self.old.threshold} old shares"
            )
        if not 2 <= self.new_threshold <= len(new):
            raise InvalidParameter(
                "new threshold", Check.RANGE, f"t′ = {self.new_threshold} for n′ = {len(new)}"
            )

    @classmethod
    def refresh(cls, old: KeyPublic) -> ResharePlan:
        """Key refresh: every party re-shares to the same committee with the same t."""
        return cls(old, old.parties, old.parties, old.threshold)

    @property
    def is_refresh(self) -> bool:
        old = self.old
        return self.dealers == old.parties == self.new_parties and (
            self.new_threshold == old.threshold
        )

    @property
    def parties(self) -> tuple[int, ...]:
        """Everybody in the session: dealers and new committee."""
        return tuple(sorted(set(self.dealers) | set(self.new_parties)))

    @property
    def new_epoch(self) -> int:
        return self.old.epoch + 1

    def digest(self) -> bytes:
        listed: list[Encodable] = [
            "tessera/reshare/plan/v1",
            self.old.fingerprint(),
            list(self.dealers),
            list(self.new_parties),
            self.new_threshold,
        ]
        return hashlib.sha256(encode(listed)).digest()


@dataclass(frozen=True)
class ReshareResult:
    """The new key version, and this party's share of it if it is in the new committee."""

    key: KeyPublic
    share: KeyShare | None


class ReshareParty(Party[ReshareResult]):
    PROTOCOL: ClassVar[str] = PROTOCOL
    ROUNDS: ClassVar[tuple[RoundSpec, ...]] = (
        RoundSpec(broadcast=True, p2p=False, echo=True),
        RoundSpec(broadcast=True, p2p=True),
        RoundSpec(broadcast=True, p2p=False, echo=True),
    )

    def __init__(self, config: SessionConfig, plan: ResharePlan, share: KeyShare | None) -> None:
        super().__init__(config)
        if config.parties != plan.parties or config.threshold != plan.new_threshold:
            raise CryptoMisuse("session parties/threshold differ from the re-share plan")
        if config.key_id != plan.old.key_id:
            raise CryptoMisuse("session key id differs from the re-share plan's key")
        self.plan = plan
        self._is_dealer = self.me in plan.dealers
        self._is_new = self.me in plan.new_parties
        if self._is_dealer != (share is not None):
            raise CryptoMisuse("a dealer needs its old share; a new-only party must not have one")
        self._coefficients: list[int] = []
        self._feldman: list[Point] = []
        if share is not None:
            if share.index != self.me or share.public_data() != plan.old:
                raise CryptoMisuse("own key share is not the plan's old key version")
            weight = lagrange_coefficient(self.me, plan.dealers) * share.secret_share % Q
            higher = [1 + secrets.randbelow(Q - 1) for _ in range(plan.new_threshold - 1)]
            self._coefficients = [weight, *higher]
            self._feldman = [Point.base_mul(a) for a in self._coefficients]
        self._salt = secrets.token_bytes(32)
        self._openings: dict[int, list[Point]] = {}
        self._new_secret = 0
        self._new_public: KeyPublic | None = None

    SESSION_CONTEXT: ClassVar[str] = "re-share plan (old key version, dealers, committee, t′)"

    def session_context(self) -> bytes:
        return self.plan.digest()

    def _evaluate(self, x: int) -> int:
        return evaluate_polynomial(self._coefficients, x)

    def _opening(self) -> list[Encodable]:
        return [list(self._feldman), self._salt]

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number == 1:
            return self._commit(_COMMIT_TAG, self._opening())
        if number == 2:
            self._collect_commitments(inbox)
            new = self.plan.new_parties
            p2p: dict[int, Encodable] = {
                j: self._evaluate(j) if self._is_dealer and j in new else []
                for j in self.config.others
            }
            return Outgoing(broadcast=self._opening(), p2p=p2p)
        if number == 3:
            self._verify_openings(inbox)
            return Outgoing(broadcast=self._acknowledgement())
        raise CryptoMisuse(f"re-share has no round {number}")

    def _verify_openings(self, inbox: Inbox) -> None:
        plan, t_new, me = self.plan, self.plan.new_threshold, self.me
        round_number = self._wire_round(2, False)
        shares: dict[int, int] = {}
        for j in self.config.others:
            with self.blame(j, round_number):
                feldman, salt = as_list(inbox.broadcast[j], 2, "opening")
                salt = expect_bytes(salt, 32, "u")
                length = t_new if j in plan.dealers else 0
                points = [expect_point(P, "F") for P in as_list(feldman, length, "F")]
                if self._is_new and j in plan.dealers:
                    shares[j] = expect_scalar(inbox.p2p[j], "share")
                else:
                    as_list(inbox.p2p[j], 0, "no share expected")
            self._check_opening(_COMMIT_TAG, j, [points, salt], round_number)
            if j not in plan.dealers:
                continue
            # F_j[0] = λ_j·X_j: the dealer re-shares exactly its own weighted share.
            expected_constant = plan.old.public_share(j) * lagrange_coefficient(j, plan.dealers)
            if points[0] != expected_constant:
                raise self._abort(
                    round_number, Check.EQUATION, [j], "F_j[0] ≠ λ_j·X_j (changes the key)"
                )
            if j in shares:
                expected = evaluate_committed(points, me)
                if Point.base_mul(shares[j]) != expected:
                    raise self._abort(round_number, Check.SHARE, [j], "f_j(i)·G ≠ Σ_k i^k·F_j[k]")
            self._openings[j] = points
        if self._is_dealer:
            self._openings[me] = self._feldman
        self._new_public = self._new_key(round_number)
        if self._is_new:
            own = self._evaluate(me) if self._is_dealer else 0
            self._new_secret = (own + sum(shares.values())) % Q
            if self._new_secret == 0:
                raise self._abort(round_number, Check.ZERO_SCALAR, [], "own new share is zero")

    def _new_key(self, round_number: int) -> KeyPublic:
        plan, t_new = self.plan, self.plan.new_threshold
        joint = [sum_points(self._openings[j][k] for j in plan.dealers) for k in range(t_new)]
        # Guaranteed by the per-dealer constant checks; recomputed as a last line of defence.
        if joint[0] != plan.old.public_key:
            raise self._abort(round_number, Check.EQUATION, [], "Σ F_j[0] ≠ Y")
        if joint[-1].is_identity:
            raise self._abort(
                round_number, Check.IDENTITY_POINT, [], "joint polynomial degree below t′−1"
            )
        public_shares = tuple(evaluate_committed(joint, j) for j in plan.new_parties)
        try:
            return KeyPublic(
                key_id=plan.old.key_id,
                epoch=plan.new_epoch,
                threshold=t_new,
                parties=plan.new_parties,
                public_shares=public_shares,
                public_key=plan.old.public_key,
                chain_code=plan.old.chain_code,
            )
        except InvalidParameter as exc:  # e.g. an identity public share: negligible, unattributable
            raise self._abort(round_number, exc.check, [], str(exc)) from exc

    def _proof_context(self, prover: int) -> ProofContext:
        if self._new_public is None:
            raise CryptoMisuse("new key version unknown before round 3")
        bound = hashlib.sha256(
            encode(["tessera/reshare/sch/v1", self.session_id, self._new_public.fingerprint()])
        )
        return ProofContext(bound.digest(), prover)

    def _acknowledgement(self) -> list[Encodable]:
        """A new party proves it holds its new share; the proof is bound to the new key version,
        so it also acknowledges exactly that version."""
        if not self._is_new or self._new_public is None:
            return []
        X = self._new_public.public_share(self.me)
        proof = sch.prove(self._proof_context(self.me), X, self._new_secret)
        return [proof.A, proof.z]

    def _finish(self, inbox: Inbox) -> ReshareResult:
        round_number = self._wire_round(3, False)
        new_public = self._new_public
        if new_public is None:
            raise CryptoMisuse("re-share finished before round 3")
        for j in self.config.others:
            with self.blame(j, round_number):
                if j not in self.plan.new_parties:
                    as_list(inbox.broadcast[j], 0, "acknowledgement from a non-member")
                    continue
                A, z = as_list(inbox.broadcast[j], 2, "Schnorr proof")
                proof = sch.SchProof(expect_point(A, "A"), expect_scalar(z, "z"))
                sch.verify(self._proof_context(j), new_public.public_share(j), proof)
        share = None
        if self._is_new:
            share = KeyShare(
                key_id=new_public.key_id,
                threshold=new_public.threshold,
                parties=new_public.parties,
                index=self.me,
                secret_share=self._new_secret,
                public_shares=new_public.public_shares,
                public_key=new_public.public_key,
                chain_code=new_public.chain_code,
                epoch=new_public.epoch,
            )
        return ReshareResult(new_public, share)


class RefreshParty(ReshareParty):
    """Key refresh: same key, same committee, same t; fresh shares (a new epoch).  Run it
    together with a fresh aux-info session (fresh Paillier keys), as `flow.run_refresh` does."""

    PROTOCOL: ClassVar[str] = REFRESH_PROTOCOL

    def __init__(self, config: SessionConfig, share: KeyShare) -> None:
        super().__init__(config, ResharePlan.refresh(share.public_data()), share)
