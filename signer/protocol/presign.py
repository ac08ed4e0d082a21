"""Presigning among exactly t signers: CGGMP21 Fig. 7 with the threshold extension (shares
weighted by Lagrange coefficients of the signer set) and a derivation path fixed here.

Every party i holds w_i = λ_i·x_i (+ the BIP32 shift for the lowest index), so Σ w_i is the
child key; W_j = λ_j·X_j (+ shift·G) is computed by everybody from the key share.

  Round 1 (broadcast, echoed)  K_i = enc_i(k_i), G_i = enc_i(γ_i); to each j: Πenc(K_i) under j's
                               ring-Pedersen parameters
  Round 2 (p2p)                Γ_i = γ_i·G; to each j the MtA responses
                               D_{j,i} = K_j^γ_i·enc_j(y), F_{j,i} = enc_i(y)      (β_{i,j} = −y)
                               D̂_{j,i} = K_j^w_i·enc_j(ŷ), F̂_{j,i} = enc_i(ŷ)     (β̂_{i,j} = −ŷ)
                               with Πaff-g for both and Πlog* that Γ_i matches G_i
  Round 3 (broadcast, echoed)  δ_i = k_i·γ_i + Σ_j (α_{i,j} + β_{i,j}), χ_i = k_i·w_i + Σ_j (α̂ + β̂),
                               Δ_i = k_i·Γ, S_i = χ_i·Γ; to each j: Πlog* that Δ_i matches K_i
  Output                       δ = Σ δ_j with δ·G = Σ Δ_j and Σ S_j = δ·Y_child, R = δ⁻¹·Γ.

(Γ = γ·G, δ = k·γ, so R = k⁻¹·G and Σ χ_j = k·x.)  The public data (Γ, Δ_j, S_j) make every
partial signature verifiable on its own: σ_j·Γ = m·Δ_j + r·S_j (see `sign.py`).

Checks (attacks.md §2 "Presign r1–r3"): every ciphertext in Z*_{N²}; Πenc, Πaff-g (twice),
Πlog* (twice) from every peer, under our own parameters; Γ_j, Δ_j, S_j valid non-identity points;
δ_j a scalar; the two consistency equations above; δ ≠ 0 and R ≠ O.  A failure of a consistency
equation cannot be pinned on anyone from the data at hand: the party raises
`IdentificationRequired` (code EQUATION, no culprit yet) carrying the state with which every
signer runs the identification protocol (`presign_identify`: Πmul/Πmul*, Πaff-g and Πdec over
the MtA ciphertexts, which names the parties who lied about δ_j or S_j).  To that end each party
keeps the MtA ciphertexts it sent and received in round 2, with the witnesses of its own.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from signer.arith import parallel_map, random_signed
from signer.curve import Point, Q, lagrange_coefficient, sum_points
from signer.encoding import Encodable, encode
from signer.errors import Check, CryptoMisuse, InvalidParameter, TesseraError
from signer.paillier import PaillierPublicKey
from signer.params import ELL_PRIME, MODULUS_BITS
from signer.protocol.aux_info import AuxInfo
from signer.protocol.base import (
    Inbox,
    Outgoing,
    Party,
    RoundSpec,
    SessionConfig,
    as_list,
    expect_blob,
    expect_nat,
    expect_point,
    expect_scalar,
)
from signer.protocol.hd import Derivation, derive
from signer.protocol.keygen import KeyShare
from signer.protocol.presign_identify import (
    Equation,
    IdentificationRequired,
    IdentificationState,
    MtaReceived,
    MtaSent,
)
from signer.zk import aff_g, enc, log_star
from signer.zk.common import ProofContext

PROTOCOL = "presign/v1"
R = TypeVar("R")


class PresignatureReused(TesseraError):
    """A presignature was asked for a second partial signature (attacks.md A11)."""


@dataclass(frozen=True)
class PresignaturePublic:
    """What every signer and the combiner know about a presignature (identical for all)."""

    presignature_id: bytes
    key_id: bytes
    key_version: bytes  # fingerprint of the key version (epoch) it was made with (sign.combine)
    signers: tuple[int, ...]
    derivation: Derivation
    R: Point
    Gamma: Point
    Delta: tuple[Point, ...]  # Δ_j = k_j·Γ, in the order of `signers`
    S: tuple[Point, ...]  # S_j = χ_j·Γ

    def of(self, points: tuple[Point, ...], party: int) -> Point:
        return points[self.signers.index(party)]


class Presignature:
    """One party's presignature: public data plus (k_i, χ_i), usable for exactly one partial
    signature.  `consume` is the single way to the secrets and works once."""

    def __init__(self, public: PresignaturePublic, index: int, k: int, chi: int) -> None:
        self.public = public
        self.index = index
        self._secrets: tuple[int, int] | None = (k, chi)

    @property
    def used(self) -> bool:
        return self._secrets is None

    def consume(self) -> tuple[int, int]:
        if self._secrets is None:
            raise PresignatureReused(
                f"presignature {self.public.presignature_id.hex()[:16]} was already used"
            )
        secrets_, self._secrets = self._secrets, None
        return secrets_


def signer_weights(
    key: KeyShare, signers: Sequence[int], derivation: Derivation
) -> dict[int, Point]:
    """W_j = λ_j·X_j for the signer set, plus shift·G for its lowest index (Σ W_j = Y_child)."""
    weights = {j: key.public_share(j) * lagrange_coefficient(j, signers) for j in signers}
    first = min(signers)
    weights[first] = weights[first] + Point.base_mul(derivation.shift)
    return weights


class PresignRounds(Party[R]):
    """The three presigning rounds; `PresignParty` outputs the presignature, interactive
    signing (`sign.SignParty`) continues with the signing round."""

    PRESIGN_ROUNDS: ClassVar[tuple[RoundSpec, ...]] = (
        RoundSpec(broadcast=True, p2p=True, echo=True),
        RoundSpec(broadcast=False, p2p=True),
        RoundSpec(broadcast=True, p2p=True, echo=True),
    )

    def __init__(
        self, config: SessionConfig, key: KeyShare, aux: AuxInfo, path: Sequence[int] = ()
    ) -> None:
        super().__init__(config)
        signers = config.parties
        if len(signers) != key.threshold or config.threshold != key.threshold:
            raise InvalidParameter(
                "signer set", Check.LENGTH, f"presign needs exactly t = {key.threshold} signers"
            )
        if not set(signers) <= set(key.parties) or not set(signers) <= set(aux.parties):
            raise InvalidParameter("signer set", Check.PARTY_INDEX, "signers outside the key/aux")
        if key.index != config.me or aux.index != config.me or key.key_id != config.key_id:
            raise CryptoMisuse("key share, aux-info and session belong to different parties/keys")
        self.key, self.aux = key, aux
        self.derivation = derive(key.public_key, key.chain_code, path)
        self._weights = signer_weights(key, signers, self.derivation)
        lam = lagrange_coefficient(self.me, signers)
        shift = self.derivation.shift if self.me == min(signers) else 0
        self._w = (lam * key.secret_share + shift) % Q
        self._k = 1 + secrets.randbelow(Q - 1)
        self._gamma = 1 + secrets.randbelow(Q - 1)
        own = aux.own.paillier
        self._K, self._rho = own.encrypt(self._k)
        self._G, self._nu = own.encrypt(self._gamma)
        self._Gamma_i = Point.base_mul(self._gamma)
        self._K_of: dict[int, int] = {self.me: self._K}
        self._G_of: dict[int, int] = {self.me: self._G}
        self._beta: dict[int, int] = {}
        self._beta_hat: dict[int, int] = {}
        # round-2 MtA pairs per peer, (for γ, for w): kept for identification
        self._sent: dict[int, tuple[MtaSent, MtaSent]] = {}
        self._received: dict[int, tuple[MtaReceived, MtaReceived]] = {}
        self._Gamma_of: dict[int, Point] = {self.me: self._Gamma_i}
        self._Gamma = Point.identity()
        self._delta = 0
        self._chi = 0

    # --- helpers -----------------------------------------------------------------------------
    SESSION_CONTEXT: ClassVar[str] = "key version, aux-info or derivation path"

    def session_context(self) -> bytes:
        """Every signer must hold the same key version (epoch) and aux-info — an old share and
        a refreshed one never presign together (reshare.py) — and derive the same child key:
        signers given different paths would otherwise fail the output check later and reach
        identification over a mismatch no party caused (a coordinator framing an honest one)."""
        return hashlib.sha256(
            encode(
                [
                    "tessera/presign/context/v2",
                    self.key.fingerprint(),
                    self.aux.aux_id(),
                    list(self.derivation.path),
                ]
            )
        ).digest()

    def _ctx(self, prover: int) -> ProofContext:
        return ProofContext(self.session_id, prover)

    def _key_of(self, party: int) -> PaillierPublicKey:
        return PaillierPublicKey(self.aux.params(party).n)

    # --- rounds ------------------------------------------------------------------------------
    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number == 1:
            return self._round1()
        if number == 2:
            return self._round2(inbox)
        if number == 3:
            return self._round3(inbox)
        raise CryptoMisuse(f"presign has no round {number}")

    def _round1(self) -> Outgoing:
        ctx = ProofContext(self.round1_binding(self.me), self.me)
        own = self.aux.own.paillier
        public = enc.EncPublic(own.public, self._K)
        private = enc.EncPrivate(self._k, self._rho)
        others = self.config.others
        proofs = parallel_map(
            lambda j: enc.prove(ctx, public, private, self.aux.params(j), own).to_bytes(), others
        )
        return Outgoing(broadcast=[self._K, self._G], p2p=dict(zip(others, proofs, strict=True)))

    def _round2(self, inbox: Inbox) -> Outgoing:
        wire = self._wire_round(1, False)
        others = self.config.others
        received = parallel_map(lambda j: self._check_round1(j, inbox, wire), others)
        for j, (K_j, G_j) in zip(others, received, strict=True):
            self._K_of[j], self._G_of[j] = K_j, G_j
        responses = parallel_map(self._mta_response, others)
        return Outgoing(p2p=dict(zip(others, responses, strict=True)))

    def _check_round1(self, j: int, inbox: Inbox, wire: int) -> tuple[int, int]:
        with self.blame(j, wire):
            key_j = self._key_of(j)
            K_j, G_j = (
                expect_nat(v, 2 * MODULUS_BITS, "K/G")
                for v in as_list(inbox.broadcast[j], 2, "K, G")
            )
            key_j.validate_ciphertext(K_j, "K")
            key_j.validate_ciphertext(G_j, "G")
            proof = enc.EncProof.from_bytes(expect_blob(inbox.p2p[j], "proof"))
            binding = ProofContext(self.round1_binding(j), j)
            enc.verify(binding, enc.EncPublic(key_j, K_j), proof, self.aux.own)
        return K_j, G_j

    def _mta_response(self, j: int) -> Encodable:
        """Both MtA responses to party j (for γ_i and for w_i) with their proofs."""
        own, ctx = self.aux.own.paillier, self._ctx(self.me)
        key_j, aux_j, K_j = self._key_of(j), self.aux.params(j), self._K_of[j]
        y, y_hat = random_signed(ELL_PRIME), random_signed(ELL_PRIME)
        masked, s = key_j.encrypt(y)
        D = key_j.add(key_j.scalar_mul(K_j, self._gamma), masked)
        F, r = own.encrypt(y)
        masked_hat, s_hat = key_j.encrypt(y_hat)
        D_hat = key_j.add(key_j.scalar_mul(K_j, self._w), masked_hat)
        F_hat, r_hat = own.encrypt(y_hat)
        self._beta[j], self._beta_hat[j] = -y, -y_hat
        tasks: list[Callable[[], bytes]] = [
            lambda: aff_g.prove(
                ctx,
                aff_g.AffGPublic(key_j, own.public, K_j, D, F, self._Gamma_i),
                aff_g.AffGPrivate(self._gamma, y, s, r),
                aux_j,
                own,
            ).to_bytes(),
            lambda: aff_g.prove(
                ctx,
                aff_g.AffGPublic(key_j, own.public, K_j, D_hat, F_hat, self._weights[self.me]),
                aff_g.AffGPrivate(self._w, y_hat, s_hat, r_hat),
                aux_j,
                own,
            ).to_bytes(),
            lambda: log_star.prove(
                ctx,
                log_star.LogStarPublic(own.public, self._G, self._Gamma_i, Point.generator()),
                log_star.LogStarPrivate(self._gamma, self._nu),
                aux_j,
                own,
            ).to_bytes(),
        ]
        psi, psi_hat, psi_prime = parallel_map(lambda task: task(), tasks)
        self._sent[j] = (
            MtaSent(D, F, psi, y, s, r),
            MtaSent(D_hat, F_hat, psi_hat, y_hat, s_hat, r_hat),
        )
        return [self._Gamma_i, D, F, D_hat, F_hat, psi, psi_hat, psi_prime]

    def _round3(self, inbox: Inbox) -> Outgoing:
        wire = self._wire_round(2, False)
        own = self.aux.own.paillier
        others = self.config.others
        checked = parallel_map(lambda j: self._check_mta(j, inbox, wire), others)
        delta = self._k * self._gamma
        chi = self._k * self._w
        for j, (Gamma_j, received) in zip(others, checked, strict=True):
            self._Gamma_of[j] = Gamma_j
            self._received[j] = received
            delta += own.decrypt_signed(received[0].D) + self._beta[j]
            chi += own.decrypt_signed(received[1].D) + self._beta_hat[j]
        self._Gamma = sum_points(self._Gamma_of[j] for j in self.config.parties)
        if self._Gamma.is_identity:
            raise self._abort(wire, Check.IDENTITY_POINT, [], "Γ is the identity")
        self._delta = delta % Q
        self._chi = chi % Q
        Delta_i = self._Gamma * self._k
        S_i = self._Gamma * self._chi
        ctx = self._ctx(self.me)
        public = log_star.LogStarPublic(own.public, self._K, Delta_i, self._Gamma)
        private = log_star.LogStarPrivate(self._k, self._rho)
        proofs = parallel_map(
            lambda j: log_star.prove(ctx, public, private, self.aux.params(j), own).to_bytes(),
            others,
        )
        return Outgoing(
            broadcast=[self._delta, Delta_i, S_i], p2p=dict(zip(others, proofs, strict=True))
        )

    def _check_mta(
        self, j: int, inbox: Inbox, wire: int
    ) -> tuple[Point, tuple[MtaReceived, MtaReceived]]:
        """Verify party j's MtA responses to us; returns Γ_j and the (D, F, Πaff-g) pairs."""
        own, mine = self.aux.own.paillier, self.aux.own
        with self.blame(j, wire):
            fields = as_list(inbox.p2p[j], 8, "MtA response")
            Gamma_j = expect_point(fields[0], "Gamma")
            D, F, D_hat, F_hat = (
                expect_nat(v, 2 * MODULUS_BITS, "ciphertext") for v in fields[1:5]
            )
            key_j, ctx = self._key_of(j), self._ctx(j)
            own.public.validate_ciphertext(D, "D")
            own.public.validate_ciphertext(D_hat, "D_hat")
            key_j.validate_ciphertext(F, "F")
            key_j.validate_ciphertext(F_hat, "F_hat")
            blobs = [expect_blob(v, "proof") for v in fields[5:7]]
            psi, psi_hat = (aff_g.AffGProof.from_bytes(blob) for blob in blobs)
            psi_prime = log_star.LogStarProof.from_bytes(expect_blob(fields[7], "proof"))
            W_j = self._weights[j]
            checks: list[Callable[[], None]] = [
                lambda: aff_g.verify(
                    ctx, aff_g.AffGPublic(own.public, key_j, self._K, D, F, Gamma_j), psi, mine
                ),
                lambda: aff_g.verify(
                    ctx,
                    aff_g.AffGPublic(own.public, key_j, self._K, D_hat, F_hat, W_j),
                    psi_hat,
                    mine,
                ),
                lambda: log_star.verify(
                    ctx,
                    log_star.LogStarPublic(key_j, self._G_of[j], Gamma_j, Point.generator()),
                    psi_prime,
                    mine,
                ),
            ]
            parallel_map(lambda check: check(), checks)
        return Gamma_j, (MtaReceived(D, F, blobs[0]), MtaReceived(D_hat, F_hat, blobs[1]))

    def _build_presignature(self, inbox: Inbox) -> Presignature:
        wire = self._wire_round(3, False)
        mine = self.aux.own
        signers = self.config.parties
        deltas: dict[int, int] = {self.me: self._delta}
        Deltas: dict[int, Point] = {self.me: self._Gamma * self._k}
        S: dict[int, Point] = {self.me: self._Gamma * self._chi}
        for j in self.config.others:
            with self.blame(j, wire):
                d, D_j, S_j = as_list(inbox.broadcast[j], 3, "delta, Delta, S")
                deltas[j] = expect_scalar(d, "delta")
                Deltas[j] = expect_point(D_j, "Delta")
                S[j] = expect_point(S_j, "S")
                proof = log_star.LogStarProof.from_bytes(expect_blob(inbox.p2p[j], "proof"))
                public = log_star.LogStarPublic(
                    self._key_of(j), self._K_of[j], Deltas[j], self._Gamma
                )
                log_star.verify(self._ctx(j), public, proof, mine)
        delta = sum(deltas.values()) % Q
        if delta == 0 or Point.base_mul(delta) != sum_points(Deltas.values()):
            raise self._identification_required(wire, Equation.DELTA, deltas, S, "δ·G ≠ Σ Δ_j")
        if sum_points(S.values()) != self.derivation.public_key * delta:
            raise self._identification_required(wire, Equation.CHI, deltas, S, "Σ S_j ≠ δ·Y")
        R = self._Gamma * pow(delta, -1, Q)
        public_data = PresignaturePublic(
            presignature_id=self.session_id,
            key_id=self.config.key_id,
            key_version=self.key.fingerprint(),
            signers=signers,
            derivation=self.derivation,
            R=R,
            Gamma=self._Gamma,
            Delta=tuple(Deltas[j] for j in signers),
            S=tuple(S[j] for j in signers),
        )
        return Presignature(public_data, self.me, self._k, self._chi)

    def _identification_required(
        self,
        wire: int,
        equation: Equation,
        deltas: dict[int, int],
        S: dict[int, Point],
        detail: str,
    ) -> IdentificationRequired:
        """The abort of a failed output check, with what identification needs (in memory)."""
        delta = equation is Equation.DELTA
        pick = 0 if delta else 1
        state = IdentificationState(
            protocol=self.PROTOCOL,
            session_id=self.session_id,
            key_id=self.config.key_id,
            equation=equation,
            signers=self.config.parties,
            me=self.me,
            aux=self.aux,
            K=dict(self._K_of),
            G=dict(self._G_of),
            X=dict(self._Gamma_of) if delta else dict(self._weights),
            Gamma=self._Gamma,
            deltas=dict(deltas),
            S=dict(S),
            sent={j: pair[pick] for j, pair in self._sent.items()},
            received={j: pair[pick] for j, pair in self._received.items()},
            x=self._gamma if delta else self._w,
            x_rho=self._nu if delta else 0,
        )
        return IdentificationRequired(
            self.PROTOCOL, wire, f"{detail}: every signer runs identification", state
        )


class PresignParty(PresignRounds[Presignature]):
    PROTOCOL: ClassVar[str] = PROTOCOL
    ROUNDS: ClassVar[tuple[RoundSpec, ...]] = PresignRounds.PRESIGN_ROUNDS

    def _finish(self, inbox: Inbox) -> Presignature:
        return self._build_presignature(inbox)
