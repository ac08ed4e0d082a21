"""Which protocol party a session spec runs, on which stored inputs, and where its output goes.

A pure choice given the node's state: keygen and aux-info start from nothing stored (aux-info
with a fresh Paillier key, refusing the moduli it replaces); presign from the active share and
an aux-info record; identification from the state a failed presign kept (attacks.md A03); a
re-share or refresh from the plan, refused unless the plan's key version is this node's
active one (a stale plan must not run, A12).  Keygen and re-share first pass the key gate
(signer/node/key_gate.py): the wallet the key is bound to, and the officers' plan quorum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signer.node import codec
from signer.node.api import SessionProtocol, SessionResult
from signer.node.errors import NodeError
from signer.node.key_gate import KeyGate
from signer.node.results import Results
from signer.node.spec import SessionSpec
from signer.node.state import NodeState
from signer.paillier import PaillierSecretKey
from signer.problems import ErrorCode
from signer.protocol.aux_info import AuxInfoParty
from signer.protocol.base import Party, SessionConfig
from signer.protocol.keygen import KeygenParty
from signer.protocol.presign import PresignParty
from signer.protocol.presign_identify import (
    Identification,
    IdentificationState,
    PresignIdentifyParty,
)
from signer.protocol.reshare import RefreshParty, ReshareParty, ResharePlan

Finish = Callable[[Any], SessionResult]


def new_party(
    spec: SessionSpec,
    config: SessionConfig,
    *,
    state: NodeState,
    results: Results,
    paillier: Callable[[], PaillierSecretKey],
    identification: IdentificationState | None,
    finish_identify: Callable[[Identification], SessionResult],
    key_gate: KeyGate,
) -> tuple[Party[Any], Finish]:
    """The party for `spec` and the function that stores its result."""
    if spec.protocol == SessionProtocol.KEYGEN:
        binding = key_gate.new_key(spec)  # the wallet the key is for, checked before the DKG
        return KeygenParty(config), lambda share: results.keygen(share, binding)
    if spec.protocol == SessionProtocol.AUX_INFO:
        previous = state.replaced_moduli(spec.aux_id)
        return AuxInfoParty(config, paillier(), previous), results.aux
    if spec.protocol == SessionProtocol.PRESIGN:
        key = state.key_share(spec.key_id)
        aux = state.aux_info(spec.aux_id)
        party = PresignParty(config, key, aux, spec.path)
        return party, lambda p: results.presign(p, spec, key.epoch)
    if spec.protocol == SessionProtocol.PRESIGN_IDENTIFY:
        if identification is None:
            raise NodeError(
                ErrorCode.UNKNOWN_SESSION,
                "no failed presign awaits identification under this request",
            )
        if identification.session_config() != config:
            raise NodeError(
                ErrorCode.BAD_REQUEST, "identification spec differs from the failed presign"
            )
        return PresignIdentifyParty(config, identification), finish_identify
    if spec.protocol in (SessionProtocol.RESHARE, SessionProtocol.REFRESH):
        plan_binding = key_gate.plan(spec)  # the officers' authorisation of a wallet's plan
        old = codec.decode_key_public(spec.plan_old)
        if old.key_id != spec.key_id:
            raise NodeError(ErrorCode.BAD_REQUEST, "plan is for another key")
        plan = ResharePlan(old, spec.dealers, spec.new_parties, spec.threshold)
        share = state.key_share(spec.key_id) if state.index in plan.dealers else None
        current = state.active_public(spec.key_id)
        if (share is not None and share.public_data() != old) or (
            current is not None and current != old  # a member that is no dealer, too
        ):
            raise NodeError(
                ErrorCode.STALE_PLAN, "the plan's key version is not this node's active one"
            )
        if spec.protocol == SessionProtocol.REFRESH:
            if share is None or not plan.is_refresh:
                raise NodeError(ErrorCode.BAD_REQUEST, "a refresh re-shares to the same committee")
            return RefreshParty(config, share), lambda r: results.reshare(r, plan_binding)
        return ReshareParty(config, plan, share), lambda r: results.reshare(r, plan_binding)
    raise NodeError(ErrorCode.BAD_REQUEST, f"unknown protocol {spec.protocol!r}")
