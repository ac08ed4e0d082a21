"""Session orchestration across key-share nodes and the chains it pays out on: `client` (a node's
HTTP API), `driver` (relays one protocol session's envelopes), `engine` (the `Coordinator` façade
over `specs`, `sessions`, `wallets`, `pools`, `signing` and `resharing`), `store` (the
coordinator's database: public data only, with the quarantine mirror, payouts, nonces and
deposits), `metrics`, `cluster` (a local cluster of node processes); the chain layer:
`registry` (the chain registry), `rpc` (JSON-RPC), `fees`, `nonces`, `payouts` (the payout
engine), `addresses` (destination checks), `deposits` (deposit addresses and watcher),
`contracts` (shipped Solidity and artifacts), `hardhat` and `evm_chain` (local test chains);
`bip32` (xpub), `demo`, `cli` (`tessera cluster …`) and `console` (the `tessera` command).
The withdrawal API comes later."""
