"""The key-share node: a process that holds one party's sealed secrets (key shares, Paillier
keys, presignatures) and runs the sans-IO protocols of `signer.protocol` for a coordinator that
relays its messages.  `envelope` authenticates and encrypts those messages end to end, so the
coordinator learns nothing secret and cannot forge or replay a party's message."""
