"""PKCS#11 key store of a key-share node (python-pkcs11), with SoftHSM2 token helpers.

Each node has its own token holding a non-extractable AES-256 key-encryption key, under which the
node's secret state is sealed with AES-256-GCM (`keystore.KeyStore.seal`), and an identity signing
key (Ed25519, or P-256 where the token lacks EdDSA).  One module per concern:

  keystore   `KeyStore`, the façade a node uses: binds the node, seals, signs
  session    the logged-in PKCS#11 session: login, lock, re-login after a lost session
  keys       label scheme, protection policy, finding/creating keys, the start-up self-test
  sealing    sealed-blob format and AAD (pure functions, no token)
  officer    security-officer keys in a token (`TokenOfficerSigner`, reference files)
  inventory  token facts and object listing for `tessera hsm status`
  metrics    `tessera_hsm_call_seconds`, registered by the node into its own registry
  identity   verify identity signatures without a token
  config, softhsm, runtime, errors, cli (`tessera hsm`)

See docs/hsm.md.
"""
