"""The signer API (`tessera serve`): the withdrawal service an exchange integrates — signed
requests per API client, idempotent withdrawals with a monotonic status lifecycle driven by
background workers over the payout engine, RFC 9457 errors, and a Python client
(docs/api.md).  It only collects and drives: every signature is still decided by each node on
its own policy."""
