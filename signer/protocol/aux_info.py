"""Auxiliary information: every party's Paillier–Blum modulus and ring-Pedersen parameters,
proven to every peer (CGGMP21 Fig. 6, aux-info part; the Lockness spec's `aux_only`).

  Round 1 (broadcast, echoed)  V_i = H(tag, run, i, N_i, s_i, t_i, ρ_i, u_i)
  Round 2 (broadcast)          open V_i
  Round 3 (broadcast + p2p)    ρ = ⊕ ρ_j; with challenges bound to (sid, ρ, i):
                               Πmod(N_i) and Πprm(N_i, s_i, t_i) to all, Πfac(N_i) to each j
                               under j's own ring-Pedersen parameters (echoed)
  Output                       every party's (N_j, s_j, t_j); the own Paillier key and λ.

Checks (attacks.md §2 "Aux-info"): commitment opens; N_j exactly 3072 bits, odd, composite, not
a square, no factor ≤ 2²⁰ (MODULUS_*); s_j, t_j ∈ Z*_N \\ {±1}, s_j ≠ t_j (NOT_UNIT/DEGENERATE);
Πmod, Πprm (m = 128) and Πfac under *my* parameters; no two parties with the same modulus
(DUPLICATE) — checked after the proofs, so that a party copying another's modulus is caught by
its proofs (it cannot prove knowledge of the factors) and the victim is never blamed.
A refresh or re-share replaces an aux-info set: given the moduli of the set being replaced
(`previous`), a party whose opened N_j is one of them is named (DUPLICATE) when its opening is
checked — an honest party's modulus comes from fresh safe primes and never repeats, so only a
party that kept (or copied) an old key can trip it, and a refresh that kept a modulus would keep
whatever an old Paillier key leaked (issue 9 item 4, attacks.md A07 T07c).
The output is reusable for every key of the same party set (README "On reusability").
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from signer.encoding import Encodable, encode
from signer.errors import Check, CryptoMisuse
from signer.paillier import PaillierSecretKey
from signer.params import MODULUS_BITS
from signer.protocol.base import (
    Inbox,
    Outgoing,
    Party,
    RoundSpec,
    SessionConfig,
    as_list,
    expect_blob,
    expect_bytes,
    expect_nat,
    xor_bytes,
)
from signer.ring_pedersen import RingPedersenParams, RingPedersenSecret
from signer.zk import fac, mod, prm
from signer.zk.common import ProofContext

PROTOCOL = "aux_info/v1"
_COMMIT_TAG = "tessera/aux_info/commit/v1"


@dataclass(frozen=True)
class AuxInfo:
    """A party's aux-info: its own secrets and every party's public parameters."""

    parties: tuple[int, ...]
    index: int
    own: RingPedersenSecret  # own Paillier key (p, q) and ring-Pedersen trapdoor λ
    public: tuple[RingPedersenParams, ...]  # (N_j, s_j, t_j) in the order of `parties`

    def params(self, party: int) -> RingPedersenParams:
        return self.public[self.parties.index(party)]

    def aux_id(self) -> bytes:
        """Identifies the aux-info set (binds presignatures and refreshes to it)."""
        listed: list[Encodable] = [[p.n, p.s, p.t] for p in self.public]
        return hashlib.sha256(encode(["tessera/aux_id/v1", list(self.parties), listed])).digest()


class AuxInfoParty(Party[AuxInfo]):
    PROTOCOL: ClassVar[str] = PROTOCOL
    ROUNDS: ClassVar[tuple[RoundSpec, ...]] = (
        RoundSpec(broadcast=True, p2p=False, echo=True),
        RoundSpec(broadcast=True, p2p=False),
        RoundSpec(broadcast=True, p2p=True, echo=True),
    )

    def __init__(
        self,
        config: SessionConfig,
        paillier: PaillierSecretKey,
        previous: Iterable[int] = (),
    ) -> None:
        """`paillier` must be fresh: from newly generated safe primes or a prime pool.
        `previous`: the moduli of the aux-info this run replaces (refresh, re-share); none of
        them may come back, neither from a peer nor as our own."""
        self._previous = frozenset(previous)
        if paillier.n in self._previous:
            raise CryptoMisuse("own Paillier key is the one being replaced; generate a fresh one")
        super().__init__(config)
        self._secret = RingPedersenSecret.generate(paillier)
        self._rho = secrets.token_bytes(32)
        self._salt = secrets.token_bytes(32)
        self._params: dict[int, RingPedersenParams] = {self.me: self._secret.params}
        self._rhos: dict[int, bytes] = {self.me: self._rho}

    def _opening(self) -> list[Encodable]:
        p = self._secret.params
        return [p.n, p.s, p.t, self._rho, self._salt]

    def _proof_context(self, prover: int) -> ProofContext:
        rho = xor_bytes(list(self._rhos.values()))
        bound = hashlib.sha256(encode(["tessera/aux_info/proofs/v1", self.session_id, rho]))
        return ProofContext(bound.digest(), prover)

    def _round(self, number: int, inbox: Inbox) -> Outgoing:
        if number == 1:
            return self._commit(_COMMIT_TAG, self._opening())
        if number == 2:
            self._collect_commitments(inbox)
            return Outgoing(broadcast=self._opening())
        if number == 3:
            self._verify_openings(inbox)
            ctx = self._proof_context(self.me)
            paillier = self._secret.paillier
            mod_proof = mod.prove(ctx, paillier)
            prm_proof = prm.prove(ctx, self._secret)
            fac_proofs: dict[int, Encodable] = {
                j: fac.prove(ctx, paillier, self._params[j]).to_bytes() for j in self.config.others
            }
            return Outgoing(broadcast=[mod_proof.to_bytes(), prm_proof.to_bytes()], p2p=fac_proofs)
        raise CryptoMisuse(f"aux-info has no round {number}")

    def _verify_openings(self, inbox: Inbox) -> None:
        round_number = self._wire_round(2, False)
        for j in self.config.others:
            with self.blame(j, round_number):
                n, s, t, rho, salt = as_list(inbox.broadcast[j], 5, "opening")
                # a loose bound here; from_peer names the exact size violation (MODULUS_SIZE)
                n = expect_nat(n, 2 * MODULUS_BITS, "N")
                s = expect_nat(s, 2 * MODULUS_BITS, "s")
                t = expect_nat(t, 2 * MODULUS_BITS, "t")
                rho = expect_bytes(rho, 32, "rho")
                salt = expect_bytes(salt, 32, "u")
                self._check_opening(_COMMIT_TAG, j, [n, s, t, rho, salt], round_number)
                self._params[j] = RingPedersenParams.from_peer(n, s, t, culprit=j)
                self._rhos[j] = rho
            if self._params[j].n == self._secret.params.n:  # only I know mine is fresh
                raise self._abort(round_number, Check.DUPLICATE, [j], "party reuses my modulus")
            if self._params[j].n in self._previous:
                raise self._abort(
                    round_number, Check.DUPLICATE, [j], "modulus of the aux-info being replaced"
                )

    def _finish(self, inbox: Inbox) -> AuxInfo:
        round_number = self._wire_round(3, False)
        for j in self.config.others:
            with self.blame(j, round_number):
                mod_bytes, prm_bytes = as_list(inbox.broadcast[j], 2, "proofs")
                ctx = self._proof_context(j)
                params = self._params[j]
                mod.verify(ctx, params.n, mod.ModProof.from_bytes(expect_blob(mod_bytes, "proof")))
                prm.verify(ctx, params, prm.PrmProof.from_bytes(expect_blob(prm_bytes, "proof")))
                fac_proof = fac.FacProof.from_bytes(expect_blob(inbox.p2p[j], "proof"))
                fac.verify(ctx, params.n, fac_proof, self._secret)
        moduli = [self._params[j].n for j in self.config.parties]
        if len(set(moduli)) != len(moduli):
            raise self._abort(round_number, Check.DUPLICATE, [], "two parties share a modulus")
        return AuxInfo(
            parties=self.config.parties,
            index=self.me,
            own=self._secret,
            public=tuple(self._params[j] for j in self.config.parties),
        )
