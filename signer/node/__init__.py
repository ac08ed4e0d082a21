"""The key-share node: a process that holds one party's sealed secrets (key shares, Paillier
keys, presignatures) and runs the sans-IO protocols of `signer.protocol` for a coordinator that
relays its messages.  `envelope` authenticates and encrypts those messages end to end, so the
coordinator learns nothing secret and cannot forge or replay a party's message.

`service.NodeService` is the façade of the node's logic; each of its jobs has a module:
`sessions` (session records), `parties` (which party a spec runs), `results` (durable outputs),
`state` (sealed state read back), `quarantine` (A03), `signing`, `versions` (key-version
confirmation and activation).  `app` is the HTTP API, `runtime` opens a node directory, `cli`
is `tessera node`, `metrics` the node's Prometheus registry; logs go through `signer.logs`."""
