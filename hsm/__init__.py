"""PKCS#11 key store of a key-share node (python-pkcs11), with SoftHSM2 token helpers.

Each node has its own token holding a non-extractable AES-256 key-encryption key, under which the
node's secret state is sealed with AES-256-GCM (`keystore.KeyStore.seal`), and an identity signing
key (Ed25519, or P-256 where the token lacks EdDSA).  `config` says where the token and its PIN
are, `softhsm` creates tokens, `identity` verifies identity signatures without a token, `cli` is
`tessera hsm`.  See docs/hsm.md.
"""
