"""The transactions a key-share node is asked to sign, decoded by the node itself.

A node never trusts the coordinator's word for what a payload means: it decodes the unsigned
transaction (`evm`: the strict EIP-1559/legacy codec), reads what it moves with the calldata
kind that matches (`calldata`: the registry; one module per kind, `native` for plain value
transfers) and builds the policy's `TransactionIntent` from that (`intent`).  Every refusal is a
`errors.TransactionRefused` with a stable problem code and the name of the failed check.
"""
