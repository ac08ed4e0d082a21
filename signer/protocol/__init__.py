"""CGGMP21 threshold-ECDSA protocols as sans-IO state machines: a party consumes messages and
returns messages; no sockets, clocks or storage inside.  `base` holds the round engine (message
collection, echo broadcast, blame), `simulate` runs parties in memory; one protocol per module:
`keygen` (t-of-n DKG) and `aux_info` (Paillier-Blum + ring-Pedersen with Πmod/Πprm/Πfac)."""
