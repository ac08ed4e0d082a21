"""A whole wallet lifecycle run in one process: aux-info, DKG, presign, sign, and the
identification that follows a presign whose output check failed.

Used by `tessera demo` and the protocol benchmark.  Every party is a separate state machine
exchanging only encoded messages through the in-process simulator — the same code the node
processes will run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from signer.errors import CryptoMisuse
from signer.paillier import PaillierSecretKey
from signer.protocol.aux_info import AuxInfo, AuxInfoParty
from signer.protocol.base import ProtocolAbort, SessionConfig
from signer.protocol.keygen import KeygenParty, KeyPublic, KeyShare
from signer.protocol.presign import Presignature, PresignParty
from signer.protocol.presign_identify import (
    Identification,
    IdentificationRequired,
    PresignIdentifyParty,
)
from signer.protocol.reshare import PROTOCOL as PROTOCOL_RESHARE
from signer.protocol.reshare import REFRESH_PROTOCOL as PROTOCOL_REFRESH
from signer.protocol.reshare import RefreshParty, ReshareParty, ResharePlan, ReshareResult
from signer.protocol.sign import HashScheme, Signature, combine, issue_partial
from signer.protocol.simulate import Mutator, Outcome, run

T = TypeVar("T")


@dataclass
class Timings:
    steps: list[tuple[str, float]] = field(default_factory=list)

    def timed(self, name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = fn()
        self.steps.append((name, time.perf_counter() - start))
        return result


def configs(
    protocol: str, parties: Sequence[int], threshold: int, key_id: bytes
) -> list[SessionConfig]:
    request = secrets.token_bytes(16)
    return [SessionConfig(protocol, tuple(parties), i, threshold, key_id, request) for i in parties]


def completed(outcome: Outcome[T]) -> dict[int, T]:
    """Every party's output, or the first abort raised."""
    for abort in outcome.aborts.values():
        raise abort
    return outcome.results


def run_aux_info(keys: dict[int, PaillierSecretKey]) -> dict[int, AuxInfo]:
    cfgs = configs("aux_info/v1", sorted(keys), 2, b"aux-info")
    return completed(run([AuxInfoParty(c, keys[c.me]) for c in cfgs]))


def run_keygen(t: int, n: int, key_id: bytes) -> dict[int, KeyShare]:
    cfgs = configs("keygen/v1", range(1, n + 1), t, key_id)
    return completed(run([KeygenParty(c) for c in cfgs]))


def run_presign(
    shares: dict[int, KeyShare],
    aux: dict[int, AuxInfo],
    signers: Sequence[int],
    path: Sequence[int],
) -> dict[int, Presignature]:
    any_share = next(iter(shares.values()))
    cfgs = configs("presign/v1", signers, any_share.threshold, any_share.key_id)
    return completed(run([PresignParty(c, shares[c.me], aux[c.me], path) for c in cfgs]))


def sign(
    presignatures: dict[int, Presignature], message: bytes, scheme: HashScheme, key: KeyPublic
) -> Signature:
    """Every signer's partial, combined for `key` (the current version of the key)."""
    partials = {i: issue_partial(p, message, scheme) for i, p in sorted(presignatures.items())}
    public = next(iter(presignatures.values())).public
    return combine(public, message, scheme, partials, key)


def run_reshare(plan: ResharePlan, shares: dict[int, KeyShare]) -> dict[int, ReshareResult]:
    """Re-share `plan.old` from the dealers' `shares` to the new committee."""
    cfgs = configs(PROTOCOL_RESHARE, plan.parties, plan.new_threshold, plan.old.key_id)
    dealt = {i: shares[i] for i in plan.dealers}
    return completed(run([ReshareParty(c, plan, dealt.get(c.me)) for c in cfgs]))


def run_refresh(
    shares: dict[int, KeyShare], paillier: dict[int, PaillierSecretKey]
) -> tuple[dict[int, KeyShare], dict[int, AuxInfo]]:
    """Key refresh: fresh aux-info (new Paillier keys and ring-Pedersen parameters, proven
    again) and fresh shares of the same key for the same committee and threshold."""
    any_share = next(iter(shares.values()))
    if sorted(shares) != list(any_share.parties) or sorted(paillier) != sorted(shares):
        raise CryptoMisuse("refresh needs every party's share and a fresh Paillier key for each")
    aux = run_aux_info(paillier)
    cfgs = configs(PROTOCOL_REFRESH, any_share.parties, any_share.threshold, any_share.key_id)
    results = completed(run([RefreshParty(c, shares[c.me]) for c in cfgs]))
    new_shares = {}
    for i, result in results.items():
        if result.share is None:
            raise CryptoMisuse(f"refresh gave party {i} no share")
        new_shares[i] = result.share
    return new_shares, aux


def run_identification(
    aborts: Mapping[int, ProtocolAbort],
    *,
    seed: int = 0,
    classes: Mapping[int, type[PresignIdentifyParty]] | None = None,
    mutators: Mapping[int, Mutator] | None = None,
) -> Outcome[Identification]:
    """Run presign identification among the signers of a failed presign, given every signer's
    `IdentificationRequired` abort.  `classes` (a party class per index) and `mutators` (as in
    `simulate.run`) are the malicious-party harness of the tests."""
    states = {}
    for i, abort in aborts.items():
        if not isinstance(abort, IdentificationRequired):
            raise CryptoMisuse(f"party {i} aborted without identification: {abort}")
        states[i] = abort.identification
    signers = {state.signers for state in states.values()}
    if len(signers) != 1 or sorted(states) != list(next(iter(signers))):
        raise CryptoMisuse(f"identification needs every signer's state, got {sorted(states)}")
    chosen = classes or {}
    parties = [
        chosen.get(i, PresignIdentifyParty)(state.session_config(), state)
        for i, state in sorted(states.items())
    ]
    return run(parties, seed=seed, mutators=mutators)


def verdicts(outcome: Outcome[Identification]) -> dict[int, frozenset[int]]:
    """Each party's culprits: from its identification result or, if it aborted, its abort."""
    named = {i: result.culprits for i, result in outcome.results.items()}
    named.update({i: abort.culprits for i, abort in outcome.aborts.items()})
    return named


def identify_presign_failure(
    aborts: Mapping[int, ProtocolAbort], *, seed: int = 0
) -> dict[int, frozenset[int]]:
    """After a presign whose output check failed at every signer: run the identification and
    return the culprits each party names."""
    return verdicts(run_identification(aborts, seed=seed))
