"""Policy model, the pure evaluator run inside every node, officer approvals, velocity ledger and
audit log.  Not built yet: see the policy-engine issue."""
