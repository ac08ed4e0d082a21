"""The policy's dry run (`POST /v1/policy/evaluate`, docs/api.md "Policy dry run").

`evaluate_withdrawal` runs the coordinator's screen (`coordinator.api.dry_run`, exactly what
`WithdrawalService._screen` decides from) on a submission's body
after the checks a submission gets at the door, and stores nothing: no withdrawal, no payout,
no nonce, no presignature, and the `client_request_id` stays free.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from pydantic import ValidationError

from coordinator.api.dry_run import DryRun, dry_run
from coordinator.api.models import ApprovalsRequired, PolicyEvaluation, WithdrawalCreate
from coordinator.api.withdrawals import WithdrawalError, WithdrawalService, request_hash
from coordinator.payouts import PayoutError
from policies.intent import TransactionIntent
from signer.problems import ErrorCode, validation_detail


def _evaluation(run: DryRun, replay_of: str | None) -> PolicyEvaluation:
    decision = run.decision
    status = decision.approval
    required = None
    if status is not None:
        required = ApprovalsRequired(
            group=status.group, k=status.k, counted=list(status.counted), missing=status.missing
        )
    return PolicyEvaluation(
        outcome=decision.outcome,
        reason=decision.reason,
        rule_id=decision.rule,
        rule_action=decision.rule_action,
        reasons=list(decision.explanation),
        policy_hash=run.policy_hash,
        policy_version=decision.policy_version,
        approvals_required=required,
        blacklisted=bool(run.hits),
        screening_status=run.screening_status,
        replay_of=replay_of,
    )


async def evaluate_withdrawal(
    service: WithdrawalService, client_id: str, body: WithdrawalCreate
) -> PolicyEvaluation:
    """The dry run of `body` as `client_id` would submit it: refused as the submission would be
    (the same problem: an unknown wallet or chain, a wrong amount, a destination check, a
    `client_request_id` used with another body), else the screen's decision.  Stores nothing."""
    existing = service.by_client_request_id(client_id, body.client_request_id)
    replay_of = None
    if existing is not None:
        if existing.request_hash != request_hash(body):
            raise WithdrawalError(
                ErrorCode.REQUEST_REUSED,
                f"client_request_id {existing.client_request_id} is already used by withdrawal "
                f"{existing.withdrawal_id} with another request",
            )
        replay_of = existing.withdrawal_id
    # a request id of its own, never a withdrawal's: nothing is reserved under it
    probe = "dryrun-" + secrets.token_hex(16)
    request = service.payout_request(body, probe)
    try:
        await service.engine.check(request)
    except PayoutError as exc:
        raise WithdrawalError(exc.code, exc.detail, exc.check) from exc
    finally:
        # the engine keeps a passed check for the payout stored moments later: none will be
        service.engine.forget_check(probe)
    policy = await service.policy()
    wallet = service.store.wallet(body.wallet)
    try:
        intent = TransactionIntent.model_validate(
            {
                "request_id": probe,
                "wallet": wallet.policy_wallet or body.wallet,
                "chain_id": body.chain_id,
                "asset": body.asset,
                "destination": body.destination,
                "amount": body.amount,
                "initiator": service.initiator,
            }
        )
    except ValidationError as exc:
        raise WithdrawalError(ErrorCode.VALIDATION, validation_detail(exc.errors())) from exc
    return _evaluation(dry_run(policy, intent, (), now=datetime.now(UTC)), replay_of)
