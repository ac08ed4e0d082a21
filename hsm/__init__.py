"""PKCS#11 key store (python-pkcs11) sealing node secrets; SoftHSM2 token helpers for dev and
tests.  Not built yet: see the key-share-node issue."""
