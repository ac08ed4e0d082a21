"""Session orchestration across key-share nodes: `client` (a node's HTTP API), `driver` (relays
one protocol session's envelopes), `engine` (the `Coordinator` façade over `specs`, `sessions`,
`wallets`, `pools`, `signing` and `resharing`), `store` (the coordinator's database: public data
only, with the quarantine mirror), `metrics`, `cluster` (a local cluster of node processes),
`evm_chain` (the in-process EVM, extra `evm`; the transaction codec is `signer.chains.evm`),
`bip32` (xpub), `demo`, `cli` (`tessera cluster …`) and `console` (the `tessera` command).
The withdrawal API comes later."""
