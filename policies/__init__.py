"""Policy engine: what may be signed, decided the same way inside every key-share node.

`document` (the officer-signed policy, canonical JSON hashed by `canonical`), `intent` (one
withdrawal), `evaluator` (pure first-match rules, blacklist, velocity limits from `velocity`,
k-of-group approvals; explains every decision), `diff` (versions compared, loosening marked),
`sanctions` (blacklist import).  `keys` (officer Ed25519/P-256 keys, domain-separated
signatures), `governance` (quorum activation over the version chain, time-locked loosening,
freezes), `approvals` (signed, bound, single-use withdrawal approvals), `audit` (hash-chained
log with signed checkpoints), `store` and `cli` (the officers' local store and command line).
"""
