"""Session orchestration across key-share nodes, the withdrawal (signer) API, wallets, chains and
webhooks.  Not built yet: see the open issues (protocols, nodes, policy)."""
