"""Policy engine: what may be signed, decided the same way inside every key-share node.

The engine, pure and shared with the nodes: `document` (the officer-signed policy, canonical JSON
hashed by `canonical`), `intent` (one withdrawal), `evaluator` (pure first-match rules,
blacklist, velocity limits from `velocity`, k-of-group approvals; explains every decision),
`diff` (versions compared, loosening marked), `sanctions` (blacklist import), `keys` (officer
Ed25519/P-256 keys, domain-separated signatures), `governance` (quorum activation over the
version chain, time-locked loosening, freezes), `approvals` (signed, bound, single-use
withdrawal approvals), `audit` (hash-chained log with signed checkpoints), `structured` (the
strict YAML/JSON reader every input file goes through), `errors`.

The officers' local store: `store` (`PolicyStore`, the façade) over `tables` (the rows),
`store_core` (transactions, audit append, the chain read back and re-verified),
`store_audit`, `store_governance`, `store_freezes`, `store_withdrawals` (one job each);
`sqlite` (the one SQLite set-up), `schema` and `migrations` (schema versions).

The officers' command line: `cli` (the typer surface: options, help, exit codes), `operations`
(what each command does, returning JSON-ready documents), `drafts` (policy files without the
store: starter, validate, hash, next version), `render` (text and the error form), `locations`
(default store path, the example policies shipped in `examples/`).
"""
