"""Identification after a failed presign output check (CGGMP21 §4, presigning with identifiable
abort: Πmul and Πdec over the MtA ciphertexts), extended to the threshold variant's S_j = χ_j·Γ.

When δ·G ≠ Σ Δ_j (equation DELTA) or Σ S_j ≠ δ·Y (equation CHI), every signer's presign party
raises `IdentificationRequired`: a `ProtocolAbort` with code EQUATION and no culprit, carrying an
`IdentificationState` — the failed session's public data, the MtA ciphertexts the party sent and
received in presign round 2, and the secrets its proofs need (kept in memory, never encoded).
Every signer then runs `PresignIdentifyParty`, a session of its own: its request is bound to the
failed session's protocol, id and equation, and its joint session id is fresh (every party's
nonce).

Notation: x_j = γ_j (DELTA) or w_j (CHI), X_j = x_j·G = Γ_j or W_j.  In presign round 2 party j
sent party i the pair D_{i,j} = K_i^{x_j}·enc_i(y), F_{i,j} = enc_j(y) with ψ_{i,j} = Πaff-g under
i's ring-Pedersen parameters; i's share is dec_i(D_{i,j}) − y_{i→j} per peer.

  Round 1 (broadcast, echoed)  H_i = K_i^{x_i}·ρ^{N_i} (an encryption of k_i·x_i); for every peer
                               j, the (D_{i,j}, F_{i,j}, ψ_{i,j}) received from j.
  Round 2 (p2p)                to each verifier v, under v's parameters and bound to this
                               session's id: Πmul (H_i from G_i and K_i) for DELTA or Πmul*
                               (H_i from K_i and W_i) for CHI; Πaff-g for every pair (D_{j,i},
                               F_{j,i}) that i sent to a j ∉ {i, v}; and, with
                               C_i = H_i · Π_j D_{i,j} · Π_j F_{j,i}⁻¹ (mod N_i²), Πdec that
                               δ_i = dec_i(C_i) mod q, or its group form that S_i = dec_i(C_i)·Γ.
  Output                       `Identification`: the parties whose round-2 proofs fail.

Why it names a culprit and never an honest party (attacks.md A20).  A forwarded ψ_{i,j} is
transferable evidence that j made (D_{i,j}, F_{i,j}): it is bound to the failed session's id
and to j as prover, and its curve equation z1·G = Bx + e·X_j needs x_j, which not even i (who
knows the trapdoor of its own parameters) has.  So an honest forwarder's ψ verifies for everyone,
and a forwarder whose ψ fails is blamed (round-1 abort); the author of a pair also compares it
with what it sent.  If every round-2 proof holds, then dec(H_i) = k_i·x_i exactly (Πenc, Πlog*
and Πmul* bound the factors, so nothing wraps mod N_i), each MtA pair contributes k_i·x_j + y to
one side and −y to the other, and Πdec (whose range check makes the extracted plaintext the
signed decryption) gives Σ δ_i = k·γ, resp. Σ χ_i = k·Σ w_j: the failed equation would hold.
Hence some proof fails, and an honest party's proofs always hold.  Only the contents are
attributable: a party that withholds its messages stalls the session (the node layer's timeout).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import ClassVar

from signer.arith import parallel_map, random_unit
from signer.curve import Point
from signer.encoding import Encodable, encode
from signer.errors import Check, CryptoMisuse, EncodingError, InvalidParameter, ProofRejected
from signer.paillier import PaillierPublicKey
from signer.params import MODULUS_BITS
from signer.protocol.aux_info import AuxInfo
from signer.protocol.base import (
    Inbox,
    Outgoing,
    Party,
    ProtocolAbort,
    RoundSpec,
    SessionConfig,
    as_list,
    expect_blob,
    expect_nat,
)
from signer.zk import aff_g, dec, mul
from signer.zk.common import ProofContext

PROTOCOL = "presign_identify/v1"
_REQUEST_TAG = "tessera/presign_identify/request/v1"


class Equation(StrEnum):
    """The presign output check that failed."""

    DELTA = "delta"  # δ·G = Σ Δ_j
    CHI = "chi"  # Σ S_j = δ·Y


@dataclass(frozen=True)
class MtaSent:
    """An MtA response this party sent to j in presign round 2: D = K_j^x·enc_j(y; rho) and
    F = enc_i(y; rho_y) with its Πaff-g (wire bytes), and the witnesses to prove the pair again
    to third parties."""

    D: int
    F: int
    proof: bytes = field(repr=False)
    y: int = field(repr=False)
    rho: int = field(repr=False)
    rho_y: int = field(repr=False)


@dataclass(frozen=True)
class MtaReceived:
    """An MtA response this party received from j: the pair and j's Πaff-g (wire bytes)."""

    D: int
    F: int
    proof: bytes = field(repr=False)


@dataclass(frozen=True)
class IdentificationState:
    """What one signer of a failed presign needs to take part in identification.

    Maps are keyed by party index over the signer set (`sent`/`received`: the other signers).
    `x` is γ_i (DELTA) or w_i (CHI); `x_rho` is the randomiser of G_i = enc_i(γ_i) (DELTA only,
    0 for CHI).  The secrets live in memory only: this object has no wire form."""

    protocol: str  # of the failed session
    session_id: bytes  # the failed session's joint id
    key_id: bytes
    equation: Equation
    signers: tuple[int, ...]
    me: int
    aux: AuxInfo = field(repr=False)
    K: Mapping[int, int]  # K_j = enc_j(k_j)
    G: Mapping[int, int]  # G_j = enc_j(γ_j)
    X: Mapping[int, Point]  # Γ_j (DELTA) or W_j (CHI)
    Gamma: Point
    deltas: Mapping[int, int]  # δ_j as broadcast
    S: Mapping[int, Point]  # S_j as broadcast
    sent: Mapping[int, MtaSent] = field(repr=False)
    received: Mapping[int, MtaReceived] = field(repr=False)
    x: int = field(repr=False)
    x_rho: int = field(repr=False)

    def __post_init__(self) -> None:
        signers, others = set(self.signers), set(self.signers) - {self.me}
        if self.me not in signers or tuple(sorted(signers)) != self.signers:
            raise CryptoMisuse("identification state: signer set / own index inconsistent")
        for name in ("K", "G", "X", "deltas", "S"):
            if set(getattr(self, name)) != signers:
                raise CryptoMisuse(f"identification state: {name} does not cover the signers")
        if set(self.sent) != others or set(self.received) != others:
            raise CryptoMisuse("identification state: MtA records do not cover the peers")
        if self.aux.index != self.me or not signers <= set(self.aux.parties):
            raise CryptoMisuse("identification state: aux-info of another party or party set")

    def request(self) -> bytes:
        """The identification run's request id: bound to the failed session and equation."""
        return hashlib.sha256(
            encode([_REQUEST_TAG, self.protocol, self.session_id, self.equation.value])
        ).digest()

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            PROTOCOL, self.signers, self.me, len(self.signers), self.key_id, self.request()
        )


class IdentificationRequired(ProtocolAbort):
    """A presign output check failed: no culprit yet, run `PresignIdentifyParty` with
    `identification` (every signer holds one)."""

    def __init__(
        self, protocol: str, round_number: int, detail: str, identification: IdentificationState
    ) -> None:
        super().__init__(protocol, round_number, Check.EQUATION, frozenset(), detail)
        self.identification = identification


@dataclass(frozen=True)
class Finding:
    """One party's failed identification check, as one verifier saw it."""

    party: int
    check: Check
    detail: str


@dataclass(frozen=True)
class Identification:
    """The verdict of one party: who failed to prove its δ_j / S_j (and why)."""

    session_id: bytes  # the failed presign session
    equation: Equation
    findings: tuple[Finding, ...]

    @property
    def culprits(self) -> frozenset[int]:
        return frozenset(f.party for f in self.findings)


def _attempt(party: int, task: Callable[[], None]) -> Finding | None:
    """Run one check of `party`'s data; a rejection becomes a Finding naming it."""
    try:
        task()
    except ProofRejected as exc:
        return Finding(party, exc.check, str(exc))
    except (EncodingError, InvalidParameter) as exc:
        return Finding(party, exc.check, str(exc))
    return None


@dataclass(frozen=True)
class _Forward:
    """One forwarded MtA response as parsed from round 1: receiver r, sender s."""

    receiver: int
    sender: int
    D: int
    F: int
    proof: bytes


class PresignIdentifyParty(Party[Identification]):
    PROTOCOL: ClassVar[str] = PROTOCOL
    ROUNDS: ClassVar[tuple[RoundSpec, ...]] = (
        RoundSpec(broadcast=True, p2p=False, echo=True),
        RoundSpec(broadcast=False, p2p=True),
    )

    def __init__(self, config: SessionConfig, state: IdentificationState) -> None:
        super().__init__(config)
        if (
            config.parties != state.signers
            or config.me != state.me
            or config.key_id != state.key_id
            or config.request != state.request()
        ):
            raise CryptoMisuse("session config is not the identification of this failed session")
        self.state = state
        own = state.aux.own.paillier
        self._rho_H = random_unit(own.n)
        H = own.powmod_n2(state.K[self.me], state.x) * own.encrypt_with(0, self._rho_H)
        self._H: dict[int, int] = {self.me: H % own.public.n2}
        # pairs[r][s] = (D_{r,s}, F_{r,s}): what r received from s, as r forwarded it
        self._pairs: dict[int, dict[int, tuple[int, int]]] = {
            self.me: {j: (got.D, got.F) for j, got in state.received.items()}
        }

    # --- helpers -----------------------------------------------------------------------------
    def _key_of(self, party: int) -> PaillierPublicKey:
        return PaillierPublicKey(self.state.aux.params(party).n)

    def _peers_of(self, party: int) -> list[int]:
        return [j for j in self.config.parties if j != party]

    def _combination(self, i: int) -> int:
        """C_i = H_i · Π_j D_{i,j} · Π_j F_{j,i}⁻¹ mod N_i², from the agreed public pairs."""
        key = self._key_of(i)
        c = self._H[i]
        for j in self._peers_of(i):
            c = c * self._pairs[i][j][0] % key.n2
            c = c * key.exp_n2(self._pairs[j][i][1], -1) % key.n2
        return c

    def _abort_with(self, wire_round: int, findings: Sequence[Finding]) -> ProtocolAbort:
        detail = "; ".join(f"party {f.party}: {f.detail}" for f in findings)
        return self._abort(wire_round, findings[0].check, [f.party for f in findings], detail)

    # --- rounds ------------------------------------------------------------------------------
    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number == 1:
            forwards: list[Encodable] = [
                [j, got.D, got.F, got.proof] for j, got in sorted(self.state.received.items())
            ]
            return Outgoing(broadcast=[self._H[self.me], forwards])
        if number == 2:
            self._collect_forwards(inbox)
            return Outgoing(p2p=self._prove())
        raise CryptoMisuse(f"presign identification has no round {number}")

    def _parse_round1(self, r: int, value: Encodable) -> list[_Forward]:
        H, entries = as_list(value, 2, "identification round 1")
        key_r = self._key_of(r)
        self._H[r] = key_r.validate_ciphertext(expect_nat(H, 2 * MODULUS_BITS, "H"), "H")
        senders = self._peers_of(r)
        parsed = []
        for s, entry in zip(senders, as_list(entries, len(senders), "forwards"), strict=True):
            sender, D, F, proof = as_list(entry, 4, "forwarded MtA response")
            if sender != s:
                raise EncodingError("forwarded MtA response", Check.PARTY_INDEX, "wrong sender")
            D = key_r.validate_ciphertext(expect_nat(D, 2 * MODULUS_BITS, "D"), "D")
            F = self._key_of(s).validate_ciphertext(expect_nat(F, 2 * MODULUS_BITS, "F"), "F")
            parsed.append(_Forward(r, s, D, F, expect_blob(proof, "forwarded Πaff-g")))
        return parsed

    def _check_forward(self, fwd: _Forward) -> None:
        """The sender's presign-round-2 proof for the pair, under the receiver's parameters;
        the sender itself compares the forward with what it sent (same verdict, no cost)."""
        state = self.state
        proof = aff_g.AffGProof.from_bytes(fwd.proof)
        if fwd.sender == self.me:
            mine = state.sent[fwd.receiver]
            if (fwd.D, fwd.F, fwd.proof) != (mine.D, mine.F, mine.proof):
                raise EncodingError(
                    "forwarded MtA response", Check.EQUATION, f"not what party {self.me} sent"
                )
            return
        public = aff_g.AffGPublic(
            self._key_of(fwd.receiver),
            self._key_of(fwd.sender),
            state.K[fwd.receiver],
            fwd.D,
            fwd.F,
            state.X[fwd.sender],
        )
        ctx = ProofContext(state.session_id, fwd.sender)
        aff_g.verify(ctx, public, proof, state.aux.params(fwd.receiver))

    def _collect_forwards(self, inbox: Inbox) -> None:
        wire = self._wire_round(1, False)
        findings: list[Finding] = []
        forwards: list[_Forward] = []
        for r in self.config.others:
            parsed: list[_Forward] = []

            def parse(r: int = r, out: list[_Forward] = parsed) -> None:
                out.extend(self._parse_round1(r, inbox.broadcast[r]))

            failed = _attempt(r, parse)
            findings.extend([failed] if failed else [])
            forwards.extend(parsed)
        results = parallel_map(
            lambda fwd: _attempt(fwd.receiver, lambda: self._check_forward(fwd)), forwards
        )
        findings.extend(f for f in results if f is not None)
        if findings:
            raise self._abort_with(wire, findings)
        for fwd in forwards:
            self._pairs.setdefault(fwd.receiver, {})[fwd.sender] = (fwd.D, fwd.F)

    def _prove(self) -> dict[int, Encodable]:
        """Round 2: my proofs, to each verifier under its own parameters."""
        state, me = self.state, self.me
        own = state.aux.own.paillier
        ctx = ProofContext(self.session_id, me)
        C = self._combination(me)
        witness = dec.DecPrivate(own.decrypt_signed(C), own.randomiser_of(C))
        shared: bytes | None = None
        if state.equation is Equation.DELTA:
            public = mul.MulPublic(own.public, state.G[me], state.K[me], self._H[me])
            private = mul.MulPrivate(state.x, self._rho_H, state.x_rho)
            shared = mul.prove(ctx, public, private, own).to_bytes()

        def for_verifier(v: int) -> Encodable:
            aux_v = state.aux.params(v)
            if shared is not None:
                proof_mul = shared
                proof_dec = dec.prove(
                    ctx, dec.DecPublic(own.public, C, state.deltas[me]), witness, aux_v, own
                ).to_bytes()
            else:
                star = mul.MulStarPublic(own.public, state.K[me], self._H[me], state.X[me])
                proof_mul = mul.prove_star(
                    ctx, star, mul.MulStarPrivate(state.x, self._rho_H), aux_v, own
                ).to_bytes()
                group = dec.DecGroupPublic(own.public, C, state.S[me], state.Gamma)
                proof_dec = dec.prove_group(ctx, group, witness, aux_v, own).to_bytes()
            aff: list[Encodable] = []
            for j in self._peers_of(me):
                if j == v:
                    continue  # v checked this pair under its own parameters in presign round 2
                sent = state.sent[j]
                public = aff_g.AffGPublic(
                    self._key_of(j), own.public, state.K[j], sent.D, sent.F, state.X[me]
                )
                private = aff_g.AffGPrivate(state.x, sent.y, sent.rho, sent.rho_y)
                aff.append([j, aff_g.prove(ctx, public, private, aux_v, own).to_bytes()])
            return [proof_mul, proof_dec, aff]

        others = self.config.others
        return dict(zip(others, parallel_map(for_verifier, others), strict=True))

    # --- verdict -----------------------------------------------------------------------------
    def _checks_of(self, i: int, value: Encodable) -> list[Callable[[], None]]:
        """Parse prover i's round-2 message to me; return the verifications to run."""
        state, mine = self.state, self.state.aux.own
        blob_mul, blob_dec, entries = as_list(value, 3, "identification round 2")
        blob_mul = expect_blob(blob_mul, "Πmul")
        blob_dec = expect_blob(blob_dec, "Πdec")
        ctx = ProofContext(self.session_id, i)
        key_i = self._key_of(i)
        C = self._combination(i)
        checks: list[Callable[[], None]]
        if state.equation is Equation.DELTA:
            public_mul = mul.MulPublic(key_i, state.G[i], state.K[i], self._H[i])
            public_dec = dec.DecPublic(key_i, C, state.deltas[i])
            checks = [
                partial(mul.verify, ctx, public_mul, mul.MulProof.from_bytes(blob_mul)),
                partial(dec.verify, ctx, public_dec, dec.DecProof.from_bytes(blob_dec), mine),
            ]
        else:
            public_star = mul.MulStarPublic(key_i, state.K[i], self._H[i], state.X[i])
            public_group = dec.DecGroupPublic(key_i, C, state.S[i], state.Gamma)
            proof_star = mul.MulStarProof.from_bytes(blob_mul)
            proof_group = dec.DecGroupProof.from_bytes(blob_dec)
            checks = [
                partial(mul.verify_star, ctx, public_star, proof_star, mine),
                partial(dec.verify_group, ctx, public_group, proof_group, mine),
            ]
        receivers = [j for j in self._peers_of(i) if j != self.me]
        for j, entry in zip(receivers, as_list(entries, len(receivers), "Πaff-g"), strict=True):
            receiver, blob = as_list(entry, 2, "Πaff-g")
            if receiver != j:
                raise EncodingError("Πaff-g", Check.PARTY_INDEX, "wrong receiver")
            proof = aff_g.AffGProof.from_bytes(expect_blob(blob, "Πaff-g"))
            D, F = self._pairs[j][i]
            public = aff_g.AffGPublic(self._key_of(j), key_i, state.K[j], D, F, state.X[i])
            checks.append(partial(aff_g.verify, ctx, public, proof, mine))
        return checks

    def _finish(self, inbox: Inbox) -> Identification:
        findings: list[Finding] = []
        tasks: list[tuple[int, Callable[[], None]]] = []
        for i in self.config.others:
            checks: list[Callable[[], None]] = []

            def parse(i: int = i, out: list[Callable[[], None]] = checks) -> None:
                out.extend(self._checks_of(i, inbox.p2p[i]))

            failed = _attempt(i, parse)
            findings.extend([failed] if failed else [])
            tasks.extend((i, check) for check in checks)
        results = parallel_map(lambda task: _attempt(*task), tasks)
        findings.extend(f for f in results if f is not None)
        return Identification(self.state.session_id, self.state.equation, tuple(findings))
