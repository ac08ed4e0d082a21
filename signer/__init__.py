"""Everything a key-share node is: the threshold-ECDSA protocol (CGGMP21, hardened) and, later,
the node service.  This layer holds the cryptographic core: secp256k1 (`curve`), Paillier
(`paillier`), ring-Pedersen (`ring_pedersen`), the Fiat–Shamir transcript (`transcript`), the
canonical encoding (`encoding`) and one zero-knowledge proof per module under `zk/`."""
