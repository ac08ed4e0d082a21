"""Session orchestration across key-share nodes: `client` (a node's HTTP API), `driver` (relays
one protocol session's envelopes), `engine` (aux-info, wallets, presignature pools, signing with
retries and blame, refresh), `store` (the coordinator's database: public data only), `cluster`
(a local cluster of node processes), `evm` (EIP-1559/legacy transactions, in-process EVM),
`demo` and `cli` (`tessera cluster …`, `tessera demo`).  The withdrawal API comes later."""
